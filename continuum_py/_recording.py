"""The events a run has made but not yet appended: built, numbered and fed here.

Every new event is numbered after the durable tail and the events queued before
it, stamped with the engine clock, fed to the replay core at once (so the
workflow reacts to it before anything else happens) and queued for the next
append. Only the run's last event (its end, or ``RunSuspended``) is queued
without being fed: the core checks what the code asked for, not how the runner
chose to end.
"""

from __future__ import annotations

from typing import Any

import msgspec

from continuum_py import _codec
from continuum_py._calls import ChildCall, StepCall, SyncCall, TimerCall, WaitCall
from continuum_py._client import kind_of, stored
from continuum_py._clock import Clock
from continuum_py._replay import ReplayCore
from continuum_py.errors import JournalCorrupt, error_type
from continuum_py.events import (
    SCHEMA_VERSION,
    AnyEvent,
    CancelRequested,
    ChildCompleted,
    ChildStarted,
    ErrorInfo,
    RunCompleted,
    RunFailedEvent,
    SignalReceived,
    SignalWaitStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
    TimerFired,
    TimerStarted,
)
from continuum_py.journal import InboxMessage, StoredEvent

_NULL = msgspec.Raw(b"null")
encode = _codec.encode_event
_SCHEDULED = kind_of(StepScheduled)
_COMPLETED = kind_of(StepCompleted)
"""Their stored kind and schema, for the fast path's rows (what ``stored`` gives them)."""


class Recorder:
    """The new events of one run, from its durable tail on.

    Args:
        run_id: the run.
        core: its replay core; every event but the last is fed to it.
        clock: the engine clock the events are stamped with.
        durable_seq: the seq of the last event the journal holds.
    """

    def __init__(self, run_id: str, core: ReplayCore, clock: Clock, durable_seq: int) -> None:
        self.run_id = run_id
        self.core = core
        self.clock = clock
        self.durable_seq = durable_seq
        """The seq of the last event the journal holds."""
        self.events: list[AnyEvent] = []
        """Made since the last append, in seq order."""
        self.rows: list[StoredEvent] = []
        """:attr:`events` as the journal stores them, each encoded once, as it is made."""

    def next_seq(self) -> int:
        """The seq the next event gets."""
        return self.durable_seq + len(self.events) + 1

    def add(self, event: AnyEvent) -> None:
        """Feed ``event`` (numbered with :meth:`next_seq`) to the core and queue it, encoded."""
        self.core.apply(event)
        self.events.append(event)
        self.rows.append(stored(self.run_id, event))

    def appended(self, n: int) -> None:
        """The first ``n`` queued events are durable now."""
        self.durable_seq += n
        del self.events[:n]
        del self.rows[:n]

    # ---- the events a runner makes ----
    def step_scheduled(self, call: StepCall, attempt: int, args: msgspec.Raw | None) -> None:
        """An attempt of ``call`` is about to start (``args`` None: they could not be encoded)."""
        self.add(self._scheduled(call, attempt, args if args is not None else _NULL))

    def _scheduled(self, call: StepCall, attempt: int, args: msgspec.Raw) -> StepScheduled:
        p, s, c = call.position, call.step.name, call.compensates
        seq, at = self.durable_seq + len(self.events) + 1, self.clock.now()  # next_seq(), in line
        return StepScheduled(
            seq=seq, at=at, position=p, step=s, attempt=attempt, args=args, compensates=c
        )

    def step_scheduled_alone(self, call: StepCall, attempt: int) -> None:
        """:meth:`step_scheduled` of a plain step the runner made from ``call`` itself.

        The sequential fast path's (``_sequential``): the event cannot differ from
        the call, so the core's checks are left out and it is marked recorded here.
        """
        event = self._scheduled(call, attempt, call.encoded_args or _NULL)
        # ReplayCore._on_scheduled for a call that is the StepCall at its position by
        # construction (a private attribute, read here rather than grow _replay.py).
        call.recorded = True
        call.attempt = attempt
        call.last_failure = None
        core = self.core
        del core._unrecorded[call.position]
        core.last_seq = seq = event.seq
        self.events.append(event)
        self.rows.append(
            StoredEvent(
                run_id=self.run_id,
                seq=seq,
                kind=_SCHEDULED[0],
                schema=_SCHEDULED[1],
                data=encode(event),
            )
        )

    def step_completed_alone(
        self, call: StepCall, attempt: int, result: msgspec.Raw, value: Any
    ) -> None:
        """:meth:`step_completed`, handing ``value`` (``result`` decoded) straight to the awaiting code.

        The sequential fast path's; a call whose outcome someone else waits for
        (a compensation), or that the code stopped awaiting, goes the usual way.
        """
        event = self._completed(call, attempt, result)
        core = self.core
        if call.done or call.settled is not None or call.future.done():
            call.live_result = (value,)
            core.apply(event)
        else:
            # ReplayCore._on_outcome of a completion this runner made for ``call``.
            core.take_completion(call, event, value)
            core.loop.run_ready()
            if core.nd_error is not None:
                raise core.nd_error
            core.last_seq = event.seq
        self.events.append(event)
        self.rows.append(
            StoredEvent(
                run_id=self.run_id,
                seq=event.seq,
                kind=_COMPLETED[0],
                schema=_COMPLETED[1],
                data=encode(event),
            )
        )

    def step_failed(
        self,
        call: StepCall,
        attempt: int,
        exc: BaseException,
        *,
        final: bool,
        delay: float = 0.0,
    ) -> None:
        """An attempt of ``call`` failed (for good, or to be retried after ``delay``)."""
        self.add(
            StepFailed(
                seq=self.next_seq(),
                at=self.clock.now(),
                position=call.position,
                step=call.step.name,
                attempt=attempt,
                error=_codec.error_info(exc),
                final=final,
                retry_delay=delay,
            )
        )

    def step_completed(self, call: StepCall, attempt: int, result: msgspec.Raw) -> None:
        """An attempt of ``call`` returned ``result`` (encoded)."""
        self.add(self._completed(call, attempt, result))

    def _completed(self, call: StepCall, attempt: int, result: msgspec.Raw) -> StepCompleted:
        p, s = call.position, call.step.name
        seq, at = self.durable_seq + len(self.events) + 1, self.clock.now()  # next_seq(), in line
        return StepCompleted(seq=seq, at=at, position=p, step=s, attempt=attempt, result=result)

    def timer_started(self, call: TimerCall) -> float:
        """``ctx.sleep`` began; returns when it fires."""
        fire_at = self.clock.now() + call.duration
        self.add(
            TimerStarted(
                seq=self.next_seq(), at=self.clock.now(), position=call.position, fire_at=fire_at
            )
        )
        return fire_at

    def timer_fired(self, position: int) -> None:
        """The timer (or a signal wait's timeout) at ``position`` is due."""
        self.add(TimerFired(seq=self.next_seq(), at=self.clock.now(), position=position))

    def wait_started(self, call: WaitCall) -> float | None:
        """``ctx.wait_for_signal`` began; returns when it times out, if it can."""
        answered = call.future.done()
        timeout_at = None if call.timeout is None or answered else self.clock.now() + call.timeout
        self.add(
            SignalWaitStarted(
                seq=self.next_seq(),
                at=self.clock.now(),
                position=call.position,
                name=call.name,
                timeout_at=timeout_at,
            )
        )
        return timeout_at

    def child_started(self, call: ChildCall) -> None:
        """A child run was asked for."""
        self.add(
            ChildStarted(
                seq=self.next_seq(),
                at=self.clock.now(),
                position=call.position,
                child_run_id=call.child_run_id,
                workflow=call.workflow.name,
                args=call.encoded_args,
            )
        )

    def sync_call(self, call: SyncCall) -> None:
        """A synchronous call's value (now, random, uuid4, a patch marker, set_event)."""
        assert call.event is not None
        self.add(msgspec.structs.replace(call.event, seq=self.next_seq(), at=self.clock.now()))

    def deadline_passed(self) -> None:
        """The run's deadline passed: the workflow is cancelled."""
        self.add(
            CancelRequested(seq=self.next_seq(), at=self.clock.now(), inbox_id=0, reason="deadline")
        )

    def message(self, m: InboxMessage) -> AnyEvent:
        """Record a message from the run's inbox (a signal, a cancel, a child's outcome)."""
        event = self._from_message(m)
        self.add(event)
        return event

    def _from_message(self, m: InboxMessage) -> AnyEvent:
        seq, at = self.next_seq(), self.clock.now()
        if m.kind == "signal":
            return SignalReceived(
                seq=seq, at=at, inbox_id=m.id, name=m.name, payload=msgspec.Raw(m.data)
            )
        if m.kind == "cancel":
            return CancelRequested(seq=seq, at=at, inbox_id=m.id)
        if m.kind == "child":
            position = int(m.name)
            call = self.core.calls.get(position)
            child_id = call.child_run_id if isinstance(call, ChildCall) else ""
            result, error = _NULL, None
            try:
                end = _codec.decode_event(child_id, None, SCHEMA_VERSION, m.data)
            except Exception as exc:
                error = ErrorInfo(type=error_type(JournalCorrupt), message=str(exc))
            else:
                if isinstance(end, RunCompleted):
                    result = end.result
                elif isinstance(end, RunFailedEvent):
                    error = end.error
                else:
                    error = ErrorInfo(type="cancelled", message="the child run was cancelled")
            return ChildCompleted(
                seq=seq,
                at=at,
                inbox_id=m.id,
                position=position,
                child_run_id=child_id,
                ok=error is None,
                result=result,
                error=error,
            )
        raise JournalCorrupt(self.run_id, None, f"inbox message {m.id} has unknown kind {m.kind!r}")
