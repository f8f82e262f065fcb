"""The replay core: history in, commands out. No journal, no clock, no I/O.

Workflow code runs on :class:`~continuum_py._workflow_loop.WorkflowLoop`, a minimal deterministic asyncio
loop: a FIFO of callbacks and nothing else (no timers, no sockets). Every
command the code issues (a step, ``ctx.sleep``, a signal wait, a child run,
``ctx.now``/``random``/``uuid4``, ``ctx.patched``, ``ctx.set_event``) takes the
next call-order *position*. The core resolves futures only when it is fed a
recorded event, then runs the loop until the code blocks again. Feeding the
same events in the same order therefore makes the same calls at the same
positions, whatever order work finished in live: the live runner records
outcomes in exactly the order it feeds them.

History events play two roles. Command events (``StepScheduled``,
``TimerStarted``, ``SignalWaitStarted``, ``ChildStarted``, ...) are checked
against what the code asked for at that position (a mismatch is a
``NonDeterminismError``); outcomes (``StepCompleted``, ``TimerFired``,
``SignalReceived``, ``ChildCompleted``, ``CancelRequested``, ...) are fed to
the code. Synchronous calls (``ctx.now()``, ``ctx.patched()``) must answer at
once, before their event is fed, so they read :attr:`ReplayCore.ahead`, an
index of what history holds at each position. What the code asks for beyond
the history is the live work: :meth:`ReplayCore.new_calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import msgspec

from continuum_py import _codec
from continuum_py._calls import (
    Call,
    ChildCall,
    ContinueAsNew,
    StepCall,
    SyncCall,
    TimerCall,
    WaitCall,
    describe,
)
from continuum_py._compensation import Saga, compensate, run_workflow
from continuum_py._log import WorkflowLogger
from continuum_py._replay_batch import Batch, await_step, feed_all
from continuum_py._replay_signals import SignalWaits
from continuum_py._replay_snapshot import Snapshots
from continuum_py._workflow_loop import WorkflowLoop
from continuum_py.errors import (
    ChildRunFailed,
    EncodingError,
    NonDeterminismError,
    SignalTimeout,
    StepError,
)
from continuum_py.events import (
    AnyEvent,
    CancelReason,
    CancelRequested,
    ChildCompleted,
    ChildStarted,
    CompensationOutcome,
    CompensationStarted,
    ContinuedAsNew,
    ErrorInfo,
    EventPublished,
    MarkerRecorded,
    RunCancelledEvent,
    RunCompleted,
    RunFailedEvent,
    RunStarted,
    SideEffectRecorded,
    SignalReceived,
    SignalWaitStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
    TimerFired,
    TimerStarted,
)
from continuum_py.workflow import Context, Registry, StepDef, WorkflowDef, set_runtime


class ReplayCore(SignalWaits, Snapshots):
    """Drives one run's workflow code deterministically from its events.

    Args:
        run_id: the run.
        registry: where the run's workflow is looked up by name.
    """

    def __init__(self, run_id: str, registry: Registry) -> None:
        self.run_id = run_id
        self.registry = registry
        self.loop = WorkflowLoop()  # type: ignore[abstract]  # unused loop APIs raise
        self.loop.on_task = self._watch_task
        set_runtime(self.loop, self)
        self.replaying = True
        self.log_during_replay = False
        self.logger = WorkflowLogger(
            lambda: self.replaying and not self.log_during_replay, run_id=run_id
        )
        self.last_seq = 0
        self.workflow: WorkflowDef[Any, Any] | None = None
        self.started: RunStarted | None = None
        self.calls: dict[int, Call] = {}
        self._next_position = 1
        self._settled_to = 1
        """Every call at a lower position is settled (see :meth:`unfinished_steps`)."""
        self._unrecorded: dict[int, Call] = {}
        self._main: asyncio.Task[Any] | None = None
        self.history_end: AnyEvent | None = None
        # Every event but step schedules and retryable failures, in the order fed:
        # with RunStarted, this is everything a snapshot needs to rebuild the state.
        self.fed: list[AnyEvent] = []
        self.restoring = False
        # The list of events being fed, while apply_all or restore runs.
        self.batch: Batch | None = None
        # What history holds at each position, known before the code asks: sync
        # calls (now, patched, ...) must answer at once, not when the event is fed.
        self.ahead: dict[int, AnyEvent] = {}
        self.signals: dict[str, deque[SignalReceived]] = {}
        self._waiters: dict[str, list[WaitCall]] = {}
        # The coroutine each signal wait returned, so wait_first, as_completed and
        # cancelled tasks can give back a signal the code never received.
        self.wait_of: weakref.WeakKeyDictionary[Any, WaitCall] = weakref.WeakKeyDictionary()
        # Signal waits and child runs not answered yet, by position (pruned lazily).
        self._message_waits: dict[int, Call] = {}
        # Child runs without a recorded outcome, in call order (pruned lazily).
        self._children: list[ChildCall] = []
        self.inbox_seen = 0
        self.cancel_reason: CancelReason | None = None
        self.saga = Saga()
        # A mismatch found inside workflow code (a sync call); raised to the runner
        # even if the code swallows it.
        self.nd_error: NonDeterminismError | None = None
        self.clock: Callable[[], float] = time.time
        # Called with each position as the code asks for it (a debugging replay
        # notes the source line that asked); None on a worker.
        self.on_ask: Callable[[int], None] | None = None

    # ---- code side ----
    def _take(self) -> int:
        position = self._next_position
        self._next_position += 1
        if self.on_ask is not None:
            self.on_ask(position)
        return position

    def _new(self, call: Call) -> Call:
        self.calls[call.position] = call
        self._unrecorded[call.position] = call
        return call

    def call_step(
        self,
        step: StepDef[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        compensates: int | None = None,
    ) -> Coroutine[Any, Any, Any]:
        fut: asyncio.Future[Any] = asyncio.Future(loop=self.loop)  # create_future(), in line
        call = StepCall(self._take(), fut, step=step, args=args, kwargs=kwargs)
        call.compensates = compensates
        self.calls[call.position] = self._unrecorded[call.position] = call  # _new(), in line
        return await_step(self, call)

    @property
    def last_position(self) -> int:
        """The position the code's newest call took."""
        return self._next_position - 1

    def compensate(self) -> Coroutine[Any, Any, list[CompensationOutcome]]:
        """``ctx.compensate()``: undo the steps completed so far, newest first."""
        return compensate(self, "requested")

    @property
    def interruptible(self) -> bool:
        """Whether a cancel arriving now would interrupt the code (the first one, not while compensating)."""
        return self.cancel_reason is None and not self.saga.active

    def cancel_main(self) -> None:
        """Cancel the workflow's code (it sees ``CancelledError`` at its next await)."""
        if self._main is not None and not self._main.done():
            self._main.cancel()

    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        fut = self.loop.create_future()
        self._new(TimerCall(self._take(), fut, duration=seconds))
        return _await(fut)

    def wait_for_signal(
        self, name: str, timeout: float | None, type_: Any
    ) -> Coroutine[Any, Any, Any]:
        fut = self.loop.create_future()
        call = WaitCall(self._take(), fut, name=name, timeout=timeout, type=type_)
        self._new(call)
        buffered = self.signals.get(name)
        if buffered:
            self._deliver(call, buffered.popleft())
        else:
            self._waiters.setdefault(name, []).append(call)
        if not fut.done():
            self._message_waits[call.position] = call
        coro = _await_signal(self, call)
        self.wait_of[coro] = call
        return coro

    def call_child(
        self, wf: WorkflowDef[Any, Any], args: tuple[Any, ...]
    ) -> Coroutine[Any, Any, Any]:
        fut = self.loop.create_future()
        position = self._take()
        raw = _codec.encode_args(args, what=wf.name, kind="workflow")
        call = ChildCall(
            position,
            fut,
            workflow=wf,
            encoded_args=raw,
            child_run_id=f"{self.run_id}.{position}",
        )
        self._new(call)
        self._message_waits[position] = call
        self._children.append(call)
        return _await(fut)

    def sync_call(
        self,
        make: Callable[
            [int], SideEffectRecorded | MarkerRecorded | EventPublished | CompensationStarted
        ],
        check: Callable[[AnyEvent], bool],
    ) -> AnyEvent:
        """A synchronous call: the event history holds at its position, else a new one."""
        position = self._take()
        held = self.ahead.get(position)
        if held is None:
            self._new(SyncCall(position, self.loop.create_future(), event=make(position)))
            return make_event(self.calls[position])
        if not check(held):
            err = NonDeterminismError(
                self.run_id, position, _event_name(held), _event_name(make(position))
            )
            self.nd_error = self.nd_error or err
            raise err
        self.calls[position] = SyncCall(position, self.loop.create_future())
        return held

    def patched(self, change_id: str) -> bool:
        """True for code running live or a history recorded with the change."""
        held = self.ahead.get(self._next_position)
        if held is None or (isinstance(held, MarkerRecorded) and held.name == change_id):
            self.sync_call(lambda p: MarkerRecorded(seq=0, position=p, name=change_id), _any)
            return True
        # History holds what the old code did here: take the old branch.
        return False

    def side_effect(self, what: str, make: Callable[[], Any]) -> msgspec.Raw:
        """``ctx.now``/``random``/``uuid4``: the value history holds here, else ``make()``'s."""

        def new(position: int) -> SideEffectRecorded:
            value = msgspec.Raw(msgspec.json.encode(make()))
            return SideEffectRecorded(seq=0, position=position, what=what, value=value)

        ev = self.sync_call(new, lambda ev: isinstance(ev, SideEffectRecorded) and ev.what == what)
        assert isinstance(ev, SideEffectRecorded)
        return ev.value

    def publish(self, key: str, value: Any) -> None:
        """``ctx.set_event``: record ``value`` under ``key``; raises ``EncodingError``."""
        raw = _codec.encode_value(value, what=f"set_event({key!r})", kind="value")

        def new(position: int) -> EventPublished:
            return EventPublished(seq=0, position=position, key=key, value=raw)

        self.sync_call(new, lambda ev: isinstance(ev, EventPublished) and ev.key == key)

    def continue_as_new(self, args: tuple[Any, ...]) -> NoReturn:
        """``ctx.continue_as_new``: raises ``ContinueAsNew``; ``EncodingError`` for bad args."""
        name = self.workflow.name if self.workflow is not None else None
        raise ContinueAsNew(_codec.encode_args(args, what=name, kind="workflow"))

    # ---- history side ----
    def index(self, events: list[AnyEvent]) -> None:
        """Learn what history holds at each position before replaying it."""
        for ev in events:
            position = getattr(ev, "position", None)
            if position is not None and position not in self.ahead:
                self.ahead[position] = ev

    def apply(self, event: AnyEvent) -> None:
        """Apply one history event (in seq order); raises ``NonDeterminismError``.

        Each event kind has one handler (:data:`_HANDLERS`); a kind with none
        (``RunSuspended``) is history only.
        """
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)
        else:
            self.fed.append(event)
        if self.nd_error is not None:
            raise self.nd_error
        self.last_seq = event.seq

    def apply_all(self, events: list[AnyEvent]) -> None:
        """Apply history events (in seq order), as :meth:`apply` one by one would, faster.

        Steps whose outcome comes next are handed to the code at its await
        (:mod:`continuum_py._replay_batch`), with the same checks and errors.
        """
        feed_all(self, events, self.apply)

    # ---- one handler per event kind; each keeps in `fed` what a snapshot needs ----
    def _on_step_failed(self, event: StepFailed) -> None:
        if event.final:
            self._on_outcome(event)
            return
        call = self._recorded(event.position, f"StepFailed({event.step})", StepCall)
        call.failures += 1
        call.last_failure = event

    def _on_timer_started(self, event: TimerStarted) -> None:
        self.fed.append(event)
        timer = self._match(event.position, event, TimerCall)
        timer.fire_at = event.fire_at

    def _on_timer_fired(self, event: TimerFired) -> None:
        self.fed.append(event)
        call = self._recorded(event.position, "TimerFired", Call)
        call.done = True
        if isinstance(call, WaitCall):
            self._drop_waiter(call)
            if not call.future.done():
                call.future.set_exception(SignalTimeout(call.name, call.timeout or 0.0))
        elif not call.future.done():
            call.future.set_result(None)
        self.loop.run_ready()

    def _on_wait_started(self, event: SignalWaitStarted) -> None:
        self.fed.append(event)
        wait = self._match(event.position, event, WaitCall)
        if wait.name != event.name:
            raise NonDeterminismError(
                self.run_id, event.position, _event_name(event), wait.describe
            )
        wait.timeout_at = event.timeout_at
        if wait.future.done():
            wait.done = True

    def _on_signal(self, event: SignalReceived) -> None:
        self.fed.append(event)
        self.inbox_seen = max(self.inbox_seen, event.inbox_id)
        waiters = self._waiters.get(event.name)
        while waiters and waiters[0].future.done():
            waiters.pop(0)  # gave up waiting (cancelled)
        if waiters:
            self._deliver(waiters.pop(0), event)
            self.loop.run_ready()
        else:
            self.signals.setdefault(event.name, deque()).append(event)

    def _on_child_started(self, event: ChildStarted) -> None:
        self.fed.append(event)
        child = self._match(event.position, event, ChildCall)
        if child.workflow.name != event.workflow:
            raise NonDeterminismError(
                self.run_id, event.position, _event_name(event), child.describe
            )
        child.child_run_id = event.child_run_id

    def _on_child_completed(self, event: ChildCompleted) -> None:
        self.fed.append(event)
        self.inbox_seen = max(self.inbox_seen, event.inbox_id)
        child = self._recorded(event.position, "ChildCompleted", ChildCall)
        child.done = True
        if not child.future.done():
            if event.ok:
                child.future.set_result(
                    self._decode(event.result, child.workflow.result_type, event.position, event)
                )
            else:
                err = event.error or ErrorInfo(type="unknown", message="")
                child.future.set_exception(
                    ChildRunFailed(
                        event.child_run_id,
                        child.workflow.name,
                        err.type,
                        err.message,
                        err.traceback,
                    )
                )
        self.loop.run_ready()

    def _on_sync_call(
        self, event: SideEffectRecorded | MarkerRecorded | EventPublished | CompensationStarted
    ) -> None:
        self.fed.append(event)
        rcall = self.calls.get(event.position)
        if not isinstance(rcall, SyncCall) or (
            rcall.event is not None and type(rcall.event) is not type(event)
        ):
            raise NonDeterminismError(
                self.run_id, event.position, _event_name(event), self._asked_at(event.position)
            )
        rcall.recorded = rcall.done = True
        self._unrecorded.pop(event.position, None)

    def _on_cancel(self, event: CancelRequested) -> None:
        self.fed.append(event)
        self.inbox_seen = max(self.inbox_seen, event.inbox_id)
        if self.cancel_reason is None:
            # Only the first request cancels: a repeated one (a resent child
            # cancel, a deadline during cleanup) must not interrupt the cleanup.
            self.cancel_reason = event.reason
            if self.saga.active:
                # Compensations are shielded from the cancel: it waits for them.
                self.saga.held_cancel = True
            elif self._main is not None and not self._main.done():
                self._main.cancel()
                self.loop.run_ready()

    def _on_end_event(
        self, event: RunCompleted | RunFailedEvent | RunCancelledEvent | ContinuedAsNew
    ) -> None:
        self.fed.append(event)
        self._on_end(event)

    def _decode(self, raw: msgspec.Raw, type_: Any, position: int, event: AnyEvent) -> Any:
        try:
            return _codec.decode_value(raw, type_)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _Raise(
                EncodingError(
                    None,
                    _event_name(event),
                    f"recorded value {bytes(raw)[:200]!r} does not fit {type_!r}: {exc}",
                    kind="value",
                )
            )

    def _match(self, position: int, event: AnyEvent, kind: type[_C]) -> _C:
        """The call at ``position`` that ``event`` records; marks it recorded."""
        call = self.calls.get(position)
        if not isinstance(call, kind):
            raise NonDeterminismError(
                self.run_id, position, _event_name(event), self._asked_at(position)
            )
        call.recorded = True
        self._unrecorded.pop(position, None)
        return call

    def _on_started(self, event: RunStarted) -> None:
        if self.started is not None:
            raise NonDeterminismError(self.run_id, 0, "a second RunStarted", "nothing")
        self.started = event
        self.fed.append(event)
        wf = self.registry.get(event.workflow)
        self.workflow = wf
        try:
            args = _codec.decode_args(event.args, wf.arg_types)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise NonDeterminismError(
                self.run_id,
                0,
                f"RunStarted({wf.name}) with arguments {bytes(event.args)[:200]!r}",
                f"arguments that fit the workflow's signature ({exc})",
            ) from exc
        for carried in event.carried_signals:
            self.signals.setdefault(carried.name, deque()).append(carried)
        ctx = Context(run_id=self.run_id, workflow=wf.name, _runtime=self)
        try:
            coro = wf.fn(ctx, *args)
        except TypeError as exc:
            # Calling a coroutine function only binds its arguments: they do not
            # fit (a start by name from a client without the code). The run fails
            # once, saying so, rather than crashing its worker on every claim.
            bad = TypeError(
                f"workflow {wf.name!r} cannot start with the arguments it was given "
                f"({bytes(event.args)[:200].decode(errors='replace')}): {exc}"
            )
            coro = _fail(bad)
        self._main = self.loop.create_task(run_workflow(self, coro), context=contextvars.Context())
        self.loop.run_ready()

    def _recorded(self, position: int, what: str, kind: type[_C]) -> _C:
        call = self.calls.get(position)
        if not isinstance(call, kind) or not (call.recorded or self.restoring):
            raise NonDeterminismError(self.run_id, position, what, self._asked_at(position))
        return call

    def _asked_at(self, position: int) -> str:
        call = self.calls.get(position)
        if call is not None:
            return describe(call)
        if self.finished:
            return "nothing (the workflow has returned)"
        return "nothing at this point"

    def _on_scheduled(self, event: StepScheduled) -> None:
        call = self.calls.get(event.position)
        if not isinstance(call, StepCall) or call.step.name != event.step:
            raise NonDeterminismError(
                self.run_id,
                event.position,
                f"StepScheduled({event.step})",
                self._asked_at(event.position),
            )
        call.recorded = True
        call.attempt = event.attempt
        call.last_failure = None
        self._unrecorded.pop(event.position, None)

    def take_completion(self, call: StepCall, event: StepCompleted, result: Any) -> None:
        """Apply ``event``, the completion of ``call``, as the code awaits it (:func:`await_step`).

        What :meth:`_on_outcome` does for it, less what cannot apply: the caller
        made its checks and decoded ``result``; no compensation waits for the
        call to settle and nothing awaits its future yet, so no code runs.
        """
        call.done = call.recorded = True
        self._unrecorded.pop(call.position, None)
        self.fed.append(event)
        call.result = result
        if call.step.compensate is not None:
            self.saga.completed(call)
        call.future.set_result(result)

    def _on_outcome(self, event: StepCompleted | StepFailed) -> None:
        call = self.calls.get(event.position)  # checked here; the error is built only if one fails
        if not isinstance(call, StepCall) or call.done or call.step.name != event.step:
            self._misfit_outcome(event)
        if not (call.recorded or self.restoring):
            self._misfit_outcome(event)
        call.done = True
        call.recorded = True
        self._unrecorded.pop(event.position, None)
        self.fed.append(event)
        if call.settled is not None:
            call.settled.set_result(None)  # a compensation waits for this step to settle
        owed = isinstance(event, StepCompleted) and call.step.compensate is not None
        if call.future.done() and not owed:
            # The workflow stopped waiting (cancelled); the outcome is history only.
            self.loop.run_ready()
            return
        if isinstance(event, StepCompleted):
            live, call.live_result = call.live_result, None
            try:
                call.result = (
                    live[0]
                    if live is not None
                    else _codec.decode_value(event.result, call.step.return_type)
                )
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise NonDeterminismError(
                    self.run_id,
                    event.position,
                    f"StepCompleted({event.step}) with result {bytes(event.result)[:200]!r}",
                    f"a result of the step's return type ({exc})",
                ) from exc
            if owed:  # completed, even if the code stopped waiting: its compensation is owed
                self.saga.completed(call)
            if call.future.done():
                self.loop.run_ready()
                return
            call.future.set_result(call.result)
        else:
            err = event.error
            call.future.set_exception(
                StepError(
                    event.step, event.position, err.type, err.message, err.traceback, event.attempt
                )
            )
        self.loop.run_ready()

    def _misfit_outcome(self, event: StepCompleted | StepFailed) -> NoReturn:
        what = f"{type(event).__name__}({event.step})"
        call = self._recorded(event.position, what, StepCall)
        if call.step.name != event.step:
            raise NonDeterminismError(self.run_id, event.position, what, describe(call))
        second = f"a second {what}"
        raise NonDeterminismError(self.run_id, event.position, second, "one outcome per step")

    def _on_end(self, event: AnyEvent) -> None:
        self.history_end = event
        if isinstance(event, RunCancelledEvent) and event.terminated:
            return  # ended from outside, wherever the code was
        if not self.finished:
            waiting = [c for c in self.calls.values() if not c.done and not c.future.done()]
            raise NonDeterminismError(
                self.run_id,
                self._next_position,
                _event_name(event),
                f"the workflow still waiting on {describe(waiting[0]) if waiting else 'something else'}",
            )
        expected = self.end_kind()
        if expected is not type(event):
            raise NonDeterminismError(
                self.run_id, self._next_position, _event_name(event), expected.__name__
            )

    # ---- results ----
    @property
    def main_task(self) -> asyncio.Task[Any] | None:
        """The task running the workflow function (its coroutine shows where the code waits)."""
        return self._main

    @property
    def finished(self) -> bool:
        """Whether the workflow code has returned or raised."""
        return self._main is not None and self._main.done()

    def outcome(self) -> tuple[bool, Any]:
        """``(True, value)`` if the workflow returned, ``(False, exception)`` if it raised."""
        assert self._main is not None
        assert self._main.done()
        if self._main.cancelled():
            return False, asyncio.CancelledError("the workflow was cancelled")
        exc = self._main.exception()
        if exc is not None:
            return False, exc
        return True, self._main.result()

    def end_kind(self) -> type[AnyEvent]:
        """The final event the finished workflow calls for."""
        ok, value = self.outcome()
        if ok:
            return RunCompleted
        if isinstance(value, ContinueAsNew):
            return ContinuedAsNew
        if isinstance(value, asyncio.CancelledError) and self.cancel_reason is not None:
            return RunFailedEvent if self.cancel_reason == "deadline" else RunCancelledEvent
        return RunFailedEvent

    def unconsumed_signals(self) -> list[SignalReceived]:
        """Signals received and not yet taken by a wait, in the order they arrived."""
        out = [ev for buffered in self.signals.values() for ev in buffered]
        return sorted(out, key=self._arrival)

    def new_calls(self) -> list[Call]:
        """Calls the code made that history does not hold yet, in call order."""
        return list(self._unrecorded.values())

    def waiting(self) -> list[Call]:
        """Recorded calls the workflow still waits on (steps in flight, timers, waits, children)."""
        return [c for c in self.calls.values() if c.recorded and not c.done and not c.future.done()]

    @property
    def has_children(self) -> bool:
        """Whether :meth:`open_children` may hold any (cheap; no list is made)."""
        return bool(self._children)

    def open_children(self) -> list[ChildCall]:
        """Child runs asked for whose outcome history does not hold yet."""
        self._children = [c for c in self._children if not c.done]
        return self._children

    def awaits_messages(self) -> bool:
        """Whether the code waits on a signal or a child run: a message could move it on."""
        waits = self._message_waits
        if not waits:
            return False
        for position in [p for p, c in waits.items() if c.future.done()]:
            del waits[position]
        return bool(waits)

    def pending_steps(self) -> list[StepCall]:
        """Steps recorded as scheduled with no outcome yet (in flight when history ends)."""
        return [c for c in self.waiting() if isinstance(c, StepCall)]

    def close(self) -> None:
        """Drop the workflow's coroutines without running more workflow code."""
        self.loop.close()
        for t in self.loop.tasks:
            if t.done():
                continue
            coro = t.get_coro()
            if coro is not None and hasattr(coro, "close"):
                with contextlib.suppress(RuntimeError):
                    coro.close()


_HANDLERS: dict[type[Any], Callable[[ReplayCore, Any], None]] = {
    RunStarted: ReplayCore._on_started,
    StepScheduled: ReplayCore._on_scheduled,
    StepCompleted: ReplayCore._on_outcome,
    StepFailed: ReplayCore._on_step_failed,
    TimerStarted: ReplayCore._on_timer_started,
    TimerFired: ReplayCore._on_timer_fired,
    SignalWaitStarted: ReplayCore._on_wait_started,
    SignalReceived: ReplayCore._on_signal,
    ChildStarted: ReplayCore._on_child_started,
    ChildCompleted: ReplayCore._on_child_completed,
    SideEffectRecorded: ReplayCore._on_sync_call,
    MarkerRecorded: ReplayCore._on_sync_call,
    EventPublished: ReplayCore._on_sync_call,
    CompensationStarted: ReplayCore._on_sync_call,
    CancelRequested: ReplayCore._on_cancel,
    RunCompleted: ReplayCore._on_end_event,
    RunFailedEvent: ReplayCore._on_end_event,
    RunCancelledEvent: ReplayCore._on_end_event,
    ContinuedAsNew: ReplayCore._on_end_event,
}
"""How :meth:`ReplayCore.apply` handles each event kind (``RunSuspended`` has no handler)."""


_C = TypeVar("_C", bound=Call)


class _Raise:
    """A decoded value that is really an error to raise at the await."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def make_event(call: Call) -> AnyEvent:
    assert isinstance(call, SyncCall)
    assert call.event is not None
    return call.event


def _any(event: AnyEvent) -> bool:
    return True


def _event_name(event: AnyEvent) -> str:
    detail = getattr(event, "step", None) or getattr(event, "name", None)
    detail = detail or getattr(event, "workflow", None) or getattr(event, "what", None)
    detail = detail or getattr(event, "key", None)
    return f"{type(event).__name__}({detail})" if detail else type(event).__name__


async def _fail(exc: BaseException) -> Any:
    raise exc


async def _await(fut: asyncio.Future[Any]) -> Any:
    value = await fut
    if isinstance(value, _Raise):
        raise value.error
    return value


async def _await_signal(core: ReplayCore, call: WaitCall) -> Any:
    try:
        value = await call.future
    except asyncio.CancelledError:
        # Cancelled after its signal was handed over but before the code got it.
        core.give_back(call)
        raise
    if isinstance(value, _Raise):
        raise value.error
    return value
