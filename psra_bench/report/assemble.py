"""Assemble the performance report from the notebooks' result files, and keep the run history.

``assemble_report(run_dir, ...)`` reads ``01_query_latency.json`` … ``04_load_test.json`` (each
written by its notebook in this run), builds the tables — shaped like the spec's, with the
spec's claimed figures beside ours — and writes ``report.md``, a self-contained
``report.html`` (plots embedded) and, last and atomically, ``results.json``. Its headline
figures go to ``history.jsonl``; the previous comparable run (same machine key, same scale)
is compared sample-by-sample, and slowdowns that pass the factor and significance gates are
flagged as regressions.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psra_bench.exceptions import MeasurementError
from psra_bench.measure.stats import compare_to_previous
from psra_bench.report.sections import SECTION_BUILDERS, fmt
from psra_bench.table import Table
from psra_bench.workbench import load_results, save_results

__all__ = [
    "assemble_report",
    "headline_figures",
    "append_history",
    "read_history",
    "previous_comparable",
    "find_regressions",
    "render_markdown",
    "render_html",
    "Report",
]

SECTION_FILES: tuple[tuple[str, str], ...] = (
    ("query_latency", "01_query_latency"),
    ("cache", "02_cache_hit_rates"),
    ("ttl", "03_ttl_tuning"),
    ("load", "04_load_test"),
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


# ----------------------------------------------------------------------------- history


def headline_figures(sections: Mapping[str, Any]) -> dict[str, Any]:
    """The figures a later run compares against: per measured item, its stats dict with samples."""
    from psra_bench.report.sections import SECTION_HEADLINES

    out: dict[str, Any] = {}
    for name, section in sections.items():
        if section is not None and name in SECTION_HEADLINES:
            for key, stats in SECTION_HEADLINES[name](section).items():
                out[f"{name}.{key}"] = stats
    return out


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
    history: Sequence[Mapping[str, Any]], machine_key: str, scale: Any, exclude_run: str | None = None
) -> Mapping[str, Any] | None:
    """The latest earlier entry with the same machine key and dataset scale."""
    for entry in reversed(history):
        if entry.get("run_id") == exclude_run:
            continue
        if entry.get("machine_key") == machine_key and entry.get("scale") == scale:
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


_REGRESSION_COLUMNS = ["item", "previous p50 ms", "current p50 ms", "slowdown ×", "p"]


def _regression_rows(report: Report) -> list[list[Any]]:
    return [
        [r["item"], fmt(r["previous_p50_ms"]), fmt(r["current_p50_ms"]), fmt(r["slowdown"]), fmt(r["p_value"], 4)]
        for r in report.regressions
    ]


def render_markdown(report: Report) -> str:
    """The report as Markdown."""
    lines = [f"# {report.title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in report.meta.items()]
    lines.append("")
    if report.regressions:
        lines += ["## Regressions against the previous comparable run", ""]
        lines.append(Table(_REGRESSION_COLUMNS, _regression_rows(report)).markdown())
    section = None
    for t in report.tables:
        if t.section != section:
            section = t.section
            lines += [f"## {section}", ""]
        lines.append(t.markdown())
    if report.images:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in report.images]
        lines.append("")
    if report.notes:
        lines += ["## Method and caveats", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}caption{text-align:left;font-weight:bold}
.note{color:#555;font-size:.9em}.regression{background:#fde2e2}img{max-width:100%;border:1px solid #eee}"""


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (plots embedded as data URIs)."""
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(report.title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{e(report.title)}</h1><ul>"
    ]
    parts += [f"<li><b>{e(str(k))}</b>: {e(str(v))}</li>" for k, v in report.meta.items()]
    parts.append("</ul>")
    if report.regressions:
        parts.append("<h2>Regressions against the previous comparable run</h2>")
        parts.append(Table(_REGRESSION_COLUMNS, _regression_rows(report)).html(css_class="regression"))
    section = None
    for t in report.tables:
        if t.section != section:
            section = t.section
            parts.append(f"<h2>{e(section)}</h2>")
        parts.append(t.html())
    if report.images:
        parts.append("<h2>Plots</h2>")
        for p in report.images:
            data = base64.b64encode(p.read_bytes()).decode()
            parts.append(
                f"<figure><img alt='{e(p.stem)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{e(p.stem)}</figcaption></figure>"
            )
    if report.notes:
        parts.append("<h2>Method and caveats</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in report.notes) + "</ul>")
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
    run_dir = Path(run_dir)
    history_path = Path(reports_dir or run_dir.parent) / "history.jsonl"
    (run_dir / "results.json").unlink(missing_ok=True)  # never leave an older results.json to be trusted
    sections = {name: load_results(run_dir, stem) for name, stem in SECTION_FILES}
    present = {k: v for k, v in sections.items() if v is not None}
    if not present:
        raise MeasurementError(f"no section results (01…04 *.json) in {run_dir}: run the notebooks first")
    fingerprint: dict[str, Any] = next((s["fingerprint"] for s in present.values() if s.get("fingerprint")), {})
    machine_key = fingerprint.get("machine_key", "unknown")
    scale = next(
        (
            s["fingerprint"]["dataset"].get("verdicts")
            for s in present.values()
            if isinstance((s.get("fingerprint") or {}).get("dataset"), dict)
        ),
        None,
    )
    headline = headline_figures(present)
    history = read_history(history_path)
    previous = previous_comparable(history, machine_key, scale, exclude_run=run_id)
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
            "compared with": previous["run_id"] if previous else "no earlier comparable run",
            "regressions": len(regressions),
            "sections": ", ".join(present),
        },
        regressions=regressions,
    )
    for name, section in present.items():
        tables, notes = SECTION_BUILDERS[name](section)
        report.tables += tables
        report.notes += notes
    report.images = sorted(p for p in run_dir.glob("0[1-4]_*.png"))
    (run_dir / "report.md").write_text(render_markdown(report))
    (run_dir / "report.html").write_text(render_html(report))
    results = {
        "run_id": run_id,
        "complete": True,
        "quick": quick,
        "machine_key": machine_key,
        "scale": scale,
        "fingerprint": fingerprint,
        "sections": present,
        "headline": headline,
        "previous_run": previous["run_id"] if previous else None,
        "regressions": regressions,
        "tables": [t.to_dict() for t in report.tables],
    }
    save_results(run_dir, "results", results)
    append_history(
        history_path,
        {
            "run_id": run_id,
            "machine_key": machine_key,
            "scale": scale,
            "quick": quick,
            "finished_at": dt.datetime.now(dt.UTC).isoformat(),
            "headline": headline,
        },
    )
    return results
