"""The Engine's cron schedule methods (a mixin of :class:`~continuum_py.Engine`)."""

from __future__ import annotations

import datetime as dt
import inspect
import math
from typing import TYPE_CHECKING, Any

from continuum_py import _codec
from continuum_py._cron import check_cron, check_tz, fire_time, next_fires
from continuum_py._schedules import OVERLAPS, ScheduleInfo, Scheduler, fire_run_id, info
from continuum_py.errors import ConfigurationError, ScheduleNotFound
from continuum_py.journal import ScheduleProgress, ScheduleRecord, ScheduleStore
from continuum_py.workflow import WorkflowDef

if TYPE_CHECKING:
    from continuum_py._client import JournalClient
    from continuum_py._clock import Clock
    from continuum_py._log import Logger
    from continuum_py.journal import Journal
    from continuum_py.workflow import Registry

__all__ = ["ScheduleMethods"]


class ScheduleMethods:
    """Declare, list, pause, resume and delete cron schedules; fire them from the worker."""

    if TYPE_CHECKING:
        _journal_obj: Journal
        _client: JournalClient
        _log: Logger
        clock: Clock
        registry: Registry
        poll_interval: float
        run_worker: bool

        def _check_open(self) -> None: ...

        def _resolve(self, workflow: WorkflowDef[Any, Any] | str) -> WorkflowDef[Any, Any]: ...

        async def start(
            self, workflow: WorkflowDef[Any, Any] | str, *args: Any, run_id: str | None = None
        ) -> Any: ...

    _scheduler: Scheduler | None = None

    # ---- the worker's side ----
    def _init_schedules(self) -> None:
        """Make the scheduler (a worker on a journal that keeps schedules)."""
        if self.run_worker and isinstance(self._journal_obj, ScheduleStore):
            self._scheduler = Scheduler(
                store=self._journal_obj,
                clock=self.clock,
                start_fire=self._start_fire,
                run_status=self._run_unfinished,
                can_fire=lambda name: name in self.registry.names(),
                log=self._log,
                poll_interval=self.poll_interval,
            )

    @property
    def _schedules_busy(self) -> bool:
        return self._scheduler is not None and self._scheduler.busy

    def _wake_schedules(self) -> None:
        if self._scheduler is not None:
            self._scheduler.wake()

    async def _start_fire(self, rec: ScheduleRecord, t: float) -> None:
        args = _codec.decode_value(rec.args)
        when = fire_time(t, check_tz(rec.tz))
        await self.start(rec.workflow, *args, when, run_id=fire_run_id(rec.name, t))

    async def _run_unfinished(self, run_id: str) -> bool | None:
        rec = await self._client.get_run(run_id)
        return None if rec is None else not rec.status.terminal

    # ---- the API ----
    def _store(self) -> ScheduleStore:
        self._check_open()
        if not isinstance(self._journal_obj, ScheduleStore):
            raise ConfigurationError(
                f"{type(self._journal_obj).__name__} does not keep schedules "
                "(it implements no ScheduleStore); use a memory, SQLite or Postgres journal"
            )
        return self._journal_obj

    async def schedule(
        self,
        name: str,
        workflow: WorkflowDef[Any, Any] | str,
        *args: Any,
        cron: str = "0 3 * * *",
        tz: str = "UTC",
        overlap: str = "skip",
        catchup: float | dt.timedelta = 3600,
    ) -> ScheduleInfo:
        """Declare the cron schedule ``name``: each fire starts a run of ``workflow``.

        Every process declares its schedules at start: declaring the same
        schedule again changes nothing, and a changed definition replaces the
        stored one (keeping its progress and whether it is paused). Its first
        fire is the first cron time after it was first declared.

        Each fire is a run with id ``"{name}@{fire time as UTC ISO 8601}"``
        (e.g. ``"nightly@2026-03-08T08:00:00Z"``), started like
        ``engine.start(workflow, *args, fire_time, run_id=...)``: the workflow
        receives the fire time as its last argument, a timezone-aware
        ``datetime`` in ``tz``. Any number of workers firing it start it once.

        Args:
            name: the schedule's name, unique in the journal.
            workflow: a ``@workflow`` function, or a registered workflow name.
            *args: the workflow's arguments before the fire time.
            cron: 5 fields (minute hour day-of-month month day-of-week), or one
                of ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``,
                ``@daily``, ``@midnight``, ``@hourly``.
            tz: the IANA time zone ``cron`` is read in (DST: see the how-to).
            overlap: when the previous fire's run is unfinished: ``"skip"`` this
                fire (counted as skipped), ``"buffer_one"`` (start it when the
                previous run ends; at most one waits, later ones are skipped),
                or ``"allow"`` (start it anyway).
            catchup: seconds (or a timedelta): after an outage, missed fires
                at most this old are started, once each and in order; older
                ones are counted as skipped.

        Returns:
            The stored schedule.

        Raises:
            ConfigurationError: an invalid ``cron``, ``tz``, ``overlap`` or
                ``catchup``, a workflow that cannot take ``args`` and the fire
                time, or a journal that keeps no schedules; nothing is recorded.
            EncodingError: an argument cannot be encoded; nothing is recorded.
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"schedule name must be a non-empty string, got {name!r}")
        expr = check_cron(cron)
        zone = check_tz(tz)
        if overlap not in OVERLAPS:
            raise ConfigurationError(
                f"schedule overlap must be one of {', '.join(map(repr, OVERLAPS))}, got {overlap!r}"
            )
        secs = _catchup(catchup)
        store = self._store()
        wf = self._resolve(workflow)
        try:
            inspect.signature(wf.fn).bind(None, *args, fire_time(0, zone))
        except TypeError as exc:
            raise ConfigurationError(
                f"schedule {name!r}: workflow {wf.name!r} must take the schedule's arguments "
                f"and then the fire time as its last argument: {exc}"
            ) from None
        raw = _codec.encode_args(args, what=wf.name, kind="workflow")
        now = self.clock.now()
        rec = ScheduleRecord(
            name=name,
            workflow=wf.name,
            args=bytes(raw),
            cron=expr,
            tz=tz,
            overlap=overlap,
            catchup=secs,
            created_at=now,
            progress=ScheduleProgress(last_fire=now),
        )
        stored = await store.put_schedule(rec)
        self._wake_schedules()
        return info(stored)

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the journal, by name, with its counts and next fire."""
        return [info(rec) for rec in await self._store().list_schedules()]

    async def _existing(self, name: str) -> ScheduleRecord:
        rec = await self._store().get_schedule(name)
        if rec is None:
            raise ScheduleNotFound(name)
        return rec

    async def pause_schedule(self, name: str) -> None:
        """Stop firing ``name`` until :meth:`resume_schedule`.

        Raises:
            ScheduleNotFound: no schedule has that name.
        """
        if not await self._store().pause_schedule(name, True, now=self.clock.now()):
            raise ScheduleNotFound(name)

    async def resume_schedule(self, name: str) -> None:
        """Fire ``name`` again, from now on: fires due while it was paused are not made up.

        Raises:
            ScheduleNotFound: no schedule has that name.
        """
        if not await self._store().pause_schedule(name, False, now=self.clock.now()):
            raise ScheduleNotFound(name)
        self._wake_schedules()

    async def delete_schedule(self, name: str) -> None:
        """Remove ``name``; runs it already started go on.

        Raises:
            ScheduleNotFound: no schedule has that name.
        """
        if not await self._store().delete_schedule(name):
            raise ScheduleNotFound(name)

    async def next_fires(self, name: str, n: int = 5) -> list[dt.datetime]:
        """The next ``n`` fire times ``name`` will handle, in its time zone.

        They follow its last handled fire: after an outage they may include
        fires too old for ``catchup``, which will be skipped.

        Raises:
            ScheduleNotFound: no schedule has that name.
            ConfigurationError: ``n`` is not an int >= 1.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigurationError(f"next_fires n must be an int >= 1, got {n!r}")
        rec = await self._existing(name)
        zone = check_tz(rec.tz)
        after = rec.progress.last_fire
        if rec.paused:
            after = max(after, self.clock.now())
        return [fire_time(t, zone) for t in next_fires(rec.cron, zone, after, n)]


def _catchup(value: object) -> float:
    secs = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if (
        isinstance(secs, bool)
        or not isinstance(secs, int | float)
        or not math.isfinite(secs)
        or secs < 0
    ):
        raise ConfigurationError(
            f"schedule catchup must be a finite number of seconds >= 0, got {value!r}"
        )
    return float(secs)
