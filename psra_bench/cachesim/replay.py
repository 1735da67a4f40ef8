"""Live cache replay: a workload trace through the real cache service, PostgreSQL and assessment engine.

Method (what the figures of notebook 02 mean):

* **Clock.** A trace spans a simulated period (two hours by default) with TTLs of 300–3600 s.
  The replay runs it ``compression`` times faster (simulated seconds per real second): event
  ``i`` is issued at real time ``t_i / compression`` after the start, and every TTL the cache
  sets is divided by the same factor (:class:`CompressedClockCache` scales ``ttl_ms``), so a
  key expires in the replay exactly when it would have on the simulated clock. Events are
  issued one at a time; when a call overruns, the next event starts late, and that lag (in
  simulated seconds) is reported. Lag that *changes* between a fill and a later read shifts
  that key's age, so by default the compression is chosen from a short calibration: a few
  cold and warm calls per entity timed on the real path under the machine's current load,
  weighted by the misses and hits the simulation predicts for this trace, times
  :data:`CALIBRATION_HEADROOM`. The same trace and the
  *unscaled* TTLs feed :mod:`psra_bench.cachesim.ttl_sim`, which is how the simulation is checked
  against this measurement; ``realized_clock_sim`` is the simulation of the event times as
  they actually happened, which separates scheduling lag from model error.
* **Path.** HS and rule lookups go through :class:`psra_bench.cache.cached_dal.CachedDAL` (read-through
  ``get_or_compute`` on :class:`psra_bench.cache.service.CacheService`, PostgreSQL on a miss);
  assessments through :func:`psra_bench.psra.service.assess_with_cache`. Nothing is mocked.
  A lookup is a hit when the cache's first GET for its key found a value; an assessment when
  ``assess_with_cache`` answered ``cached``.
* **Latency.** Each call is timed whole (``perf_counter_ns``), as a caller sees it: a hit is the
  cache's answer, a miss is the cache's GET plus the database query (or, for an assessment, the
  evaluation, the INSERT of the verdict) plus the SET. ``assess_with_cache`` knows the key and the
  request's ``input_hash`` before any work, so an assessment hit is one cache read: it saves the
  rules lookup and the evaluation as well as the INSERT and the SET.
* **Updates.** A write changes the row in PostgreSQL: an HS description or a rule title gets a
  revision marker. With ``invalidate_on_update`` the write goes through CachedDAL's invalidating
  path (``update_hs_codes``; ``reload_rules`` after a rule update); without, the cache is left
  alone and the replay **measures staleness**: a lookup that returns an older revision than the
  database holds is stale since the first update it missed. An assessment is stale when its
  rule changed after the result was cached (the result itself carries no rule revision).
* **Counting.** Reads at simulated ``t >= warmup_s`` count; hit rates carry a Wilson 95 %
  interval, latencies :func:`psra_bench.measure.stats.summarize`'s bootstrap CIs of p50 and p95.
* **Hygiene.** The replay uses its own Redis namespace under ``settings.cache_namespace`` and
  deletes it afterwards; it restores every row it changed (from the vendored reference data)
  and deletes the verdicts its assessments stored (they belong to tenants only the replay uses),
  also those a crashed earlier run left behind, so the seeded dataset stays as it was.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from psra_bench.cache import keys
from psra_bench.cachesim.clock import (
    CALIBRATION_HEADROOM,
    MIN_REAL_SECONDS,
    MIN_SCALED_TTL_S,
    MISS_SOURCES,
    TIMELINE_BINS,
    CompressedClockCache,
    Recorder,
    Tally,
    auto_compression,
    check_compression,
    drop_cache,
    entity_result,
    open_cache,
    run_events,
    schedule_summary,
)
from psra_bench.cachesim.workload import ALL_ENTITIES, ENTITIES, Event, Trace, check_ttls, replay_tenant_ids
from psra_bench.db.reference import hs_rows, rules
from psra_bench.exceptions import MeasurementError, ParameterError
from psra_bench.results import LiveReplay
from psra_bench.settings import LiveSettings, Settings

__all__ = [
    "CALIBRATION_READS",
    "CALIBRATION_HEADROOM",
    "MIN_REAL_SECONDS",
    "MIN_SCALED_TTL_S",
    "MISS_SOURCES",
    "CompressedClockCache",
    "auto_compression",
    "calibrate",
    "settings_ttls",
    "repair_database",
    "replay_live",
]

#: Keys per entity timed cold and warm (in a scratch namespace) to choose the compression automatically.
CALIBRATION_READS = 6

_MARK = " [psra-bench replay rev {n}]"
_MARK_RE = re.compile(r" \[psra-bench replay rev (\d+)\]$")
_MARK_LIKE = "% [psra-bench replay rev %]"
_UPDATE_RULE_TITLE = "UPDATE psra_rules SET title = %(title)s, updated_at = now() WHERE rule_id = %(rule_id)s"


def settings_ttls(settings: Settings) -> dict[str, float]:
    """The configured TTL (seconds) of every entity a trace may carry (a generated trace uses the first three)."""
    return {e: float(settings.ttl.for_entity(e)) for e in ALL_ENTITIES}


def repair_database(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Undo what a replay changes: marked HS descriptions and rule titles, verdicts of replay tenants."""
    reference_hs = {r.code: r.description for r in hs_rows()}
    reference_titles = {r["rule_id"]: r["title"] for r in rules()}
    with conn.transaction():
        marked = conn.execute(
            "SELECT code, description FROM hs_codes WHERE description LIKE %s", (_MARK_LIKE,)
        ).fetchall()
        for code, text in marked:
            conn.execute(
                "UPDATE hs_codes SET description = %s, updated_at = now() WHERE code = %s",
                (reference_hs.get(code, _MARK_RE.sub("", text)), code),
            )
        titled = conn.execute("SELECT rule_id, title FROM psra_rules WHERE title LIKE %s", (_MARK_LIKE,)).fetchall()
        for rule_id, title in titled:
            conn.execute(
                _UPDATE_RULE_TITLE,
                {"title": reference_titles.get(rule_id, _MARK_RE.sub("", title)), "rule_id": rule_id},
            )
        deleted = conn.execute(
            "DELETE FROM psra_verdicts WHERE tenant_id = ANY(%s::uuid[])", (list(replay_tenant_ids()),)
        ).rowcount
    return {"hs_codes_restored": len(marked), "rules_restored": len(titled), "verdicts_deleted": int(deleted or 0)}


_COUNT_HS = "SELECT count(*) FROM hs_codes WHERE code = ANY(%s)"
_COUNT_RULES = "SELECT count(*) FROM psra_rules WHERE rule_id = ANY(%s)"


def _check_reference(conn: psycopg.Connection[Any], trace: Trace) -> None:
    for table, query, names in (
        ("hs_codes", _COUNT_HS, trace.keys["hs_codes"]),
        ("psra_rules", _COUNT_RULES, trace.keys["rules"]),
    ):
        wanted = sorted(set(names))
        row = conn.execute(query, (wanted,)).fetchone()
        found = int(row[0]) if row else 0
        if found != len(wanted):
            raise MeasurementError(
                f"the database lacks {len(wanted) - found} of the {table} rows the trace "
                "reads; load the reference data first (workbench.ensure_dataset)"
            )


class _Replay(Recorder):
    """State of one live replay: versions of changed rows, fill times, tallies."""

    def __init__(
        self, trace: Trace, cached: Any, pool: ConnectionPool, cache: CompressedClockCache, invalidate: bool
    ) -> None:
        from psra_bench.psra.service import assess_with_cache

        self.trace, self.cached, self.pool, self.cache, self.invalidate = trace, cached, pool, cache, invalidate
        self.assess = assess_with_cache
        self.hs_text = {r.code: r.description for r in hs_rows()}
        self.rule_titles = {r["rule_id"]: r["title"] for r in rules()}
        self.rule_agreement = {r["rule_id"]: r["agreement_code"] for r in rules()}
        self.updates: dict[tuple[str, str], list[float]] = {}
        self.assessment_fill: dict[int, float] = {}
        self.tally = {e: Tally() for e in ENTITIES}
        self.consistency_errors = 0
        self.verdicts_written = 0

    # -- writes -------------------------------------------------------------------
    def write(self, ev: Event) -> None:
        """Apply one data update to PostgreSQL (and invalidate through CachedDAL when asked)."""
        history = self.updates.setdefault((ev.entity, ev.key), [])
        history.append(ev.t)
        mark = _MARK.format(n=len(history))
        if ev.entity == "hs_codes":
            item = [{"code": ev.key, "description": self.hs_text[ev.key] + mark}]
            (self.cached.update_hs_codes if self.invalidate else self.cached.dal.update_hs_codes)(item)
            return
        with self.pool.connection() as conn:
            conn.execute(_UPDATE_RULE_TITLE, {"title": self.rule_titles[ev.key] + mark, "rule_id": ev.key})
        if self.invalidate:
            self.cached.reload_rules()

    # -- reads --------------------------------------------------------------------
    def _version_staleness(self, ev: Event, text: str | None) -> float | None:
        """Seconds the served revision has been out of date (None: fresh); checks misses are fresh."""
        history = self.updates.get((ev.entity, ev.key), [])
        match = _MARK_RE.search(text or "")
        served = int(match.group(1)) if match else 0
        if served >= len(history):
            return None
        return ev.t - history[served]

    def read(self, ev: Event) -> tuple[bool, float, float | None]:
        """Issue one read; (hit, latency ms, staleness s or None)."""
        self.cache.clear_outcomes()
        if ev.entity == "assessments":
            item = self.trace.assessments[ev.key_index]
            started = time.perf_counter_ns()
            result = self.assess(self.pool, self.cached, item.request)
            elapsed = (time.perf_counter_ns() - started) / 1e6
            cached_hit = bool(result.get("cached"))
            return cached_hit, elapsed, self._assessment_staleness(ev, item.rule_id, cached_hit)
        if ev.entity == "hs_codes":
            started = time.perf_counter_ns()
            row = self.cached.hs_code_by_code(ev.key)
            elapsed = (time.perf_counter_ns() - started) / 1e6
            found, text = self.cache.first_outcome(keys.hs_code_key(ev.key)), (row or {}).get("description")
        else:
            started = time.perf_counter_ns()
            row = self.cached.rule_by_id(ev.key)
            elapsed = (time.perf_counter_ns() - started) / 1e6
            found, text = self.cache.first_outcome(keys.rule_key(ev.key)), (row or {}).get("title")
        stale = self._version_staleness(ev, text)
        if not found and stale is not None:
            self.consistency_errors += 1  # a miss read the database: it must be current
        return bool(found), elapsed, stale if found else None

    def _assessment_staleness(self, ev: Event, rule_id: str | None, hit: bool) -> float | None:
        if not hit:
            self.assessment_fill[ev.key_index] = ev.t
            self.verdicts_written += 1
            return None
        filled = self.assessment_fill.get(ev.key_index)
        changes = self.updates.get(("rules", rule_id or ""), [])
        after = [u for u in changes if filled is not None and filled < u <= ev.t]
        return ev.t - after[0] if after else None


def calibrate(
    settings: Settings,
    trace: Trace,
    pool: ConnectionPool,
    ttls: Mapping[str, float] | None = None,
    *,
    invalidate_on_update: bool = False,
    per_entity: int = CALIBRATION_READS,
) -> dict[str, Any]:
    """Estimate the replay's real duration: time cold and warm calls per entity, weight by the simulated hits.

    After one untimed call, the next ``per_entity`` distinct keys each entity reads are looked up
    twice in a scratch namespace (a miss, then a hit); the simulation of the trace at ``ttls`` says how many
    misses and hits the replay will do; writes are costed like an HS miss.
    """
    from psra_bench.cache.cached_dal import CachedDAL
    from psra_bench.cachesim.ttl_sim import simulate
    from psra_bench.db.dal import PostgresDAL

    ttls = {e: v for e, v in (ttls or settings_ttls(settings)).items() if e in trace.entity_names}
    cache = open_cache(settings, ttls, 1.0)
    miss: dict[str, float] = {}
    hit: dict[str, float] = {}
    try:
        replay = _Replay(trace, CachedDAL(PostgresDAL(pool), cache), pool, cache, False)
        for entity in ENTITIES:
            picked: dict[int, Event] = {}
            for ev in trace.events():
                if ev.entity == entity and ev.op == "read" and ev.key_index not in picked:
                    picked[ev.key_index] = ev
                    if len(picked) > per_entity:
                        break
            if len(picked) > 1:
                first, *timed = picked.values()
                replay.read(first)  # untimed: a fresh process pays for its first call of each kind
                miss[entity] = statistics.fmean(replay.read(ev)[1] for ev in timed) / 1000
                hit[entity] = statistics.fmean(replay.read(ev)[1] for ev in timed) / 1000
    finally:
        drop_cache(cache)
        with pool.connection() as conn:
            repair_database(conn)
    sim = simulate(trace, ttls, invalidate_on_update=invalidate_on_update)["entities"]
    summary = trace.summary()
    expected = summary["writes"] * miss.get("hs_codes", 0.0)
    for e in miss:
        fills, reads = sim[e]["fills"], summary["entities"][e]["reads"]
        expected += fills * miss[e] + (reads - fills) * hit[e]
    return {
        "per_entity": per_entity,
        "miss_s": miss,
        "hit_s": hit,
        "expected_seconds": expected,
        "headroom": CALIBRATION_HEADROOM,
    }


def _realized_sim(
    trace: Trace, realized: list[float], ttls: Mapping[str, float], invalidate: bool
) -> dict[str, float | None]:
    from psra_bench.cachesim.ttl_sim import simulate

    clock = np.minimum(np.maximum.accumulate(np.asarray(realized, dtype=float)), trace.duration_s)
    shifted = dataclasses.replace(trace, t=clock)
    result = simulate(shifted, ttls, invalidate_on_update=invalidate)
    return {e: r["hit_rate"] for e, r in result["entities"].items()}


def replay_live(
    settings: LiveSettings,
    trace: Trace,
    *,
    ttls: Mapping[str, float] | None = None,
    compression: float | None = None,
    invalidate_on_update: bool = False,
    seed: int = 0,
    pool: ConnectionPool | None = None,
) -> LiveReplay:
    """Replay ``trace`` live (see the module doc); per-entity hit rates, staleness and latencies, JSON-ready.

    ``ttls`` (entity -> simulated seconds) default to the settings' TTLs; ``compression``
    (simulated seconds per real second) to a calibrated value. Bad arguments raise
    ParameterError before anything is touched. An imported trace (``trace.spec.trace_file``) is
    replayed by :func:`psra_bench.cachesim.imported.replay_trace_live` instead.
    """
    if trace.spec is not None and trace.spec.trace_file is not None:
        from psra_bench.cachesim.imported import replay_trace_live

        return replay_trace_live(  # type: ignore[return-value]  # the same shape, over the trace's entities
            settings,
            trace,
            ttls if ttls is not None else settings_ttls(settings),
            compression=compression,
            invalidate_on_update=invalidate_on_update,
            seed=seed,
        )
    given = ttls if ttls is not None else settings_ttls(settings)
    # a drawn trace reads the first three entities only: the settings' verdicts/reports TTLs do not apply
    ttls = check_ttls({e: v for e, v in given.items() if e in ENTITIES or e not in ALL_ENTITIES})
    missing = [e for e in ENTITIES if e not in ttls]
    if missing:
        raise ParameterError("ttls", missing[0], "a TTL for every entity: " + ", ".join(ENTITIES))
    chosen = check_compression(compression, trace, ttls)
    if not trace.assessments and trace.keys["assessments"]:
        raise ParameterError("trace", "hand-made", "a trace from generate_trace (it carries the assessment inputs)")
    if not isinstance(settings, LiveSettings):
        raise MeasurementError("replay_live needs LiveSettings with concrete endpoints (from ensure_services)")
    from psra_bench.cache.cached_dal import CachedDAL
    from psra_bench.db.dal import PostgresDAL
    from psra_bench.infra.postgres import create_pool

    own_pool = pool is None
    pool = pool or create_pool(settings)
    try:
        with pool.connection() as conn:
            _check_reference(conn, trace)
            repaired = repair_database(conn)
        calibration = None
        if chosen is None:
            calibration = calibrate(settings, trace, pool, ttls, invalidate_on_update=invalidate_on_update)
            chosen = min(
                auto_compression(trace, calibration["expected_seconds"]), min(ttls.values()) / MIN_SCALED_TTL_S
            )
        cache = open_cache(settings, ttls, chosen)
        try:
            if not cache.ping():
                raise MeasurementError(f"Redis at {settings.redis.url(with_password=False)} does not answer PING")
            replay = _Replay(trace, CachedDAL(PostgresDAL(pool), cache), pool, cache, invalidate_on_update)
            try:
                lags, realized, wall = run_events(replay, trace, chosen)
            finally:
                with pool.connection() as conn:
                    cleanup = repair_database(conn)
            stats = cache.stats()["entities"]
        finally:
            drop_cache(cache)
    finally:
        if own_pool:
            pool.close()
    return {
        "source": "live",
        "method": "psra_bench.cachesim.replay (module doc): compressed clock, real CacheService/CachedDAL/PostgreSQL",
        "trace": trace.summary(),
        "trace_fingerprint": trace.fingerprint(),
        "ttls_s": ttls,
        "compression": chosen,
        "calibration": calibration,
        "scaled_ttls_s": {e: v / chosen for e, v in ttls.items()},
        "invalidate_on_update": bool(invalidate_on_update),
        "invalidation_scope": "entity",
        "warmup_s": trace.warmup_s,
        "real_seconds": wall,
        "schedule": schedule_summary(lags),
        "realized_clock_sim": _realized_sim(trace, realized, ttls, invalidate_on_update) if realized else None,
        "cache_errors": sum(int(v.get("errors", 0)) + int(v.get("skipped", 0)) for v in stats.values()),
        "consistency_errors": replay.consistency_errors,
        "verdicts_written": replay.verdicts_written,
        "repaired_before": repaired,
        "cleaned_after": cleanup,
        "entities": {e: entity_result(e, replay.tally[e], ttls[e], seed) for e in ENTITIES},
        "timeline": {
            "edges_s": [trace.duration_s * i / TIMELINE_BINS for i in range(TIMELINE_BINS + 1)],
            **{e: {"reads": t.bins_reads, "hits": t.bins_hits} for e, t in replay.tally.items()},
        },
    }
