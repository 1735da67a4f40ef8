"""Assemble the performance report from the notebooks' result files, and keep the run history.

``assemble_report(run_dir, ...)`` reads ``01_query_latency.json`` … ``04_load_test.json`` (each
written by its notebook in this run), builds the tables — shaped like the spec's, with the
spec's claimed figures beside ours — and writes ``report.md``, a self-contained
``report.html`` (plots embedded) and, last and atomically, ``results.json``; with
``06_index_advice.json`` (a run given a workload) the section "Index advice for your workload"
too. Its headline figures go to ``history.jsonl``; the previous comparable run (same machine
key, same scale, same workload fingerprint — or no workload) is compared sample-by-sample,
and slowdowns that pass the factor and significance gates are flagged as regressions. The
report opens with a summary and recommendations (:mod:`psra_bench.report.summary`), and every
run regenerates ``reports/index.html``, the trend page over the comparable runs
(:mod:`psra_bench.report.history`).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from psra_bench.exceptions import MeasurementError
from psra_bench.measure.format import ms, p_text, times
from psra_bench.measure.stats import compare_to_previous
from psra_bench.report.history import write_history_page
from psra_bench.report.sections import (
    SECTION_BUILDERS,
    SECTION_HEADLINES,
    advice_result,
    synthetic_vs_trace_table,
    workload_fingerprint,
)
from psra_bench.report.summary import findings, recommendations
from psra_bench.results import LatencySummary, Sections
from psra_bench.table import Table
from psra_bench.workbench import check_writable_dir, load_results, save_results

__all__ = [
    "assemble_report",
    "headline_figures",
    "append_history",
    "read_history",
    "previous_comparable",
    "find_regressions",
    "render_markdown",
    "render_html",
    "trend_figures",
    "read_sections",
    "Report",
]

SECTION_FILES: tuple[tuple[str, str], ...] = (
    ("query_latency", "01_query_latency"),
    ("cache", "02_cache_hit_rates"),
    ("ttl", "03_ttl_tuning"),
    ("ttl_trace", "trace/03_ttl_tuning"),  # notebook 03 on the team's own trace (report --trace)
    ("load", "04_load_test"),
    ("replay", "04_load_replay"),  # a recorded log replayed in the load section (report --from-log)
    ("advice", "06_index_advice"),
)


@dataclass
class Report:
    """A report in memory: metadata, tables per section, images, regressions."""

    run_id: str
    title: str
    meta: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    regressions: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The opening: one-sentence findings, then recommendations ("do") and what could not be decided ("open").
    findings: list[str] = field(default_factory=list)
    recommendations: dict[str, list[str]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- history


def headline_figures(sections: Sections) -> dict[str, LatencySummary]:
    """The figures a later run compares against: per measured item, its stats dict with samples."""
    out: dict[str, LatencySummary] = {}
    for name, section in sections.items():
        if name in SECTION_HEADLINES:
            for key, stats in SECTION_HEADLINES[name](section).items():
                out[f"{name}.{key}"] = stats
    return out


def read_sections(run_dir: Path) -> Sections:
    """The section results the notebooks saved in ``run_dir`` (``01_query_latency.json`` …), typed once here."""
    found = {name: load_results(run_dir, stem) for name, stem in SECTION_FILES}
    return cast(Sections, {name: section for name, section in found.items() if section is not None})


def read_history(path: Path) -> list[dict[str, Any]]:
    """Entries of ``history.jsonl``; a damaged line (an interrupted write) is skipped."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("complete"):
            entries.append(entry)
    return entries


def append_history(path: Path, entry: Mapping[str, Any]) -> None:
    """Append one run's entry as a single line (written in one call, flushed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({**entry, "complete": True}, sort_keys=True, default=str) + "\n"
    with open(path, "a") as fh:
        fh.write(line)
        fh.flush()


def previous_comparable(
    history: Sequence[Mapping[str, Any]],
    machine_key: str,
    scale: Any,
    exclude_run: str | None = None,
    workload: str | None = None,
) -> Mapping[str, Any] | None:
    """The latest earlier entry with the same machine key, dataset scale and workload fingerprint (None: none)."""
    for entry in reversed(history):
        if entry.get("run_id") == exclude_run:
            continue
        same = entry.get("machine_key") == machine_key and entry.get("scale") == scale
        if same and entry.get("workload") == workload:
            return entry
    return None


def find_regressions(
    previous: Mapping[str, Any], current: Mapping[str, Any], *, factor: float = 1.1, alpha: float = 0.05
) -> list[dict[str, Any]]:
    """Items measured in both runs whose latency got slower beyond ``factor`` with p < ``alpha``."""
    out = []
    for key, new in current.items():
        old = previous.get(key)
        if not isinstance(old, Mapping) or not isinstance(new, Mapping):
            continue
        try:
            decision = compare_to_previous(old, new, factor, alpha)
        except Exception:  # noqa: BLE001 - an unusable old entry is reported, not fatal
            continue
        if decision.is_regression:
            out.append(
                {
                    "item": key,
                    "previous_p50_ms": old.get("p50"),
                    "current_p50_ms": new.get("p50"),
                    "slowdown": round(1 / decision.speedup, 3) if decision.speedup else None,
                    "p_value": decision.p_value,
                }
            )
    return out


# ----------------------------------------------------------------------------- rendering


_REGRESSION_COLUMNS = ["item", "previous p50 ms", "current p50 ms", "slowdown", "p"]


def _regression_rows(report: Report) -> list[list[Any]]:
    return [
        [r["item"], ms(r["previous_p50_ms"]), ms(r["current_p50_ms"]), times(r["slowdown"]), p_text(r["p_value"])]
        for r in report.regressions
    ]


#: (section, start of a table's title) -> the plot shown beside that table (PNG stem in the run folder).
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("Query performance", "Query latency", "01_query_latency_p50"),
    ("Query performance", "Write cost", "01_query_latency_write_cost"),
    ("Query performance", "Index count", "01_query_latency_rounds"),
    ("Index audit", "Index audit", "01_query_latency_indexes"),
    ("Index audit", "Three index sets", "01_query_latency_three_way"),
    ("Cache hit rates", "Cache Hit Rates", "02_cache_hit_rates_hit_rates"),
    ("Cache hit rates", "TTL simulation vs live", "02_cache_hit_rates_latency"),
    ("TTL tuning", "Recommended TTL", "03_ttl_tuning_hit_rate"),
    ("TTL tuning", "TTL simulation vs live", "03_ttl_tuning_sim_vs_live"),
    ("TTL tuning", "Hit rate and stale share", "03_ttl_tuning_staleness"),
    ("Overall system", "Overall system", "04_load_test_latency"),
    ("Overall system", "Per configuration", "04_load_test_endpoints"),
    ("Load from your recorded traffic", "Request rate", "04_load_replay_rates"),
    ("Overall system", "Step load", "04_load_test_steps"),
)


def _figure_of(table: Table, images: Mapping[str, Path]) -> Path | None:
    for section, title, stem in FIGURES:
        if table.section.startswith(section) and table.title.startswith(title) and stem in images:
            return images[stem]
    return None


def _anchor(text: str) -> str:
    """An id for a heading: lower-case words joined by '-'."""
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split()) or "section"


def _layout(report: Report) -> tuple[list[tuple[str, list[tuple[Table, Path | None]]]], list[Path]]:
    """Tables grouped by section, each with the plot beside it; the plots no table claimed."""
    images = {p.stem: p for p in report.images}
    used: set[Path] = set()
    sections: list[tuple[str, list[tuple[Table, Path | None]]]] = []
    for t in report.tables:
        if not sections or sections[-1][0] != t.section:
            sections.append((t.section, []))
        fig = _figure_of(t, images)
        if fig is not None:
            used.add(fig)
        sections[-1][1].append((t, fig))
    return sections, [p for p in report.images if p not in used]


def _opening_markdown(report: Report) -> list[str]:
    lines = ["## Summary", ""] + [f"- {f}" for f in report.findings] + [""]
    lines += ["## Recommendations", ""]
    lines += [f"- {r}" for r in report.recommendations.get("do", [])] or ["- Nothing to change on this run's evidence."]
    if report.recommendations.get("open"):
        lines += ["", "**Could not decide**", ""] + [f"- {r}" for r in report.recommendations["open"]]
    return lines + [""]


def render_markdown(report: Report) -> str:
    """The report as Markdown: summary and recommendations first, then each section's tables and plots."""
    lines = [f"# {report.title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in report.meta.items()]
    lines.append("")
    lines += _opening_markdown(report)
    if report.regressions:
        lines += ["## Regressions against the previous comparable run", ""]
        lines.append(Table(_REGRESSION_COLUMNS, _regression_rows(report)).markdown())
    sections, loose = _layout(report)
    for section, pairs in sections:
        lines += [f"## {section}", ""]
        for t, fig in pairs:
            lines.append(t.markdown())
            if fig is not None:
                lines += [f"![{fig.stem}]({fig.name})", ""]
    if loose:
        lines += ["## More plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in loose]
        lines.append("")
    if report.notes:
        lines += ["## Method and caveats", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1500px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}caption{text-align:left;font-weight:bold}
.note{color:#555;font-size:.9em}.regression{background:#fde2e2}img{max-width:100%;border:1px solid #eee}
.pair{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}.pair>div{flex:1 1 560px;overflow-x:auto}
.pair>figure{flex:1 1 480px;margin:0}.pair.wide>div{flex-basis:100%}.pair.wide>figure{max-width:900px}
nav.toc{background:#f7f7f7;padding:.5em 1em;border:1px solid #ddd}
.summary li{margin:.3em 0}"""


def _img(p: Path) -> str:
    e = html.escape
    data = base64.b64encode(p.read_bytes()).decode()
    return (
        f"<figure><img alt='{e(p.stem)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{e(p.stem)}</figcaption></figure>"
    )


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page: a table of contents, the summary first, plots beside tables."""
    e = html.escape
    sections, loose = _layout(report)
    toc = [("summary", "Summary"), ("recommendations", "Recommendations")]
    if report.regressions:
        toc.append(("regressions", "Regressions"))
    toc += [(_anchor(name), name) for name, _ in sections]
    if loose:
        toc.append(("more-plots", "More plots"))
    if report.notes:
        toc.append(("method", "Method and caveats"))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(report.title)}</title>"
        f"<style>{_CSS}</style></head><body><h1 id='top'>{e(report.title)}</h1><ul>"
    ]
    parts += [f"<li><b>{e(str(k))}</b>: {e(str(v))}</li>" for k, v in report.meta.items()]
    parts.append("</ul><nav class='toc'><b>Contents</b><ol>")
    parts += [f"<li><a href='#{a}'>{e(t)}</a></li>" for a, t in toc]
    parts.append("</ol></nav>")
    parts.append("<h2 id='summary'>Summary</h2><ul class='summary'>")
    parts += [f"<li>{e(f)}</li>" for f in report.findings]
    parts.append("</ul><h2 id='recommendations'>Recommendations</h2><ul class='summary'>")
    todo = report.recommendations.get("do") or ["Nothing to change on this run's evidence."]
    parts += [f"<li>{e(r)}</li>" for r in todo]
    parts.append("</ul>")
    if report.recommendations.get("open"):
        parts.append("<h3 id='could-not-decide'>Could not decide</h3><ul class='summary'>")
        parts += [f"<li>{e(r)}</li>" for r in report.recommendations["open"]]
        parts.append("</ul>")
    if report.regressions:
        parts.append("<h2 id='regressions'>Regressions against the previous comparable run</h2>")
        parts.append(Table(_REGRESSION_COLUMNS, _regression_rows(report)).html(css_class="regression"))
    for name, pairs in sections:
        parts.append(f"<h2 id='{_anchor(name)}'>{e(name)}</h2>")
        for t, fig in pairs:
            if fig is None:
                parts.append(t.html())
            else:
                wide = " wide" if len(t.columns) > 8 else ""  # a wide table keeps its width: the plot goes under it
                parts.append(f"<div class='pair{wide}'><div>{t.html()}</div>{_img(fig)}</div>")
    if loose:
        parts.append("<h2 id='more-plots'>More plots</h2>")
        parts += [_img(p) for p in loose]
    if report.notes:
        parts.append("<h2 id='method'>Method and caveats</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in report.notes))
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- assembly


def assemble_report(
    run_dir: str | Path,
    run_id: str,
    *,
    reports_dir: str | Path | None = None,
    quick: bool = False,
    factor: float = 1.1,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Build report.md, report.html and results.json in ``run_dir``; update the history; return results."""
    run_dir = check_writable_dir("output_dir", run_dir)
    history_path = check_writable_dir("reports_dir", reports_dir or run_dir.parent) / "history.jsonl"
    (run_dir / "results.json").unlink(missing_ok=True)  # never leave an older results.json to be trusted
    present = read_sections(run_dir)
    if not present:
        raise MeasurementError(f"no section results (01…04, 06 *.json) in {run_dir}: run the notebooks first")
    fingerprints = _fingerprints(present)
    fingerprint = fingerprints[0] if fingerprints else {}
    machine_key = fingerprint.get("machine_key", "unknown")
    datasets = [f["dataset"] for f in fingerprints if isinstance(f.get("dataset"), dict)]
    scale = datasets[0].get("verdicts") if datasets else None
    headline = headline_figures(present)
    workload = workload_fingerprint(present)
    history = read_history(history_path)
    previous = previous_comparable(history, machine_key, scale, exclude_run=run_id, workload=workload)
    regressions = (
        find_regressions(previous.get("headline", {}), headline, factor=factor, alpha=alpha) if previous else []
    )

    report = Report(
        run_id=run_id,
        title=f"PSRA performance report — run {run_id}",
        meta={
            "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "mode": "quick" if quick else "full",
            "dataset": f"{scale:,} verdicts" if isinstance(scale, int) else "n/a",
            "machine key": machine_key,
            "workload": workload or "none (no index advice)",
            "compared with": previous["run_id"] if previous else "no earlier comparable run",
            "regressions": len(regressions),
            "sections": ", ".join(present),
        },
        regressions=regressions,
    )
    for name, section in present.items():
        if name == "ttl_trace" and "ttl" in present:  # synthetic vs your trace, side by side, first
            report.tables.append(synthetic_vs_trace_table(present["ttl"], present["ttl_trace"]))
        tables, notes = SECTION_BUILDERS[name](section)
        report.tables += tables
        report.notes += notes
    compared = len(set(headline) & set(previous.get("headline", {}))) if previous else 0
    report.findings = findings(
        present, regressions=regressions, previous_run=previous["run_id"] if previous else None, compared_items=compared
    )
    report.recommendations = recommendations(present)
    report.images = sorted(p for p in run_dir.glob("0[1-4]_*.png"))
    (run_dir / "report.md").write_text(render_markdown(report))
    (run_dir / "report.html").write_text(render_html(report))
    results = {
        "run_id": run_id,
        "complete": True,
        "quick": quick,
        "machine_key": machine_key,
        "scale": scale,
        "workload": workload,
        "fingerprint": fingerprint,
        "sections": present,
        "headline": headline,
        "previous_run": previous["run_id"] if previous else None,
        "regressions": regressions,
        "summary": {"findings": report.findings, "recommendations": report.recommendations},
        "tables": [t.to_dict() for t in report.tables],
    }
    save_results(run_dir, "results", results)
    append_history(
        history_path,
        {
            "run_id": run_id,
            "machine_key": machine_key,
            "scale": scale,
            "workload": workload,
            "quick": quick,
            "finished_at": dt.datetime.now(dt.UTC).isoformat(),
            "headline": headline,
            "trend": trend_figures(present),
            "regressions": [r["item"] for r in regressions],
            "report": _relative_report(run_dir, history_path.parent),
        },
    )
    write_history_page(
        history_path.parent, read_history(history_path), machine_key=machine_key, scale=scale, workload=workload
    )
    return results


def _fingerprints(sections: Sections) -> list[dict[str, Any]]:
    """The environment fingerprints of the sections that ran, in section order."""
    found = [
        sections["query_latency"]["fingerprint"] if "query_latency" in sections else None,
        sections["cache"]["fingerprint"] if "cache" in sections else None,
        sections["ttl"]["fingerprint"] if "ttl" in sections else None,
        sections["load"]["fingerprint"] if "load" in sections else None,
    ]
    advice = advice_result(sections)
    found.append(advice["fingerprint"] if advice is not None else None)
    return [f for f in found if f]


def trend_figures(sections: Sections) -> dict[str, dict[str, float]]:
    """The scalars the history page plots per run: query p50s (spec set), hit rates, API p95s, users supported."""
    out: dict[str, dict[str, float]] = {}
    if "query_latency" in sections and sections["query_latency"]["queries"]:
        out["query_p50_ms"] = {k: v["after"]["p50"] for k, v in sections["query_latency"]["queries"].items()}
    if "cache" in sections:
        rates = {k: e["hit_rate"] for k, e in sections["cache"]["live"]["entities"].items()}
        if rates:
            out["hit_rate"] = {k: r for k, r in rates.items() if r is not None}
    if "load" in sections:
        configs = sections["load"]["configurations"]
        p95 = {k: c["closed"]["overall"].get("p95_ms") if c["closed"] else None for k, c in configs.items()}
        users = {k: c["users_supported"]["users_supported"] for k, c in configs.items()}
        if any(v is not None for v in p95.values()):
            out["api_p95_ms"] = {k: float(v) for k, v in p95.items() if v is not None}
        if any(v is not None for v in users.values()):
            out["users_supported"] = {k: float(v) for k, v in users.items() if v is not None}
            highs = {k: c["users_supported"]["first_failing_users"] for k, c in configs.items()}
            out["users_supported_high"] = {k: float(v) for k, v in highs.items() if v is not None}
    return out


def _relative_report(run_dir: Path, reports_dir: Path) -> str | None:
    """``<run-id>/report.html`` relative to the reports folder (None when the run folder lies elsewhere)."""
    try:
        return (run_dir.resolve() / "report.html").relative_to(reports_dir.resolve()).as_posix()
    except ValueError:
        return None
