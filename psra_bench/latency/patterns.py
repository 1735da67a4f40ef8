"""The measured query patterns: the spec's "Query Performance" rows mapped to DAL queries, and their parameters.

Each :class:`QueryPattern` names a query of :data:`psra_bench.db.dal.QUERIES` (run through
:class:`psra_bench.db.dal.PostgresDAL`), the spec's row label and claim, and a parameter maker.
Parameters are drawn from the seeded data (:func:`load_param_source`): tenants, existing
``input_hash`` values and trade routes from a stable pseudo-random sample of verdicts (ordered
by ``evaluation_id``, so tenants and routes appear in proportion to their activity), HS search
words from the HS descriptions, agreement/chapter pairs from the rules (a third of them with a
chapter that has no rule). :func:`generate_params` is deterministic in (seed, query, slot) and
varies from call to call, so no single plan or cached row is measured over and over.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from psra_bench.db.dal import QUERIES, escape_like
from psra_bench.db.reference import hs_rows, rules
from psra_bench.exceptions import MeasurementError, ParameterError

__all__ = [
    "Params",
    "SpecClaim",
    "QueryPattern",
    "ParamSource",
    "QUERY_PATTERNS",
    "SPEC_LABELS",
    "TIMING_PATHS",
    "resolve_queries",
    "load_param_source",
    "generate_params",
]

Params = dict[str, Any]


@dataclass(frozen=True)
class SpecClaim:
    """What the spec claims for one row: before/after in ms and the improvement in percent."""

    before_ms: float
    after_ms: float
    improvement_pct: float


@dataclass(frozen=True)
class ParamSource:
    """Values drawn from the seeded data that query parameters are made of."""

    #: Tenant ids of sampled verdicts (a tenant appears in proportion to its verdicts).
    tenants: tuple[str, ...]
    #: (input_hash, tenant_id) of sampled verdicts: inputs that really exist.
    inputs: tuple[tuple[str, str], ...]
    #: (export_country, import_country) of sampled verdicts.
    routes: tuple[tuple[str, str], ...]
    #: Words of the HS descriptions (4+ letters, common filler words left out).
    words: tuple[str, ...]
    #: (agreement_code, hs_chapter) of every rule.
    rule_pairs: tuple[tuple[str, str], ...]
    #: Every two-digit HS chapter.
    chapters: tuple[str, ...]
    #: The newest created_at in the data: "now" for the dashboard and report windows.
    data_end: dt.datetime


ParamMaker = Callable[[ParamSource, np.random.Generator], Params]


@dataclass(frozen=True)
class QueryPattern:
    """One measured query: its table label, the DAL query and method, the spec's claim, its parameters."""

    name: str
    label: str
    dal_method: str
    spec: SpecClaim
    make_params: ParamMaker
    #: True for the six rows of the spec's "Query Performance" table.
    spec_row: bool = True

    @property
    def sql(self) -> str:
        """The SQL of :data:`psra_bench.db.dal.QUERIES` that this pattern runs."""
        return QUERIES[self.name]


def _pick(rng: np.random.Generator, values: Sequence[Any]) -> Any:
    return values[int(rng.integers(len(values)))]


def _hs_search(src: ParamSource, rng: np.random.Generator) -> Params:
    return {"pattern": f"%{escape_like(_pick(rng, src.words))}%", "limit": 20}


def _rules(src: ParamSource, rng: np.random.Generator) -> Params:
    agreement, chapter = _pick(rng, src.rule_pairs)
    if rng.random() < 1 / 3:
        chapter = _pick(rng, src.chapters)
    return {"agreement_code": agreement, "chapter": chapter}


def _recent(src: ParamSource, rng: np.random.Generator) -> Params:
    return {"limit": 100}


def _route(src: ParamSource, rng: np.random.Generator) -> Params:
    export_country, import_country = _pick(rng, src.routes)
    return {"export_country": export_country, "import_country": import_country}


def _history(src: ParamSource, rng: np.random.Generator) -> Params:
    return {"tenant_id": _pick(rng, src.tenants), "limit": 100}


def _duplicate(src: ParamSource, rng: np.random.Generator) -> Params:
    input_hash, tenant_id = _pick(rng, src.inputs)
    return {"input_hash": input_hash, "tenant_id": tenant_id}


def _dashboard(src: ParamSource, rng: np.random.Generator) -> Params:
    days = _pick(rng, (7, 30, 90))
    since = src.data_end - dt.timedelta(days=days)
    return {"tenant_id": _pick(rng, src.tenants), "since": since, "until": src.data_end}


def _report(src: ParamSource, rng: np.random.Generator) -> Params:
    date_to = src.data_end.date() - dt.timedelta(days=int(rng.integers(0, 91)))
    window = _pick(rng, (30, 90, 365))
    return {
        "tenant_id": _pick(rng, src.tenants),
        "date_from": date_to - dt.timedelta(days=window),
        "date_to": date_to,
        "limit": 50,
    }


#: Query name (a key of :data:`psra_bench.db.dal.QUERIES`) -> pattern, in the spec's table order.
QUERY_PATTERNS: dict[str, QueryPattern] = {
    p.name: p
    for p in (
        QueryPattern(
            "hs_search", "HS code search by description", "PostgresDAL.hs_search", SpecClaim(250, 75, 70), _hs_search
        ),
        QueryPattern(
            "rules_by_agreement_chapter",
            "Find rules by agreement + chapter",
            "PostgresDAL.rules_by_agreement_chapter",
            SpecClaim(180, 80, 55),
            _rules,
        ),
        QueryPattern(
            "recent_verdicts",
            "Recent verdicts query (100 rows)",
            "PostgresDAL.recent_verdicts",
            SpecClaim(320, 95, 70),
            _recent,
        ),
        QueryPattern(
            "trade_route_analysis",
            "Trade route analysis",
            "PostgresDAL.trade_route_analysis",
            SpecClaim(450, 220, 51),
            _route,
        ),
        QueryPattern(
            "tenant_verdict_history",
            "Tenant verdict history",
            "PostgresDAL.tenant_verdict_history",
            SpecClaim(380, 130, 66),
            _history,
        ),
        QueryPattern(
            "duplicate_assessment",
            "Duplicate assessment detection",
            "PostgresDAL.duplicate_assessment",
            SpecClaim(290, 60, 79),
            _duplicate,
        ),
        QueryPattern(
            "tenant_dashboard",
            "Dashboard load (tenant summary query)",
            "PostgresDAL.tenant_dashboard",
            SpecClaim(2800, 1100, 61),
            _dashboard,
            spec_row=False,
        ),
        QueryPattern(
            "trade_route_report",
            "Report generation (trade route report query)",
            "PostgresDAL.trade_route_report",
            SpecClaim(8500, 3800, 55),
            _report,
            spec_row=False,
        ),
    )
}

#: What one timed call covers, by ``path`` name.
TIMING_PATHS: dict[str, str] = {
    "query": "pool checkout + execute + fetch (tuple rows) of the DAL's SQL",
    "dal": "PostgresDAL.fetch_all: pool checkout + execute + fetch + dict rows + JSON conversion",
}

#: The six operation labels of the spec's "Query Performance" table.
SPEC_LABELS: tuple[str, ...] = tuple(p.label for p in QUERY_PATTERNS.values() if p.spec_row)

_STOP_WORDS = frozenset(
    "other with than whether including thereof from such their them which those this that into being "
    "used parts kind kinds heading headings subheading chapter excluding except mainly solely".split()
)


# ----------------------------------------------------------------------------- validation


def resolve_queries(queries: str | Sequence[str] | None) -> list[str]:
    """``None``/"all" -> every pattern; else a name, comma-separated names or a list, each checked."""
    if queries is None or queries == "all":
        return list(QUERY_PATTERNS)
    if not isinstance(queries, str | list | tuple):
        raise ParameterError("queries", queries, "'all', comma-separated query names or a list of them")
    items = [q.strip() for q in queries.split(",")] if isinstance(queries, str) else list(queries)
    if not items:
        raise ParameterError("queries", queries, "'all' or one or more of " + ", ".join(QUERY_PATTERNS))
    for q in items:
        if q not in QUERY_PATTERNS:
            raise ParameterError("queries", q, "'all' or one or more of " + ", ".join(QUERY_PATTERNS))
    return list(dict.fromkeys(items))


# ----------------------------------------------------------------------------- parameters


def _hs_words() -> tuple[str, ...]:
    words: set[str] = set()
    for row in hs_rows():
        words.update(w for w in re.findall(r"[a-z]{4,}", row.description.lower()) if w not in _STOP_WORDS)
    return tuple(sorted(words))


def load_param_source(conn: psycopg.Connection[Any], sample: int = 2000) -> ParamSource:
    """Read the values parameters are drawn from (a stable sample of verdicts, HS words, rules)."""
    rows = conn.execute(
        """SELECT tenant_id::text, input_hash, export_country, import_country
           FROM psra_verdicts ORDER BY evaluation_id LIMIT %s""",
        (sample,),
    ).fetchall()
    if not rows:
        raise MeasurementError("psra_verdicts is empty; seed the dataset (psra-bench seed) before measuring")
    end = conn.execute("SELECT max(created_at) FROM psra_verdicts").fetchone()
    assert end is not None and end[0] is not None
    rule_pairs = tuple(sorted({(r["agreement_code"], r["hs_chapter"]) for r in rules()}))
    chapters = tuple(sorted({r.code for r in hs_rows() if r.level == 2 and r.code.isdigit()}))
    return ParamSource(
        tenants=tuple(r[0] for r in rows),
        inputs=tuple((r[1], r[0]) for r in rows),
        routes=tuple((r[2], r[3]) for r in rows),
        words=_hs_words(),
        rule_pairs=rule_pairs,
        chapters=chapters,
        data_end=end[0],
    )


def generate_params(name: str, source: ParamSource, count: int, seed: int, slot: int = 0) -> list[Params]:
    """``count`` parameter sets for query ``name``: deterministic in (seed, query, slot), varied across calls."""
    pattern = QUERY_PATTERNS[resolve_queries([name])[0]]
    rng = np.random.default_rng([seed, list(QUERY_PATTERNS).index(name), slot])
    return [pattern.make_params(source, rng) for _ in range(count)]
