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
from dataclasses import dataclass, field
from typing import Any

import msgspec

from continuum_py._calls import StepCall
from continuum_py._client import decode_all
from continuum_py._clock import Watched
from continuum_py._replay import ReplayCore
from continuum_py.errors import ContinuumError, NonDeterminismError
from continuum_py.events import AnyEvent, Event, RunStarted
from continuum_py.journal import StoredEvent
from continuum_py.workflow import Registry, default_registry

__all__ = ["ReplayResult", "Replayer", "VirtualClock", "dump_history", "load_history"]

_history_decoder = msgspec.json.Decoder(list[AnyEvent])


def dump_history(events: Sequence[Event]) -> bytes:
    """Encode events (from ``engine.history``) as a JSON array, for files and golden tests."""
    return msgspec.json.format(msgspec.json.encode(list(events)), indent=1)


def load_history(data: bytes | str) -> list[AnyEvent]:
    """Decode what :func:`dump_history` wrote."""
    events: list[AnyEvent] = _history_decoder.decode(data)
    return events


@dataclass
class ReplayResult:
    """What a replay found.

    Attributes:
        run_id: the run replayed.
        workflow: its workflow name.
        events: how many events were replayed.
        finished: whether the workflow code returned or raised within the history.
        result: the value it returned (when finished without error).
        error: the exception it raised (when finished with one).
        waiting_on: what the code was still waiting on when history ended: step
            names, and for other waits the event that records them
            (``TimerStarted``, ``SignalWaitStarted(name)``, ``ChildStarted(workflow)``).
    """

    run_id: str
    workflow: str
    events: int
    finished: bool
    result: Any = None
    error: BaseException | None = None
    waiting_on: list[str] = field(default_factory=list)


class Replayer:
    """Replays histories against the workflow code registered in ``registry``.

    Args:
        registry: where workflows are looked up (default: the ``@workflow`` registry).
        log: let ``ctx.logger`` lines through during the replay, to watch what
            the run did (a live worker keeps them quiet).
    """

    def __init__(self, registry: Registry | None = None, *, log: bool = False) -> None:
        self.registry = registry or default_registry
        self.log = log

    def replay(self, history: Sequence[AnyEvent] | Sequence[StoredEvent]) -> ReplayResult:
        """Replay one run's history.

        Raises:
            NonDeterminismError: the code asks for something the history does not
                hold (with ``offline=True``: a replay parks no run).
            WorkflowNotRegistered: the history's workflow is not in the registry.
        """
        events = _events(history)
        if not events or not isinstance(events[0], RunStarted):
            raise ContinuumError("a history must start with a RunStarted event")
        run_id = events[0].run_id
        core = ReplayCore(run_id, self.registry)
        core.log_during_replay = self.log
        try:
            core.index(list(events))
            for ev in events:
                core.apply(ev)
            out = ReplayResult(
                run_id=run_id,
                workflow=events[0].workflow,
                events=len(events),
                finished=core.finished,
                waiting_on=[]
                if core.finished
                else [
                    c.step.name if isinstance(c, StepCall) else c.describe for c in core.waiting()
                ],
            )
            if core.finished:
                ok, value = core.outcome()
                if ok:
                    out.result = value
                else:
                    out.error = value
            return out
        except NonDeterminismError as exc:
            if exc.offline:
                raise
            # The replay core words it for a worker, which parks the run; no run
            # is parked here, so say that instead.
            offline = NonDeterminismError(
                exc.run_id, exc.position, exc.recorded, exc.requested, offline=True
            )
            raise offline.with_traceback(exc.__traceback__) from None
        finally:
            core.close()


def _events(history: Sequence[AnyEvent] | Sequence[StoredEvent]) -> list[AnyEvent]:
    """The decoded events of a history of either kind."""
    events: list[AnyEvent] = []
    stored: list[StoredEvent] = []
    for item in history:
        if isinstance(item, StoredEvent):
            stored.append(item)
        else:
            events.append(item)
    if stored and events:
        raise ContinuumError("a history holds events or stored events, not both")
    return decode_all(stored) if stored else events


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
