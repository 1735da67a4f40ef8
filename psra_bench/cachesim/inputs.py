"""Assessment inputs of generated traces: distinct, valid requests and the cache key each lands on.

Split from :mod:`psra_bench.cachesim.workload` (which re-exports every name here): a trace's
assessment reads need real requests the engine accepts, built for rules in force on
:data:`ASSESSMENT_DATE` and owned by tenants only the replay uses (:func:`replay_tenant_ids`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from psra_bench.db.reference import hs_rows, rules
from psra_bench.db.seed import EU_MEMBERS
from psra_bench.exceptions import InputError, ParameterError

__all__ = ["ASSESSMENT_DATE", "AssessmentInput", "check_whole", "replay_tenant_ids", "assessment_inputs"]

#: The assessment date of every generated assessment input (fixed, so inputs never depend on today).
ASSESSMENT_DATE = "2025-06-01"
_REPLAY_TENANT_NAMESPACE = uuid.UUID("3b9d2f4e-5c61-4a8e-9f0b-2d7c6e1a4b90")
_REPLAY_TENANTS = 20
_NON_PARTY_SUPPLIERS = ("CN", "IN", "VN", "TR", "KR")
_PROCESSES = ("POLYMERIZATION", "VULCANIZATION", "ASSEMBLY", "CUTTING", "PACKAGING_ONLY")


def check_whole(name: str, value: object, low: int, high: int) -> int:
    """``value`` if it is a whole number from ``low`` to ``high``, else ParameterError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParameterError(name, value, f"a whole number from {low:,} to {high:,}")
    return value


class AssessmentInput(NamedTuple):
    """One distinct assessment request and the cache key it lands on."""

    #: ``rule_id|hs_code|origin|dest``: the parts of the spec's assessment key.
    key: str
    #: The rule the engine selects for it (its update makes the cached result stale), or None.
    rule_id: str | None
    #: The request as JSON-ready data (what the API would receive).
    request: dict[str, Any]


def replay_tenant_ids() -> tuple[str, ...]:
    """Tenant ids used only by generated assessment inputs (so their verdicts can be deleted afterwards)."""
    return tuple(str(uuid.uuid5(_REPLAY_TENANT_NAMESPACE, f"cache-replay-tenant-{k}")) for k in range(_REPLAY_TENANTS))


def _party_countries(jurisdiction: str) -> list[str]:
    return sorted(EU_MEMBERS) if jurisdiction == "EU" else [jurisdiction]


def _draw_request(
    rng: np.random.Generator,
    rule: Mapping[str, Any],
    subheadings: Sequence[str],
    by_prefix: dict[str, list[str]],
    tenants: Sequence[str],
) -> dict[str, Any]:
    prefix = rule.get("hs_subheading") or rule.get("hs_heading") or rule["hs_chapter"]
    if prefix not in by_prefix:
        by_prefix[prefix] = [c for c in subheadings if c.startswith(prefix)]
    product = by_prefix[prefix][int(rng.integers(len(by_prefix[prefix])))]
    parties = list(rule["jurisdictions"])
    a, b = rng.choice(len(parties), size=2, replace=False)
    origin_choices, dest_choices = _party_countries(parties[int(a)]), _party_countries(parties[int(b)])
    origin = origin_choices[int(rng.integers(len(origin_choices)))]
    dest = dest_choices[int(rng.integers(len(dest_choices)))]
    suppliers = [origin, dest, *_NON_PARTY_SUPPLIERS]
    lines = []
    for _ in range(int(rng.integers(1, 4))):
        lines.append(
            {
                "hs_code": subheadings[int(rng.integers(len(subheadings)))],
                "origin_country": suppliers[int(rng.integers(len(suppliers)))],
                "value": f"{rng.uniform(5, 400):.2f}",
            }
        )
    total = sum(float(x["value"]) for x in lines)
    price = total * float(rng.uniform(1.2, 2.5))
    processes = sorted({_PROCESSES[int(i)] for i in rng.choice(len(_PROCESSES), size=int(rng.integers(0, 3)))})
    return {
        "hs_code": product,
        "bill_of_materials": lines,
        "ex_works_price": f"{price:.2f}",
        "transaction_value": f"{price:.2f}",
        "net_cost": f"{price * 0.85:.2f}",
        "agreement_code": rule["agreement_code"],
        "origin_country": origin,
        "destination_country": dest,
        "assessment_date": ASSESSMENT_DATE,
        "tenant_id": tenants[int(rng.integers(len(tenants)))],
        "processes": processes,
    }


@lru_cache(maxsize=8)
def assessment_inputs(count: int, seed: int) -> tuple[AssessmentInput, ...]:
    """``count`` distinct, valid assessment inputs (distinct cache keys), drawn with ``seed``.

    Each is built for a rule in force on :data:`ASSESSMENT_DATE` (a product under its HS prefix,
    a route between two of its parties, a 1-3 line bill of materials) and run through the pure
    engine once to learn which rule it selects, i.e. which cache key it lands on.
    """
    from psra_bench.psra.assessment import assess, default_rules

    check_whole("assessment_inputs", count, 1, 5000)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    in_force = [r for r in rules() if r["effective_to"] is None]
    subheadings = [r.code for r in hs_rows() if r.level == 6]
    by_prefix: dict[str, list[str]] = {}
    tenants = replay_tenant_ids()
    compiled = default_rules()
    out: list[AssessmentInput] = []
    seen: set[str] = set()
    for _ in range(count * 50):
        request = _draw_request(rng, in_force[int(rng.integers(len(in_force)))], subheadings, by_prefix, tenants)
        try:
            verdict = assess(request, compiled)
        except InputError:  # pragma: no cover - the draw only makes valid requests
            continue
        key = "|".join(
            (verdict.rule_id or "none", verdict.hs_code, verdict.origin_country, verdict.destination_country)
        )
        if key not in seen:
            seen.add(key)
            out.append(AssessmentInput(key, verdict.rule_id, request))
            if len(out) == count:
                return tuple(out)
    raise ParameterError("assessment_inputs", count, f"at most {len(out)} distinct inputs for seed {seed}")
