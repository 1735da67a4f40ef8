"""Showing a running notebook's progress: a kernel that speaks over IPC, and a follower of its progress file.

:func:`kernel_manager_class` gives papermill a kernel manager whose kernels listen on Unix
sockets in a private folder instead of TCP ports on 127.0.0.1: nothing on the network to read, and
no "Kernel is running over TCP without encryption" warning for each notebook. It also hands the
kernel ``PSRA_BENCH_PROGRESS``, the file where :func:`psra_bench.measure.progress.note` appends
the notebook's events.

:class:`ProgressFollower` reads that file in a thread while the notebook runs and shows the
events: on a terminal one status line rewritten in place (with a bar when an event says ``done``
of ``total``); in a log or under cron plain lines, one when a stage begins or ends and at most one
every :data:`LINE_INTERVAL_S` seconds in between, so a six-minute load test tells where it is
without drowning the log.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from psra_bench.settings import PROGRESS_FILE_ENV, environ_with

__all__ = ["LINE_INTERVAL_S", "ProgressFollower", "kernel_manager_class", "render"]

#: Seconds between two plain progress lines of one stage (a stage's first and last are always shown).
LINE_INTERVAL_S = 15.0
_POLL_S = 0.25
_BAR = 20


def kernel_manager_class(ipc_dir: Path, progress_file: Path) -> type:
    """A jupyter_client kernel manager class: IPC transport in ``ipc_dir``, progress events to ``progress_file``."""
    from jupyter_client.manager import AsyncKernelManager

    class ReportKernelManager(AsyncKernelManager):
        """A kernel on Unix sockets (no TCP), told where to write its progress."""

        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", str(ipc_dir / "kernel"))
            super().__init__(**kwargs)

        async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]  # the async manager's is async
            kw["env"] = {**environ_with({PROGRESS_FILE_ENV: str(progress_file)}), **kw.get("env", {})}
            await super().start_kernel(**kw)

    return ReportKernelManager


def render(event: dict[str, Any]) -> str:
    """One event as a line: ``stage: [#####.....] 5/10 message`` (the bar only when it has done of total)."""
    done, total = event.get("done"), event.get("total")
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        filled = min(_BAR, round(_BAR * done / total))
        bar = f"[{'#' * filled}{'.' * (_BAR - filled)}] {done}/{total} "
    else:
        bar = ""
    return f"{event.get('stage', '?')}: {bar}{event.get('message', '')}"


class ProgressFollower:
    """Follow ``path`` while a notebook runs: ``live`` (a terminal's status line) or ``say`` (plain lines).

    Use as a context manager around the notebook's execution; on exit the rest of the file is
    shown and the status line is cleared.
    """

    def __init__(
        self,
        path: Path,
        say: Callable[[str], None],
        *,
        live: Callable[[str], None] | None = None,
        indent: str = "    ",
        line_interval_s: float = LINE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.say, self.live, self.indent = path, say, live, indent
        self.line_interval_s, self.clock = line_interval_s, clock
        self._offset = path.stat().st_size if path.exists() else 0  # earlier notebooks' events were shown
        self._partial = ""
        self._stage: str | None = None
        self._last_line = 0.0
        self._pending: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Every event read, in order (the run keeps them in its progress file too).
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> ProgressFollower:
        self._thread = threading.Thread(target=self._follow, name="psra-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
        if self._pending is not None:
            self._line(self._pending)
        if self.live is not None:
            self.live("")

    def _follow(self) -> None:
        while not self._stop.wait(_POLL_S):
            self.poll()

    def poll(self) -> None:
        """Read what was appended since the last look and show it."""
        try:
            with self.path.open("r", encoding="utf-8") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
                self._offset = fh.tell()
        except FileNotFoundError:
            return
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()  # an incomplete last line waits for the rest
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.append(event)
                self._show(event)

    def _show(self, event: dict[str, Any]) -> None:
        if self.live is not None:
            self.live(self.indent + render(event))
            return
        now = self.clock()
        stage = event.get("stage")
        final = event.get("done") is not None and event.get("done") == event.get("total")
        if stage != self._stage:
            if self._pending is not None:  # the last word of the stage that ended
                self._line(self._pending)
            self._stage = stage
            self._line(event)
        elif final or now - self._last_line >= self.line_interval_s:
            self._line(event)
        else:
            self._pending = event

    def _line(self, event: dict[str, Any]) -> None:
        self._pending = None
        self._last_line = self.clock()
        self.say(self.indent + render(event))
