"""The history page of the scheduled report runs (``reports/index.html``), with step detection.

Every report run appends one entry to ``reports/history.jsonl``; its ``trend`` holds a few figures
per group (query p50s, cache hit rates, API p95s, users supported). The page draws one plot per
group over the *comparable* runs (same machine key and dataset scale), lists every run, and marks
where a figure changed level for good.

Step detection follows asv (airspeed velocity). The logarithm of a series is fitted by a
piecewise-constant function that minimises the sum, over its segments, of the absolute deviations
from each segment's median (an L1 cost) plus a fixed penalty per segment. The L1 cost makes the
fit robust: a single outlier run costs what it deviates whether or not it has a segment of its own
(with segments of at least two runs), so it never pays for one. The best fit is found exactly by
dynamic programming over segment ends: O(n²) candidate segments, each costed from a sorted list,
fine for a few hundred runs. Adjacent segments whose medians differ by less than ``factor`` are
then merged (the closest pair first), so every boundary left is a reported step. A sustained change
is thus found even when no two consecutive runs differ by ``factor``, while noise around one level
is not. A change in the very last run cannot be a step yet (it needs ``min_size`` runs after it):
the per-run regressions of :mod:`psra_bench.report.assemble` cover that case.
"""

from __future__ import annotations

import base64
import bisect
import html
import io
import math
import os
import tempfile
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psra_bench.exceptions import ParameterError
from psra_bench.measure.format import number
from psra_bench.table import Table

__all__ = [
    "TrendGroup",
    "TREND_GROUPS",
    "Step",
    "detect_steps",
    "comparable_runs",
    "trend_series",
    "write_history_page",
]


@dataclass(frozen=True)
class TrendGroup:
    """How one group of trend figures is shown: its title, unit and which direction is better."""

    title: str
    unit: str
    higher_is_better: bool


#: The groups of a history entry's ``trend`` ({group: {series: value}}), in the order the page shows them.
TREND_GROUPS: Mapping[str, TrendGroup] = {
    "query_p50_ms": TrendGroup("Query latency, p50 per query", "ms", higher_is_better=False),
    "hit_rate": TrendGroup("Cache hit rate per entity", "fraction of lookups", higher_is_better=True),
    "api_p95_ms": TrendGroup("API latency under load, p95 per configuration", "ms", higher_is_better=False),
    "users_supported": TrendGroup(
        "Users supported per configuration (bar: up to the lowest user count that missed the SLO)",
        "users",
        higher_is_better=True,
    ),
}
#: Headline columns of the runs table: (group, series, column title, decimals).
HEADLINES = (
    ("users_supported", "both", "users supported (both)", 0),
    ("api_p95_ms", "both", "API p95 ms (both)", 1),
)
#: Runs up to which every run id is written under the x axis.
MAX_TICK_LABELS = 12


@dataclass(frozen=True)
class Step:
    """A sustained change of level: ``index`` is the first run after it, medians are in the series' unit."""

    index: int
    before: float
    after: float
    ratio: float


# ----------------------------------------------------------------------------- step detection


def _check(values: Sequence[float], factor: float, min_size: int, penalty: float | None) -> np.ndarray:
    """The log of ``values``, after checking every argument (ParameterError naming the bad one)."""
    if not isinstance(factor, int | float) or not math.isfinite(factor) or factor <= 1:
        raise ParameterError("factor", factor, "a finite number greater than 1")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise ParameterError("min_size", min_size, "an integer of at least 1")
    if penalty is not None and (not isinstance(penalty, int | float) or not math.isfinite(penalty) or penalty < 0):
        raise ParameterError("penalty", penalty, "None or a finite number of at least 0")
    logs = []
    for i, v in enumerate(values):
        ok = isinstance(v, int | float | np.number) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        if not ok:
            raise ParameterError(f"values[{i}]", v, "positive finite numbers (the fit is of their logarithm)")
        logs.append(math.log(v))
    return np.asarray(logs, dtype=float)


def _optimal_starts(logs: np.ndarray, min_size: int, penalty: float) -> list[int]:
    """Start index of each segment of the least-cost fit (L1 around medians + penalty per segment)."""
    n = len(logs)
    best = [math.inf] * (n + 1)  # best[e]: least cost of fitting logs[:e]
    best[0] = 0.0
    start = [0] * (n + 1)  # start[e]: where the last segment of that fit begins
    for begin in range(n):
        if math.isinf(best[begin]):
            continue  # logs[:begin] cannot be cut into segments of min_size
        ordered: list[float] = []
        for end in range(begin + 1, n + 1):
            bisect.insort(ordered, float(logs[end - 1]))
            if end - begin < min_size:
                continue
            half = len(ordered) // 2  # sum of |x - median| = sum(upper half) - sum(lower half)
            cost = best[begin] + sum(ordered[len(ordered) - half :]) - sum(ordered[:half]) + penalty
            if cost < best[end]:
                best[end], start[end] = cost, begin
    starts, end = [], n
    while end > 0:
        starts.append(start[end])
        end = start[end]
    return starts[::-1]


def _medians(values: np.ndarray, starts: list[int]) -> list[float]:
    """Median of each segment (segments start at ``starts`` and run to the next start)."""
    ends = starts[1:] + [len(values)]
    return [float(np.median(values[a:b])) for a, b in zip(starts, ends, strict=True)]


def detect_steps(
    values: Sequence[float], *, factor: float = 1.1, min_size: int = 2, penalty: float | None = None
) -> list[Step]:
    """Sustained changes of level by at least ``factor`` (either way), from an exact L1 piecewise-constant fit.

    The default penalty per segment is ``min_size * log(factor)``: a clean change of exactly ``factor``
    with ``min_size`` runs on each side costs that much when left in one segment, so such a change is
    just worth a segment of its own, and anything smaller or shorter is not.
    """
    logs = _check(values, factor, min_size, penalty)
    if len(logs) < 2 * min_size:
        return []
    starts = _optimal_starts(logs, min_size, min_size * math.log(factor) if penalty is None else float(penalty))
    raw = np.asarray(values, dtype=float)
    while len(starts) > 1:  # merge the closest neighbours until every boundary is a change of >= factor
        medians = _medians(raw, starts)
        ratios = [max(b / a, a / b) for a, b in zip(medians, medians[1:], strict=False)]
        closest = int(np.argmin(ratios))
        if ratios[closest] >= factor:
            break
        del starts[closest + 1]
    medians = _medians(raw, starts)
    return [
        Step(index=s, before=medians[k], after=medians[k + 1], ratio=medians[k + 1] / medians[k])
        for k, s in enumerate(starts[1:])
    ]


# ----------------------------------------------------------------------------- history entries


def comparable_runs(
    entries: Sequence[Mapping[str, Any]], machine_key: str, scale: int | None, workload: str | None = None
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(Entries of this machine key, scale and workload fingerprint, the others), in history order (oldest first)."""
    comparable: list[Mapping[str, Any]] = []
    others: list[Mapping[str, Any]] = []
    for entry in entries:
        same = (entry.get("machine_key"), entry.get("scale"), entry.get("workload")) == (machine_key, scale, workload)
        (comparable if same else others).append(entry)
    return comparable, others


def _number(value: Any) -> float:
    """``value`` as a finite float, NaN for anything else (missing, text, bool, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return math.nan
    return float(value)


def _trend(entry: Mapping[str, Any], group: str) -> Mapping[str, Any]:
    """The ``{series: value}`` of ``group`` in one entry (empty in entries older than trends)."""
    trend = entry.get("trend")
    figures = trend.get(group) if isinstance(trend, Mapping) else None
    return figures if isinstance(figures, Mapping) else {}


def trend_series(entries: Sequence[Mapping[str, Any]], group: str) -> dict[str, list[float]]:
    """Per series of ``group`` (in first-seen order), its value in each entry, NaN where it was not measured."""
    names: dict[str, None] = {}
    for entry in entries:
        names.update({str(k): None for k, v in _trend(entry, group).items() if not math.isnan(_number(v))})
    return {name: [_number(_trend(e, group).get(name)) for e in entries] for name in names}


def _series_steps(values: list[float], factor: float) -> list[Step]:
    """Steps of a series with gaps: detected on the runs that have a positive value, indexed by run."""
    runs = [i for i, v in enumerate(values) if v > 0]  # NaN compares False, so gaps drop out
    steps = detect_steps([values[i] for i in runs], factor=factor)
    return [Step(runs[s.index], s.before, s.after, s.ratio) for s in steps]


def _regressions(entry: Mapping[str, Any]) -> list[str]:
    """Names of the items flagged as regressions in one entry."""
    items = entry.get("regressions")
    return [str(i.get("item", i) if isinstance(i, Mapping) else i) for i in items] if isinstance(items, list) else []


# ----------------------------------------------------------------------------- the page


def _minor_tick(value: float, _: object) -> str:
    """Label of a minor tick of a log axis: only the 2s and 5s of each decade, so labels never crowd."""
    mantissa = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
    return f"{value:g}" if round(mantissa) in (2, 5) else ""


#: Trend figures drawn as a bar above their group's points rather than as a group of their own.
BRACKETS: Mapping[str, str] = {"users_supported": "users_supported_high"}


def _plot(
    run_ids: list[str],
    series: dict[str, list[float]],
    steps: dict[str, list[Step]],
    group: TrendGroup,
    regressed: list[int],
    highs: Mapping[str, list[float]] | None = None,
) -> str:
    """One group's trend plot as a PNG data URI (matplotlib's Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(9.5, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(run_ids))
    log = group.unit == "ms" and any(v > 0 for ys in series.values() for v in ys)
    for name, ys in series.items():
        shown = [v if v > 0 or not log else math.nan for v in ys]
        (line,) = ax.plot(x, shown, marker="o", markersize=3, linewidth=1.2, label=name)
        high = (highs or {}).get(name)
        if high is not None:  # the bracket: from the point up to the lowest count that missed the SLO
            ax.vlines(x, shown, high, color=line.get_color(), linewidth=3, alpha=0.35)
        for step in steps.get(name, []):
            ax.axvline(step.index - 0.5, color=line.get_color(), linestyle="--", linewidth=1)
    if regressed:
        ax.plot(
            regressed,
            [0.04] * len(regressed),
            transform=ax.get_xaxis_transform(),
            linestyle="none",
            marker="v",
            markersize=9,
            color="red",
            label="run with regressions",
        )
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 10 rather than 10¹
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_tick))
    ax.set_ylabel(group.unit)
    ax.set_xlim(-0.5, len(run_ids) - 0.5)
    if len(run_ids) <= MAX_TICK_LABELS:
        ax.set_xticks(x, run_ids, rotation=30, ha="right", fontsize=7)
    else:
        ax.set_xlabel("run, oldest to newest (dashed: detected step)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _link(entry: Mapping[str, Any]) -> str:
    """The run id, linked to the run's report when the entry names a relative one (all escaped)."""
    run_id, report = html.escape(str(entry.get("run_id", "?"))), entry.get("report")
    if not isinstance(report, str) or not report or report.startswith("/"):
        return run_id
    parsed = urllib.parse.urlsplit(report)
    if parsed.scheme or parsed.netloc:  # only links inside the reports folder
        return run_id
    href = html.escape(urllib.parse.quote(report, safe="/#"), quote=True)
    return f"<a href='{href}'>{run_id}</a>"


def _scale(scale: Any) -> str:
    """A dataset scale for a sentence."""
    return f"{scale:,} verdicts" if isinstance(scale, int) and not isinstance(scale, bool) else "unknown scale"


_TocEntries = list[tuple[str, str]]


def _highs(comparable: list[Mapping[str, Any]], key: str) -> dict[str, list[float]] | None:
    """The upper ends of ``key``'s brackets per series (None for a group without brackets)."""
    return trend_series(comparable, BRACKETS[key]) if key in BRACKETS else None


def _trend_section(comparable: list[Mapping[str, Any]], factor: float) -> tuple[list[str], _TocEntries]:
    """HTML of the trends section and its (id, title) entries for the table of contents."""
    parts: list[str] = ["<section><h2 id='trends'>Trends</h2>"]
    toc: _TocEntries = []
    if len(comparable) < 2:
        parts.append(f"<p class='note'>Not yet a trend: {len(comparable)} comparable run(s), a trend needs two.</p>")
        return parts + ["</section>"], toc
    run_ids = [str(e.get("run_id", "?")) for e in comparable]
    regressed = [i for i, e in enumerate(comparable) if _regressions(e)]
    for key, group in TREND_GROUPS.items():
        series = trend_series(comparable, key)
        if not series:
            continue
        steps = {name: _series_steps(ys, factor) for name, ys in series.items()}
        anchor, title = f"trend-{key}", f"{group.title} ({group.unit})"
        toc.append((anchor, title))
        better = "higher" if group.higher_is_better else "lower"
        parts.append(f"<h3 id='{html.escape(anchor)}'>{html.escape(title)}</h3>")
        parts.append(
            f"<img alt='{html.escape(f'Trend of {title} over {len(run_ids)} runs')}' "
            f"src='{_plot(run_ids, series, steps, group, regressed, _highs(comparable, key))}'>"
        )
        rows = [
            [
                name,
                run_ids[s.index],
                f"{s.before:.4g} → {s.after:.4g}",
                f"×{s.ratio:.3f}",
                "better" if (s.ratio > 1) == group.higher_is_better else "worse",
            ]
            for name, found in steps.items()
            for s in found
        ]
        if rows:
            table = Table.of(["series", "step starts at run", "median before → after", "ratio", "change"], rows)
            parts.append(table.html(css_class="steps"))
        else:
            parts.append(f"<p class='note'>No step detected ({better} is better).</p>")
    if not toc:
        parts.append("<p class='note'>No trend figures in these runs yet (entries older than trends).</p>")
    return parts + ["</section>"], toc


def _runs_table(comparable: list[Mapping[str, Any]]) -> str:
    """The comparable runs, newest first, with their regressions flagged and headline figures."""
    e = html.escape
    head = ["run", "finished", "mode", "regressions"] + [title for _, _, title, _ in HEADLINES]
    rows = []
    for entry in reversed(comparable):
        flagged = _regressions(entry)
        if flagged:
            names = ", ".join(flagged[:5]) + (", …" if len(flagged) > 5 else "")
            regress = f"<td class='regressed'>⚠ {len(flagged)}: {e(names)}</td>"
        else:
            regress = "<td>0</td>"
        figures = "".join(f"<td>{e(number(_number(_trend(entry, g).get(s)), d))}</td>" for g, s, _, d in HEADLINES)
        mode = "quick" if entry.get("quick") else "full"
        rows.append(
            f"<tr><td>{_link(entry)}</td><td>{e(str(entry.get('finished_at', '–')))}</td>"
            f"<td>{mode}</td>{regress}{figures}</tr>"
        )
    header = "".join(f"<th>{e(h)}</th>" for h in head)
    return f"<table class='runs'><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _others_table(others: list[Mapping[str, Any]]) -> str:
    """The runs of other machines or scales, newest first: listed, never compared."""
    if not others:
        return "<p class='note'>None.</p>"
    e = html.escape
    rows = "".join(
        f"<tr><td>{_link(o)}</td><td>{e(str(o.get('machine_key', '?')))}</td><td>{e(_scale(o.get('scale')))}</td>"
        f"<td>{e(str(o.get('finished_at', '–')))}</td></tr>"
        for o in reversed(others)
    )
    return (
        "<table class='others'><thead><tr><th>run</th><th>machine key</th><th>scale</th><th>finished</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:72em}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;white-space:nowrap}th{background:#f3f3f3}"
    "td.regressed{background:#fde2e2;color:#a00;font-weight:bold;white-space:normal}.note{color:#555}img{max-width:100%}"
)


def write_history_page(
    reports_dir: Path,
    entries: Sequence[Mapping[str, Any]],
    *,
    machine_key: str,
    scale: int | None,
    workload: str | None = None,
    factor: float = 1.1,
) -> Path:
    """Write ``reports_dir/index.html`` (atomically): trends and steps of the comparable runs, every run listed.

    Comparable: the same machine key, dataset scale and workload fingerprint (a run with index advice for a
    workload only trends with runs of that workload)."""
    _check([], factor, 2, None)  # a bad factor fails here, also when there is no trend to fit yet
    e = html.escape
    comparable, others = comparable_runs(entries, machine_key, scale, workload)
    trends, trend_toc = _trend_section(comparable, factor)
    span = f", {e(str(comparable[0].get('run_id')))} to {e(str(comparable[-1].get('run_id')))}" if comparable else ""
    toc = "".join(f"<li><a href='#{e(a)}'>{e(t)}</a></li>" for a, t in trend_toc)
    title = "PSRA report history"
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_CSS}</style></head><body><h1 id='title'>{title}</h1>",
        f"<p id='compared'>Compared: machine key <code>{e(machine_key)}</code>, {e(_scale(scale))}: "
        f"{len(comparable)} comparable run{'' if len(comparable) == 1 else 's'}{span}. A step is a change by at "
        f"least ×{factor:g} sustained over at least two runs on each side; regressions are flagged per run "
        "against the previous comparable run.</p>",
        "<nav><h2 id='contents'>Contents</h2><ul><li><a href='#trends'>Trends</a>"
        f"{f'<ul>{toc}</ul>' if toc else ''}</li><li><a href='#runs'>Comparable runs</a></li>"
        "<li><a href='#other-runs'>Other runs</a></li></ul></nav>",
        *trends,
        f"<section><h2 id='runs'>Comparable runs (newest first)</h2>{_runs_table(comparable)}</section>",
        "<section><h2 id='other-runs'>Other runs (other machine or scale) — listed, not compared</h2>"
        f"{_others_table(others)}</section></body></html>",
    ]
    reports_dir.mkdir(parents=True, exist_ok=True)
    target = reports_dir / "index.html"
    fd, tmp = tempfile.mkstemp(dir=reports_dir, prefix=".index.", suffix=".html.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(parts))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the page is for everyone who reads reports/
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
