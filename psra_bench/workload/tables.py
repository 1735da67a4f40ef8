"""Notebook 06's result and its tables: per index add / keep / drop, predicted vs measured gain, insert cost, skipped.

:func:`run_index_advice` is the notebook's one call (advise, write advice.json and the migration
pair, save ``06_index_advice.json``); :class:`IndexAdviceResult` is that file's shape, which the
report reads back (:func:`advice_of`). The table builders take an :class:`Advice`, so notebook 06
prints the same :class:`~psra_bench.table.Table` the report files under "Index advice for your
workload". Figures are written by :mod:`psra_bench.measure.format`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from psra_bench.measure.format import mb_number, ms_ci, number, p_text, percent, times, times_ci
from psra_bench.settings import LiveSettings
from psra_bench.table import Table
from psra_bench.workbench import Dataset
from psra_bench.workload.advise import ADD, DROP, KEEP, Advice, IndexAdvice, advise, write_advice
from psra_bench.workload.model import Workload
from psra_bench.workload.params import IndexAdviceParams

__all__ = [
    "EXPERIMENT",
    "IndexAdviceResult",
    "run_index_advice",
    "advice_of",
    "index_table",
    "predicted_vs_measured_table",
    "insert_cost_table",
    "skipped_table",
    "advice_tables",
    "advice_notes",
]

#: The result file's stem (``<output_dir>/06_index_advice.json``) and the folder of advice.json + migration pair.
EXPERIMENT = "06_index_advice"
#: Characters of a query's text a table shows.
_QUERY_CHARS = 70
_ORDER = {ADD: 0, DROP: 1, KEEP: 2}


class IndexAdviceResult(TypedDict):
    """``06_index_advice.json``: the advice (advice.json's content) and the run around it."""

    #: :meth:`Advice.to_dict` — the same document as ``<output_dir>/06_index_advice/advice.json``.
    advice: dict[str, Any]
    #: The workload's fingerprint (history compares report runs of the same workload only).
    workload_fingerprint: str
    #: Where the workload came from: the file given, or the example shipped with psra-bench.
    workload_file: str
    #: The seeded dataset the advice ran on (:class:`psra_bench.workbench.Dataset` as a dict).
    dataset: dict[str, Any]
    #: The environment fingerprint (machine key, servers, packages), as the other notebooks save it.
    fingerprint: dict[str, Any]
    #: advice.json and the migration pair, as written.
    files: list[str]
    elapsed_seconds: float


def run_index_advice(
    settings: LiveSettings,
    params: IndexAdviceParams,
    workload: Workload,
    dataset: Dataset,
    progress: Callable[[str], None] = lambda _: None,
) -> IndexAdviceResult:
    """Advise (and with ``params.verify`` measure) indexes for ``workload``; write the files; save the result."""
    from dataclasses import asdict

    from psra_bench.infra import postgres as db
    from psra_bench.measure.fingerprint import environment_fingerprint
    from psra_bench.workbench import save_results

    started = time.perf_counter()
    advice = advise(settings, workload, params.advice_params(), verify_set=params.verify, progress=progress)
    files = write_advice(Path(params.output_dir) / EXPERIMENT, advice)
    with db.connect(settings.db_dsn, autocommit=True) as conn:
        fingerprint = environment_fingerprint(
            settings=settings, conn=conn, params=params.values(), dataset=asdict(dataset)
        )
    result = IndexAdviceResult(
        advice=advice.to_dict(),
        workload_fingerprint=advice.fingerprint,
        workload_file=str(params.workload_path()),
        dataset=asdict(dataset),
        fingerprint=fingerprint,
        files=[str(f) for f in files],
        elapsed_seconds=time.perf_counter() - started,
    )
    save_results(params.output_dir, EXPERIMENT, result)
    return result


def advice_of(result: IndexAdviceResult | Mapping[str, Any]) -> Advice:
    """The :class:`Advice` of a saved result (or of an advice.json document itself)."""
    doc = dict(result["advice"] if "advice" in result else result)
    doc["indexes"] = [IndexAdvice(**ix) for ix in doc["indexes"]]
    return Advice(**doc)


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _QUERY_CHARS else flat[: _QUERY_CHARS - 1] + "…"


def _measured_cells(ix: IndexAdvice) -> tuple[str, str]:
    """(speedup [CI] per query whose plan used the index, their p) — one entry per query, '; '-joined."""
    queries = (ix.measured or {}).get("queries") or {}
    if not queries:
        return "–", "–"
    prefix = len(queries) > 1
    speed = [f"{q[:6] + ' ' if prefix else ''}{times_ci(m['speedup'], m['ci'])}" for q, m in queries.items()]
    ps = [f"{q[:6] + ' ' if prefix else ''}{p_text(m['p'])}" for q, m in queries.items()]
    return "; ".join(speed), "; ".join(ps)


def index_table(advice: Advice) -> Table:
    """Per index: add / drop / keep, its reason, the planner's predicted gain and the measured speedup [CI], p."""
    rows = []
    for ix in sorted(advice.indexes, key=lambda i: (_ORDER.get(i.action, 3), i.table, i.name)):
        predicted = ix.predicted or {}
        size = predicted.get("size_bytes") or (ix.measured or {}).get("size_bytes")
        speed, p = _measured_cells(ix)
        reason = ix.reason.replace("; " + advice.stats_window, "")  # the window is said once, in the notes
        rows.append([ix.action, ix.name, ix.table, ix.origin, percent(predicted.get("gain_share")),
                     mb_number(size), speed, p, reason])  # fmt: skip
    adds = sum(ix.action == ADD for ix in advice.indexes)
    drops = sum(ix.action == DROP for ix in advice.indexes)
    note = (
        f"{adds} to add, {drops} to drop (recommended_indexes.up.sql / .down.sql apply it with psql). Predicted gain: "
        "the share of the workload's calls-weighted planner cost the index removes at its greedy step. Measured: "
        "median speedup current / recommended set of each replayed query whose plan used the index, with its "
        "95 % CI and Mann-Whitney p (– : not verified, or no replayed query used it). MB: estimated, or measured."
    )
    columns = ["action", "index", "table", "origin", "predicted gain", "MB", "measured speedup [CI]", "p", "reason"]
    return Table(columns, rows, title=f"Index advice for workload {advice.fingerprint}: add, drop, keep", note=note)


def predicted_vs_measured_table(advice: Advice) -> Table | None:
    """Per query: the planner's cost before/after and its predicted speedup beside the measured one (None: none)."""
    rows = []
    measured = advice.predicted_vs_measured or {}
    for q in advice.queries:
        if q["status"] != "planned":
            continue
        pred = q.get("predicted") or {}
        got = q.get("measured")
        rows.append([
            q["query_id"], _short(q["query"]), number(q["calls"]),
            number(pred.get("cost_before"), 1), number(pred.get("cost_after"), 1), times(pred.get("speedup")),
            ms_ci(got["current"]["p50"], got["current"]["p50_ci"]) if got else "–",
            ms_ci(got["recommended"]["p50"], got["recommended"]["p50_ci"]) if got else "–",
            times_ci(got["speedup"], got["ci"]) if got else "–",
            p_text(got["p"]) if got else "–",
            measured[q["query_id"]]["verdict"] if q["query_id"] in measured else "–",
        ])  # fmt: skip
    if not rows:
        return None
    verified = advice.verification
    n = f"{verified['rounds']} rounds × {verified['iterations']} calls per side" if verified else "not measured"
    note = (
        "Predicted: planner cost (EXPLAIN, averaged over the drawn parameter sets) with the current set and with the "
        f"recommended one ({advice.path}). Measured ({n}, schedule {verified['schedule'] if verified else '–'}): "
        "p50 in ms with its bootstrap CI per side; speedup = median current / median recommended with its CI; "
        "verdict needs the factor and p < alpha."
    )
    columns = ["query id", "query", "calls", "cost now", "cost after", "predicted", "p50 now ms",
               "p50 after ms", "measured speedup [CI]", "p", "verdict"]  # fmt: skip
    return Table(columns, rows, title="Planner-predicted vs measured gain, per query", note=note)


def insert_cost_table(advice: Advice) -> Table | None:
    """Insert throughput into psra_verdicts with the current vs the recommended set (None when not measured)."""
    wc = advice.insert
    if wc is None:
        return None
    rows = [
        [label, wc["index_counts"][key], number(wc[key]["median_rows_per_s"], 0),
         f"[{number(wc[key]['median_rows_per_s_ci'][0], 0)}–{number(wc[key]['median_rows_per_s_ci'][1], 0)}]",
         wc["batches"][key], wc["rows_per_batch"]]
        for label, key in (("current", "before"), ("recommended", "after"))
    ]  # fmt: skip
    note = (
        f"Inserts take {times_ci(wc['ratio'], wc['ratio_ci'])} as long with the recommended set (median batch time "
        f"recommended / current; throughput ratio {times(wc['throughput_ratio'])}); verdict: {wc['verdict']}."
    )
    columns = ["index set", "indexes on psra_verdicts", "median rows/s", "95% CI", "batches", "rows per batch"]
    return Table(columns, rows, title="Insert cost of the recommended set (psra_verdicts)", note=note)


def skipped_table(advice: Advice) -> Table | None:
    """The statements left out of screening or replay, each with its reason (None when none was)."""
    if not advice.skipped:
        return None
    rows = [[s.get("query_id") or "–", _short(s["query"]), s["reason"]] for s in advice.skipped]
    return Table(["query id", "query", "reason"], rows, title="Skipped statements")


def advice_tables(advice: Advice) -> list[Table]:
    """Every table of the advice that has rows, in the order the notebook and the report show them."""
    found: Sequence[Table | None] = (
        index_table(advice),
        predicted_vs_measured_table(advice),
        insert_cost_table(advice),
        skipped_table(advice),
    )
    return [t for t in found if t is not None]


def advice_notes(advice: Advice) -> list[str]:
    """How the advice was made: the screening path, where replay values came from, the statistics window."""
    notes = [f"Index advice: {advice.path_note}", f"Replay values: {advice.values}.",
             f"Unused indexes: {advice.stats_window.rstrip('.')}."]  # fmt: skip
    if advice.verification is not None:
        notes.append(f"Insert cost: {advice.verification['insert_note']}.")
    else:
        notes.append("Index advice: not verified (verify False): the gains are the planner's prediction only.")
    return notes
