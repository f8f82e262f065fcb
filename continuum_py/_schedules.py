"""Cron schedules: deciding each fire from the journal, and the worker's loop that fires them.

Every decision is made from the schedule's stored progress (its last fire),
never from an in-memory iterator, and lands as a compare-and-set on it: any
number of workers can tick the same schedule, a fire is decided once, and a
restarted or long-suspended process picks up where the journal says.

A fire that starts a run is recorded first (its run id in ``last_run_id``)
and started after, through the ordinary idempotent start: a worker that dies
in between leaves a recorded fire without its run, and whichever worker
ticks next starts it (:meth:`Scheduler._ensure_started`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import msgspec

from continuum_py._clock import Clock, wait_for_wake
from continuum_py._cron import fire_time, fires_after
from continuum_py._log import Logger
from continuum_py.journal import ScheduleProgress, ScheduleRecord, ScheduleStore

__all__ = ["OVERLAPS", "ScheduleInfo", "Scheduler", "decide", "fire_run_id", "info"]

OVERLAPS = ("skip", "buffer_one", "allow")
"""What a fire does while the previous fire's run is unfinished."""

SKIP_CHUNK = 1000
"""Fires too old for ``catchup`` counted as skipped in one write (a long outage takes several)."""

_STEPS_PER_TICK = 200


class ScheduleInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A cron schedule as ``engine.schedules()`` shows it (times in the schedule's zone).

    Attributes:
        name: the schedule's name.
        workflow: the workflow each fire starts.
        cron: the 5-field cron expression (a named one expanded).
        tz: the IANA time zone it is read in.
        overlap: ``"skip"``, ``"buffer_one"`` or ``"allow"``.
        catchup: seconds within which a missed fire is still started.
        paused: whether it is paused.
        created_at: when it was first declared.
        last_fire: the newest fire handled (started, skipped or buffered); the
            declaration (or resume) time before any.
        next_fire: the next fire it will handle (None while paused).
        fired: fires started.
        skipped: fires skipped (missed by more than ``catchup``, or an overlap).
        last_skipped: the newest skipped fire.
        buffered: a fire waiting for the previous run to end (``buffer_one``).
        last_run_id: the run of the newest started fire.
    """

    name: str
    workflow: str
    cron: str
    tz: str
    overlap: str
    catchup: float
    paused: bool
    created_at: dt.datetime
    last_fire: dt.datetime
    next_fire: dt.datetime | None
    fired: int
    skipped: int
    last_skipped: dt.datetime | None
    buffered: dt.datetime | None
    last_run_id: str | None


def fire_run_id(name: str, t: float) -> str:
    """The run id of the fire of schedule ``name`` at ``t``: ``"{name}@{UTC ISO 8601}"``."""
    stamp = dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")
    return f"{name}@{stamp.removesuffix('+00:00')}Z"


def fire_of_run_id(run_id: str) -> float:
    """The fire time a :func:`fire_run_id` holds."""
    return dt.datetime.fromisoformat(run_id.rpartition("@")[2]).timestamp()


def info(rec: ScheduleRecord) -> ScheduleInfo:
    """What ``engine.schedules()`` shows of ``rec``."""
    zone = zoneinfo.ZoneInfo(rec.tz)
    p = rec.progress

    def at(t: float | None) -> dt.datetime | None:
        return None if t is None else fire_time(t, zone)

    nxt = None if rec.paused else next(fires_after(rec.cron, zone, p.last_fire), None)
    return ScheduleInfo(
        name=rec.name,
        workflow=rec.workflow,
        cron=rec.cron,
        tz=rec.tz,
        overlap=rec.overlap,
        catchup=rec.catchup,
        paused=rec.paused,
        created_at=fire_time(rec.created_at, zone),
        last_fire=fire_time(p.last_fire, zone),
        next_fire=at(nxt),
        fired=p.fired,
        skipped=p.skipped,
        last_skipped=at(p.last_skipped),
        buffered=at(p.buffered),
        last_run_id=p.last_run_id,
    )


class Step(NamedTuple):
    """One decision: the new progress (None: nothing due), the fire to start, the next fire."""

    progress: ScheduleProgress | None
    start: float | None = None
    next_at: float | None = None


def decide(rec: ScheduleRecord, zone: dt.tzinfo, now: float, running: bool) -> Step:
    """The next thing to record for ``rec`` at ``now``.

    Args:
        rec: the schedule as stored.
        zone: its time zone.
        now: the engine clock.
        running: whether the run of its newest started fire is unfinished
            (only asked for when ``overlap`` is not ``"allow"``).
    """
    p = rec.progress
    replace = msgspec.structs.replace
    if p.buffered is not None and not running:
        rid = fire_run_id(rec.name, p.buffered)
        new = replace(p, buffered=None, last_run_id=rid, fired=p.fired + 1)
        return Step(new, start=p.buffered)
    fires = fires_after(rec.cron, zone, p.last_fire)
    t = next(fires, None)
    if t is None or t > now:
        return Step(None, next_at=t)
    oldest = now - rec.catchup
    if t < oldest:
        skipped = 0
        last = t
        while t is not None and t < oldest and skipped < SKIP_CHUNK:
            skipped, last = skipped + 1, t
            t = next(fires, None)
        new = replace(p, last_fire=last, skipped=p.skipped + skipped, last_skipped=last)
        return Step(new)
    if rec.overlap == "allow" or not running:
        rid = fire_run_id(rec.name, t)
        return Step(replace(p, last_fire=t, last_run_id=rid, fired=p.fired + 1), start=t)
    if rec.overlap == "buffer_one" and p.buffered is None:
        return Step(replace(p, last_fire=t, buffered=t))
    return Step(replace(p, last_fire=t, skipped=p.skipped + 1, last_skipped=t))


class Scheduler:
    """Fires the schedules of a journal from one worker; any number of them may run at once.

    Args:
        store: the journal, as a :class:`ScheduleStore`.
        clock: the engine clock; fire times are measured by it.
        start_fire: starts the run of ``(schedule, fire time)`` (idempotent).
        run_status: whether a run is unfinished (True), finished (False) or missing (None).
        can_fire: whether this worker has the code of a workflow name.
        log: the engine's logger.
        poll_interval: real seconds between looks when nothing wakes it (a
            schedule declared or changed by another process).
    """

    def __init__(
        self,
        *,
        store: ScheduleStore,
        clock: Clock,
        start_fire: Callable[[ScheduleRecord, float], Awaitable[None]],
        run_status: Callable[[str], Awaitable[bool | None]],
        can_fire: Callable[[str], bool],
        log: Logger,
        poll_interval: float,
    ) -> None:
        self._store = store
        self._clock = clock
        self._start_fire = start_fire
        self._run_status = run_status
        self._can_fire = can_fire
        self._log = log
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._checked: dict[str, str] = {}
        self.busy = False
        """True while it ticks (a ``VirtualClock`` does not skip time then)."""

    def start(self) -> None:
        """Start the loop."""
        self.busy = True
        self._task = asyncio.create_task(self._loop())

    def cancel(self) -> None:
        """Stop the loop at its next await (see :meth:`stop`)."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Stop the loop and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.busy = False

    def wake(self) -> None:
        """Look at the schedules now (one was declared or resumed, or a run ended)."""
        self._wake.set()

    async def _loop(self) -> None:
        backoff = self._poll
        while True:
            self._wake.clear()
            next_at: float | None = None
            try:
                next_at = await self.tick()
                backoff = self._poll
            except Exception as exc:
                # Never let the loop die: the journal may be back at the next look.
                self._log.warning("schedule.tick_failed", error=str(exc))
                backoff = min(backoff * 2, 30.0)
            await self._sleep(backoff, next_at)

    async def _sleep(self, timeout: float, next_at: float | None) -> None:
        if next_at is not None and next_at <= self._clock.now():
            await asyncio.sleep(0)  # more to do at once; let others run first
            return
        self.busy = False
        try:
            await wait_for_wake(self._wake, self._clock, next_at, timeout)
        finally:
            self.busy = True

    async def tick(self) -> float | None:
        """Handle every due fire of every schedule; returns the soonest next fire."""
        soonest: float | None = None
        for rec in await self._store.list_schedules():
            if rec.paused or not self._can_fire(rec.workflow):
                continue
            try:
                nxt = await self._advance(rec)
            except Exception as exc:
                # One schedule that cannot fire (its run cannot start, its zone is not
                # installed here) must not hold the others up; it is tried at the next look.
                self._log.warning("schedule.tick_failed", schedule=rec.name, error=str(exc))
                continue
            if nxt is not None and (soonest is None or nxt < soonest):
                soonest = nxt
        return soonest

    async def _advance(self, rec: ScheduleRecord) -> float | None:
        """Record (and start) the due fires of ``rec``; returns its next fire time."""
        zone = zoneinfo.ZoneInfo(rec.tz)
        for _ in range(_STEPS_PER_TICK):
            await self._ensure_started(rec)
            running = False
            last_run = rec.progress.last_run_id
            if rec.overlap != "allow" and last_run is not None:
                running = await self._run_status(last_run) is True
            step = decide(rec, zone, self._clock.now(), running)
            if step.progress is None:
                return step.next_at
            if await self._store.advance_schedule(rec.name, rec.progress, step.progress):
                self._record(rec, step)
                if step.start is not None:
                    await self._start(rec, step.start)
                rec = msgspec.structs.replace(rec, progress=step.progress)
                continue
            # Another worker advanced it first (or it changed): read what it recorded.
            fresh = await self._store.get_schedule(rec.name)
            if fresh is None or fresh.paused:
                return None
            rec = fresh
        return self._clock.now()  # still behind: come back at once

    def _record(self, rec: ScheduleRecord, step: Step) -> None:
        assert step.progress is not None
        p = step.progress
        if p.skipped != rec.progress.skipped:
            self._log.info(
                "schedule.skipped",
                schedule=rec.name,
                fires=p.skipped - rec.progress.skipped,
                last=p.last_skipped,
            )
        elif p.buffered is not None and p.buffered != rec.progress.buffered:
            self._log.info("schedule.buffered", schedule=rec.name, fire=p.buffered)

    async def _start(self, rec: ScheduleRecord, t: float) -> None:
        rid = fire_run_id(rec.name, t)
        try:
            await self._start_fire(rec, t)
        except Exception as exc:
            self._log.error("schedule.start_failed", schedule=rec.name, run_id=rid, error=str(exc))
            raise
        self._checked[rec.name] = rid

    async def _ensure_started(self, rec: ScheduleRecord) -> None:
        """Start the newest recorded fire if its run is missing (its recorder died first)."""
        rid = rec.progress.last_run_id
        if rid is None or self._checked.get(rec.name) == rid:
            return
        if await self._run_status(rid) is None:
            await self._start(rec, fire_of_run_id(rid))
        self._checked[rec.name] = rid
