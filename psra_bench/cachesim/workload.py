"""Cache workload traces: Zipf-skewed reads and data updates on a simulated clock, seeded.

A :class:`Trace` is a time-ordered list of events over a simulated period (two hours by
default): *reads* of one of three cached entities — an HS code lookup, a rule lookup, an
assessment — and *writes*, i.e. updates of the underlying rows (an HS description or a rule
changes in the database). Keys are real: the 6-digit subheadings of the vendored HS 2022 table
and the 13 rules that :func:`psra_bench.db.reference.load_reference_data` puts in every database,
and assessment inputs built from them that the assessment engine accepts.

How a trace is drawn (:func:`generate_trace`, all from numpy generators seeded from
``spec.seed``, so the same :class:`WorkloadSpec` always gives the same trace):

* ``requests`` reads at times uniform over ``[0, duration_s)`` (a Poisson process), each of an
  entity drawn from ``read_mix``;
* data updates (writes) at ``updates_per_hour`` per updatable entity — HS codes and rules; an
  assessment is derived data and goes stale when the rule it applied changes — exactly
  ``round(rate * hours)`` of them at uniform times. Reads and writes together give the
  read/write mix that :meth:`Trace.summary` reports (``write_share``);
* within an entity a read's key has Zipf popularity ``P(rank k) ∝ k^-s`` over a seeded
  permutation of the entity's keys (``zipf_s``; 0 is uniform). Writes pick rows with
  ``write_zipf_s`` over the same popularity order: 0 (the default) means any row is as likely
  to change as any other, ``write_zipf_s = zipf_s`` that popular rows change as often as they
  are read.

Only reads at ``t >= warmup_s`` are counted by the simulation and the live replay.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from psra_bench.cachesim.inputs import (
    ASSESSMENT_DATE,
    AssessmentInput,
    assessment_inputs,
    check_whole,
    replay_tenant_ids,
)
from psra_bench.db.reference import hs_rows, rules
from psra_bench.exceptions import InputError, ParameterError

__all__ = [
    "ENTITIES",
    "ALL_ENTITIES",
    "UPDATABLE",
    "ENTITY_LABELS",
    "READ",
    "WRITE",
    "ASSESSMENT_DATE",
    "DEFAULT_READ_MIX",
    "DEFAULT_UPDATES_PER_HOUR",
    "WorkloadSpec",
    "AssessmentInput",
    "Event",
    "Trace",
    "check_entity",
    "check_ttls",
    "replay_tenant_ids",
    "assessment_inputs",
    "zipf_probabilities",
    "TRACE_FILE_VERSION",
    "load_trace",
    "generate_trace",
]

#: The cached entities a trace reads, named as in :class:`psra_bench.settings.TTLSettings`.
ENTITIES: tuple[str, ...] = ("hs_codes", "rules", "assessments")
#: The normalized trace file version :func:`load_trace` reads (psra_bench.trace.tracefile.FORMAT_VERSION).
TRACE_FILE_VERSION = 1
#: Every cached entity an imported trace may carry (the settings' TTL entities, :class:`TTLSettings`).
ALL_ENTITIES: tuple[str, ...] = (*ENTITIES, "verdicts", "reports")
#: The entities whose rows a trace updates (an assessment goes stale through its rule).
UPDATABLE: tuple[str, ...] = ("hs_codes", "rules")
#: Row names of the spec's "Cache Hit Rates" table.
ENTITY_LABELS: dict[str, str] = {
    "hs_codes": "HS Code Lookups",
    "rules": "Rule Lookups",
    "assessments": "Assessment Results",
    "verdicts": "Verdicts",
    "reports": "Reports",
}
#: Event operation codes in :attr:`Trace.op`.
READ, WRITE = 0, 1
#: Share of reads per entity.
DEFAULT_READ_MIX: dict[str, float] = {"hs_codes": 0.5, "rules": 0.25, "assessments": 0.25}
#: Data updates per simulated hour, per updatable entity.
DEFAULT_UPDATES_PER_HOUR: dict[str, float] = {"hs_codes": 12.0, "rules": 2.0}

_MAX_REQUESTS = 10_000_000


def check_entity(name: str, value: object, allowed: Sequence[str] = ENTITIES) -> str:
    """``value`` if it is one of ``allowed`` entity names, else ParameterError naming ``name``."""
    if not isinstance(value, str) or value not in allowed:
        raise ParameterError(name, value, "one of " + ", ".join(allowed))
    return value


def _check_number(
    name: str, value: object, *, minimum: float = 0.0, strict: bool = True, maximum: float | None = None
) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)  # type: ignore[operator]
    ok = ok and (maximum is None or value <= maximum)  # type: ignore[operator]
    if not ok:
        sign = ">" if strict else "≥"
        upper = f" and ≤ {maximum:g}" if maximum is not None else ""
        raise ParameterError(name, value, f"a finite number {sign} {minimum:g}{upper}")
    return float(value)  # type: ignore[arg-type]


def check_ttls(ttls: Mapping[str, float], name: str = "ttls", allowed: Sequence[str] = ENTITIES) -> dict[str, float]:
    """Entity -> TTL in seconds, checked: known entity names and TTLs > 0 (ParameterError otherwise)."""
    if not isinstance(ttls, Mapping) or not ttls:
        raise ParameterError(name, ttls, "a mapping of entity name (" + ", ".join(allowed) + ") to seconds > 0")
    out: dict[str, float] = {}
    for entity, ttl in ttls.items():
        check_entity(f"{name} entity", entity, allowed)
        out[entity] = _check_number(f"{name}[{entity!r}]", ttl)
    return out


def _check_mix(name: str, mix: Mapping[str, float], allowed: Sequence[str]) -> dict[str, float]:
    if not isinstance(mix, Mapping) or not mix:
        raise ParameterError(name, mix, "a mapping of " + ", ".join(allowed) + " to shares ≥ 0")
    for entity, share in mix.items():
        check_entity(f"{name} entity", entity, allowed)
        _check_number(f"{name}[{entity!r}]", share, strict=False)
    total = sum(float(v) for v in mix.values())
    if total <= 0:
        raise ParameterError(name, dict(mix), "shares that add up to more than 0")
    return {e: float(mix.get(e, 0.0)) / total for e in allowed}


def _check_rates(rates: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(rates, Mapping):
        raise ParameterError("updates_per_hour", rates, "a mapping of " + ", ".join(UPDATABLE) + " to updates per hour")
    for entity, rate in rates.items():
        check_entity("updates_per_hour entity", entity, UPDATABLE)
        _check_number(f"updates_per_hour[{entity!r}]", rate, strict=False, maximum=1_000_000)
    return {e: float(rates.get(e, 0.0)) for e in UPDATABLE}


@dataclass(frozen=True)
class WorkloadSpec:
    """Everything a trace is drawn from; :meth:`validate` names the first bad field."""

    #: Reads in the trace (data updates come on top, at ``updates_per_hour``).
    requests: int = 4000
    #: The simulated period, in seconds.
    duration_s: float = 7200.0
    #: Reads before this simulated time fill the cache but are not counted.
    warmup_s: float = 1800.0
    #: Share of reads per entity.
    read_mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_READ_MIX))
    #: Data updates per simulated hour, per updatable entity (hs_codes, rules).
    updates_per_hour: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_UPDATES_PER_HOUR))
    #: Key skew of reads (Zipf exponent; 0 = uniform).
    zipf_s: float = 1.1
    #: Key skew of updates over the same popularity order (0 = any row as likely to change).
    write_zipf_s: float = 0.0
    #: Distinct assessment inputs.
    assessment_inputs: int = 300
    seed: int = 42
    #: An imported trace file (``psra-bench trace import``) to use instead of drawing one; its own
    #: reads, writes, keys and clock then apply, with no warm-up (the fields above are not used).
    trace_file: str | None = None

    def validate(self) -> WorkloadSpec:
        """Check every field before any work starts (ParameterError naming the bad value); return self."""
        check_whole("requests", self.requests, 1, _MAX_REQUESTS)
        _check_number("duration_s", self.duration_s)
        _check_number("warmup_s", self.warmup_s, strict=False)
        if self.warmup_s >= self.duration_s:
            raise ParameterError("warmup_s", self.warmup_s, f"seconds ≥ 0 and < duration_s={self.duration_s:g}")
        _check_mix("read_mix", self.read_mix, ENTITIES)
        _check_rates(self.updates_per_hour)
        _check_number("zipf_s", self.zipf_s, strict=False, maximum=5)
        _check_number("write_zipf_s", self.write_zipf_s, strict=False, maximum=5)
        check_whole("assessment_inputs", self.assessment_inputs, 1, 5000)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError("seed", self.seed, "a whole number ≥ 0")
        if self.trace_file is not None and not (isinstance(self.trace_file, str) and Path(self.trace_file).is_file()):
            raise ParameterError(
                "trace", self.trace_file, "None or an existing file written by `psra-bench trace import`"
            )
        return self

    def replace(self, **changes: Any) -> WorkloadSpec:
        """A copy with ``changes`` applied."""
        known = {f.name for f in dataclasses.fields(self)}
        for k in changes:
            if k not in known:
                raise ParameterError("workload parameter", k, "one of " + ", ".join(sorted(known)))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (what a result file stores so the same trace can be drawn again)."""
        d = dataclasses.asdict(self)
        d["read_mix"], d["updates_per_hour"] = dict(self.read_mix), dict(self.updates_per_hour)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkloadSpec:
        """Rebuild from :meth:`to_dict` output; unknown keys are a ParameterError."""
        return cls().replace(**dict(data)).validate()


class Event(NamedTuple):
    """One trace event as the live replay consumes it."""

    position: int
    t: float
    entity: str
    op: str
    key_index: int
    key: str


def zipf_probabilities(n: int, s: float) -> np.ndarray:
    """``P(rank k) ∝ k^-s`` for ranks 1..n (``s = 0``: uniform), summing to 1."""
    check_whole("n", n, 1, 100_000_000)
    _check_number("s", s, strict=False)
    w = np.arange(1, n + 1, dtype=float) ** -float(s)
    return w / w.sum()


@dataclass(frozen=True, eq=False)
class Trace:
    """A time-ordered event list: parallel arrays plus the key names of each entity.

    A generated trace has the three :data:`ENTITIES`; an imported one (:mod:`psra_bench.cachesim.imported`)
    names its own (``entity_names``, a subset of :data:`ALL_ENTITIES`), may carry a write whose key
    is ``-1`` (an invalidation of the whole entity: a pattern sweep or a dropped generation token)
    and value sizes per event, and invalidates only what it recorded (``derived_invalidation`` False).
    """

    #: Simulated seconds since the start, non-decreasing.
    t: np.ndarray
    #: Index into :data:`ENTITIES`.
    entity: np.ndarray
    #: :data:`READ` or :data:`WRITE`.
    op: np.ndarray
    #: Index into ``keys[entity]``.
    key: np.ndarray
    #: Entity -> its key names (HS codes, rule ids, assessment keys).
    keys: Mapping[str, tuple[str, ...]]
    duration_s: float
    warmup_s: float
    #: Assessment key index -> rules key index of the rule it depends on (-1: none).
    depends_on: np.ndarray
    spec: WorkloadSpec | None = None
    #: The assessment inputs, index-aligned with ``keys["assessments"]`` (empty for hand-made traces).
    assessments: tuple[AssessmentInput, ...] = ()
    #: What ``entity`` indexes: :data:`ENTITIES` for generated traces.
    entity_names: tuple[str, ...] = ENTITIES
    #: True: an HS or rule update also invalidates assessments (CachedDAL's scope, generated traces);
    #: False: only the trace's own writes invalidate (an imported capture recorded them all).
    derived_invalidation: bool = True
    #: Value bytes per event (0: unknown), or None.
    size: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.t.size)

    @classmethod
    def from_events(
        cls,
        events: Iterable[tuple[float, str, str, str]],
        keys: Mapping[str, Sequence[str]],
        *,
        duration_s: float,
        warmup_s: float = 0.0,
        depends_on: Mapping[str, str] | None = None,
    ) -> Trace:
        """A hand-made trace from ``(t, entity, "read"|"write", key)`` tuples (checked, kept in order).

        ``depends_on`` maps an assessment key to the rule key whose update makes it stale.
        """
        _check_number("duration_s", duration_s)
        _check_number("warmup_s", warmup_s, strict=False)
        for e in keys:
            check_entity("keys entity", e)
        names = {e: tuple(keys.get(e, ())) for e in ENTITIES}
        index = {e: {k: i for i, k in enumerate(names[e])} for e in ENTITIES}
        rows: list[tuple[float, int, int, int]] = []
        last = 0.0
        for n, (t, entity, op, key) in enumerate(events):
            check_entity(f"events[{n}] entity", entity)
            if op not in ("read", "write"):
                raise ParameterError(f"events[{n}] op", op, "read or write")
            if op == "write" and entity not in UPDATABLE:
                raise ParameterError(f"events[{n}] entity", entity, "an updatable entity: " + ", ".join(UPDATABLE))
            if key not in index[entity]:
                raise ParameterError(f"events[{n}] key", key, f"a key listed in keys[{entity!r}]")
            t = _check_number(f"events[{n}] t", t, strict=False, maximum=duration_s)
            if t < last:
                raise ParameterError(f"events[{n}] t", t, f"a time ≥ the previous event's ({last:g})")
            last = t
            rows.append((t, ENTITIES.index(entity), READ if op == "read" else WRITE, index[entity][key]))
        deps = np.full(len(names["assessments"]), -1, dtype=np.int32)
        for a, r in (depends_on or {}).items():
            if a not in index["assessments"] or r not in index["rules"]:
                raise ParameterError("depends_on", f"{a}->{r}", "an assessment key mapped to a rule key")
            deps[index["assessments"][a]] = index["rules"][r]
        arr = np.array(rows, dtype=float).reshape(-1, 4)
        return cls(
            t=arr[:, 0].copy(),
            entity=arr[:, 1].astype(np.int8),
            op=arr[:, 2].astype(np.int8),
            key=arr[:, 3].astype(np.int32),
            keys=names,
            duration_s=float(duration_s),
            warmup_s=float(warmup_s),
            depends_on=deps,
        )

    def fingerprint(self) -> str:
        """SHA-256 over the events and key names: equal traces, equal fingerprints."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for arr in (
            self.t.astype("<f8"),
            self.entity.astype("<i1"),
            self.op.astype("<i1"),
            self.key.astype("<i4"),
            self.depends_on.astype("<i4"),
        ):
            h.update(arr.tobytes())
        for e in ENTITIES:
            h.update("\x1f".join(self.keys.get(e, ())).encode())
            h.update(b"\x1e")
        h.update(f"{self.duration_s!r}/{self.warmup_s!r}".encode())
        if self.entity_names != ENTITIES or not self.derived_invalidation or self.size is not None:
            for e in self.entity_names:
                if e not in ENTITIES:
                    h.update("\x1f".join(self.keys.get(e, ())).encode() + b"\x1e")
            h.update(f"{self.entity_names!r}/{self.derived_invalidation!r}".encode())
            if self.size is not None:
                h.update(self.size.astype("<i8").tobytes())
        return h.hexdigest()

    def events(self) -> Iterator[Event]:
        """The events in order, with entity, operation and key as names."""
        for i, (t, e, op, k) in enumerate(zip(*self.columns(), strict=True)):
            entity = self.entity_names[e]
            yield Event(i, t, entity, "read" if op == READ else "write", k, self.keys[entity][k] if k >= 0 else "*")

    @cached_property
    def _columns(self) -> tuple[list[float], list[int], list[int], list[int]]:
        return self.t.tolist(), self.entity.tolist(), self.op.tolist(), self.key.tolist()

    def columns(self) -> tuple[list[float], list[int], list[int], list[int]]:
        """(t, entity, op, key) as Python lists (cached; what the simulation loops over)."""
        return self._columns

    def summary(self) -> dict[str, Any]:
        """Counts per entity and operation, distinct keys, request and update rates, the fingerprint."""
        hours = self.duration_s / 3600
        per: dict[str, Any] = {}
        for i, e in enumerate(self.entity_names):
            reads = (self.entity == i) & (self.op == READ)
            writes = (self.entity == i) & (self.op == WRITE)
            per[e] = {
                "reads": int(reads.sum()),
                "writes": int(writes.sum()),
                "reads_after_warmup": int((reads & (self.t >= self.warmup_s)).sum()),
                "keys": len(self.keys.get(e, ())),
                "distinct_keys_read": int(np.unique(self.key[reads]).size) if reads.any() else 0,
                "updates_per_hour": round(float(writes.sum()) / hours, 3),
            }
        writes_total = int((self.op == WRITE).sum())
        return {
            "events": len(self),
            "reads": len(self) - writes_total,
            "writes": writes_total,
            "write_share": round(writes_total / len(self), 6) if len(self) else 0.0,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "requests_per_s": round(len(self) / self.duration_s, 4),
            "updates_per_hour": round(writes_total / hours, 3),
            "entities": per,
            "fingerprint": self.fingerprint(),
            "spec": self.spec.to_dict() if self.spec is not None else None,
        }


def _load(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            arrays = {k: data[k] for k in ("t", "entity", "op", "key", "size")}
    except (OSError, ValueError, KeyError) as e:
        raise InputError("trace", str(path), f"a trace file written by `psra-bench trace import` ({e})") from None
    if meta.get("version") != TRACE_FILE_VERSION:
        raise InputError("trace", str(path), f"a trace file of format version {TRACE_FILE_VERSION}")
    return arrays, meta


def load_trace(path: str | Path, *, warmup_s: float = 0.0) -> Trace:
    """The simulation trace of an imported trace file, over the entities it has events of."""
    arrays, meta = _load(path)
    names: list[str] = list(meta["entity_names"])
    unknown = [e for e in names if e not in ALL_ENTITIES]
    if unknown:
        raise InputError("trace", str(path), "a trace of the entities " + ", ".join(ALL_ENTITIES))
    present = sorted(set(np.unique(arrays["entity"]).tolist()))
    if not present:
        raise InputError("trace", str(path), "a trace with at least one read of an entity key")
    remap = np.full(len(names), -1, dtype=np.int8)
    remap[present] = np.arange(len(present), dtype=np.int8)
    entity_names = tuple(names[i] for i in present)
    keys = {e: tuple(meta["keys"].get(e, ())) for e in entity_names}
    t = arrays["t"].astype(np.float64)
    duration = max(float(t[-1]) if t.size else 0.0, 1e-6)
    if not 0 <= warmup_s < duration:
        raise ParameterError("warmup_s", warmup_s, f"seconds ≥ 0 and < the trace's duration ({duration:g} s)")
    entity = remap[arrays["entity"]]
    key = arrays["key"].astype(np.int32)
    size = _key_sizes(entity, key, arrays["size"].astype(np.int64), keys, entity_names)
    return Trace(
        t=t,
        entity=entity,
        op=arrays["op"].astype(np.int8),
        key=key,
        keys=keys,
        duration_s=duration,
        warmup_s=float(warmup_s),
        depends_on=np.zeros(0, dtype=np.int32),
        entity_names=entity_names,
        derived_invalidation=False,
        size=size,
    )


def _key_sizes(
    entity: np.ndarray, key: np.ndarray, size: np.ndarray, keys: Mapping[str, Sequence[str]], names: Sequence[str]
) -> np.ndarray | None:
    """Per event, its key's bytes: the largest value size seen for the key plus the key's own length."""
    if not size.any():
        return None
    out = np.zeros(size.size, dtype=np.int64)
    for i, e in enumerate(names):
        mask = (entity == i) & (key >= 0)
        per_key = np.zeros(len(keys[e]), dtype=np.int64)
        np.maximum.at(per_key, key[mask], size[mask])
        per_key += np.fromiter((len(k) for k in keys[e]), dtype=np.int64, count=len(keys[e]))
        out[mask] = per_key[key[mask]]
    return out


def generate_trace(spec: WorkloadSpec | None = None, **changes: Any) -> Trace:
    """Draw the trace of ``spec`` (default :class:`WorkloadSpec`, with ``changes`` applied); deterministic.

    With ``spec.trace_file`` the imported trace is loaded instead (:func:`load_trace`).
    """
    spec = (spec or WorkloadSpec()).replace(**changes).validate()
    if spec.trace_file is not None:
        return dataclasses.replace(load_trace(spec.trace_file), spec=spec)
    inputs = assessment_inputs(spec.assessment_inputs, spec.seed)
    rule_ids = tuple(r["rule_id"] for r in rules())
    keys = {
        "hs_codes": tuple(r.code for r in hs_rows() if r.level == 6),
        "rules": rule_ids,
        "assessments": tuple(a.key for a in inputs),
    }
    depends = np.array([rule_ids.index(a.rule_id) if a.rule_id in rule_ids else -1 for a in inputs], dtype=np.int32)
    read_rng, write_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([spec.seed, 1]).spawn(2))
    read_p = _check_mix("read_mix", spec.read_mix, ENTITIES)
    t_parts = [read_rng.uniform(0.0, spec.duration_s, spec.requests)]
    e_parts = [read_rng.choice(len(ENTITIES), size=spec.requests, p=list(read_p.values())).astype(np.int8)]
    o_parts = [np.full(spec.requests, READ, dtype=np.int8)]
    for entity_name, rate in _check_rates(spec.updates_per_hour).items():
        count = round(rate * spec.duration_s / 3600)
        t_parts.append(write_rng.uniform(0.0, spec.duration_s, count))
        e_parts.append(np.full(count, ENTITIES.index(entity_name), dtype=np.int8))
        o_parts.append(np.full(count, WRITE, dtype=np.int8))
    times, ents, ops = np.concatenate(t_parts), np.concatenate(e_parts), np.concatenate(o_parts)
    order = np.argsort(times, kind="stable")
    t, entity, op = times[order], ents[order], ops[order]
    key = np.zeros(t.size, dtype=np.int32)
    for i, e in enumerate(ENTITIES):
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 2, i]))
        n_keys = len(keys[e])
        popularity = rng.permutation(n_keys)  # one popularity order per entity, shared by reads and writes
        for op_code, s in ((READ, spec.zipf_s), (WRITE, spec.write_zipf_s)):
            mask = (entity == i) & (op == op_code)
            if mask.any():
                ranks = rng.choice(n_keys, size=int(mask.sum()), p=zipf_probabilities(n_keys, s))
                key[mask] = popularity[ranks]
    return Trace(
        t=t,
        entity=entity,
        op=op,
        key=key,
        keys=keys,
        duration_s=float(spec.duration_s),
        warmup_s=float(spec.warmup_s),
        depends_on=depends,
        spec=spec,
        assessments=inputs,
    )
