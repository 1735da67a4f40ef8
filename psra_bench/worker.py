"""The job worker process: ``run_worker`` (for ``psra-bench worker``) and ``python -m psra_bench.worker``.

``run_worker`` builds a JobQueue, registers handlers (the defaults, or a setup function given as
a callable or as ``module:function`` / ``path/file.py:function``), runs a
:class:`~psra_bench.job_runner.Worker` and stops it gracefully on SIGTERM/SIGINT: no new jobs,
in-flight jobs get ``grace_seconds`` to finish, the rest go back to the front of their queues.
``python -m psra_bench.worker`` does the same with settings from the environment (the edge).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .exceptions import JobError, PsraBenchError
from .job_runner import Worker
from .jobs import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_POLL_INTERVAL,
    JobQueue,
)
from .settings import Settings

__all__ = ["Worker", "HandlersSetup", "run_worker", "load_handlers_setup", "main"]

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
    if setup is None:  # the edge registers the PSRA handlers; the queue itself knows nothing of them
        from .psra_service import register_default_handlers

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
) -> int:
    """Run a worker until SIGTERM/SIGINT (or, with ``burst``, until the queues are empty); return jobs it ended.

    On a signal it stops taking jobs, lets in-flight jobs finish for ``grace_seconds`` and gives
    the rest back to the front of their queues.

    ``settings`` must name a concrete Redis (``services.ensure_services`` first). Without
    ``handlers_setup`` the default handlers are registered
    (:func:`psra_bench.psra_service.register_default_handlers`: assessment and bulk_import).
    """
    if settings.redis is None:
        raise JobError("run_worker needs a concrete Redis: call services.ensure_services(settings) first.")
    options = {
        "lease_seconds": lease_seconds,
        "max_attempts": max_attempts,
        "grace_seconds": grace_seconds,
        "poll_interval": poll_interval,
    }
    return asyncio.run(_serve(settings, concurrency, handlers_setup, burst, options))


def main(argv: list[str] | None = None) -> int:
    """``python -m psra_bench.worker``: settings from the environment, options from ``argv``."""
    parser = argparse.ArgumentParser(prog="python -m psra_bench.worker", description="Run a psra-bench job worker.")
    parser.add_argument("--concurrency", type=int, default=None, help="jobs at once in this process")
    parser.add_argument("--handlers", default=None, help="module:function or file.py:function registering handlers")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--lease", type=float, default=DEFAULT_LEASE_SECONDS, help="lease seconds")
    parser.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, help="lost workers before FAILED")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_SECONDS, help="seconds to finish on SIGTERM")
    parser.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL, help="idle poll seconds")
    parser.add_argument("--namespace", default=None, help="Redis key prefix (overrides PSRA_CACHE_NAMESPACE)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .services import ensure_services, start_valkey

    try:
        settings = Settings.from_env()
        if args.namespace is not None:
            if not args.namespace or any(ch.isspace() for ch in args.namespace):
                raise JobError(f"--namespace={args.namespace!r} is not valid: use a non-empty prefix without spaces.")
            settings = settings.replace(cache_namespace=args.namespace)
        if args.handlers is None:  # the default handlers need PostgreSQL as well as Redis
            settings = ensure_services(settings)
        elif settings.redis is None:
            settings = settings.replace(redis=start_valkey(settings.home))
        done = run_worker(
            settings,
            args.concurrency,
            handlers_setup=args.handlers,
            burst=args.burst,
            lease_seconds=args.lease,
            max_attempts=args.max_attempts,
            grace_seconds=args.grace,
            poll_interval=args.poll_interval,
        )
    except PsraBenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"jobs_done": done}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
