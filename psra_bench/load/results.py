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

from psra_bench.exceptions import ParameterError
from psra_bench.load.open_model import SATURATION_CORES
from psra_bench.load.request_mix import DASHBOARD, REPORT
from psra_bench.measure.format import DASH, ms, number, percent
from psra_bench.results import (
    Capacity,
    CapacityStep,
    GeneratorFlags,
    LoadStep,
    LoadTestResult,
    OverallRow,
    UsersSupported,
)
from psra_bench.table import Table

__all__ = [
    "CONFIGURATIONS",
    "MAX_FAILURE_RATE",
    "SMALL_N",
    "resolve_configurations",
    "generator_flags",
    "users_supported",
    "change",
    "overall_table",
    "format_table",
    "OVERALL_CLAIMS",
    "overall_system_table",
    "configuration_table",
    "step_table",
    "capacity_table",
    "CAPACITY_COLUMNS",
    "capacity_bracket",
    "capacity_row",
    "capacity_note",
    "load_result_tables",
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
    if isinstance(value, str):
        value = list(CONFIGURATIONS) if value.strip() == "all" else [v.strip() for v in value.split(",") if v.strip()]
    names = list(value)
    for name in names:
        if name not in CONFIGURATIONS:
            raise ParameterError("configurations", name, "one of " + ", ".join(CONFIGURATIONS))
    if not names:
        raise ParameterError("configurations", value, "at least one of " + ", ".join(CONFIGURATIONS) + " (or all)")
    if len(set(names)) != len(names):
        raise ParameterError("configurations", value, "each configuration at most once")
    return names


def generator_flags(resources: Mapping[str, Any]) -> GeneratorFlags:
    """The load generator's CPU in a window and whether one of its processes was saturated (> 0.9 core)."""
    groups: Mapping[str, Any] = resources.get("groups") or {}
    gen = groups.get("generator")
    if not gen:
        return {"cpu_cores": None, "busiest_process_cores": None, "saturated": None}
    return {
        "cpu_cores": gen["cpu_cores"],
        "busiest_process_cores": gen["busiest_process_cores"],
        "saturated": gen["busiest_process_cores"] > SATURATION_CORES,
    }


def users_supported(
    steps: Sequence[Mapping[str, Any]], slo_p95_ms: float, max_failure_rate: float = MAX_FAILURE_RATE
) -> UsersSupported:
    """The highest user count up to which every step met p95 <= SLO with < ``max_failure_rate`` failures.

    ``steps`` are step summaries (users, overall p95/n/failure_rate, generator flags). When every
    step passed the answer is a lower bound; ``generator_limited`` says the load generator was
    saturated at or before the first failing step (so the limit may be the generator's).
    """
    passed: int | None = None
    limited = False

    def answer(first: int | None, reason: str) -> UsersSupported:
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
        flags: Mapping[str, Any] = st.get("generator") or {}
        limited = limited or bool(flags.get("saturated"))
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
        note=f"p95 <= {_get(b, 'users_supported', 'slo_p95_ms')} ms; the highest user count that met it below the "
        "lowest that did not (a capacity search narrows that bracket to 10 %); " + "; ".join(caveats),
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


def _cell(value: float | None, unit: str) -> str:
    """A measured value of an overall row in its unit: shares as percentages, ms by the ms rule, else a number."""
    if value is None:
        return DASH
    if unit == "share":
        return percent(value, 2)
    if unit == "ms":
        return ms(value)
    return number(value, 1 if isinstance(value, float) and abs(value) >= 100 else 2)


def _n(row: Mapping[str, Any]) -> str:
    if row["n_before"] is None and row["n_after"] is None:
        return ""
    return "/".join("–" if v is None else f"{v:,}" for v in (row["n_before"], row["n_after"]))


def format_table(rows: Sequence[OverallRow]) -> str:
    """The overall rows as aligned text (what :func:`overall_system_table` shows, without the spec claims)."""
    if not rows:
        return "(no configurations were run)"
    return _overall(rows, claims=False).text()


#: The spec's "Overall System Performance" claims (before → after), shown beside the measured rows.
OVERALL_CLAIMS: dict[str, str] = {
    "API Response Time (p50)": "280 → 145 ms",
    "API Response Time (p95)": "850 → 380 ms",
    "API Response Time (p99)": "1,450 → 620 ms",
    "Dashboard Load Time (p50)": "2.8 → 1.1 s (page)",
    "Report Generation (p50)": "8.5 → 3.8 s (report)",
    "Concurrent Users Supported": "50 → 120",
    "Database CPU Usage": "65 % → 38 %",
    "Memory Usage": "stable → stable",
}


def _with_unit(value: float | None, unit: str) -> str:
    text = _cell(value, unit)
    return text if text == DASH or unit == "share" else f"{text} {unit}"


def _overall(rows: Sequence[OverallRow], *, claims: bool = True) -> Table:
    body = [
        [
            r["metric"],
            *([OVERALL_CLAIMS.get(r["metric"], DASH)] if claims else []),
            _with_unit(r["before"], r["unit"]),
            _with_unit(r["after"], r["unit"]),
            r["improvement"] or DASH,
            _n(r) or DASH,
            f"{r['before_config']} → {r['after_config']}",
            r["note"],
        ]
        for r in rows
    ]
    columns = ["metric", *(["spec claim"] if claims else []), "measured before", "measured after", "change",
               "n before/after", "configurations", "note"]  # fmt: skip
    return Table(
        columns,
        body,
        title="Overall system performance (spec claim vs measured)" if claims else "Overall system performance",
        note="Latencies from µs-resolution HdrHistograms of every request; n = requests in the measured window.",
    )


def overall_system_table(doc: LoadTestResult) -> Table:
    """The spec's Overall System Performance table, measured: claim, before, after, change, n, configurations."""
    return _overall(doc["table"])


def _users(us: UsersSupported) -> str:
    """Users supported with its bracket: "146 (146–160)", "160+" when every step met the SLO."""
    low, high = us["users_supported"], us["first_failing_users"]
    if us["lower_bound"]:
        return f"{number(low)}+"
    return f"{number(low)} ({number(low)}–{number(high)})" if low is not None else f"< {number(high)}"


def _ci(step: CapacityStep | None) -> str:
    if step is None or step["p95_ms"] is None:
        return DASH
    ci = step["p95_ci_ms"]
    return f"{ms(step['p95_ms'])} [{ms(ci[0])}–{ms(ci[1])}], n = {number(step['n'])}" if ci else ms(step["p95_ms"])


#: The columns of a capacity row (:func:`capacity_row`) after the row's name.
CAPACITY_COLUMNS = ["users supported (bracket)", "within 10 %", "low end confirmed", "p95 ms at the low end [95% CI]",
                    "p95 ms at the high end [95% CI]", "steps (✓ met the SLO)"]  # fmt: skip


def capacity_bracket(cap: Capacity) -> str:
    """Users supported as its bracket: "low–high", or "low+" when every step met the SLO."""
    return f"{number(cap['low'])}–{number(cap['high'])}" if cap["high"] is not None else f"{number(cap['low'])}+"


def capacity_row(cap: Capacity) -> list[str]:
    """A capacity search as cells: its bracket, within 10 % and confirmed or not, its ends' p95s, its path."""
    last = {s["users"]: s for s in cap["steps"]}  # each user count's latest look
    path = ", ".join(f"{s['users']}{'✓' if s['passed'] else '✗'}" for s in cap["steps"])
    return [capacity_bracket(cap), "yes" if cap["within_bracket"] else "no", "yes" if cap["confirmed"] else "no",
            _ci(last.get(cap["low"]) if cap["low"] is not None else None),
            _ci(last.get(cap["high"]) if cap["high"] is not None else None), path]  # fmt: skip


def capacity_note(slo: float | None, short: float | None) -> str:
    """How a capacity search works, for a table's note."""
    return (
        f"Capacity search (psra_bench.load.capacity): the doubling grid until a step misses p95 ≤ {slo:g} ms "
        "(or fails ≥ 1 % of its requests), then bisection until the bracket is within 10 %, then the low end "
        "measured again; an open-model row searches arrival rates instead of users (a step passes with ≤ 1 % "
        "of its arrivals late or dropped). p95 CIs are distribution-free (order statistics of the step's histogram)."
        + (
            f" Grid steps other than the headline are measured {short:g} s (n about half), the rest in full."
            if short
            else ""
        )
    )


def capacity_table(doc: LoadTestResult) -> Table | None:
    """One row per configuration whose step load was a capacity search: the bracket and the steps that set it."""
    searched = [(name, c.get("capacity")) for name, c in doc["configurations"].items()]
    searched += [
        (f"{name}, open model (req/s)", c["open"].get("capacity")) for name, c in doc["configurations"].items()
    ]
    rows = [[name, *capacity_row(cap)] for name, cap in searched if cap]
    if not rows:
        return None
    note = capacity_note(doc["parameters"].get("slo_p95_ms"), doc["parameters"].get("short_step_s"))
    return Table(
        ["configuration", *CAPACITY_COLUMNS],
        rows,
        title="Users supported: the capacity search per configuration",
        note=note,
    )


def configuration_table(doc: LoadTestResult) -> Table | None:
    """One row per configuration: the headline step's latency and throughput, users supported, the open model."""
    rows = []
    for name, c in doc["configurations"].items():
        closed: LoadStep | None = c["closed"]
        o = closed["overall"] if closed else {}
        op = c["open"]
        open_overall = op["latency"]["overall"] if "latency" in op else {}
        rows.append(
            [
                name,
                number(o.get("n")),
                ms(o.get("p50_ms")),
                ms(o.get("p95_ms")),
                ms(o.get("p99_ms")),
                ms(o.get("stdev_ms")),
                number(o.get("rps"), 1),
                number(o.get("failure_rate"), 3),
                _users(c["users_supported"]),
                ms(open_overall.get("p99_ms")),
                f"{op.get('late', DASH)}/{op.get('dropped', DASH)}",
            ]
        )
    if not rows:
        return None
    columns = ["configuration", "n", "p50 ms", "p95 ms", "p99 ms", "stdev ms", "RPS", "failure rate",
               "users supported", "open-model p99 ms", "late/dropped"]  # fmt: skip
    note = (
        "'+' = every step met the SLO, so the true limit is higher. Open-model latency is measured from each "
        "request's intended start (coordinated omission shows)."
    )
    return Table(columns, rows, title="Per configuration (closed model at the headline user count)", note=note)


_GROUP_NAMES = {"api": "the API", "postgres": "PostgreSQL", "redis": "Redis"}


def _limit(step: LoadStep, cores: Mapping[str, float | None], slo: float | None) -> str:
    """Who limits a step: a saturated generator, or (past the SLO) the system under test and its busiest part."""
    gen = step.get("generator")
    if gen is not None and gen["saturated"]:
        return "generator (saturated)"
    p95 = step["overall"].get("p95_ms")
    if slo is None or p95 is None or p95 <= slo:
        return DASH
    known = {g: c for g, c in cores.items() if c is not None}
    busiest = _GROUP_NAMES.get(max(known, key=lambda g: known[g]), "") if known else ""
    return f"system under test (p95 > {slo:g} ms)" + (f"; busiest: {busiest}" if busiest else "")


def _step_row(name: str, step: LoadStep, slo: float | None) -> list[Any]:
    o = step["overall"]
    resources = step.get("resources")
    groups: Mapping[str, Mapping[str, Any]] = resources["groups"] if resources else {}
    cores = {g: groups[g].get("cpu_cores") if g in groups else None for g in _GROUP_NAMES}
    gen = step.get("generator")
    return [
        name, step["users"], number(o.get("n")), ms(o.get("p95_ms")), number(o.get("rps"), 1),
        number(o.get("failure_rate"), 3), number(cores["api"]), number(cores["postgres"]),
        number(gen["busiest_process_cores"] if gen else None), _limit(step, cores, slo),
    ]  # fmt: skip


def step_table(doc: LoadTestResult) -> Table | None:
    """One row per configuration and step: latency, throughput, CPU of the API, PostgreSQL, the generator; the limit."""
    slo = doc["parameters"].get("slo_p95_ms")
    rows = [_step_row(name, st, slo) for name, c in doc["configurations"].items() for st in c["steps"]]
    if not rows:
        return None
    columns = ["configuration", "users", "n", "p95 ms", "RPS", "failure rate", "API cores", "PostgreSQL cores",
               "generator cores", "limited by"]  # fmt: skip
    note = (
        "CPU in cores (CPU seconds / window seconds) over each step's measured window. 'generator cores' is the "
        "busiest Locust process: above 0.9 of a core it is saturated, and then the step's latency includes the "
        "generator's own delay."
    )
    title = "Step load: who limits (CPU of the API, PostgreSQL and the load generator per step)"
    return Table(columns, rows, title=title, note=note)


def load_result_tables(doc: LoadTestResult) -> list[Table]:
    """Every table of a load test, in the report's order: overall, per configuration, per step."""
    tables = [overall_system_table(doc), configuration_table(doc), capacity_table(doc), step_table(doc)]
    return [t for t in tables if t is not None]
