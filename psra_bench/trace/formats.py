"""Importers: a MONITOR capture, our JSON-lines format, a libCacheSim CSV or oracleGeneral file → trace columns.

* ``monitor``: ``redis-cli MONITOR`` output (or any text of MONITOR lines), mapped by
  :class:`psra_bench.trace.keymap.CommandMapper` (only keys of ``namespace``).
* ``jsonl``: one object per line, ``{"time": s, "entity": name, "op": "read"|"write", "key": k[, "size": bytes]}``
  (``key`` ``"*"``: a write of the whole entity). ``psra-bench trace capture`` writes it, ending with
  one ``{"summary": …}`` line of what the capture dropped.
* ``libcachesim-csv``: a CSV with a column mapping ``time=C,key=C[,size=C][,op=C][,entity=C]``, each
  ``C`` a header name or a 1-based column number (default ``time=1,key=2,size=3``, no header).
  ``op`` values get/gets/read count as reads, delete/del/write/update/invalidate as writes, others
  (set, add …) are skipped and counted.
* ``oracle-general``: libCacheSim's binary records, 24 bytes little-endian ``<IQIq>`` (timestamp
  u32 s, obj_id u64, obj_size u32, next_access_vtime i64, ignored), plain or zstd-compressed. Every
  record is a read.

A key that does not follow the spec's patterns goes to ``entity`` when one is given (a foreign
trace: numeric object ids), else it is counted as unmapped.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from psra_bench.exceptions import InputError
from psra_bench.trace.keymap import ENTITY_NAMES, WHOLE_ENTITY, CommandMapper, KeyMap, TraceEvent
from psra_bench.trace.monitor import UnreadableLine, parse_line
from psra_bench.trace.tracefile import READ, ImportAccount, TraceColumns, columns_from_events

__all__ = ["FORMATS", "DEFAULT_CSV_MAPPING", "ORACLE_RECORD", "import_file", "parse_mapping"]

#: Formats :func:`import_file` reads.
FORMATS: tuple[str, ...] = ("monitor", "jsonl", "libcachesim-csv", "oracle-general")
#: Column mapping of a libCacheSim CSV when none is given.
DEFAULT_CSV_MAPPING = "time=1,key=2,size=3"
#: One oracleGeneral record.
ORACLE_RECORD = np.dtype([("time", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next_vtime", "<i8")])
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CSV_FIELDS = ("time", "key", "size", "op", "entity")
_CSV_READ = frozenset({"get", "gets", "read"})
_CSV_WRITE = frozenset({"delete", "del", "write", "update", "invalidate"})


def _open_bytes(path: Path) -> IO[bytes]:
    raw = path.open("rb")
    if raw.read(4) == _ZSTD_MAGIC:
        import zstandard

        raw.seek(0)
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    raw.seek(0)
    return raw


def _text_lines(path: Path) -> Iterator[str]:
    with io.TextIOWrapper(_open_bytes(path), encoding="utf-8", errors="replace", newline="") as f:
        yield from f


def _entity_for(keymap: KeyMap, key: str, entity: str | None) -> tuple[str, str] | None:
    if entity is None:
        return keymap.entity(key)
    matched = keymap.pattern_entity(key)
    return (matched, key) if matched is not None else (entity, key)


def _monitor(path: Path, account: ImportAccount, namespace: str) -> TraceColumns:
    mapper = CommandMapper(KeyMap(namespace))

    def events() -> Iterator[TraceEvent]:
        for line in _text_lines(path):
            account.lines += 1
            if not line.strip() or line.strip() == "OK":
                continue
            try:
                parsed = parse_line(line)
            except UnreadableLine:
                account.bad_line(line)
                continue
            yield from mapper.feed(parsed)

    cols = columns_from_events(events())
    account.unmapped, account.internal = dict(mapper.keymap.unmapped), dict(mapper.keymap.internal)
    account.extra["commands"] = mapper.commands
    account.extra["scripts"] = mapper.scripts
    account.extra["script_relooks"] = mapper.script_relooks
    account.extra["foreign_keys"] = mapper.keymap.foreign
    return cols


def _jsonl(path: Path, account: ImportAccount) -> TraceColumns:
    def events() -> Iterator[TraceEvent]:
        for line in _text_lines(path):
            account.lines += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if "summary" in obj:
                    for k in ("unmapped", "internal"):
                        getattr(account, k).update(obj["summary"].get(k, {}))
                    account.extra["capture"] = obj["summary"]
                    continue
                ev = TraceEvent(float(obj["time"]), obj["entity"], obj["op"], str(obj["key"]), int(obj.get("size", 0)))
                if (
                    ev.entity not in ENTITY_NAMES
                    or ev.op not in ("read", "write")
                    or (ev.key == WHOLE_ENTITY and ev.op == "read")
                ):
                    raise ValueError(ev)
            except (ValueError, KeyError, TypeError, AttributeError):
                account.bad_line(line)
                continue
            yield ev

    return columns_from_events(events())


def parse_mapping(mapping: str) -> dict[str, str]:
    """``time=C,key=C,…`` as a dict (InputError naming a bad part)."""
    out: dict[str, str] = {}
    for part in mapping.split(","):
        name, sep, column = part.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or name not in _CSV_FIELDS or not column or name in out:
            raise InputError(
                "mapping", mapping, "time=C,key=C[,size=C][,op=C][,entity=C] with C a column name or number"
            )
        out[name] = column
    if "time" not in out or "key" not in out:
        raise InputError("mapping", mapping, "a mapping that names the time and key columns")
    return out


def _csv(path: Path, account: ImportAccount, mapping: str, namespace: str, entity: str | None) -> TraceColumns:
    wanted = parse_mapping(mapping)
    keymap = KeyMap(namespace)
    skipped = 0
    lines = _text_lines(path)
    reader = csv.reader(lines)
    positional = all(c.isdigit() for c in wanted.values())
    header: list[str] | None = None
    if not positional:
        header = next(reader, None)
        account.lines += 1
        if header is None:
            header = []
    where: dict[str, int] = {}
    for name, column in wanted.items():
        if positional:
            where[name] = int(column) - 1
        elif header is not None and column in header:
            where[name] = header.index(column)
        else:
            raise InputError(
                "mapping",
                f"{name}={column}",
                f"a column of {path.name}, whose header has " + ", ".join(header or ["no columns"]),
            )
    width = max(where.values()) + 1

    def events() -> Iterator[TraceEvent]:
        nonlocal skipped
        for row in reader:
            account.lines += 1
            if not row:
                continue
            try:
                if len(row) < width:
                    raise ValueError("short row")
                t = float(row[where["time"]])
                op = row[where["op"]].strip().lower() if "op" in where else "read"
                size = int(float(row[where["size"]])) if "size" in where else 0
            except ValueError:
                account.bad_line(",".join(row))
                continue
            if op not in _CSV_READ and op not in _CSV_WRITE:
                skipped += 1
                continue
            key = row[where["key"]]
            named = row[where["entity"]].strip() if "entity" in where else None
            if named is not None and named not in ENTITY_NAMES:
                account.bad_line(",".join(row))
                continue
            mapped = (named, key) if named else _entity_for(keymap, key, entity)
            if mapped is None:
                continue
            yield TraceEvent(t, mapped[0], "read" if op in _CSV_READ else "write", mapped[1], size)

    cols = columns_from_events(events())
    account.unmapped = dict(keymap.unmapped)
    account.extra["skipped_ops"] = skipped
    return cols


def _oracle(path: Path, account: ImportAccount, entity: str | None) -> TraceColumns:
    if entity is None:
        raise InputError(
            "entity",
            None,
            "an entity name (" + ", ".join(ENTITY_NAMES) + ") for oracle-general traces, whose keys are numbers",
        )
    with _open_bytes(path) as f:
        data = f.read()
    whole = len(data) - len(data) % ORACLE_RECORD.itemsize
    if whole != len(data):
        account.bad_line(f"a partial record of {len(data) - whole} bytes at the end")
    records = np.frombuffer(data, dtype=ORACLE_RECORD, count=whole // ORACLE_RECORD.itemsize)
    account.lines = int(records.size)
    ids, key = np.unique(records["obj_id"], return_inverse=True)
    names = {e: [] for e in ENTITY_NAMES} | {entity: ids.astype(str).tolist()}
    del data
    return TraceColumns(
        t=records["time"].astype(np.float64),
        entity=np.full(records.size, ENTITY_NAMES.index(entity), dtype=np.int8),
        op=np.full(records.size, READ, dtype=np.int8),
        key=key.astype(np.int32),
        size=records["obj_size"].astype(np.int64),
        keys=names,
    )


def import_file(
    path: str | Path,
    fmt: str,
    *,
    namespace: str = "",
    mapping: str | None = None,
    entity: str | None = None,
) -> tuple[TraceColumns, ImportAccount]:
    """Read ``path`` in format ``fmt`` (see the module doc): time-ordered columns and the import's account."""
    source = Path(path)
    if fmt not in FORMATS:
        raise InputError("format", fmt, "one of " + ", ".join(FORMATS))
    if entity is not None and entity not in ENTITY_NAMES:
        raise InputError("entity", entity, "one of " + ", ".join(ENTITY_NAMES))
    if not source.is_file():
        raise InputError("file", str(source), "an existing, readable trace file")
    account = ImportAccount(source={"format": fmt, "file": source.name, "namespace": namespace})
    if fmt == "monitor":
        cols = _monitor(source, account, namespace)
    elif fmt == "jsonl":
        cols = _jsonl(source, account)
    elif fmt == "libcachesim-csv":
        account.source["mapping"] = mapping or DEFAULT_CSV_MAPPING
        cols = _csv(source, account, mapping or DEFAULT_CSV_MAPPING, namespace, entity)
    else:
        cols = _oracle(source, account, entity)
    return cols.sorted(account), account
