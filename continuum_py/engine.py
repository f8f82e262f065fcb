"""The Engine: the client users start and watch runs with.

Unless told otherwise it is also an in-process worker that runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec

from continuum_py import _codec, _fork, _transfer
from continuum_py._client import JournalClient, decode_all, stored
from continuum_py._clock import AttachableClock, Clock, SystemClock
from continuum_py._engine_options import check_options
from continuum_py._handle import RunHandle as RunHandle
from continuum_py._handle import RunWaiter
from continuum_py._handle import StepState as StepState
from continuum_py._handle import StepStatus as StepStatus
from continuum_py._handle import step_statuses as step_statuses
from continuum_py._identity import take_slot
from continuum_py._listing import RunPage, decode_cursor, encode_cursor, run_query
from continuum_py._log import get_logger
from continuum_py._queue_api import QueueMethods
from continuum_py._queueing import (
    check_queues,
    check_start,
    queue_journal,
)
from continuum_py._runner_config import RunnerConfig
from continuum_py._schedule_api import ScheduleMethods
from continuum_py._schemes import DEFAULT_URL, journal_from_url
from continuum_py._worker import INBOX_WATCH_INTERVAL as INBOX_WATCH_INTERVAL
from continuum_py._worker import Worker
from continuum_py.errors import (
    ConfigurationError,
    ContinuumError,
    EncodingError,
    JournalConflict,
    LeaseLost,
    MessagesPending,
    RunAlreadyExists,
    RunAlreadyFinished,
    RunNotFound,
)
from continuum_py.events import (
    AnyEvent,
    EventPublished,
    RunCancelledEvent,
    RunStarted,
)
from continuum_py.interceptors import Interceptor
from continuum_py.journal import (
    AppendBatch,
    Connectable,
    Journal,
    Lease,
    LivenessJournal,
    NewRun,
    NotifyingJournal,
    RunRecord,
    RunStatus,
    WatchingJournal,
)
from continuum_py.plan import (
    Plan,
)
from continuum_py.queues import Queue
from continuum_py.workflow import Registry, WorkflowDef, default_registry

__all__ = ["Engine", "RunHandle", "RunPage", "StepStatus"]

R = TypeVar("R")


class Engine(ScheduleMethods, QueueMethods):
    """The client for starting and watching runs, and an in-process worker.

    Use it as an async context manager::

        async with Engine("sqlite:///runs.db") as engine:
            handle = await engine.start(checkout, "o-1", 500, run_id="order-o-1")
            print(await handle.result())

    Args:
        url: the journal: ``memory://``, ``sqlite:///path.db`` (default
            ``sqlite:///continuum.db``, so runs survive a restart with no set-up).
        worker_id: this worker's name. A worker restarted with the same id takes
            its own unfinished runs back at once instead of waiting for their
            leases to expire; two live workers must never share one. Default:
            ``"{host}-{n}"``, the lowest slot of this host no live engine holds
            (a lock held while the engine lives), so a process restarted after a
            crash gets its id back; a client (``worker=False``) is ``"{host}-pid{pid}"``.
        lease_ttl: seconds a lease lasts without a heartbeat. A dead worker's
            runs move at once on a journal that keeps worker liveness (SQLite
            files, Postgres); a worker that hangs without dying keeps them until
            then.
        snapshot_every: store a snapshot of replay state every N events (0: never).
        concurrency: runs this worker drives at once.
        registry: where workflows are looked up by name (default: the one
            ``@workflow`` fills).
        worker: run an in-process worker (``False``: a client only).
        poll_interval: seconds between looks for runnable runs when nothing
            wakes the worker.
        journal: an already made journal object, instead of ``url``.
        clock: the clock durable time is measured by (timers, ``ctx.now``,
            deadlines); default the wall clock. Tests pass
            ``continuum_py.testing.VirtualClock()`` to skip time.
        hold: a run whose next timer is due within this many seconds waits for
            it in process; a later one is suspended and its lease given back.
        interceptors: :class:`~continuum_py.Interceptor` objects wrapping every
            step attempt and seeing every run start and end, live only (the
            first given is the outermost).
        queues: the :class:`~continuum_py.Queue` objects this worker admits
            runs from (declared in the journal on open); ``None``: every queue.

    Raises:
        ConfigurationError: an argument of the wrong type or out of range (a
            ``lease_ttl`` or ``poll_interval`` that is not a finite number > 0,
            ``snapshot_every`` < 0, ``concurrency`` < 1, ...); the message names it.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        worker_id: str | None = None,
        lease_ttl: float = 30.0,
        snapshot_every: int = 500,
        concurrency: int = 100,
        registry: Registry | None = None,
        worker: bool = True,
        poll_interval: float = 1.0,
        journal: Journal | None = None,
        clock: Clock | None = None,
        hold: float = 2.0,
        interceptors: Sequence[Interceptor] = (),
        queues: Sequence[Queue] | None = None,
    ) -> None:
        self._queues = check_queues(queues)
        self._declared: dict[str, Queue] = {}
        check_options(
            url=url,
            worker_id=worker_id,
            lease_ttl=lease_ttl,
            snapshot_every=snapshot_every,
            concurrency=concurrency,
            registry=registry,
            worker=worker,
            poll_interval=poll_interval,
            clock=clock,
            hold=hold,
            interceptors=interceptors,
        )
        self.url = url or DEFAULT_URL
        self._journal_obj: Journal = journal if journal is not None else journal_from_url(self.url)
        # A worker's default id is a slot of this host held while the engine lives:
        # unique among live processes, and the same again after a restart.
        self._slot = take_slot() if worker_id is None and worker else None
        self.worker_id = worker_id or (
            self._slot.worker_id if self._slot else f"{socket.gethostname()}-pid{os.getpid()}"
        )
        self.lease_ttl = lease_ttl
        self.snapshot_every = snapshot_every
        self.concurrency = concurrency
        self.registry = registry or default_registry
        self.run_worker = worker
        self.poll_interval = poll_interval
        self.clock: Clock = clock or SystemClock()
        self._client = JournalClient(self._journal_obj)
        self._waiters: dict[str, RunWaiter] = {}
        self._open = False
        self._log = get_logger(worker_id=self.worker_id)
        cfg = RunnerConfig(
            client=self._client,
            registry=self.registry,
            worker_id=self.worker_id,
            snapshot_every=snapshot_every,
            clock=self.clock,
            hold=hold,
            on_child=self._on_child,
            ttl=lease_ttl,
            poll=poll_interval,
            interceptors=tuple(interceptors),
        )
        self._worker = (
            Worker(
                client=self._client,
                cfg=cfg,
                concurrency=concurrency,
                lease_ttl=lease_ttl,
                poll_interval=poll_interval,
                clock=self.clock,
                log=self._log,
                on_run_done=self._run_done,
                liveness=(
                    self._journal_obj if isinstance(self._journal_obj, LivenessJournal) else None
                ),
            )
            if worker
            else None
        )
        self._init_schedules()
        if isinstance(self.clock, AttachableClock):
            self.clock.attach(self)

    @property
    def journal(self) -> Journal:
        """The journal this engine uses."""
        return self._journal_obj

    async def __aenter__(self) -> Engine:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Connect to the journal and start the worker (unless ``worker=False``)."""
        if self._open:
            return
        if self.run_worker and getattr(self._journal_obj, "read_only", False):
            # Refused before connecting: a worker's first act is a write (its claim).
            raise ConfigurationError(
                "this journal is open read-only: an Engine on it must have worker=False"
            )
        if isinstance(self._journal_obj, Connectable):
            await self._journal_obj.connect()
        self._open = True
        if self._queues is not None:
            qj = queue_journal(self._journal_obj)
            for q in self._queues:
                await self._declare(q)
            if self._worker is not None:
                qj.served_queues = frozenset(q.name for q in self._queues)
        if self._worker is not None:
            notifying = isinstance(self._journal_obj, NotifyingJournal)
            if isinstance(self._journal_obj, NotifyingJournal):
                await self._journal_obj.listen(self._worker.on_notify)
            elif isinstance(self._journal_obj, WatchingJournal):
                worker = self._worker
                await self._journal_obj.watch_changes(lambda: worker.on_notify(""))
            # Take back this worker's own unfinished runs before anything else.
            await self._worker.start(watch_inbox=not notifying)
        if self._scheduler is not None:
            self._scheduler.start()

    async def aclose(self, *, grace: float = 0.0) -> None:
        """Stop the worker and close the journal.

        Args:
            grace: seconds to let in-flight steps finish first: each run records
                the steps running now and then gives its lease back, starting no
                new step. After ``grace`` (or at once with 0) the remaining runs
                are released with their steps interrupted; those steps run again
                on whichever worker takes the run (with the next attempt number).
        """
        if not self._open:
            return
        if self._scheduler is not None:
            self._scheduler.cancel()  # fire nothing more; awaited once the worker stopped
        if self._worker is not None:
            await self._worker.stop(grace=grace)
        if self._scheduler is not None:
            await self._scheduler.stop()
        self._open = False
        await self._journal_obj.aclose()
        if self._slot is not None:
            self._slot.release()

    # ---- client API ----
    async def start(
        self,
        workflow: WorkflowDef[Any, R] | str,
        *args: Any,
        run_id: str | None = None,
        start_at: dt.datetime | float | None = None,
        delay: float | dt.timedelta | None = None,
        timeout: float | dt.timedelta | None = None,
        queue: Queue | None = None,
        priority: int = 0,
        dedup_key: str | None = None,
    ) -> RunHandle[R]:
        """Start a run of ``workflow`` with ``args``, or return the existing run of ``run_id``.

        Args:
            workflow: a ``@workflow`` function, or a registered workflow name.
            *args: the workflow's arguments after ``ctx``; encoded with msgspec.
            run_id: the run's id (default: a random one). Starting an existing
                run_id returns that run, never a second one.
            start_at: do not run before this time (a timezone-aware datetime, or
                seconds since the epoch); the run waits durably until then.
            delay: do not run before this many seconds from now.
            timeout: stop the run if it has not finished this long after it
                was started: the workflow sees ``asyncio.CancelledError`` at
                its next await and may clean up; ``handle.result()`` raises
                ``RunTimedOut``.
            queue: a :class:`~continuum_py.Queue`: the run waits until a
                worker's claim admits it under the queue's limits (the queue's
                definition is stored in the journal on its first use here).
            priority: within its queue, lower runs first (FIFO within one).
            dedup_key: while an unfinished run of the queue holds this key,
                starting another returns that run's handle; free again once it
                finished.

        Raises:
            WorkflowNotRegistered: ``workflow`` is a name no registry knows (a
                client-only engine, ``worker=False``, starts unknown names
                unchecked: the worker with the code checks them).
            EncodingError: an argument cannot be encoded; nothing is recorded.
            TypeError: the arguments do not fit the workflow's signature.
            RunAlreadyExists: ``run_id`` belongs to a run of another workflow.
            ConfigurationError: a ``queue`` that is not a Queue, a ``priority``
                that is not a whole number, a ``dedup_key`` that is not text,
                or either without a queue; nothing is recorded.
        """
        self._check_open()
        q = check_start(queue, priority, dedup_key)
        wf = self._resolve_for_start(workflow)
        if isinstance(wf, Plan):
            wf.check()
        if wf is None:
            # A client without the workflow's code (worker=False) starts it by name;
            # the worker that has the code checks the arguments when it runs.
            name = str(workflow)
            raw = _codec.encode_args(args, what=name, kind="workflow")
        else:
            name = wf.name
            try:
                wf.check_args(args)
            except TypeError as exc:
                raise TypeError(f"workflow {wf.name!r}: {exc}") from None
            raw = _codec.encode_args(args, what=wf.name, kind="workflow")
            try:
                _codec.decode_args(raw, wf.arg_types)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise EncodingError(
                    wf.name, "arguments", f"they do not fit the signature: {exc}", kind="workflow"
                ) from exc
        rid = run_id or uuid.uuid4().hex
        if not isinstance(rid, str) or not rid:
            raise ValueError(f"run_id must be a non-empty string, got {rid!r}")
        now = self.clock.now()
        wake_at = _when(start_at, delay, now)
        deadline = None
        if timeout is not None:
            deadline = max(wake_at or now, now) + _positive(timeout, "timeout")
        first = RunStarted(seq=1, at=now, run_id=rid, workflow=name, args=raw, deadline=deadline)
        worker = self._worker
        claim = worker if worker is not None and worker.has_room and wake_at is None else None
        new = NewRun(run_id=rid, workflow=name, first_event=stored(rid, first), wake_at=wake_at)
        lease = None
        if q is not None:
            await self._declare(q)
            rec, created = await queue_journal(self._journal_obj).start_queued(
                new, q.name, priority=priority, dedup_key=dedup_key
            )
            rid = rec.run_id  # the run holding dedup_key, if one does
        elif claim is not None:  # claimed here and driven from memory
            rec, lease, created = await claim.start_run(new, ttl=self.lease_ttl)
        else:
            rec, lease, created = await self._client.start_run(new, ttl=self.lease_ttl)
        if not created and rec.workflow != name:
            raise RunAlreadyExists(rid, rec.workflow, name)
        if created:
            self._log.info("run.created", run_id=rid, workflow=name)
        if created and lease is None and worker is not None:
            worker.wake()
        return RunHandle(self, rid, name, wf.result_type if wf is not None else Any)

    async def get(self, run_id: str) -> RunHandle[Any]:
        """A handle to an existing run; raises ``RunNotFound``."""
        rec = await self._record(run_id)
        try:
            rtype = self.registry.get(rec.workflow).result_type
        except ContinuumError:
            rtype = Any
        return RunHandle(self, run_id, rec.workflow, rtype)

    async def history(self, run_id: str) -> list[AnyEvent]:
        """Every recorded event of the run, decoded, in order."""
        self._check_open()
        return decode_all(await self._client.load(run_id))

    async def list_runs(
        self,
        *,
        status: RunStatus | str | None = None,
        workflow: WorkflowDef[Any, Any] | str | None = None,
        run_id_prefix: str | None = None,
        created_after: dt.datetime | float | None = None,
        created_before: dt.datetime | float | None = None,
        limit: int = 1000,
        cursor: str | None = None,
        oldest_first: bool = False,
    ) -> RunPage:
        """One page of runs, newest first, of those matching every filter given.

        Runs are ordered by ``RunRecord.created_at`` (the journal's clock), then
        ``run_id``. To page, pass the page's ``next_cursor`` back as ``cursor``
        with the same filters and order: every run that existed when paging
        began is listed once and none is skipped, however many runs start
        between pages (those sort before the first page, newest first, or
        come at the end, oldest first).

        Args:
            status: only runs in this status (a ``RunStatus`` or its value).
            workflow: only runs of this workflow (a ``@workflow`` function or its name).
            run_id_prefix: only runs whose id starts with this (case-sensitive).
            created_after: only runs created at or after this time (a
                timezone-aware datetime, or seconds since the epoch).
            created_before: only runs created before this time; with
                ``created_after``, a half-open window, so windows that meet
                neither overlap nor miss a run.
            limit: the page's size, at most this many runs (at least 1).
            cursor: the ``next_cursor`` of the previous page.
            oldest_first: oldest first instead.

        Returns:
            A :class:`RunPage`: a list of ``RunRecord`` with ``next_cursor``.

        Raises:
            ValueError: a bad option (named in the message): an unknown
                status, a naive datetime, ``limit`` below 1, a cursor that is
                not one ``list_runs`` returned or that belongs to other filters.
        """
        self._check_open()
        query = run_query(
            status=status,
            workflow=workflow,
            run_id_prefix=run_id_prefix,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            oldest_first=oldest_first,
        )
        after = decode_cursor(cursor, query) if cursor is not None else None
        # One run more than the page holds tells whether another page follows.
        runs: list[RunRecord] = await self._client.list_runs(
            status=query.status,
            limit=query.limit + 1,
            workflow=query.workflow,
            run_id_prefix=query.run_id_prefix,
            created_after=query.created_after,
            created_before=query.created_before,
            after=after,
            newest_first=not query.oldest_first,
        )
        if len(runs) <= query.limit:
            return RunPage(runs)
        page = runs[: query.limit]
        return RunPage(page, encode_cursor(query, page[-1]))

    async def resume(self, run_id: str) -> None:
        """Make a parked run runnable again (after deploying code that matches its history)."""
        rec = await self._record(run_id)
        if rec.status != RunStatus.PARKED:
            raise ContinuumError(f"run {run_id} is {rec.status.value}, not parked")
        await self._client.set_status(run_id, RunStatus.PENDING, reason=None)
        if self._worker is not None:
            self._worker.wake()

    async def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send the signal ``name`` with ``payload`` to a run; durable once this returns.

        The run receives it with ``ctx.wait_for_signal(name)``, also if it waits
        only later, or if no worker runs now. Several signals are delivered in
        the order they were sent.

        Raises:
            RunNotFound: no such run.
            RunAlreadyFinished: the run is over.
            EncodingError: ``payload`` cannot be encoded; nothing is sent.
        """
        self._check_open()
        if not isinstance(name, str) or not name:
            raise ValueError(f"signal name must be a non-empty string, got {name!r}")
        raw = _codec.encode_value(payload, what=f"signal {name!r}", kind="value")
        target = await self._client.send_along_chain(run_id, "signal", name, bytes(raw))
        self._poke(target)

    async def cancel(self, run_id: str) -> None:
        """Cancel a run: ``asyncio.CancelledError`` is raised in the workflow at its next await.

        A step running then is cancelled too. The workflow may catch the error to
        clean up (with further steps); if it lets it propagate, the run ends
        ``cancelled`` and ``handle.result()`` raises ``RunCancelled``. Child runs
        it was waiting for are cancelled as well.

        Raises:
            RunNotFound: no such run.
            RunAlreadyFinished: the run is over.
        """
        self._check_open()
        target = await self._client.send_along_chain(run_id, "cancel", "", b"")
        self._poke(target, cancel=True)
        rec = await self._client.get_run(target)
        if rec is not None and rec.status == RunStatus.PARKED:
            # Its code cannot run (it strays from history, or is not deployed), so
            # it cannot clean up: the cancel ends it at once.
            await self._end_from_outside(target, "cancel", only_parked=True)

    async def terminate(self, run_id: str, reason: str = "terminated") -> None:
        """End a run at once, running nothing: no cleanup, no compensation.

        Works from any unfinished state (pending, running, suspended, parked).
        The run ends ``cancelled`` with a ``RunCancelled(terminated=True,
        reason=...)`` event; ``handle.result()`` raises ``RunCancelled``. A
        worker running it is fenced out at once (its next write is refused);
        a step running there is interrupted, at the latest at that worker's
        next heartbeat. Child runs are not terminated with it.

        Raises:
            RunNotFound: no such run.
            RunAlreadyFinished: the run is over.
        """
        self._check_open()
        if not isinstance(reason, str) or not reason:
            raise ValueError(f"terminate needs a non-empty reason, got {reason!r}")
        await self._end_from_outside(run_id, reason)

    async def _end_from_outside(
        self, run_id: str, reason: str, *, only_parked: bool = False
    ) -> None:
        for _ in range(20):
            lease = await self._client.seize(
                run_id, f"{self.worker_id}/terminate", ttl=self.lease_ttl
            )
            if lease is None:
                if only_parked:
                    return
                rec = await self._record(run_id)
                raise RunAlreadyFinished(run_id, rec.status.value, what="terminate")
            rec = await self._record(run_id)
            if only_parked and rec.status != RunStatus.PARKED:
                # Resumed meanwhile: its runner records the cancel and acts on it.
                await self._client.release(lease)
                return
            end = RunCancelledEvent(
                seq=rec.last_seq + 1, at=self.clock.now(), reason=reason, terminated=True
            )
            try:
                await self._client.append(
                    AppendBatch(
                        lease=lease,
                        expected_seq=rec.last_seq,
                        events=[stored(run_id, end)],
                        status=RunStatus.CANCELLED,
                        outcome=_codec.encode_event(end),
                        reason=reason,
                        inbox_seen=rec.inbox_last,
                    )
                )
            except (LeaseLost, JournalConflict, MessagesPending):
                continue  # a worker took it or wrote meanwhile: seize again
            self._log.warning("run.terminated", run_id=run_id, reason=reason, seq=end.seq)
            if self._worker is not None:
                self._worker.stop_driver(run_id)  # its lease is gone: stop its steps now
            return
        raise ContinuumError(f"run {run_id}: could not end it; it kept changing, try again")

    async def export_run(self, run_id: str, children: bool = True) -> bytes:
        """The run (and, with ``children``, every run it started, theirs too) as one file.

        JSON bytes: the format's version, the event schema, and per run its
        facts, its events and a SHA-256 checksum; ``import_run`` reads it.
        Export a finished or parked run for a picture that is not moving.

        Raises:
            RunNotFound: no such run.
        """
        self._check_open()
        return await _transfer.export_runs(self._journal_obj, run_id, children=children)

    async def import_run(self, data: bytes) -> list[str]:
        """Write the runs of an export into this journal, all or nothing; their ids, the run first.

        A finished run stays finished (its history replays as it was); an
        unfinished one arrives ``parked`` so nothing runs it until
        ``engine.resume``. Messages it was sent and had not recorded are not
        carried.

        Raises:
            ExportCorrupt: the data is truncated, altered, or not an export.
            ExportTooNew: written by a newer continuum_py.
            RunIdTaken: one of its runs exists here.
            ConfigurationError: the journal cannot write whole runs.
        """
        self._check_open()
        return await _transfer.import_runs(self._journal_obj, data)

    async def fork(
        self,
        source: str,
        /,
        *,
        at: int | None = None,
        step: str | None = None,
        failed: bool = False,
        args: Sequence[Any] | None = None,
        run_id: str | None = None,
        force: bool = False,
    ) -> RunHandle[Any]:
        """Start a new run that reuses ``source``'s recorded outcomes before a point and runs on live.

        The new run's history is its own ``RunStarted`` and the events of
        ``source`` before the point; its code replays them (running no step
        again) and runs live from there. Child runs whose outcome is before the
        point are reused, not run again. The two are linked both ways:
        ``RunRecord.forked_from`` on the new run, ``engine.forks(source)``.

        Args:
            source: the run to fork.
            at: fork at this call-order position: the events before the first
                one at this position or later are kept.
            step: fork at the first call of the step of this name.
            failed: fork at the last step that failed for good or child run
                that failed (or, when the workflow itself raised, just before
                the run's failure).
            args: the workflow's arguments for the new run (default: those of
                ``source``); its code must still ask for the same calls before
                the point, or the new run parks with ``NonDeterminismError``.
            run_id: the new run's id (default ``"{source}-fork-{n}"``).
            force: fork a run that is still in flight (pending, running,
                suspended): its events so far are used.

        Raises:
            RunNotFound: no run ``source``.
            ForkPointNotFound: the point is not in its history; nothing is recorded.
            RunInFlight: ``source`` is in flight and ``force`` is false.
            RunIdTaken: ``run_id`` exists.
        """
        self._check_open()
        new_id = await _fork.fork(
            _transfer.needs_import(self._journal_obj, "fork"),
            await self._record(source),
            await self._client.load(source),
            at=at,
            step=step,
            failed=failed,
            args=args,
            run_id=run_id,
            force=force,
            now=self.clock.now(),
        )
        self._log.info("run.forked", run_id=new_id, forked_from=source)
        if self._worker is not None:
            self._worker.wake()
        return await self.get(new_id)

    async def forks(self, run_id: str) -> list[RunRecord]:
        """The runs forked from ``run_id`` (``engine.fork``), oldest first."""
        self._check_open()
        return await _transfer.needs_import(self._journal_obj, "forks").forks(run_id)

    async def get_event(
        self, run_id: str, key: str, *, timeout: float | None = None, type: Any = Any
    ) -> Any:
        """The newest value the run published under ``key`` with ``ctx.set_event``.

        Waits until the run publishes it, up to ``timeout`` seconds (``None``:
        without limit).

        Raises:
            RunNotFound: no such run.
            KeyError: the run ended without publishing ``key``.
            TimeoutError: ``timeout`` passed first.
        """
        self._check_open()
        async with asyncio.timeout(timeout):
            delay = 0.02
            after = 0
            found: EventPublished | None = None
            while True:
                rec = await self._record(run_id)
                rows = await self._client.load(run_id, after_seq=after)
                for row in rows:
                    after = row.seq
                    if row.kind == "EventPublished":
                        ev = _codec.decode_event(run_id, row.seq, row.schema, row.data)
                        if isinstance(ev, EventPublished) and ev.key == key:
                            found = ev
                if found is not None:
                    return _codec.decode_value(found.value, type)
                if rec.status.terminal:
                    raise KeyError(
                        f"run {run_id} ended ({rec.status.value}) without setting {key!r}"
                    )
                waiter = self._waiter(run_id)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await waiter.wait()
                delay = min(delay * 2, 0.5)

    @property
    def idle(self) -> bool:
        """True when every run this worker holds waits only for time or a message."""
        if not self._open or not self.run_worker:
            return True  # a closed engine or a client runs nothing
        return (self._worker is None or self._worker.idle) and not self._schedules_busy

    # ---- internals ----
    def _poke(self, run_id: str, *, cancel: bool = False) -> None:
        if self._worker is not None:
            self._worker.poke(run_id, cancel=cancel)

    def _on_child(self, lease: Lease | None) -> None:
        if self._worker is not None and self._open:
            self._worker.on_child(lease)

    def _run_done(self, run_id: str, outcome: bytes | None = None) -> None:
        ev = self._waiters.pop(run_id, None)
        if ev is not None:
            ev.outcome = outcome
            ev.set()
        if "@" in run_id:
            self._wake_schedules()  # a fire may wait for this run (overlap="buffer_one")

    def _check_open(self) -> None:
        if not self._open:
            raise ConfigurationError(
                "the Engine is not open; use `async with Engine(...)` or await engine.open()"
            )

    def _resolve_for_start(self, workflow: WorkflowDef[Any, R] | str) -> WorkflowDef[Any, R] | None:
        if (
            isinstance(workflow, str)
            and not self.run_worker
            and workflow not in self.registry.names()
        ):
            if not workflow:
                raise ValueError("workflow name must be a non-empty string")
            return None
        return self._resolve(workflow)

    def _resolve(self, workflow: WorkflowDef[Any, R] | str) -> WorkflowDef[Any, R]:
        if isinstance(workflow, str):
            return self.registry.get(workflow)
        if not isinstance(workflow, WorkflowDef):
            raise ConfigurationError(f"{workflow!r} is not a @workflow function")
        self.registry.add(workflow)
        return workflow

    async def _record(self, run_id: str) -> RunRecord:
        self._check_open()
        rec = await self._client.get_run(run_id)
        if rec is None:
            raise RunNotFound(run_id)
        return rec

    def _driving(self, run_id: str) -> bool:
        """Whether this process's worker drives ``run_id`` now (its end will set the waiter)."""
        return self._worker is not None and run_id in self._worker.drivers

    def _waiter(self, run_id: str) -> RunWaiter:
        ev = self._waiters.get(run_id)
        if ev is None:
            ev = self._waiters[run_id] = RunWaiter()
        return ev

    def _drop_waiter(self, run_id: str, ev: RunWaiter) -> None:
        # Forget a waiter no run end will set (the run ended elsewhere, or is unknown),
        # and wake whoever shares it: they read the run again.
        if self._waiters.get(run_id) is ev:
            del self._waiters[run_id]
            ev.set()


def _positive(value: float | dt.timedelta, what: str) -> float:
    secs = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
    if not secs > 0:
        raise ValueError(f"{what} must be > 0 seconds, got {value!r}")
    return secs


def _when(
    start_at: dt.datetime | float | None, delay: float | dt.timedelta | None, now: float
) -> float | None:
    if start_at is not None and delay is not None:
        raise ValueError("pass start_at or delay, not both")
    if delay is not None:
        secs = delay.total_seconds() if isinstance(delay, dt.timedelta) else float(delay)
        if secs < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay!r}")
        return now + secs
    if isinstance(start_at, dt.datetime):
        if start_at.tzinfo is None:
            raise ValueError(
                "start_at must be timezone-aware (e.g. datetime.now(timezone.utc)), "
                f"got naive {start_at!r}"
            )
        return start_at.timestamp()
    if start_at is not None:
        return float(start_at)
    return None
