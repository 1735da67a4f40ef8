"""Issue 23: capture real cache traffic with MONITOR, import it (and libCacheSim traces), tune and replay on it."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import zstandard
from click.testing import CliRunner

from psra_bench.cache.cached_dal import CachedDAL
from psra_bench.cache.service import CacheService
from psra_bench.cachesim.imported import CAPTURED_MODE, load_trace, trace_meta
from psra_bench.cachesim.memory import check_live, miss_ratio_curve
from psra_bench.cachesim.params import CacheHitRatesParams
from psra_bench.cachesim.replay import replay_live
from psra_bench.cachesim.ttl_sim import compare_sim_to_live, simulate
from psra_bench.cachesim.workload import generate_trace
from psra_bench.cli import cli
from psra_bench.db.dal import PostgresDAL
from psra_bench.db.reference import hs_rows, rules
from psra_bench.exceptions import InputError, MeasurementError
from psra_bench.infra.postgres import create_pool
from psra_bench.settings import Settings
from psra_bench.trace.capture import capture, monitor_lines
from psra_bench.trace.formats import ORACLE_RECORD, import_file
from psra_bench.trace.monitor import UnreadableLine, parse_line
from psra_bench.trace.params import TraceCaptureParams
from psra_bench.trace.tracefile import write_trace
from tests.helpers import cli_env

ROUND_S = 0.3  # the driver's pace: TTL 0.45 s then falls mid-way between rounds (fill + 0.45 vs 0.3 / 0.6)
TTL_S = 0.45


# ----------------------------------------------------------------------------- helpers


def _monitoring(client: redis.Redis) -> bool:
    return any("monitor" in (c.get("cmd") or "") for c in client.client_list())


def _while_monitoring(client: redis.Redis, start: Callable[[], None], action: Callable[[], None], marker: str) -> None:
    """Start a MONITOR consumer, hold until the server lists it, run ``action``, then ECHO the end marker."""
    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not _monitoring(client):
        assert time.monotonic() < deadline, "MONITOR never started"
        time.sleep(0.01)
    action()
    client.echo(marker)
    thread.join(30)
    assert not thread.is_alive()


@pytest.fixture
def ns_settings(namespaced_settings: Settings) -> Settings:
    return namespaced_settings


@pytest.fixture
def client(ns_settings: Settings) -> Iterator[redis.Redis]:
    assert ns_settings.redis is not None
    c = redis.Redis(**ns_settings.redis.client_kwargs(), decode_responses=True)
    yield c
    c.close()


# ----------------------------------------------------------------------------- MONITOR lines


def test_parse_line_reads_every_escape_and_refuses_other_shapes() -> None:
    line = r'1796619756.020349 [0 lua] "SET" "ns:hs:code:1" "a\\b\"c\nd\re\tf\ag\bh\x00\xc3\xa9"'
    parsed = parse_line(line + "\n")
    assert parsed.time == pytest.approx(1796619756.020349)
    assert (parsed.db, parsed.client, parsed.command) == (0, "lua", "set")
    assert parsed.args == ("ns:hs:code:1", 'a\\b"c\nd\re\tf\ag\bh\x00é')
    for bad in ("OK", '1.5 [0 127.0.0.1:1] "get" x', '1.5 [0 c] "get" "k', "1.5 [0 c]", 'x [0 c] "get"'):
        with pytest.raises(UnreadableLine):
            parse_line(bad)


def test_a_real_servers_monitor_output_parses_to_the_arguments_sent(ns_settings: Settings, client: redis.Redis) -> None:
    value = 'q"uo\\te\n\r\t\a\b\x01é✓ end'
    key = ns_settings.cache_namespace + "hs:code:esc aped"
    marker = f"end-{uuid.uuid4().hex}"
    lines: list[str] = []

    def consume() -> None:
        for line in monitor_lines(client, 30):
            lines.append(line)
            if marker in line:
                break

    _while_monitoring(client, consume, lambda: (client.set(key, value, px=5000), client.get(key)), marker)
    mine = [parse_line(x) for x in lines if key in x or "lua" in x and ns_settings.cache_namespace in x]
    assert [(p.command, p.args[:2]) for p in mine[:2]] == [("set", (key, value)), ("get", (key,))]


# ----------------------------------------------------------------------------- capture of the real cache


def _drive(settings: Settings, rounds: int = 5) -> dict[str, int]:
    """The real cache (CachedDAL, PostgreSQL on a miss) read in paced rounds, with one HS and one rule invalidation."""
    codes = [r.code for r in hs_rows() if r.level == 6][:12]
    rule_ids = [r["rule_id"] for r in rules()][:4]
    reads = {"hs_codes": 0, "rules": 0}
    cache = CacheService(settings)
    pool = create_pool(settings)  # type: ignore[arg-type]
    try:
        cached = CachedDAL(PostgresDAL(pool), cache)
        for r in range(rounds):
            began = time.monotonic()
            for code in codes:
                cached.hs_code_by_code(code)
            cached.hs_search("horses", 5)
            reads["hs_codes"] += len(codes) + 1
            for rule_id in rule_ids:
                cached.rule_by_id(rule_id)
            reads["rules"] += len(rule_ids)
            if r == 2:
                cached.update_hs_codes([])  # nothing changes in PostgreSQL; the cache still drops hs_codes
                cache.invalidate("rules")
            time.sleep(max(0.0, ROUND_S - (time.monotonic() - began)))  # the workload's pace, not a wait
    finally:
        cache.close()
        pool.close()
    return reads


@pytest.fixture
def captured(ns_settings: Settings, client: redis.Redis, tmp_path: Path) -> tuple[Path, dict[str, Any], dict[str, int]]:
    out = tmp_path / "capture.jsonl"
    marker = f"end-{uuid.uuid4().hex}"
    box: dict[str, Any] = {}

    def run() -> None:
        box["summary"] = capture(ns_settings, out, TraceCaptureParams(seconds=60), stop_on=marker)

    _while_monitoring(client, run, lambda: box.update(reads=_drive(ns_settings)), marker)
    return out, box["summary"], box["reads"]


def test_a_capture_of_the_real_cache_maps_reads_invalidations_and_scripts(captured: Any, tmp_path: Path) -> None:
    out, summary, reads = captured
    assert summary["scripts"] > 0  # `[0 lua]` lines were seen and counted as inner calls
    assert summary["internal"].get("generations", 0) > 0  # tokens read and dropped: internal, not entity reads
    text = out.read_text()
    assert '"value"' not in text and "horse" not in text.split('"summary"')[0].replace("hs:search:horses", "")
    cols, account = import_file(out, "jsonl")
    meta = write_trace(tmp_path / "t.npz", cols, account)
    trace = load_trace(tmp_path / "t.npz")
    per = trace.summary()["entities"]
    # one read per cache lookup: a script's re-look of the key its caller just missed is not a second read
    assert {e: per[e]["reads"] for e in ("hs_codes", "rules")} == reads
    assert per["hs_codes"]["writes"] >= 1 and per["rules"]["writes"] >= 1
    whole = trace.key[(trace.op == 1)] == -1
    assert whole.all()  # invalidations swept whole entities; their key UNLINKs are part of the sweep
    assert meta["fingerprint"] == trace_meta(tmp_path / "t.npz")["fingerprint"]


def test_trace_tune_recommends_per_entity_and_the_live_replay_agrees(
    captured: Any, ns_settings: Settings, tmp_path: Path
) -> None:
    out, _, _ = captured
    runner = CliRunner()
    env = cli_env(ns_settings, PSRA_CACHE_NAMESPACE=ns_settings.cache_namespace)
    res = runner.invoke(
        cli, ["trace", "import", str(out), "--format", "jsonl", "--out", str(tmp_path / "t.npz")], env=env
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        cli,
        ["trace", "tune", str(tmp_path / "t.npz"), "--target-hit-rate", "0.5", "--json", str(tmp_path / "t.json")],
        env=env,
    )
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "t.json").read_text())
    assert set(result["trace"]) >= {"fingerprint", "reads", "writes", "unmapped"}
    for entity in ("hs_codes", "rules"):
        row = result["entities"][entity]
        assert row["current"]["ttl_s"] == ns_settings.ttl.for_entity(entity)
        assert set(row["current"]) >= {"ttl_s", "hit_rate", "n"}
        rec = row["recommended"]
        assert set(rec) >= {"ttl_s", "hit_rate", "hit_rate_ci", "staleness_s", "memory_bytes"}
        assert rec["ttl_s"] is not None and rec["hit_rate"] >= 0.5 and rec["memory_bytes"] > 0
    # the live replay of the trace through the real cache agrees with the simulation
    # (through the notebooks' path: the `trace` parameter makes generate_trace load it, replay_live replay its keys)
    params = CacheHitRatesParams.validated({"trace": str(tmp_path / "t.npz"), "invalidate_on_update": True})
    trace = generate_trace(params.spec)
    assert trace.fingerprint() == load_trace(tmp_path / "t.npz").fingerprint()
    ttls = dict.fromkeys(trace.entity_names, TTL_S)
    sim = simulate(trace, ttls, invalidate_on_update=True)  # an imported trace's scope: its recorded keys
    assert sim["invalidation_scope"] == CAPTURED_MODE["invalidation_scope"]
    live = replay_live(ns_settings, trace, ttls=ttls, compression=1.0, invalidate_on_update=True)  # type: ignore[arg-type]
    check = compare_sim_to_live(sim, live)
    read = {e: r for e, r in check["entities"].items() if r["n_sim"]}
    assert set(read) == {"hs_codes", "rules"} and all(0 < r["sim_hit_rate"] < 1 for r in read.values())
    assert all(r["n_sim"] == r["n_live"] for r in read.values())
    assert check["max_abs_diff"] <= 0.02, check


def test_monitor_refused_by_acl_is_one_sentence(ns_settings: Settings, client: redis.Redis, tmp_path: Path) -> None:
    assert ns_settings.redis is not None
    user, password = f"psra-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    client.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", "-monitor"])
    try:
        limited = dataclasses.replace(ns_settings.redis, username=user, password=password)
        with pytest.raises(MeasurementError) as e:
            capture(ns_settings.replace(redis=limited), tmp_path / "c.jsonl", TraceCaptureParams(seconds=5))
    finally:
        client.acl_deluser(user)
    assert "MONITOR" in str(e.value) and str(e.value).count(". ") == 0 and password not in str(e.value)
    assert not (tmp_path / "c.jsonl").exists()


def test_a_capture_that_sees_nothing_of_the_namespace_is_one_sentence(
    ns_settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    marker = f"end-{uuid.uuid4().hex}"
    box: dict[str, Exception] = {}

    def run() -> None:
        try:
            capture(ns_settings, tmp_path / "c.jsonl", TraceCaptureParams(seconds=30), stop_on=marker)
        except MeasurementError as e:
            box["error"] = e

    _while_monitoring(client, run, lambda: None, marker)
    assert "saw no read or invalidation" in str(box["error"])
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputError, match="at least one read of an entity key"):
        cols, account = import_file(tmp_path / "empty.jsonl", "jsonl")
        write_trace(tmp_path / "t.npz", cols, account)


# ----------------------------------------------------------------------------- importers


def test_unreadable_lines_are_counted_and_quoted_the_rest_sorted_and_imported(tmp_path: Path) -> None:
    good = [
        '1000.000300 [0 127.0.0.1:5] "get" "ns:hs:code:1"',
        '1000.000100 [0 127.0.0.1:5] "get" "ns:rule:id:R1"',
        '1000.000200 [0 127.0.0.1:5] "get" "ns:fn:abc"',
        '1000.000400 [0 127.0.0.1:5] "unlink" "ns:hs:code:1"',
        '1000.000500 [0 127.0.0.1:5] "get" "other:hs:code:1"',
    ]
    bad = ["garbage one", '1000.1 [0 c] "get" "unterminated', "1000.2 [0 c]", "tail four"]
    path = tmp_path / "m.txt"
    path.write_text("OK\n" + "\n".join([good[0], bad[0], good[1], bad[1], bad[2], good[2], good[3], bad[3], good[4]]))
    cols, account = import_file(path, "monitor", namespace="ns:")
    assert account.unreadable == 4 and account.unreadable_first == bad[:3]
    assert account.reordered == 1 and np.all(np.diff(cols.t) >= 0)
    assert account.unmapped == {"fn:": 1} and account.extra["foreign_keys"] == 1
    assert len(cols) == 3 and cols.op.tolist() == [0, 0, 1]


def test_a_trace_without_entity_keys_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_text('1.000001 [0 c:1] "get" "ns:fn:x"\n1.000002 [0 c:1] "get" "ns:fn:y"\n')
    cols, account = import_file(path, "monitor", namespace="ns:")
    with pytest.raises(InputError, match=r"unmapped keys fn: \(2\)"):
        write_trace(tmp_path / "t.npz", cols, account)


def test_a_libcachesim_csv_imports_and_a_mapping_naming_a_missing_column_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = ["timestamp,obj_id,obj_size,op"] + [
        f"{i},{i % 7},{100 + i % 7},{'get' if i % 5 else 'delete'}" for i in range(50)
    ]
    path.write_text("\n".join([*rows, "x,1,2,get"]) + "\n")
    mapping = "time=timestamp,key=obj_id,size=obj_size,op=op"
    cols, account = import_file(path, "libcachesim-csv", mapping=mapping, entity="rules")
    assert len(cols) == 50 and int((cols.op == 1).sum()) == 10 and account.unreadable == 1
    assert sorted(cols.keys["rules"]) == [str(i) for i in range(7)] and cols.size.max() == 106
    with pytest.raises(InputError) as e:
        import_file(path, "libcachesim-csv", mapping="time=timestamp,key=objid", entity="rules")
    assert "key=objid" in str(e.value) and "obj_id" in str(e.value)


def test_oracle_general_imports_plain_and_zstd_to_the_same_fingerprint(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rec = np.zeros(500, dtype=ORACLE_RECORD)
    rec["time"] = 1_700_000_000 + np.sort(rng.integers(0, 600, 500))
    rec["obj_id"] = rng.zipf(1.3, 500) % 50 + 2**40
    rec["obj_size"] = 1000
    (tmp_path / "t.oracleGeneral.bin").write_bytes(rec.tobytes())
    (tmp_path / "t.oracleGeneral.zst").write_bytes(zstandard.ZstdCompressor().compress(rec.tobytes()))
    metas = []
    for name in ("t.oracleGeneral.bin", "t.oracleGeneral.zst"):
        cols, account = import_file(tmp_path / name, "oracle-general", entity="hs_codes")
        metas.append(write_trace(tmp_path / (name + ".npz"), cols, account))
    assert metas[0]["fingerprint"] == metas[1]["fingerprint"] and metas[0]["reads"] == 500
    trace = load_trace(tmp_path / "t.oracleGeneral.zst.npz")
    assert trace.entity_names == ("hs_codes",) and trace.duration_s == float(rec["time"][-1] - rec["time"][0])
    with pytest.raises(InputError, match="entity"):
        import_file(tmp_path / "t.oracleGeneral.bin", "oracle-general")


# ----------------------------------------------------------------------------- memory


def _zipf_trace(tmp_path: Path, n: int, keys: int, seed: int = 3) -> Any:
    rng = np.random.default_rng(seed)
    rec = np.zeros(n, dtype=ORACLE_RECORD)
    rec["time"] = np.arange(n) // 10
    rec["obj_id"] = rng.permutation(keys)[(rng.zipf(1.2, n) - 1) % keys]
    rec["obj_size"] = 1024 + (rec["obj_id"] % 4) * 512
    (tmp_path / "z.bin").write_bytes(rec.tobytes())
    cols, account = import_file(tmp_path / "z.bin", "oracle-general", entity="hs_codes")
    write_trace(tmp_path / "z.npz", cols, account)
    return load_trace(tmp_path / "z.npz")


def test_sampled_lru_curve_is_close_to_the_exact_one(tmp_path: Path) -> None:
    trace = _zipf_trace(tmp_path, 30_000, 3000)
    exact = miss_ratio_curve(trace, "allkeys-lru", rate=1.0)
    sampled = miss_ratio_curve(trace, "allkeys-lru", exact.sizes_bytes, rate=0.2)
    assert 0 < sampled.reliable_from_bytes < exact.footprint_bytes
    pairs = zip(exact.sizes_bytes, exact.miss_ratio, sampled.miss_ratio, strict=True)
    diffs = [abs(a - b) for size, a, b in pairs if size >= sampled.reliable_from_bytes]
    assert len(diffs) >= 4 and max(diffs) <= 0.03
    assert exact.miss_ratio == sorted(exact.miss_ratio, reverse=True)


@pytest.mark.parametrize(("policy", "tolerance"), [("allkeys-lru", 0.05), ("allkeys-lfu", 0.08)])
def test_the_miss_ratio_curve_agrees_with_a_live_valkey(tmp_path: Path, policy: str, tolerance: float) -> None:
    # Valkey evicts the best of a sample (maxmemory-samples 10), not the exact LRU/LFU victim, and its
    # used_memory carries allocator rounding and client buffers no key accounts for (LRU: 0.001-0.034 apart
    # over repeated runs here). Its LFU counter is 8-bit, logarithmic and starts new keys at 5, so it ranks
    # keys far more coarsely than the exact counts of the curve's ideal LFU (0.03-0.045 apart here): hence 0.08.
    # Valkey's LRU clock ticks once a second, so keys read within the same second are equally old to it: a
    # fast replay evicts nearly at random, a slow one (a busy machine) nearly by exact LRU. The live ratio is
    # therefore checked between exact LRU (the curve) and random eviction, each with the tolerance; which end
    # it lands near depends on the machine's speed, never on whether the test passes. LFU the same way:
    trace = _zipf_trace(tmp_path, 3000, 600)
    result = check_live(trace, policy, [0.2, 0.5])
    for point in result["points"]:
        assert point["evicted_keys"] > 0
        live, exact = point["live_miss_ratio"], point["predicted_miss_ratio"]
        # LRU and LFU beat random eviction on a Zipf trace; Valkey's sampled approximation of either lands
        # between the two. Its LFU counter also grows by chance (lfu-log-factor), so runs vary: 0.03-0.084
        # from the ideal LFU curve were seen here, always below random eviction.
        assert exact <= point["random_eviction_miss_ratio"], result
        assert exact - tolerance <= live <= point["random_eviction_miss_ratio"] + tolerance, result


# ----------------------------------------------------------------------------- the vectorized simulation


def _reference(
    trace: Any, entity: str, ttl: float, invalidate: bool, whole: bool
) -> tuple[int, int, int, int, list[float]]:
    """The simulation's model as a plain event loop (the definition the vectorized engine must match)."""
    e = trace.entity_names.index(entity)
    deps: dict[int, list[int]] = {}
    derived = entity == "assessments" and trace.derived_invalidation
    for a, r in enumerate(trace.depends_on.tolist() if derived else []):
        deps.setdefault(r, []).append(a)
    rules_i = trace.entity_names.index("rules") if "rules" in trace.entity_names else -1
    expires: dict[int, float] = {}
    since: dict[int, float] = {}
    hits = misses = fills = dropped = 0
    stale: list[float] = []
    for t, ent, op, k in zip(
        trace.t.tolist(), trace.entity.tolist(), trace.op.tolist(), trace.key.tolist(), strict=True
    ):
        if op == 1 and (ent == e or derived):
            targets = (None if k < 0 else [k]) if ent == e else (deps.get(k, []) if ent == rules_i else [])
            if invalidate and whole:
                dropped += sum(1 for x in expires.values() if x > t)
                expires.clear()
                continue
            for key in list(expires) if targets is None else targets:
                if expires.get(key, -1.0) > t:
                    if invalidate:
                        del expires[key]
                        dropped += 1
                    else:
                        since.setdefault(key, t)
        elif op == 0 and ent == e:
            if expires.get(k, -1.0) > t:
                if t >= trace.warmup_s:
                    hits += 1
                    if k in since:
                        stale.append(t - since[k])
            else:
                expires[k], fills = t + ttl, fills + 1
                since.pop(k, None)
                misses += int(t >= trace.warmup_s)
    return hits, misses, fills, dropped, stale


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_vectorized_simulation_matches_the_event_loop(seed: int, tmp_path: Path) -> None:
    from psra_bench.cachesim.ttl_sim import simulate_entity
    from psra_bench.cachesim.workload import generate_trace

    generated = generate_trace(requests=3000, seed=seed, updates_per_hour={"hs_codes": 60.0, "rules": 30.0})
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(3000):
        entity = ["hs:code:", "rule:id:", "verdict:"][int(rng.integers(3))]
        key = f"{entity}{int(rng.zipf(1.3)) % 40}"
        op = "get" if rng.random() > 0.03 else ("unlink" if rng.random() > 0.3 else "scan")
        args = f'"{key}"' if op != "scan" else f'"0" "MATCH" "{entity}*"'
        lines.append(f'{1000 + i * 0.01 + int(rng.integers(0, 2)) * 0.005:.6f} [0 c:{i % 3}] "{op}" {args}')
    lines.append(f'{1000 + 3000 * 0.01:.6f} [0 c:0] "unlink" "assessment:R1:010121:CA:GB"')  # writes, no read
    (tmp_path / "m.txt").write_text("\n".join(lines))
    cols, account = import_file(tmp_path / "m.txt", "monitor")
    write_trace(tmp_path / "m.npz", cols, account)
    imported = load_trace(tmp_path / "m.npz", warmup_s=3.0)
    for trace in (generated, imported):
        for entity in trace.entity_names:
            for ttl in (0.02, 0.3, 60.0, 900.0):
                for invalidate, scope in ((False, "entity"), (True, "entity"), (True, "key")):
                    got = simulate_entity(trace, entity, ttl, invalidate_on_update=invalidate, invalidation_scope=scope)
                    hits, misses, fills, dropped, stale = _reference(trace, entity, ttl, invalidate, scope == "entity")
                    assert (got.hits, got.misses, got.fills, got.invalidations) == (hits, misses, fills, dropped)
                    assert got.stale_reads == len(stale)
                    if stale:
                        assert got.max_stale_s == pytest.approx(max(stale))
                        assert got.mean_stale_s == pytest.approx(sum(stale) / len(stale))


def test_memory_is_the_bytes_each_fill_keeps_until_it_expires_is_invalidated_or_the_trace_ends(tmp_path: Path) -> None:
    from psra_bench.cachesim.ttl_sim import simulate_entity

    rows = [(0, "read", "hs:code:1", 100), (5, "read", "hs:code:1", 100), (6, "write", "*", 0),
            (8, "read", "hs:code:1", 100), (10, "read", "hs:code:22", 41)]  # fmt: skip
    text = "\n".join(
        json.dumps({"time": t, "entity": "hs_codes", "op": op, "key": k, "size": s}) for t, op, k, s in rows
    )
    (tmp_path / "t.jsonl").write_text(text + "\n")
    cols, account = import_file(tmp_path / "t.jsonl", "jsonl")
    write_trace(tmp_path / "t.npz", cols, account)
    trace = load_trace(tmp_path / "t.npz")
    per_key = 100 + len("hs:code:1")  # value + key bytes
    # with invalidation: 0-4 (expired), 5-6 (swept), 8-10 (cut at the end); hs:code:22 filled at the end
    got = simulate_entity(trace, "hs_codes", 4.0, invalidate_on_update=True, invalidation_scope="key")
    assert got.memory_bytes == pytest.approx(per_key * (4 + 1 + 2) / 10) and got.invalidations == 1
    # without: 0-4 and 5-9; the read at 8 is a hit, stale since the sweep at 6
    got = simulate_entity(trace, "hs_codes", 4.0)
    assert got.memory_bytes == pytest.approx(per_key * 8 / 10) and got.max_stale_s == pytest.approx(2.0)
