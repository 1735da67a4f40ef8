"""Cache health accounting: hit/miss/error counters with latencies, and the circuit breaker.

:class:`CacheStats` counts per entity (hs_codes, rules, assessments, verdicts, other) in
process, cheaply (a lock, a few additions, a bounded reservoir of latencies for percentiles),
and keeps the increments not yet sent to Redis so the service can add them to one shared hash
with HINCRBY now and then: several processes then add up (:meth:`CacheStats.from_hash`).

:class:`CircuitBreaker` stops a cache from hammering a dead server: after ``threshold``
consecutive failures it opens (every call is skipped), and after ``reset_after`` seconds it lets
one probe through (half-open); the probe's success closes it, its failure opens it again.
:func:`keyspace_summary` shapes the server's own ``INFO stats`` hit counters the same way.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from psra_bench.exceptions import CacheError

__all__ = ["COUNTERS", "LatencySummary", "CacheStats", "CircuitBreaker", "keyspace_summary"]

#: What is counted per entity: a hit / miss (key found / not found), an error (Redis failed or
#: held an unreadable value), a skip (breaker open: Redis not asked), a set, a delete, and a stale
#: set: a computed value not stored because its entity was invalidated while it was computed.
COUNTERS = ("hits", "misses", "errors", "skipped", "sets", "deletes", "stale")


@dataclass
class LatencySummary:
    """Latencies of one entity and outcome: exact count and sum, plus a bounded random reservoir."""

    count: int = 0
    total: float = 0.0
    reservoir: list[float] = field(default_factory=list)

    def add(self, seconds: float, size: int) -> None:
        """Record one latency (reservoir sampling keeps ``size`` uniformly chosen samples)."""
        self.count += 1
        self.total += seconds
        if len(self.reservoir) < size:
            self.reservoir.append(seconds)
        else:
            j = random.randrange(self.count)
            if j < size:
                self.reservoir[j] = seconds

    def as_dict(self) -> dict[str, Any]:
        """count, mean, p50, p99 (milliseconds) and the reservoir's size n."""
        samples = sorted(self.reservoir)
        n = len(samples)

        def pct(p: float) -> float | None:
            return round(samples[min(n - 1, int(p * n))] * 1000, 4) if n else None

        mean = round(self.total / self.count * 1000, 4) if self.count else None
        return {"count": self.count, "mean_ms": mean, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "n": n}


class CacheStats:
    """Thread-safe per-entity counters and hit/miss latencies, with increments pending for Redis."""

    def __init__(self, reservoir_size: int = 1024) -> None:
        if reservoir_size < 1:
            raise CacheError(f"reservoir_size={reservoir_size!r} is not valid: use a whole number ≥ 1.")
        self.reservoir_size = reservoir_size
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
        self._latency: dict[tuple[str, str], LatencySummary] = defaultdict(LatencySummary)
        self._pending: dict[str, int] = defaultdict(int)
        self._names: dict[tuple[str, str], tuple[str, str]] = {}

    def record(self, entity: str, counter: str, seconds: float | None = None, amount: int = 1) -> None:
        """Count ``amount`` ``counter`` events of ``entity``; hits and misses carry their latency in seconds."""
        names = self._names.get((entity, counter))
        if names is None:  # field names built once per (entity, counter): the hot path only adds
            names = self._names[(entity, counter)] = (f"{entity}:{counter}", f"{entity}:{counter}_us")
        with self._lock:
            self._counts[entity][counter] += amount
            self._pending[names[0]] += amount
            if seconds is not None:
                self._latency[(entity, counter)].add(seconds, self.reservoir_size)
                self._pending[names[1]] += int(seconds * 1_000_000)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per entity: the counters, hit_rate, and hit/miss latency summaries (ms)."""
        with self._lock:
            out: dict[str, dict[str, Any]] = {}
            for entity, counts in sorted(self._counts.items()):
                row: dict[str, Any] = dict(counts)
                looked = counts["hits"] + counts["misses"]
                row["hit_rate"] = round(counts["hits"] / looked, 4) if looked else None
                row["hit_latency"] = self._latency[(entity, "hits")].as_dict()
                row["miss_latency"] = self._latency[(entity, "misses")].as_dict()
                out[entity] = row
            return out

    def reset(self) -> None:
        """Forget every count, latency and pending increment."""
        with self._lock:
            self._counts.clear()
            self._latency.clear()
            self._pending.clear()

    def take_pending(self) -> dict[str, int]:
        """The increments not yet sent to Redis (field -> amount), emptied."""
        with self._lock:
            pending = dict(self._pending)
            self._pending.clear()
            return pending

    def restore_pending(self, pending: Mapping[str, int]) -> None:
        """Put back increments whose flush failed, so they are sent with the next one."""
        with self._lock:
            for name, amount in pending.items():
                self._pending[name] += amount

    @staticmethod
    def from_hash(raw: Mapping[bytes | str, bytes | str]) -> dict[str, dict[str, Any]]:
        """Shape a Redis stats hash (``entity:counter`` -> int) like :meth:`snapshot` (means, no percentiles)."""
        rows: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
        for name, value in raw.items():
            text = name.decode() if isinstance(name, bytes) else name
            entity, _, counter = text.rpartition(":")
            rows[entity][counter] = int(value)
        out: dict[str, dict[str, Any]] = {}
        for entity, row in sorted(rows.items()):
            result: dict[str, Any] = {c: row.get(c, 0) for c in COUNTERS}
            looked = result["hits"] + result["misses"]
            result["hit_rate"] = round(result["hits"] / looked, 4) if looked else None
            for kind, label in (("hits", "hit_latency"), ("misses", "miss_latency")):
                n = result[kind]
                mean = round(row.get(f"{kind}_us", 0) / n / 1000, 4) if n else None
                result[label] = {"count": n, "mean_ms": mean}
            out[entity] = result
        return out


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> one half-open probe after ``reset_after`` s."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"

    def __init__(
        self, threshold: int = 5, reset_after: float = 5.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise CacheError(f"breaker threshold={threshold!r} is not valid: use a whole number ≥ 1.")
        if not isinstance(reset_after, int | float) or reset_after <= 0:
            raise CacheError(f"breaker reset_after={reset_after!r} is not valid: use seconds > 0.")
        self.threshold = threshold
        self.reset_after = float(reset_after)
        self.clock = clock  # seconds, monotonic; tests pass a manual clock to hold the breaker at a known point
        self._lock = threading.Lock()
        self.state = self.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probe_started = 0.0
        self.times_opened = 0

    def allow(self) -> bool:
        """Whether a call may go to Redis now (closed, or the one half-open probe)."""
        if self.state == self.CLOSED:  # lock-free fast path
            return True
        now = self.clock()
        with self._lock:
            if self.state == self.CLOSED:
                return True
            if self.state == self.OPEN and now - self.opened_at >= self.reset_after:
                self.state = self.HALF_OPEN
                self.probe_started = now
                return True
            # A probe that never reported back (its caller died) must not wedge the breaker.
            if self.state == self.HALF_OPEN and now - self.probe_started >= self.reset_after:
                self.probe_started = now
                return True
            return False

    def success(self) -> bool:
        """Record a call that reached the server; return True when this closed an open breaker."""
        if self.state == self.CLOSED and self.failures == 0:
            return False
        with self._lock:
            was_open = self.state != self.CLOSED
            self.state = self.CLOSED
            self.failures = 0
            return was_open

    def failure(self) -> bool:
        """Record a failed call; return True when this opened the breaker."""
        now = self.clock()
        with self._lock:
            self.failures += 1
            if self.state == self.HALF_OPEN or (self.state == self.CLOSED and self.failures >= self.threshold):
                self.state = self.OPEN
                self.opened_at = now
                self.times_opened += 1
                return True
            return False

    def as_dict(self) -> dict[str, Any]:
        """State, consecutive failures and how often it opened."""
        return {
            "state": self.state,
            "failures": self.failures,
            "times_opened": self.times_opened,
            "threshold": self.threshold,
            "reset_after": self.reset_after,
        }


def keyspace_summary(info: dict[str, Any]) -> dict[str, Any]:
    """Server-wide keyspace_hits, keyspace_misses and hit rate from an ``INFO stats`` reply."""
    hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
    return {
        "keyspace_hits": hits,
        "keyspace_misses": misses,
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
    }
