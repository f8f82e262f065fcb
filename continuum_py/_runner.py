"""Drives one leased run: load snapshot + tail, replay, run steps, append, finish.

The durability rule: a step attempt's ``StepScheduled`` is durable before its
body starts, and its outcome is durable before anything that depends on it
leaves the process. Both ride in the same append whenever possible: an
outcome, fed to the replay core, makes the workflow ask for its next step, and
``[StepCompleted(n), StepScheduled(n+1)]`` go out in one commit. So a
sequential workflow costs one commit per step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog

from continuum_py import _codec, _sequential
from continuum_py._agenda import Agenda
from continuum_py._calls import Call, ChildCall, StepCall, SyncCall, TimerCall, WaitCall
from continuum_py._children import cancel_child, start_child
from continuum_py._client import (
    SnapshotEncoder,
    decode_all,
    decode_snapshot,
    stored,
)
from continuum_py._ending import END_STATUS, close_open_steps, continuation, end_event
from continuum_py._log import get_logger, level_check
from continuum_py._recording import Recorder
from continuum_py._replay import ReplayCore
from continuum_py._runner_config import RunnerConfig
from continuum_py._steps import OpenTransaction, Outcome, StepExecutor, cancelled
from continuum_py.errors import (
    EncodingError,
    JournalCorrupt,
    JournalUnavailable,
    LeaseLost,
    MessagesPending,
    NonDeterminismError,
    WorkflowNotRegistered,
)
from continuum_py.events import (
    AnyEvent,
    CancelRequested,
    ContinuedAsNew,
    RunSuspended,
)
from continuum_py.interceptors import Interceptor
from continuum_py.journal import (
    AppendBatch,
    Lease,
    RunStatus,
    Snapshot,
    StoredEvent,
)

_NULL = msgspec.Raw(b"null")


class RunDriver:
    """Runs one run while holding its lease; stops cleanly when the lease is lost."""

    def __init__(
        self,
        cfg: RunnerConfig,
        lease: Lease,
        on_done: Callable[[RunDriver], None],
        first: StoredEvent | None = None,
    ) -> None:
        self.cfg = cfg
        # A run this process just created and claimed: its history is ``first`` and its
        # inbox was empty at the commit, so the first pass reads neither (see Worker.start_run).
        self._first = first
        self.clock = cfg.clock
        self.lease = lease
        """The run's lease; the engine's heartbeat renews it here."""
        self._task: asyncio.Task[None] | None = None
        self.run_id = lease.run_id
        self.on_done = on_done
        self.log = get_logger(run_id=self.run_id, worker_id=cfg.worker_id)
        self._debug = level_check(self.log, "debug")
        self._poke = asyncio.Event()
        self._stopping = False
        self._cancelled_children: set[int] = set()
        self.journal_lost = False
        """The run stopped because the journal could not be reached (its lease may remain)."""
        self.outcome: bytes | None = None
        """The run's final event, encoded, once the journal holds it (the run ended here)."""
        self._checker: asyncio.Task[None] | None = None
        self.idle = False
        """True while only a timer or a message can move the run on (virtual clocks read it)."""
        self.letting_go = False
        """Its lease ends with a write under way: a renewal that finds it gone is no loss."""
        self._reset()

    def _reset(self) -> None:
        """The state of one pass over the run's history (a fresh replay starts from here)."""
        self.core: ReplayCore | None = None
        self.rec: Recorder | None = None
        """The run's new events until they are appended (made once its history is loaded)."""
        self._snap_seq = 0
        self._snap_encoder = SnapshotEncoder()
        self._tasks: dict[int, tuple[asyncio.Task[Outcome], int]] = {}
        self.agenda = Agenda()
        self._reattempt: list[StepCall] = []
        self._children: list[ChildCall] = []
        self._continued_to: str | None = None
        self._tx: OpenTransaction | None = None
        self._tx_queue: list[tuple[StepCall, int]] = []
        self._to_start: list[tuple[StepCall, int]] = []
        """Step attempts recorded this turn, to start once they are durable."""
        self.steps = StepExecutor(self.run_id, self.cfg.client.journal, self.cfg.interceptors)
        self._first_pass = False
        """This pass runs the run's code live from its start (nothing was replayed)."""
        self._unsaved: list[Outcome] = []
        """Step outcomes recorded in events not yet appended."""

    @property
    def seq(self) -> int:
        """The durable tail: the seq of the last event the journal holds."""
        return self.rec.durable_seq if self.rec is not None else 0

    def start(self) -> None:
        """Drive the run in a task of its own (:attr:`task`)."""
        self._task = asyncio.create_task(self.run(), name=f"continuum-run-{self.run_id}")

    @property
    def task(self) -> asyncio.Task[None]:
        """The task driving the run (after :meth:`start`)."""
        assert self._task is not None, "RunDriver.start() was not called"
        return self._task

    def stop(self) -> None:
        """Finish the steps running now, record them, then give the run back."""
        self._stopping = True
        self._poke.set()

    def poke(self, *, cancel: bool = False) -> None:
        """Something arrived for this run (a message, a child's outcome): look at the inbox."""
        self._poke.set()
        if self.steps.running_inline and (self.core is None or self.core.interruptible):
            # Only the first cancellation interrupts: a repeated one must not cut
            # short the cleanup the workflow runs after the first, and none cuts
            # short a compensation.
            if cancel:
                self._interrupt()
            elif self._checker is None or self._checker.done():
                self._checker = asyncio.ensure_future(self._check_cancel())

    def _interrupt(self) -> None:
        self.steps.interrupt()

    async def _check_cancel(self) -> None:
        core = self.core
        if core is None:
            return
        with contextlib.suppress(Exception):
            msgs = await self.cfg.client.inbox(self.run_id, after_id=core.inbox_seen)
            if core.interruptible and any(m.kind == "cancel" for m in msgs):
                self._interrupt()

    async def run(self) -> None:
        """Drive the run until it finishes, parks, suspends, or the lease is lost."""
        structlog.contextvars.bind_contextvars(run_id=self.run_id)
        # Resolve the lazy logger once per run, not on every step's log call.
        self.log = self.log.bind()
        self._debug = level_check(self.log, "debug")
        try:
            refeed: list[Outcome] = []
            for passes in range(1, _MAX_PASSES + 1):
                try:
                    await self._drive(refeed)
                    break
                except MessagesPending:
                    if passes == _MAX_PASSES:
                        raise
                    # A cancel or signal arrived as the run was ending: replay the
                    # durable history, let the workflow see the messages first,
                    # then the step outcomes the refused write held, and go on.
                    refeed = [out for out in self._unsaved if out.tx is None]
                    self.log.info("run.messages_before_end", seq=self.seq)
                    if self.core is not None:
                        self.core.close()
                    self._reset()
        except LeaseLost as exc:
            self.log.warning("run.lease_lost", token=exc.token, current_token=exc.current_token)
        except (NonDeterminismError, WorkflowNotRegistered, JournalCorrupt) as exc:
            await self._park(exc)
        except (JournalUnavailable, OSError) as exc:
            self.log.warning("run.journal_unavailable", error=str(exc))
            self.journal_lost = True
            await self._release()
        except asyncio.CancelledError:
            await self._release()
            raise
        except Exception:
            self.log.exception("run.driver_crashed")
            await self._release()
        finally:
            self.idle = False
            await self._rollback()
            for t, _ in self._tasks.values():
                t.cancel()
            if self._checker is not None:
                self._checker.cancel()
            if self.core is not None:
                self.core.close()
            self.on_done(self)

    async def _release(self) -> None:
        self.letting_go = True
        try:
            await asyncio.shield(self.cfg.client.release(self.lease))
        except Exception as exc:
            self.log.warning("run.release_failed", error=str(exc))

    async def _park(self, exc: Exception) -> None:
        self.log.error("run.parked", error_type=type(exc).__name__, reason=str(exc), seq=self.seq)
        try:
            await self._append(
                status=RunStatus.PARKED, reason=f"{type(exc).__name__}: {exc}", pending=False
            )
        except Exception as exc2:
            self.log.warning("run.park_failed", error=str(exc2))
            await self._release()

    async def _append(
        self,
        *,
        end: AnyEvent | None = None,
        pending: bool = True,
        status: RunStatus | None = None,
        outcome: bytes | None = None,
        reason: str | None = None,
        snapshot: Snapshot | None = None,
        wake_at: float | None = None,
        continued_to: str | None = None,
    ) -> None:
        """Write the pending events (unless ``pending`` is False), then ``end`` if given."""
        rec = self.rec
        rows = [*rec.rows] if rec is not None and pending else []
        if end is not None:
            rows.append(stored(self.run_id, end))
        batch = AppendBatch(
            lease=self.lease,
            expected_seq=rec.durable_seq if rec is not None else 0,  # self.seq, in line
            events=rows,
            status=status,
            outcome=outcome,
            reason=reason,
            snapshot=snapshot,
            wake_at=wake_at,
            inbox_seen=self.core.inbox_seen if self.core is not None else None,
            continued_to=continued_to,
        )
        self.letting_go = status is not None  # a refused write keeps the lease: set back below
        try:
            if self._tx is not None:
                open_tx, self._tx = self._tx, None
                try:
                    err = await open_tx.append(batch)
                except BaseException as exc:
                    await open_tx.rollback(exc)
                    raise
                # Commits the step's own SQL with its completion; a refused append rolls back.
                await open_tx.commit()
                if err is not None:
                    raise err
            else:
                await self.cfg.client.append(batch)
        except BaseException:
            self.letting_go = False
            raise
        if rec is not None:
            rec.appended(len(rows))
        self._unsaved.clear()

    async def _rollback(self) -> None:
        if self._tx is not None:
            open_tx, self._tx = self._tx, None
            with contextlib.suppress(Exception):
                await open_tx.rollback(RuntimeError("run stopped"))

    # ---- replay ----
    async def _load(self) -> ReplayCore:
        first, self._first = self._first, None
        if first is None:
            snap, rows = await self.cfg.client.load_with_snapshot(self.run_id)
        else:
            snap, rows = None, [first]
        core = ReplayCore(self.run_id, self.cfg.registry)
        core.clock, core.loop.host = self.clock.now, asyncio.get_running_loop()
        self.core = core
        # The stored tail, known before decoding: if decoding or replay fails
        # (corrupt row, unknown workflow), parking must still append at this seq.
        stored_tail = rows[-1].seq if rows else (snap.seq if snap else 0)
        self.rec = Recorder(self.run_id, core, self.clock, stored_tail)
        # Every recorded event was already processed by some runner, so its code
        # ran live once: replay quietly. Only a run never driven yet (its history
        # is just RunStarted) runs its first lines live here.
        core.replaying = snap is not None or len(rows) > 1
        self._first_pass = not core.replaying
        tail = decode_all(rows)
        if snap is not None:
            state = decode_snapshot(snap)
            core.index(state.events)
            core.index(tail)
            core.restore(state.events, state.failures, snap.seq)
            self._snap_seq = snap.seq
        else:
            core.index(tail)
        core.apply_all(tail)
        core.replaying = False
        self.log.info(
            "run.resumed" if self.seq > 1 else "run.started",
            seq=self.seq,
            snapshot_seq=snap.seq if snap else None,
            replayed_events=len(rows),
        )
        return core

    async def _drive(self, refeed: list[Outcome]) -> None:
        fresh = self._first is not None
        core = await self._load()
        if core.history_end is not None:
            await self._settle_ended(core)
            return
        self._resume_waits(core)
        if self._first_pass:
            wf = self._workflow_name(core)
            await self._tell("run_started", lambda i: i.run_started(self.run_id, wf))
        if not fresh or self._poke.is_set():
            # (A fresh run's messages come with a poke; an ending write checks the inbox.)
            await self._pull_inbox(core)
        self._refeed(core, refeed)
        while True:
            if self._stopping and not core.finished:
                if await self._shutdown_turn(core):
                    return
                continue
            if await self._record_turn(core):
                return
            start = self._to_start
            if len(start) == 1 and _sequential.alone(self, core, start[0][0]):
                # Sequential fast path: run the only step inline, and the lone steps
                # that follow it (see _sequential). Not while a signal or a child's
                # outcome could win a race with it: a message must reach the
                # workflow while the step runs.
                self._to_start = []
                outcomes = await _sequential.run_alone(self, core, *start[0])
            else:
                outcomes = await self._run_steps(core)
            if outcomes is None:
                return  # suspended
            if self._poke.is_set():
                # Messages first: a cancellation that interrupted a step must reach the
                # workflow before that step's (cancelled) outcome does.
                self._poke.clear()
                await self._pull_inbox(core)
            if len(outcomes) > 1:
                outcomes.sort(key=lambda o: o.call.position)
            for out in outcomes:
                self._tx = out.tx
                self._step_ended(core, out)
                if self._tx is not None:
                    # Commit the step's own SQL with its completion before anything else.
                    await self._append()

    async def _settle_ended(self, core: ReplayCore) -> None:
        """History already ends the run; make the run row agree with it.

        Messages that came after its end can no longer be recorded.
        """
        end = core.history_end
        assert end is not None
        for m in await self.cfg.client.inbox(self.run_id, after_id=core.inbox_seen):
            core.inbox_seen = max(core.inbox_seen, m.id)
        await self._append(
            status=END_STATUS[type(end)],
            outcome=_codec.encode_event(end),
            continued_to=end.new_run_id if isinstance(end, ContinuedAsNew) else None,
        )

    def _resume_waits(self, core: ReplayCore) -> None:
        """Put what the replayed run waits on back on the agenda."""
        started = core.started
        assert started is not None
        if started.deadline is not None and core.cancel_reason != "deadline":
            self.agenda.deadline = started.deadline
        for call in core.waiting():
            if isinstance(call, StepCall):
                if call.last_failure is not None:
                    due = call.last_failure.at + call.last_failure.retry_delay
                    self.agenda.add_retry(due, call.position)
                else:
                    # In flight when the last runner died: it runs again, with the next attempt number.
                    self._reattempt.append(call)
            elif isinstance(call, TimerCall) and call.fire_at is not None:
                self.agenda.add_timer(call.fire_at, call.position)
            elif isinstance(call, WaitCall) and call.timeout_at is not None:
                self.agenda.add_timer(call.timeout_at, call.position)
            elif isinstance(call, ChildCall):
                # Its ChildStarted is durable but the child may not be: make sure it exists.
                self._children.append(call)

    async def _shutdown_turn(self, core: ReplayCore) -> bool:
        """Shutting down: let running steps finish and record them, start none; True once released."""
        if not self._tasks:
            if self._pending():
                await self._append()
            self.log.info("run.released_for_shutdown", seq=self.seq)
            await self._release()
            return True
        self._poke.clear()
        for out in await self._wait():
            self._step_ended(core, out)
        return False

    async def _record_turn(self, core: ReplayCore) -> bool:
        """Record what the code asked for and what came due, and append; True if the run ended."""
        # A workflow that has returned (or raised) needs no more attempts: a
        # retry still due, or a step it called but never awaited, is not scheduled.
        self._to_start = [] if core.finished else self._schedule(core)
        if not self.agenda.empty and self._due(core) and not core.finished:
            # What came due may have moved the code on: record what it asked for.
            self._to_start += self._schedule(core)
        status = outcome = end = None
        if core.finished:
            # Values the code recorded on its way out (set_event, now, ...) are history too.
            self._schedule(core, answered_only=True)
            status, outcome, end = await self._finish(core)
        snapshot = self._maybe_snapshot(core) if status is None else None
        # Before the run can end: a crash after this re-sends on resume, while a
        # cancel sent after the final append could be lost with the process.
        if self._tasks or core.has_children:
            await self._drop_abandoned(core)
        if self.rec.events or status is not None:  # type: ignore[union-attr]  # loaded
            await self._append(
                end=end,
                status=status,
                outcome=outcome,
                snapshot=snapshot,
                continued_to=self._continued_to,
            )
        if self._children:
            await self._start_children()
        if status is not None:
            self.outcome = outcome
            self.log.info("run." + status.value, seq=self.seq)
            wf, ended = self._workflow_name(core), status
            await self._tell("run_ended", lambda i: i.run_ended(self.run_id, wf, ended))
            return True
        return False

    async def _tell(self, hook: str, call: Callable[[Interceptor], Awaitable[None]]) -> None:
        """Call a run hook on every interceptor; their errors are logged, not raised."""
        for interceptor in self.cfg.interceptors:
            try:
                await call(interceptor)
            except Exception as exc:
                self.log.warning("interceptor.failed", hook=hook, error=repr(exc))

    @staticmethod
    def _workflow_name(core: ReplayCore) -> str:
        return core.workflow.name if core.workflow is not None else ""

    async def _run_steps(self, core: ReplayCore) -> list[Outcome] | None:
        """Start the step attempts recorded this turn and wait for outcomes; None if suspended."""
        to_start, self._to_start = self._to_start, []
        # A transactional step runs alone: while its transaction is open (on
        # SQLite it holds the write lock) nothing else of this run may append.
        if len(to_start) != 1 or to_start[0][0].step.transactional:
            self._tx_queue += [(c, a) for c, a in to_start if c.step.transactional]
            to_start = [(c, a) for c, a in to_start if not c.step.transactional]
        if self._tx_queue and not to_start and not self._tasks:
            call, attempt = self._tx_queue.pop(0)
            return [await self.steps.run_inline(call, attempt)]
        # (A lone step with nothing else going on ran inline: see _drive.)
        for call, attempt in to_start:
            task = asyncio.ensure_future(self.steps.run(call, attempt))
            self._tasks[call.position] = (task, attempt)
        if not self._tasks and not self._tx_queue and not self._poke.is_set():
            next_due = self.agenda.next_due()
            if next_due is None or next_due - self.clock.now() > self.cfg.hold:
                if await self._suspend(core, next_due):
                    return None
                return []
        return await self._wait()

    def _pending(self) -> bool:
        return self.rec is not None and bool(self.rec.events)

    def _refeed(self, core: ReplayCore, outcomes: list[Outcome]) -> None:
        """Record again the step outcomes of a write refused for messages, after those."""
        refed = set()
        for out in outcomes:
            call = core.calls.get(out.call.position)
            if isinstance(call, StepCall) and call.recorded and not call.done:
                out.call = call
                self._step_ended(core, out)
                refed.add(call.position)
        self._reattempt = [c for c in self._reattempt if c.position not in refed]

    def _due(self, core: ReplayCore) -> bool:
        """Record whatever has come due: timers, the deadline; queue due retries.

        Returns whether anything came due (the code may have new calls).
        """
        now = self.clock.now()
        came = False
        for position in self.agenda.due_timers(now):
            came = True
            call = core.calls[position]
            if call.done or call.future.done():
                continue  # answered by a signal, or no longer awaited
            self._recorder().timer_fired(position)
        for position in self.agenda.due_retries(now):
            came = True
            step_call = core.calls[position]
            assert isinstance(step_call, StepCall)
            if not step_call.future.done():
                self._reattempt.append(step_call)
        if not core.finished and self.agenda.deadline_passed(now):
            self.log.warning("run.deadline_passed", seq=self._recorder().next_seq())
            self._recorder().deadline_passed()
            came = True
        return came

    async def _pull_inbox(self, core: ReplayCore) -> None:
        """Record messages sent to the run (signals, cancellation, child outcomes)."""
        rec = self._recorder()
        for m in await self.cfg.client.inbox(self.run_id, after_id=core.inbox_seen):
            event = rec.message(m)
            if isinstance(event, CancelRequested):
                self.log.info("run.cancel_requested", seq=event.seq)

    async def _suspend(self, core: ReplayCore, due: float | None) -> bool:
        """Give the lease back until ``due`` or a message; False if a message came first."""
        await self._pull_inbox(core)
        if self._pending():
            return False
        if due is None and not core.waiting():
            raise NonDeterminismError(
                self.run_id,
                0,
                "a run with nothing recorded to wait for",
                "the workflow waiting on something that is not durable (only steps, "
                "ctx.sleep, ctx.wait_for_signal and child workflows may be awaited)",
            )
        end = RunSuspended(seq=self._recorder().next_seq(), at=self.clock.now(), wake_at=due)
        snapshot = self._maybe_snapshot(core, extra=1)
        await self._append(end=end, status=RunStatus.SUSPENDED, wake_at=due, snapshot=snapshot)
        self.log.info("run.suspended", seq=self.seq, wake_at=due)
        return True

    async def _drop_abandoned(self, core: ReplayCore) -> None:
        """Cancel work the workflow stopped waiting for (it was cancelled, or lost a race)."""
        for position, (task, _) in list(self._tasks.items()):
            if core.calls[position].future.cancelled():
                task.cancel()
        # Child runs only (not every call: this runs each turn of a long history).
        for call in core.open_children() if core.has_children else ():
            if (
                call.recorded
                and call.future.cancelled()
                and call.position not in self._cancelled_children
            ):
                # Sent after the parent's ChildStarted is durable; a crash before this
                # line re-sends it on resume, and a second cancel is ignored by the child.
                self._cancelled_children.add(call.position)
                await self._cancel_child(call.child_run_id)

    async def _cancel_child(self, child_run_id: str) -> None:
        await cancel_child(self.cfg.client, child_run_id)

    async def _start_children(self) -> None:
        children, self._children, cfg = self._children, [], self.cfg
        for call in children:
            await start_child(
                cfg.client, cfg.on_child, self.run_id, call, self.clock.now(), self.log
            )

    async def _wait(self) -> list[Outcome]:
        due = self.agenda.next_due()
        waits: list[asyncio.Future[Any]] = [t for t, _ in self._tasks.values()]
        poke = asyncio.ensure_future(self._poke.wait())
        sleeper = asyncio.ensure_future(self.clock.sleep_until(due)) if due is not None else None
        waits.append(poke)
        if sleeper is not None:
            waits.append(sleeper)
        self.idle = not self._tasks
        # Waiting only for a timer: look at the inbox now and then, for messages
        # sent by processes that cannot poke this driver (no LISTEN/NOTIFY).
        timeout = self.cfg.poll if not self._tasks else None
        try:
            done, _ = await asyncio.wait(
                waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                self._poke.set()
        finally:
            self.idle = False
            poke.cancel()
            if sleeper is not None:
                sleeper.cancel()
        out = []
        for position, (t, attempt) in list(self._tasks.items()):
            if t not in done:
                continue
            del self._tasks[position]
            if t.cancelled():
                call = self.core.calls[position] if self.core else None
                assert isinstance(call, StepCall)
                out.append(Outcome(call, attempt, False, cancelled(call), retryable=False))
            else:
                out.append(t.result())
        return out

    def _schedule(
        self, core: ReplayCore, *, answered_only: bool = False
    ) -> list[tuple[StepCall, int]]:
        """Record every new call; returns the step attempts about to start."""
        rec = self.rec  # _recorder(), in line here and below: once per step each
        assert rec is not None, "the run's history is not loaded"
        to_start: list[tuple[StepCall, int]] = []
        while True:
            calls: list[Call] = core.new_calls()
            if self._reattempt:
                calls[:0], self._reattempt = self._reattempt, []
            if answered_only:
                # What the finished code did that needs no work: synchronous
                # calls, and signal waits answered from the buffer.
                calls = [
                    c
                    for c in calls
                    if isinstance(c, SyncCall) or (isinstance(c, WaitCall) and c.future.done())
                ]
            if not calls:
                return to_start
            for call in calls:
                if isinstance(call, StepCall):
                    attempt = self._schedule_step(call, rec)
                    if attempt is not None:
                        to_start.append((call, attempt))
                elif isinstance(call, TimerCall):
                    fire_at = rec.timer_started(call)
                    if not call.future.done():
                        self.agenda.add_timer(fire_at, call.position)
                elif isinstance(call, WaitCall):
                    timeout_at = rec.wait_started(call)
                    if timeout_at is not None:
                        self.agenda.add_timer(timeout_at, call.position)
                elif isinstance(call, ChildCall):
                    rec.child_started(call)
                    self._children.append(call)
                elif isinstance(call, SyncCall):
                    rec.sync_call(call)

    def _schedule_step(self, call: StepCall, rec: Recorder) -> int | None:
        """Record the next attempt of ``call``; its number, or None if it must not run."""
        attempt = call.attempt + 1
        if call.future.done():
            # The workflow gave up on it before it started (it lost a race, or the
            # run was cancelled): record it as cancelled without running its body.
            rec.step_scheduled(call, attempt, call.encoded_args)
            rec.step_failed(call, attempt, cancelled(call), final=True)
            return None
        if call.encoded_args is None:
            try:
                call.encoded_args = _codec.encode_args(call.args, what=call.step.name)
                if call.kwargs:
                    raise EncodingError(call.step.name, "dict", "pass step arguments positionally")
            except EncodingError as exc:
                rec.step_scheduled(call, attempt, None)
                rec.step_failed(call, attempt, exc, final=True)
                return None
        rec.step_scheduled(call, attempt, call.encoded_args)
        return attempt

    def _recorder(self) -> Recorder:
        assert self.rec is not None, "the run's history is not loaded"
        return self.rec

    def _step_ended(self, core: ReplayCore, out: Outcome) -> None:
        """A step attempt ended: queue its event; a retryable failure goes on the agenda."""
        rec = self.rec
        assert rec is not None, "the run's history is not loaded"
        call = out.call
        self._unsaved.append(out)
        if out.ok:
            if self._debug():  # filtered out (the usual case), the line costs this call only
                self.log_completed(out)
            call.live_result = out.decoded
            rec.step_completed(call, out.attempt, out.value)
            return
        exc = out.value
        policy = call.step.retry
        retry = (
            out.retryable
            and not call.future.done()
            and policy.is_retryable(exc)
            and call.failures + 1 < policy.max_attempts
        )
        delay = policy.delay(call.failures + 1) if retry else 0.0
        self.log.warning(
            "step.failed",
            step=call.step.name,
            position=call.position,
            attempt=out.attempt,
            error_type=type(exc).__name__,
            error=str(exc),
            retry_in=delay if retry else None,
            seq=rec.next_seq(),
        )
        rec.step_failed(call, out.attempt, exc, final=not retry, delay=delay)
        if retry:
            self.agenda.add_retry(self.clock.now() + delay, call.position)

    def log_completed(self, out: Outcome) -> None:
        """The ``step.completed`` debug line (asked only when debug lines are emitted)."""
        call = out.call
        self.log.debug(
            "step.completed",
            step=call.step.name,
            position=call.position,
            attempt=out.attempt,
            seq=self._recorder().next_seq(),
        )

    async def _finish(self, core: ReplayCore) -> tuple[RunStatus, bytes, AnyEvent]:
        """Close what is still open and make the run's last event: ``(status, outcome, end)``."""
        for t, _ in self._tasks.values():
            # The workflow no longer waits for these; their outcomes no longer matter.
            t.cancel()
        self._tasks.clear()
        self.agenda.drop_work()
        self._tx_queue.clear()
        self._reattempt.clear()
        rec = self._recorder()
        close_open_steps(core, rec, self.log)
        continued_to = ""
        if core.end_kind() is ContinuedAsNew:
            # Signals already sent must not be lost with this run: record them here,
            # and the next run receives every one not consumed yet.
            await self._pull_inbox(core)
            continued_to = await self._continue(core)
        end = end_event(core, rec.next_seq(), self.clock.now(), continued_to=continued_to)
        return END_STATUS[type(end)], _codec.encode_event(end), end

    async def _continue(self, core: ReplayCore) -> str:
        """Create the run that carries on; idempotent, so a crash here only repeats it."""
        new_run = continuation(core, self.run_id, self.clock.now())
        await self.cfg.client.start_run(new_run)
        self.log.info("run.continued_as_new", new_run_id=new_run.run_id)
        self._continued_to = new_run.run_id
        self.cfg.on_child(None)
        return new_run.run_id

    def _maybe_snapshot(self, core: ReplayCore, *, extra: int = 0) -> Snapshot | None:
        """A snapshot as of the pending events (and ``extra`` more), if one is due."""
        every = self.cfg.snapshot_every
        rec = self.rec
        assert rec is not None, "the run's history is not loaded"
        last = rec.durable_seq + len(rec.events) + extra
        if every <= 0 or last - self._snap_seq < every:
            return None
        schema, data = self._snap_encoder.encode(
            core.fed, core.in_flight_events(), core.failure_counts()
        )
        self._snap_seq = last
        return Snapshot(run_id=self.run_id, seq=last, schema=schema, data=data)


_MAX_PASSES = 50
"""Replays of one run in a row for messages that keep arriving as it ends; then the
driver gives the run back (``run.driver_crashed``) and a later claim goes on."""
