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
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, NamedTuple

import numpy as np

from psra_bench.db.reference import hs_rows, rules
from psra_bench.db.seed import EU_MEMBERS
from psra_bench.exceptions import InputError, ParameterError

__all__ = [
    "ENTITIES",
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
    "generate_trace",
]

#: The cached entities a trace reads, named as in :class:`psra_bench.settings.TTLSettings`.
ENTITIES: tuple[str, ...] = ("hs_codes", "rules", "assessments")
#: The entities whose rows a trace updates (an assessment goes stale through its rule).
UPDATABLE: tuple[str, ...] = ("hs_codes", "rules")
#: Row names of the spec's "Cache Hit Rates" table.
ENTITY_LABELS: dict[str, str] = {
    "hs_codes": "HS Code Lookups",
    "rules": "Rule Lookups",
    "assessments": "Assessment Results",
}
#: Event operation codes in :attr:`Trace.op`.
READ, WRITE = 0, 1
#: The assessment date of every generated assessment input (fixed, so inputs never depend on today).
ASSESSMENT_DATE = "2025-06-01"
#: Share of reads per entity.
DEFAULT_READ_MIX: dict[str, float] = {"hs_codes": 0.5, "rules": 0.25, "assessments": 0.25}
#: Data updates per simulated hour, per updatable entity.
DEFAULT_UPDATES_PER_HOUR: dict[str, float] = {"hs_codes": 12.0, "rules": 2.0}

_REPLAY_TENANT_NAMESPACE = uuid.UUID("3b9d2f4e-5c61-4a8e-9f0b-2d7c6e1a4b90")
_REPLAY_TENANTS = 20
_NON_PARTY_SUPPLIERS = ("CN", "IN", "VN", "TR", "KR")
_PROCESSES = ("POLYMERIZATION", "VULCANIZATION", "ASSEMBLY", "CUTTING", "PACKAGING_ONLY")
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


def check_ttls(ttls: Mapping[str, float], name: str = "ttls") -> dict[str, float]:
    """Entity -> TTL in seconds, checked: known entity names and TTLs > 0 (ParameterError otherwise)."""
    if not isinstance(ttls, Mapping) or not ttls:
        raise ParameterError(name, ttls, "a mapping of entity name (" + ", ".join(ENTITIES) + ") to seconds > 0")
    out: dict[str, float] = {}
    for entity, ttl in ttls.items():
        check_entity(f"{name} entity", entity)
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


def _check_whole(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParameterError(name, value, f"a whole number from {low:,} to {high:,}")
    return value


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

    def validate(self) -> WorkloadSpec:
        """Check every field before any work starts (ParameterError naming the bad value); return self."""
        _check_whole("requests", self.requests, 1, _MAX_REQUESTS)
        _check_number("duration_s", self.duration_s)
        _check_number("warmup_s", self.warmup_s, strict=False)
        if self.warmup_s >= self.duration_s:
            raise ParameterError("warmup_s", self.warmup_s, f"seconds ≥ 0 and < duration_s={self.duration_s:g}")
        _check_mix("read_mix", self.read_mix, ENTITIES)
        _check_rates(self.updates_per_hour)
        _check_number("zipf_s", self.zipf_s, strict=False, maximum=5)
        _check_number("write_zipf_s", self.write_zipf_s, strict=False, maximum=5)
        _check_whole("assessment_inputs", self.assessment_inputs, 1, 5000)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError("seed", self.seed, "a whole number ≥ 0")
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


class AssessmentInput(NamedTuple):
    """One distinct assessment request and the cache key it lands on."""

    #: ``rule_id|hs_code|origin|dest``: the parts of the spec's assessment key.
    key: str
    #: The rule the engine selects for it (its update makes the cached result stale), or None.
    rule_id: str | None
    #: The request as JSON-ready data (what the API would receive).
    request: dict[str, Any]


class Event(NamedTuple):
    """One trace event as the live replay consumes it."""

    position: int
    t: float
    entity: str
    op: str
    key_index: int
    key: str


def replay_tenant_ids() -> tuple[str, ...]:
    """Tenant ids used only by generated assessment inputs (so their verdicts can be deleted afterwards)."""
    return tuple(str(uuid.uuid5(_REPLAY_TENANT_NAMESPACE, f"cache-replay-tenant-{k}")) for k in range(_REPLAY_TENANTS))


def _party_countries(jurisdiction: str) -> list[str]:
    return sorted(EU_MEMBERS) if jurisdiction == "EU" else [jurisdiction]


def _draw_request(
    rng: np.random.Generator,
    rule: Mapping[str, Any],
    subheadings: Sequence[str],
    by_prefix: dict[str, list[str]],
    tenants: Sequence[str],
) -> dict[str, Any]:
    prefix = rule.get("hs_subheading") or rule.get("hs_heading") or rule["hs_chapter"]
    if prefix not in by_prefix:
        by_prefix[prefix] = [c for c in subheadings if c.startswith(prefix)]
    product = by_prefix[prefix][int(rng.integers(len(by_prefix[prefix])))]
    parties = list(rule["jurisdictions"])
    a, b = rng.choice(len(parties), size=2, replace=False)
    origin_choices, dest_choices = _party_countries(parties[int(a)]), _party_countries(parties[int(b)])
    origin = origin_choices[int(rng.integers(len(origin_choices)))]
    dest = dest_choices[int(rng.integers(len(dest_choices)))]
    suppliers = [origin, dest, *_NON_PARTY_SUPPLIERS]
    lines = []
    for _ in range(int(rng.integers(1, 4))):
        lines.append(
            {
                "hs_code": subheadings[int(rng.integers(len(subheadings)))],
                "origin_country": suppliers[int(rng.integers(len(suppliers)))],
                "value": f"{rng.uniform(5, 400):.2f}",
            }
        )
    total = sum(float(x["value"]) for x in lines)
    price = total * float(rng.uniform(1.2, 2.5))
    processes = sorted({_PROCESSES[int(i)] for i in rng.choice(len(_PROCESSES), size=int(rng.integers(0, 3)))})
    return {
        "hs_code": product,
        "bill_of_materials": lines,
        "ex_works_price": f"{price:.2f}",
        "transaction_value": f"{price:.2f}",
        "net_cost": f"{price * 0.85:.2f}",
        "agreement_code": rule["agreement_code"],
        "origin_country": origin,
        "destination_country": dest,
        "assessment_date": ASSESSMENT_DATE,
        "tenant_id": tenants[int(rng.integers(len(tenants)))],
        "processes": processes,
    }


@lru_cache(maxsize=8)
def assessment_inputs(count: int, seed: int) -> tuple[AssessmentInput, ...]:
    """``count`` distinct, valid assessment inputs (distinct cache keys), drawn with ``seed``.

    Each is built for a rule in force on :data:`ASSESSMENT_DATE` (a product under its HS prefix,
    a route between two of its parties, a 1-3 line bill of materials) and run through the pure
    engine once to learn which rule it selects, i.e. which cache key it lands on.
    """
    from psra_bench.psra.assessment import assess, default_rules

    _check_whole("assessment_inputs", count, 1, 5000)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    in_force = [r for r in rules() if r["effective_to"] is None]
    subheadings = [r.code for r in hs_rows() if r.level == 6]
    by_prefix: dict[str, list[str]] = {}
    tenants = replay_tenant_ids()
    compiled = default_rules()
    out: list[AssessmentInput] = []
    seen: set[str] = set()
    for _ in range(count * 50):
        request = _draw_request(rng, in_force[int(rng.integers(len(in_force)))], subheadings, by_prefix, tenants)
        try:
            verdict = assess(request, compiled)
        except InputError:  # pragma: no cover - the draw only makes valid requests
            continue
        key = "|".join(
            (verdict.rule_id or "none", verdict.hs_code, verdict.origin_country, verdict.destination_country)
        )
        if key not in seen:
            seen.add(key)
            out.append(AssessmentInput(key, verdict.rule_id, request))
            if len(out) == count:
                return tuple(out)
    raise ParameterError("assessment_inputs", count, f"at most {len(out)} distinct inputs for seed {seed}")


def zipf_probabilities(n: int, s: float) -> np.ndarray:
    """``P(rank k) ∝ k^-s`` for ranks 1..n (``s = 0``: uniform), summing to 1."""
    _check_whole("n", n, 1, 100_000_000)
    _check_number("s", s, strict=False)
    w = np.arange(1, n + 1, dtype=float) ** -float(s)
    return w / w.sum()


@dataclass(frozen=True, eq=False)
class Trace:
    """A time-ordered event list: parallel arrays plus the key names of each entity."""

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
        return h.hexdigest()

    def events(self) -> Iterator[Event]:
        """The events in order, with entity, operation and key as names."""
        for i, (t, e, op, k) in enumerate(zip(*self.columns(), strict=True)):
            entity = ENTITIES[e]
            yield Event(i, t, entity, "read" if op == READ else "write", k, self.keys[entity][k])

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
        for i, e in enumerate(ENTITIES):
            reads = (self.entity == i) & (self.op == READ)
            writes = (self.entity == i) & (self.op == WRITE)
            per[e] = {
                "reads": int(reads.sum()),
                "writes": int(writes.sum()),
                "reads_after_warmup": int((reads & (self.t >= self.warmup_s)).sum()),
                "keys": len(self.keys.get(e, ())),
                "distinct_keys_read": int(np.unique(self.key[reads]).size),
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


def generate_trace(spec: WorkloadSpec | None = None, **changes: Any) -> Trace:
    """Draw the trace of ``spec`` (default :class:`WorkloadSpec`, with ``changes`` applied); deterministic."""
    spec = (spec or WorkloadSpec()).replace(**changes).validate()
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
