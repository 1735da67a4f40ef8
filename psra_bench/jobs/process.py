"""A job worker process: ``run_worker``, which ``psra-bench worker`` (the one entry point) calls.

``run_worker`` builds a JobQueue, registers handlers (the installed defaults, or a setup function
given as a callable or as ``module:function`` / ``path/file.py:function``), runs a
:class:`~psra_bench.jobs.worker.Worker` and stops it gracefully on SIGTERM/SIGINT: no new jobs,
in-flight jobs get ``grace_seconds`` to finish, the rest go back to the front of their queues.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from psra_bench.constants import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_SWEEP_SECONDS,
)
from psra_bench.exceptions import JobError
from psra_bench.jobs.queue import JobQueue, register_default_handlers
from psra_bench.settings import Settings

__all__ = ["HandlersSetup", "run_worker", "worker_settings", "load_handlers_setup"]

log = logging.getLogger(__name__)

#: Registers handlers on a queue: a callable, or "package.module:function" / "path/file.py:function".
HandlersSetup = Callable[[JobQueue], None | Awaitable[None]] | str


def load_handlers_setup(spec: str) -> Callable[[JobQueue], Any]:
    """Import ``"package.module:function"`` or ``"path/to/file.py:function"``; JobError if it is not there."""
    module_name, sep, func_name = spec.rpartition(":")
    if not sep or not module_name or not func_name:
        raise JobError(f"--handlers={spec!r} is not valid: use module:function or path/to/file.py:function.")
    try:
        if module_name.endswith(".py") or "/" in module_name:
            path = Path(module_name).resolve()
            mod_spec = importlib.util.spec_from_file_location(f"_psra_handlers_{path.stem}", path)
            if mod_spec is None or mod_spec.loader is None or not path.exists():
                raise ImportError(f"no file {path}")
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise JobError(f"--handlers={spec!r} cannot be imported ({e}): use module:function or file.py:function.") from e
    func = getattr(module, func_name, None)
    if not callable(func):
        raise JobError(f"--handlers={spec!r}: {module_name} has no function {func_name!r}.")
    return func


async def _setup_handlers(queue: JobQueue, setup: HandlersSetup | None) -> None:
    if setup is None:
        register_default_handlers(queue)
        return
    func = load_handlers_setup(setup) if isinstance(setup, str) else setup
    result = func(queue)
    if inspect.isawaitable(result):
        await result


async def _serve(
    settings: Settings, concurrency: int | None, setup: HandlersSetup | None, burst: bool, queue_options: dict[str, Any]
) -> int:
    queue = JobQueue(settings, **queue_options)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    try:
        await _setup_handlers(queue, setup)
        if not queue.handlers:
            raise JobError("the worker has no job handlers: register some in the handlers setup.")
        for sig in signals:
            try:
                loop.add_signal_handler(sig, stop.set)
            except (ValueError, RuntimeError):  # not the main thread: the caller stops us otherwise
                log.debug("signal %s not handled: run_worker is not in the main thread", sig.name)
        await queue.start_workers(concurrency, burst=burst)
        worker = queue.worker
        assert worker is not None
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
        if burst:
            waiters.append(asyncio.create_task(worker.wait_drained()))
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await queue.stop_workers()
        return worker.jobs_done
    finally:
        for sig in signals:
            try:
                loop.remove_signal_handler(sig)
            except (ValueError, RuntimeError):
                pass
        await queue.close()


def run_worker(
    settings: Settings,
    concurrency: int | None = None,
    *,
    handlers_setup: HandlersSetup | None = None,
    burst: bool = False,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    sweep_seconds: float = DEFAULT_SWEEP_SECONDS,
) -> int:
    """Run a worker until SIGTERM/SIGINT (or, with ``burst``, until the queues are empty); return jobs it ended.

    On a signal it stops taking jobs, lets in-flight jobs finish for ``grace_seconds`` and gives
    the rest back to the front of their queues.

    ``settings`` must name a concrete job store (:func:`worker_settings` first). Without
    ``handlers_setup`` the installed default handlers are registered
    (:func:`psra_bench.jobs.queue.register_default_handlers`: for psra-bench, assessment and bulk_import).
    """
    if settings.jobs_redis is None and settings.redis is None:
        raise JobError("run_worker needs a concrete job store: call worker_settings(settings) first.")
    options = {
        "lease_seconds": lease_seconds,
        "max_attempts": max_attempts,
        "grace_seconds": grace_seconds,
        "poll_interval": poll_interval,
        "sweep_seconds": sweep_seconds,
    }
    return asyncio.run(_serve(settings, concurrency, handlers_setup, burst, options))


def worker_settings(settings: Settings, *, default_handlers: bool = False, namespace: str | None = None) -> Settings:
    """Settings a worker can run with: ``namespace`` applied and the job store made concrete, nothing else started.

    The job store is resolved by :func:`psra_bench.infra.job_store_settings` (a configured one is
    kept; else at most the job queue's own embedded Valkey starts). Handlers open what they need
    themselves: the default set (``default_handlers``, accepted for the callers that still pass it)
    resolves its PostgreSQL and cache from these settings when it is registered.
    """
    if namespace is not None:
        if not namespace or any(ch.isspace() for ch in namespace):
            raise JobError(f"--namespace={namespace!r} is not valid: use a non-empty prefix without spaces.")
        settings = settings.replace(cache_namespace=namespace)
    from psra_bench.infra import job_store_settings  # infra resolves servers; only the job store is needed here

    return job_store_settings(settings)
