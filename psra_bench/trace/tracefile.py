"""The normalized trace file: one ``.npz`` every import writes, with a content fingerprint.

Arrays (one row per event, ordered by time): ``t`` (float64 seconds since the first event),
``entity`` (int8, index into ``meta.entity_names``), ``op`` (int8: 0 read, 1 write), ``key``
(int32, index into ``meta.keys[entity]``; ``-1``: a write of the whole entity) and ``size`` (int64
value bytes, 0 unknown). ``meta`` is a JSON document: ``version``, ``entity_names``, ``keys``,
``duration_s``, ``fingerprint`` (SHA-256 over the arrays and key names, so two imports of the same
traffic compare like with like whatever file they came from) and the import's account: ``source``
(format and file name), ``lines``, ``unreadable`` (count and the first three quoted),
``unmapped`` (key prefixes with counts), ``internal`` (dropped internal keys by kind),
``reordered`` (events whose timestamp was earlier than the one before; they are sorted).
:func:`psra_bench.cachesim.workload.load_trace` reads it into a simulation trace (the one reader).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from psra_bench.exceptions import InputError
from psra_bench.trace.keymap import ENTITY_NAMES, WHOLE_ENTITY, TraceEvent

__all__ = [
    "FORMAT_VERSION",
    "READ",
    "WRITE",
    "ImportAccount",
    "TraceColumns",
    "columns_from_events",
    "fingerprint",
    "write_trace",
]

#: Version of the file layout (bumped when a field changes meaning).
FORMAT_VERSION = 1
#: Operation codes of the ``op`` array.
READ, WRITE = 0, 1
_QUOTED = 3


@dataclass
class ImportAccount:
    """What an import read, skipped and changed."""

    source: dict[str, Any]
    lines: int = 0
    unreadable: int = 0
    #: The first three unreadable lines, quoted (each cut at 200 characters).
    unreadable_first: list[str] = field(default_factory=list)
    unmapped: dict[str, int] = field(default_factory=dict)
    internal: dict[str, int] = field(default_factory=dict)
    reordered: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def bad_line(self, line: str) -> None:
        """Count one unreadable line, quoting it when it is among the first three."""
        self.unreadable += 1
        if len(self.unreadable_first) < _QUOTED:
            self.unreadable_first.append(line.rstrip("\r\n")[:200])


@dataclass
class TraceColumns:
    """A trace as arrays (see the module doc) plus each entity's key names."""

    t: np.ndarray
    entity: np.ndarray
    op: np.ndarray
    key: np.ndarray
    size: np.ndarray
    keys: dict[str, list[str]]
    entity_names: tuple[str, ...] = ENTITY_NAMES

    def __len__(self) -> int:
        return int(self.t.size)

    def sorted(self, account: ImportAccount) -> TraceColumns:
        """The events in time order (stable), counting those that came earlier than their predecessor."""
        if self.t.size > 1:
            account.reordered += int((np.diff(self.t) < 0).sum())
        if account.reordered:
            order = np.argsort(self.t, kind="stable")
            for name in ("t", "entity", "op", "key", "size"):
                setattr(self, name, getattr(self, name)[order])
        if self.t.size:
            self.t = self.t - self.t[0]
        return self


def columns_from_events(events: Iterable[TraceEvent]) -> TraceColumns:
    """Columns of parsed events (keys interned per entity; ``*`` becomes key ``-1``)."""
    index: dict[str, dict[str, int]] = {e: {} for e in ENTITY_NAMES}
    ent_code = {e: i for i, e in enumerate(ENTITY_NAMES)}
    t: list[float] = []
    ent: list[int] = []
    op: list[int] = []
    key: list[int] = []
    size: list[int] = []
    for ev in events:
        names = index[ev.entity]
        t.append(ev.time)
        ent.append(ent_code[ev.entity])
        op.append(READ if ev.op == "read" else WRITE)
        key.append(-1 if ev.key == WHOLE_ENTITY else names.setdefault(ev.key, len(names)))
        size.append(ev.size)
    return TraceColumns(
        t=np.asarray(t, dtype=np.float64),
        entity=np.asarray(ent, dtype=np.int8),
        op=np.asarray(op, dtype=np.int8),
        key=np.asarray(key, dtype=np.int32),
        size=np.asarray(size, dtype=np.int64),
        keys={e: list(v) for e, v in index.items()},
    )


def fingerprint(cols: TraceColumns) -> str:
    """SHA-256 over the event arrays and the key names: the same traffic, the same fingerprint."""
    h = hashlib.sha256(f"psra-bench trace v{FORMAT_VERSION}".encode())
    for arr, dtype in ((cols.t, "<f8"), (cols.entity, "<i1"), (cols.op, "<i1"), (cols.key, "<i4"), (cols.size, "<i8")):
        h.update(np.ascontiguousarray(arr, dtype=dtype).tobytes())
    for e in cols.entity_names:
        h.update(e.encode() + b"\x1d" + "\x1f".join(cols.keys.get(e, ())).encode() + b"\x1e")
    return h.hexdigest()


def _check_entities(cols: TraceColumns, account: ImportAccount) -> None:
    reads = int((cols.op == READ).sum())
    if reads == 0:
        seen = ", ".join(f"{p} ({n})" for p, n in sorted(account.unmapped.items(), key=lambda x: -x[1])[:5])
        raise InputError(
            "trace",
            account.source.get("file"),
            "a trace with at least one read of an entity key (hs:code:, hs:search:, rule:id:, rules:agreement:, "
            f"assessment:, verdict:, report:); it had {len(cols)} entity events"
            + (f" and unmapped keys {seen}" if seen else "")
            + (f" and {account.unreadable} unreadable lines" if account.unreadable else ""),
        )


def write_trace(path: str | Path, cols: TraceColumns, account: ImportAccount) -> dict[str, Any]:
    """Write the normalized trace atomically; its meta (with the fingerprint). InputError without entity reads."""
    _check_entities(cols, account)
    meta = {
        "version": FORMAT_VERSION,
        "entity_names": list(cols.entity_names),
        "keys": cols.keys,
        "duration_s": float(cols.t[-1]) if len(cols) else 0.0,
        "events": len(cols),
        "reads": int((cols.op == READ).sum()),
        "writes": int((cols.op == WRITE).sum()),
        "fingerprint": fingerprint(cols),
        "source": account.source,
        "lines": account.lines,
        "unreadable": {"count": account.unreadable, "first": account.unreadable_first},
        "unmapped": dict(sorted(account.unmapped.items(), key=lambda x: (-x[1], x[0]))),
        "internal": dict(account.internal),
        "reordered": account.reordered,
        **account.extra,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                t=cols.t,
                entity=cols.entity,
                op=cols.op,
                key=cols.key,
                size=cols.size,
                meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            )
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {k: v for k, v in meta.items() if k != "keys"}
