"""The PSRA domain: rules of origin, the assessment service, and the default job handlers."""

from __future__ import annotations

from psra_bench.psra.assessment import (
    AssessmentInput,
    AssessmentRequest,
    Verdict,
    assess,
    input_hash,
    parse_input,
    parse_request,
)
from psra_bench.psra.evaluation import evaluate
from psra_bench.psra.rules import Rule, compile_rules, select_rule
from psra_bench.psra.service import assess_with_cache, check_assessment, register_default_handlers
from psra_bench.psra.storage import assess_and_store, store_verdict

__all__ = [
    "Rule",
    "compile_rules",
    "select_rule",
    "evaluate",
    "AssessmentInput",
    "AssessmentRequest",
    "Verdict",
    "assess",
    "assess_and_store",
    "store_verdict",
    "parse_request",
    "parse_input",
    "input_hash",
    "assess_with_cache",
    "check_assessment",
    "register_default_handlers",
]
