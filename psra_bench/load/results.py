"""Reading load-test results: users supported at an SLO, generator flags, the spec's summary table.

:func:`overall_table` turns the per-configuration results of :func:`psra_bench.load.experiment.run_load`
into the rows of the spec's "Overall System Performance" table (API p50/p95/p99, dashboard
load, report generation, concurrent users supported, database CPU, memory), baseline against
the optimized configuration, each latency with its n and every row with the caveats that apply
(a saturated load generator, a lower bound on users supported).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psra_bench.constants import MAX_VERDICTS
from psra_bench.exceptions import ParameterError
from psra_bench.load.open_model import SATURATION_CORES
from psra_bench.load.request_mix import DASHBOARD, REPORT
from psra_bench.results import OverallRow
from psra_bench.table import Table

__all__ = [
    "CONFIGURATIONS",
    "MAX_FAILURE_RATE",
    "SMALL_N",
    "resolve_configurations",
    "check_notebook_params",
    "generator_flags",
    "users_supported",
    "change",
    "overall_table",
    "format_table",
]

#: Configuration name -> (index migration applied, cache enabled).
CONFIGURATIONS: dict[str, tuple[bool, bool]] = {
    "baseline": (False, False),
    "indexes": (True, False),
    "cache": (False, True),
    "both": (True, True),
}
#: A step meets the SLO only with fewer failures than this share of its requests.
MAX_FAILURE_RATE = 0.01
#: Rows whose n is below this on either side carry a "too few requests" note.
SMALL_N = 30


def resolve_configurations(value: str | Sequence[str]) -> list[str]:
    """Configuration names from a list or a comma-separated string ("all" = all four, in order)."""
    from psra_bench.workbench import check_choice

    if isinstance(value, str):
        value = list(CONFIGURATIONS) if value.strip() == "all" else [v.strip() for v in value.split(",") if v.strip()]
    names = check_choice("configurations", list(value), list(CONFIGURATIONS))
    if not names:
        raise ParameterError("configurations", value, "at least one of " + ", ".join(CONFIGURATIONS) + " (or all)")
    if len(set(names)) != len(names):
        raise ParameterError("configurations", value, "each configuration at most once")
    return names


def check_notebook_params(
    *,
    users: Any,
    spawn_rate: Any,
    duration: Any,
    arrival_rate: Any,
    slo_p95_ms: Any,
    configurations: Any,
    verdicts: Any,
    seed: Any,
    quick: Any,
) -> list[str]:
    """Validate notebook 04's parameters before any work starts; return the configuration names."""
    from psra_bench.workbench import check_positive_int, check_positive_number

    check_positive_int("users", users, 100_000)
    for name, value in (
        ("spawn_rate", spawn_rate),
        ("duration", duration),
        ("arrival_rate", arrival_rate),
        ("slo_p95_ms", slo_p95_ms),
    ):
        check_positive_number(name, value)
    check_positive_int("verdicts", verdicts, MAX_VERDICTS)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError("seed", seed, "a whole number >= 0")
    if not isinstance(quick, bool):
        raise ParameterError("quick", quick, "True or False")
    return resolve_configurations(configurations)


def generator_flags(resources: Mapping[str, Any]) -> dict[str, Any]:
    """The load generator's CPU in a window and whether one of its processes was saturated (> 0.9 core)."""
    gen = (resources.get("groups") or {}).get("generator")
    if not gen:
        return {"cpu_cores": None, "busiest_process_cores": None, "saturated": None}
    return {
        "cpu_cores": gen["cpu_cores"],
        "busiest_process_cores": gen["busiest_process_cores"],
        "saturated": gen["busiest_process_cores"] > SATURATION_CORES,
    }


def users_supported(
    steps: Sequence[Mapping[str, Any]], slo_p95_ms: float, max_failure_rate: float = MAX_FAILURE_RATE
) -> dict[str, Any]:
    """The highest user count up to which every step met p95 <= SLO with < ``max_failure_rate`` failures.

    ``steps`` are step summaries (users, overall p95/n/failure_rate, generator flags). When every
    step passed the answer is a lower bound; ``generator_limited`` says the load generator was
    saturated at or before the first failing step (so the limit may be the generator's).
    """
    passed: int | None = None
    limited = False

    def answer(first: int | None, reason: str) -> dict[str, Any]:
        return {
            "users_supported": passed,
            "first_failing_users": first,
            "slo_p95_ms": slo_p95_ms,
            "max_failure_rate": max_failure_rate,
            "reason": reason,
            "generator_limited": limited,
            "lower_bound": first is None,
        }

    for st in sorted(steps, key=lambda s: s["users"]):
        overall = st["overall"]
        limited = limited or bool((st.get("generator") or {}).get("saturated"))
        p95 = overall.get("p95_ms")
        if not overall.get("n") or p95 is None:
            return answer(st["users"], "no successful requests")
        if p95 > slo_p95_ms:
            return answer(st["users"], f"p95 {p95:.1f} ms > SLO {slo_p95_ms:g} ms")
        if overall["failure_rate"] >= max_failure_rate:
            return answer(st["users"], f"failure rate {overall['failure_rate']:.1%} >= {max_failure_rate:.0%}")
        passed = st["users"]
    return answer(None, "every step met the SLO (the true limit is higher)")


def change(before: float | None, after: float | None, better: str) -> tuple[float | None, str | None]:
    """(after - before) / before in percent, and the spec's wording ("48% faster", "140% increase"...)."""
    if before is None or after is None or before == 0:
        return None, None
    pct = (after - before) / before * 100
    if pct == 0:
        return 0.0, "no change"
    if better == "lower":
        word = "faster" if pct < 0 else "slower"
        return pct, f"{abs(pct):.0f}% {word}"
    if better == "less":
        return pct, f"{abs(pct):.0f}% {'reduction' if pct < 0 else 'increase'}"
    return pct, f"{abs(pct):.0f}% {'increase' if pct > 0 else 'decrease'}"


def _get(d: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d or d[key] is None:
            return None
        d = d[key]
    return d


def _pick(results: Mapping[str, Any], preferred: str, fallback: int) -> str:
    return preferred if preferred in results else list(results)[fallback]


def overall_table(
    results: Mapping[str, Mapping[str, Any]], before: str = "baseline", after: str = "both"
) -> list[OverallRow]:
    """The spec's "Overall System Performance" rows, ``before`` (default baseline) vs ``after`` (default both)."""
    if not results:
        return []
    b_name, a_name = _pick(results, before, 0), _pick(results, after, -1)
    b, a = results[b_name], results[a_name]
    rows: list[OverallRow] = []

    def row(
        metric: str,
        path: tuple[Any, ...],
        unit: str,
        better: str,
        n_path: tuple[Any, ...] | None = None,
        note: str = "",
    ) -> None:
        vb, va = _get(b, *path), _get(a, *path)
        pct, text = change(vb, va, better)
        notes = [note] if note else []
        for label, r in ((b_name, b), (a_name, a)):
            if _get(r, "closed", "generator", "saturated") and path[0] == "closed":
                notes.append(f"{label}: load generator saturated (latency includes generator delay)")
        ns = [_get(r, *n_path) for r in (b, a)] if n_path else []
        if any(isinstance(n, int) and n < SMALL_N for n in ns):
            notes.append(f"n < {SMALL_N}: too few requests for a reliable comparison")
        rows.append(
            {
                "metric": metric,
                "unit": unit,
                "before": vb,
                "after": va,
                "change_pct": pct,
                "improvement": text,
                "better": better,
                "before_config": b_name,
                "after_config": a_name,
                "n_before": _get(b, *n_path) if n_path else None,
                "n_after": _get(a, *n_path) if n_path else None,
                "note": "; ".join(notes),
            }
        )

    o = ("closed", "overall")
    for q in ("p50", "p95", "p99"):
        row(f"API Response Time ({q})", (*o, f"{q}_ms"), "ms", "lower", (*o, "n"))
    for label, ep in (("Dashboard Load Time", DASHBOARD), ("Report Generation", REPORT)):
        e = ("closed", "endpoints", ep)
        row(f"{label} (p50)", (*e, "p50_ms"), "ms", "lower", (*e, "n"), note=ep)
        row(f"{label} (p95)", (*e, "p95_ms"), "ms", "lower", (*e, "n"), note=ep)
    us = [_get(r, "users_supported") or {} for r in (b, a)]
    caveats = [
        f"{name}: {u.get('reason')}" + ("; generator saturated" if u.get("generator_limited") else "")
        for name, u in zip((b_name, a_name), us, strict=True)
    ]
    row(
        "Concurrent Users Supported",
        ("users_supported", "users_supported"),
        "users",
        "higher",
        note=f"p95 <= {_get(b, 'users_supported', 'slo_p95_ms')} ms; " + "; ".join(caveats),
    )
    res = ("closed", "resources", "groups")
    row(
        "Database CPU Usage",
        (*res, "postgres", "cpu_pct_of_machine"),
        "% of machine",
        "less",
        note="all PostgreSQL processes of the server, during the headline step",
    )
    row(
        "Database CPU per request",
        ("closed", "cpu_ms_per_request", "postgres"),
        "CPU ms",
        "less",
        (*o, "requests"),
        note="PostgreSQL CPU time / requests served in the headline step",
    )
    row("Memory Usage: API", (*res, "api", "rss_mb_max"), "MB RSS", "less")
    row("Memory Usage: Redis", (*res, "redis", "rss_mb_max"), "MB RSS", "less")
    row(
        "Memory Usage: PostgreSQL",
        (*res, "postgres", "pss_mb_max"),
        "MB PSS",
        "less",
        note="PSS splits shared buffers between processes",
    )
    row("Throughput (closed model)", (*o, "rps"), "req/s", "higher", (*o, "requests"))
    row("Failure rate (closed model)", (*o, "failure_rate"), "share", "less", (*o, "requests"))
    ol = ("open", "latency", "overall")
    row(
        "Open model p99 (from intended start)",
        (*ol, "p99_ms"),
        "ms",
        "lower",
        (*ol, "n"),
        note=f"arrival rate {_get(b, 'open', 'target_rps')}/s; late/dropped counted separately",
    )
    row("Open model late arrivals", ("open", "late_fraction"), "share", "less", ("open", "measured_arrivals"))
    row("Open model dropped arrivals", ("open", "drop_fraction"), "share", "less", ("open", "scheduled"))
    return rows


def _cell(value: Any, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "share":
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.2f}"
    return f"{value:,}"


def _n(row: Mapping[str, Any]) -> str:
    if row["n_before"] is None and row["n_after"] is None:
        return ""
    return "/".join("–" if v is None else f"{v:,}" for v in (row["n_before"], row["n_after"]))


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as aligned text: metric, before, after, change, n before/after, unit."""
    if not rows:
        return "(no configurations were run)"
    head = ("metric", rows[0]["before_config"], rows[0]["after_config"], "change", "n", "unit")
    body = [
        (
            r["metric"],
            _cell(r["before"], r["unit"]),
            _cell(r["after"], r["unit"]),
            r["improvement"] or "–",
            _n(r),
            r["unit"],
        )
        for r in rows
    ]
    return Table.of(head, body).text()
