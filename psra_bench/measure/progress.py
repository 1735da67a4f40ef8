"""Where a long measurement is, told to whoever runs it: one JSON line per event, appended to a file.

A report run (:mod:`psra_bench.report.runner`) names a file in ``PSRA_BENCH_PROGRESS`` for each
notebook's kernel and follows it (:mod:`psra_bench.report.progress`): a bar on a terminal, a few
plain lines in a log. Anything of the workbench — a query-latency round, the cache replay, a load
step in the Locust process — calls :func:`note`; with no run following (a notebook opened in
JupyterLab, a test) it does nothing. Events carry a stage, a message and optionally ``done`` of
``total``; they hold no values of the data measured, only where the run is. A stage's events are
written at most once a second, except its first and last (``done == total``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from psra_bench.settings import progress_file_from_env

__all__ = ["note", "MIN_INTERVAL_S"]

#: Seconds between two written events of one stage (its first and last are always written).
MIN_INTERVAL_S = 1.0

_lock = threading.Lock()
_last_written: dict[str, float] = {}
#: The clock of the once-a-second rule (a test holds it still).
_clock = time.monotonic


def note(stage: str, message: str, *, done: int | None = None, total: int | None = None) -> None:
    """Tell the run following this process that ``stage`` is at ``message`` (``done`` of ``total``)."""
    target = progress_file_from_env()
    if target is None:
        return
    now = _clock()
    final = done is not None and total is not None and done >= total
    with _lock:
        last = _last_written.get(stage)
        if last is not None and not final and now - last < MIN_INTERVAL_S:
            return
        _last_written[stage] = now
        event = {"t": round(time.time(), 3), "stage": stage, "message": message, "done": done, "total": total}
        try:
            with Path(target).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(event) + "\n")
        except OSError:  # a progress line is never worth failing a measurement for
            pass
