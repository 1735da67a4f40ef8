"""The steps a cache operation yields: the sans-I/O protocol between the cache's core and its two faces.

:mod:`psra_bench.cache.core` writes each operation once as an :data:`Op`, a generator that yields
:data:`Step` objects — a :class:`Command` or :class:`Pipeline` for Redis, a :class:`Sweep` of a
pattern, a :class:`Call` of the face's own public method (which a subclass may override), a
:class:`Sleep`, the caller's :class:`Compute`, joining a :class:`Flight` — and is sent
each reply (or has the error raised at that ``yield``). A face (:mod:`psra_bench.cache.service`,
:mod:`psra_bench.cache.aio`) carries the steps out, blocking or awaiting, and decides nothing. A
Command names the client method as redis-py spells it, so one Command serves both clients.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

__all__ = [
    "Marker",
    "RETRY",
    "Command",
    "Pipeline",
    "Sweep",
    "Call",
    "Sleep",
    "Compute",
    "Flight",
    "Step",
    "Op",
]

T = TypeVar("T")


class Marker:
    """A named sentinel (``MISSING``, ``RETRY``): compared by identity, shown by its name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: What a face answers a :class:`Flight` that ended without a value (its asyncio leader was cancelled): ask again.
RETRY: Any = Marker("RETRY")


@dataclass(slots=True)
class Command:
    """One Redis command: the client method ``name`` with ``args`` (and ``kwargs``), as redis-py spells it."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None

    def call(self, target: Any) -> Any:
        """Send it through ``target`` (client or pipeline): the reply, or its awaitable on an asyncio client."""
        if self.kwargs is None:
            return getattr(target, self.name)(*self.args)
        return getattr(target, self.name)(*self.args, **self.kwargs)


@dataclass(slots=True)
class Pipeline:
    """Commands sent in one round trip (a non-transactional pipeline); the reply is the list of replies."""

    commands: tuple[Command, ...]
    #: False: a command's error is its reply (an exception object in the list), the others still answer.
    raise_on_error: bool = True

    def call(self, client: Any) -> Any:
        """Queue the commands on a pipeline of ``client`` and execute it: the replies, or their awaitable."""
        pipe = client.pipeline(transaction=False)
        for command in self.commands:
            command.call(pipe)
        return pipe.execute(raise_on_error=self.raise_on_error)


@dataclass(slots=True)
class Sweep:
    """SCAN for the (namespaced, escaped) glob ``match`` and UNLINK what it finds, on every primary; the count."""

    match: str


@dataclass(slots=True)
class Call:
    """Call the face's own public method ``name`` with ``args``, so a subclass's override applies; its result."""

    name: str
    args: tuple[Any, ...] = ()


@dataclass(slots=True)
class Sleep:
    """Wait ``seconds`` (a single-flight follower between two looks at another process's lock)."""

    seconds: float


@dataclass(slots=True)
class Compute:
    """Run the caller's ``fn`` (awaited on the asyncio face); the reply is its value, its error is raised."""

    fn: Callable[[], Any]


@dataclass(slots=True)
class Flight:
    """Join this process's computation of ``key``, or lead it by running ``lead``; the reply is its value or RETRY."""

    key: str
    lead: Op[Any]


Step: TypeAlias = Command | Pipeline | Sweep | Call | Sleep | Compute | Flight
#: One cache operation: yields steps, is sent their replies, returns its result.
Op: TypeAlias = Generator[Step, Any, T]
