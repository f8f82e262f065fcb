"""Tools for tests and debugging: replay a recorded history against workflow code.

Typical use: save a run's history where it went wrong, then on your laptop::

    events = await engine.history("order-o-1")
    Path("order-o-1.json").write_bytes(dump_history(events))
    ...
    result = Replayer(log=True).replay(load_history(Path("order-o-1.json").read_bytes()))

A replay runs the workflow code with every step's recorded outcome, runs no
step body, and raises :class:`~continuum_py.errors.NonDeterminismError` where
code and history part. Golden histories checked into a test suite catch code
changes that would strand in-flight runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time
import weakref
from collections.abc import Sequence

import msgspec

from continuum_py._clock import Watched
from continuum_py.events import AnyEvent, Event
from continuum_py.testing._frames import SourceLine
from continuum_py.testing._golden import HistoriesReport, HistoryCheck, read_history_file
from continuum_py.testing._replayer import (
    Ask,
    Divergence,
    Replayer,
    ReplayResult,
    ReplayView,
)

__all__ = [
    "Ask",
    "Divergence",
    "HistoriesReport",
    "HistoryCheck",
    "ReplayResult",
    "ReplayView",
    "Replayer",
    "SourceLine",
    "VirtualClock",
    "dump_history",
    "load_history",
]


def dump_history(events: Sequence[Event]) -> bytes:
    """Encode events (from ``engine.history``) as a JSON array, for files and golden tests."""
    return msgspec.json.format(msgspec.json.encode(list(events)), indent=1)


def load_history(data: bytes | str) -> list[AnyEvent]:
    """Decode what :func:`dump_history` wrote."""
    return read_history_file(data.encode() if isinstance(data, str) else data)


class VirtualClock:
    """A clock for tests: durable time that moves only when told, or when nothing else can.

    Pass it to ``Engine(clock=...)``. With ``auto_advance`` (the default), when
    every run of every engine using the clock waits only for time, the clock
    jumps straight to the next timer: a workflow that sleeps 30 days finishes
    in milliseconds. Without it, move time yourself with :meth:`advance`
    (for example to send a signal before a timeout is reached).

    Args:
        start: the starting time (a timezone-aware datetime, or seconds since the
            epoch); default: now.
        auto_advance: skip idle time automatically.
        idle_delay: real seconds everything must stay idle before a jump.
    """

    def __init__(
        self,
        start: dt.datetime | float | None = None,
        *,
        auto_advance: bool = True,
        idle_delay: float = 0.005,
    ) -> None:
        if isinstance(start, dt.datetime):
            start = start.timestamp()
        self._now = float(start) if start is not None else time.time()
        self.auto_advance = auto_advance
        self.idle_delay = idle_delay
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = itertools.count()
        self._engines: weakref.WeakSet[Watched] = weakref.WeakSet()
        self._driver: asyncio.Task[None] | None = None
        self.jumps = 0
        """How many times auto-advance skipped time."""

    def attach(self, engine: Watched) -> None:
        """Consider ``engine`` busy unless its ``idle`` says otherwise (engines call this)."""
        self._engines.add(engine)

    def now(self) -> float:
        """The virtual time, in seconds since the epoch."""
        return self._now

    def datetime(self) -> dt.datetime:
        """The virtual time as a UTC datetime."""
        return dt.datetime.fromtimestamp(self._now, dt.UTC)

    async def sleep_until(self, when: float) -> None:
        """Return once virtual time reaches ``when``."""
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._count), fut))
        if self.auto_advance and (self._driver is None or self._driver.done()):
            self._driver = asyncio.get_running_loop().create_task(self._auto())
        await fut

    async def advance(self, seconds: float | dt.timedelta) -> None:
        """Move time forward by ``seconds``, waking each sleeper in due order."""
        secs = seconds.total_seconds() if isinstance(seconds, dt.timedelta) else float(seconds)
        if secs < 0:
            raise ValueError(f"time only moves forward; got {seconds!r}")
        target = self._now + secs
        while True:
            self._prune()
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            self._set(self._sleepers[0][0])
            for _ in range(20):
                await asyncio.sleep(0)
        self._set(target)
        await asyncio.sleep(0)

    def _set(self, when: float) -> None:
        self._now = max(self._now, when)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def _prune(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    def _idle(self) -> bool:
        return all(e.idle for e in list(self._engines))

    async def _auto(self) -> None:
        quiet = 0
        while True:
            await asyncio.sleep(self.idle_delay)
            self._prune()
            if not self._sleepers:
                return
            quiet = quiet + 1 if self._idle() else 0
            if quiet >= 2:
                quiet = 0
                self.jumps += 1
                self._set(self._sleepers[0][0])
