"""``psra-bench``: a thin command line over the library's plain functions.

Settings come from the environment here, once; each command calls into ``psra_bench`` and
prints. A :class:`psra_bench.exceptions.PsraBenchError` becomes one sentence on stderr and exit
code 2 — never a traceback. The commands live by group: :mod:`psra_bench.cli.servers` (services,
doctor, serve, worker, jobs), :mod:`psra_bench.cli.data` (seed, handover, migrate) and
:mod:`psra_bench.cli.experiments` (indexes audit, load, report, whose options are views of their
parameter models).
"""

from __future__ import annotations

from psra_bench.cli import (  # noqa: F401 - each registers its commands on `cli`
    data,
    experiments,
    servers,
    trace,
    workload,
)
from psra_bench.cli.base import cli, main

__all__ = ["main", "cli"]
