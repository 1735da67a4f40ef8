"""The tables of a replayed log (``04_load_replay.json``): notebook 04, ``psra-bench load --from-log`` and the report.

* per endpoint: the recorded and the replayed share of the requests, and the replayed latency
  (n, failures, p50/p95/p99);
* the request rate, recorded vs replayed per 10-second bucket of recorded time, summarized (the
  plot ``04_load_replay_rates.png`` shows every bucket);
* users supported at the log's own mix (the capacity search), when it was run;
* the requests for routes this API does not have (never sent).
"""

from __future__ import annotations

from psra_bench.load.results import CAPACITY_COLUMNS, capacity_note, capacity_row
from psra_bench.measure.format import DASH, ms, number, percent
from psra_bench.results import ReplayResult
from psra_bench.table import Table

__all__ = ["replay_tables", "REPLAY_TITLES", "UNMATCHED_SHOWN"]

#: The tables' titles, in order (the report puts the rate plot beside the second).
REPLAY_TITLES = (
    "Endpoints: recorded vs replayed share, and latency",
    "Request rate: recorded vs replayed",
    "Users supported at the log's own mix",
    "Not sent: routes this API does not have",
)
#: Unmatched paths listed by name (the rest are counted in one row).
UNMATCHED_SHOWN = 20


def _endpoint_table(doc: ReplayResult) -> Table:
    r = doc["replay"]
    rows = []
    for name, e in r["endpoints"].items():
        shares = [percent(r["recorded_share"].get(name)), percent(r["replayed_share"].get(name))]
        latency = [ms(e["p50_ms"]), ms(e["p95_ms"]), ms(e["p99_ms"])]
        rows.append([name, *shares, number(e["n"]), number(e["failures"]), *latency])
    late = r.get("lateness") or {}
    behind = (
        f" Sent behind the intended start: p99 {ms(late.get('p99_ms'))} ms." if late.get("p99_ms") is not None else ""
    )
    where = (
        f"the {doc['configuration']!r} configuration on a copy of the dataset" if doc["configuration"] else doc["url"]
    )
    note = (
        f"{number(r['recorded_requests'])} recorded requests to this API's routes, {number(r['replayed_requests'])} "
        f"replayed ({r['mode']} model, speed {r['speed']:g}) against {where}. Shares are of the requests to this "
        "API's routes; latency is measured from the intended start in the open model (n = requests answered)." + behind
    )
    columns = ["endpoint", "recorded share", "replayed share", "n", "failures", "p50 ms", "p95 ms", "p99 ms"]
    return Table(columns, rows, title=REPLAY_TITLES[0], note=note)


def _rate_table(doc: ReplayResult) -> Table:
    r = doc["replay"]
    recorded, replayed = r["recorded_rate"], r["replayed_rate"]
    diffs = [abs(b - a) / a for a, b in zip(recorded, replayed, strict=False) if a]
    within = sum(d <= 0.10 for d in diffs)
    rows = [
        ["buckets", number(len(recorded)), number(len(replayed))],
        ["mean req/s", f"{sum(recorded) / max(1, len(recorded)):.2f}", f"{sum(replayed) / max(1, len(replayed)):.2f}"],
        ["peak req/s", f"{max(recorded, default=0):.2f}", f"{max(replayed, default=0):.2f}"],
        ["largest bucket difference", DASH, percent(max(diffs)) if diffs else DASH],
        ["buckets within 10 %", DASH, f"{within} of {len(diffs)}"],
    ]
    note = (
        f"Requests per second of recorded time, per {r['bucket_s']:g}-second bucket of recorded time (a replay at "
        f"speed {r['speed']:g} sends {r['speed']:g}× as fast in wall time and is counted on the recorded scale); every "
        "bucket is in the plot."
    )
    return Table(["", "recorded", "replayed"], rows, title=REPLAY_TITLES[1], note=note)


def _capacity_table(doc: ReplayResult) -> Table | None:
    searched = doc.get("capacity")
    if not searched:
        return None
    p = searched["parameters"]
    note = (
        "Locust users drawing each request at random from the recorded ones (the log's own endpoints, paths and "
        f"tenants, in its proportions), {p['think_s'][0]:g}–{p['think_s'][1]:g} s think time, on the grid "
        f"{', '.join(map(str, p['grid']))} users. " + capacity_note(p["slo_p95_ms"], p["short_step_s"])
    )
    name = doc["configuration"] or "the --url API"
    return Table(["configuration", *CAPACITY_COLUMNS], [[name, *capacity_row(searched["capacity"])]],
                 title=REPLAY_TITLES[2], note=note)  # fmt: skip


def _unmatched_table(doc: ReplayResult) -> Table | None:
    unmatched = doc["replay"]["unmatched"]
    if not unmatched:
        return None
    items = list(unmatched.items())
    rows = [[path, number(n)] for path, n in items[:UNMATCHED_SHOWN]]
    if len(items) > UNMATCHED_SHOWN:
        rest = items[UNMATCHED_SHOWN:]
        rows.append([f"{len(rest)} other paths", number(sum(n for _, n in rest))])
    note = "Requests in the log for a method and path no route of this API matches (query strings cut): never sent."
    return Table(["request", "count"], rows, title=REPLAY_TITLES[3], note=note)


def replay_tables(doc: ReplayResult) -> list[Table]:
    """The replay's tables, in order; the capacity and unmatched tables only when there is something to show."""
    found = [_endpoint_table(doc), _rate_table(doc), _capacity_table(doc), _unmatched_table(doc)]
    return [t for t in found if t is not None]
