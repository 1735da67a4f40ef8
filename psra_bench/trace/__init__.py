"""A team's own cache traffic: MONITOR capture, exact line parsing, key → entity mapping, importers, trace files.

``psra-bench trace capture`` (:mod:`.capture`) records this namespace's reads and invalidations
with MONITOR; ``trace import`` (:mod:`.formats`) normalizes a capture, our JSON-lines format or a
libCacheSim trace (CSV or oracleGeneral) into one trace file (:mod:`.tracefile`). Tuning on it —
simulation, sweep, recommendation, memory, live replay — is :mod:`psra_bench.cachesim.imported`'s.
"""

from __future__ import annotations

from psra_bench.trace.formats import FORMATS, import_file
from psra_bench.trace.keymap import CommandMapper, KeyMap
from psra_bench.trace.monitor import parse_line
from psra_bench.trace.tracefile import write_trace

__all__ = ["FORMATS", "import_file", "CommandMapper", "KeyMap", "parse_line", "write_trace"]
