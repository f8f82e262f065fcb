"""Sagas: the compensations of a run's completed steps, run as workflow code.

Compensating happens on the workflow loop, like the workflow itself: the
decision is a synchronous call (a ``CompensationStarted`` event) and each
compensation is an ordinary step call at the next call-order position. So the
runner records them like any other call, a replay makes the same calls in the
same order, and a crash anywhere in the middle loses nothing:

- the decision is made the moment the code fails (or sees the cancel), so the
  runner records it in the same append as the ``StepFailed`` or
  ``CancelRequested`` that caused it;
- a resumed run replays the compensations already recorded (their outcomes come
  from history) and runs the rest.

Which steps are owed a compensation is folded from history in the order their
``StepCompleted`` events were recorded (completion order, gathered steps
included), which is the same live and in a replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from continuum_py import _codec
from continuum_py._calls import ContinueAsNew, StepCall
from continuum_py.events import (
    CompensationOutcome,
    CompensationReason,
    CompensationStarted,
    ErrorInfo,
)

if TYPE_CHECKING:
    from continuum_py._replay import ReplayCore


class Saga:
    """The steps of one run owed a compensation, and what compensating did so far."""

    def __init__(self) -> None:
        self.owed: list[StepCall] = []
        """Completed steps with a ``compensate=`` step, in completion order."""
        self.outcomes: list[CompensationOutcome] = []
        """Every compensation the run ran, in the order they ran."""
        self.active = 0
        """Compensations under way (a cancel arriving now waits for them)."""
        self.held_cancel = False
        """A cancel arrived while compensating; delivered once that is over."""

    def completed(self, call: StepCall) -> None:
        """History recorded ``call`` as completed."""
        if call.step.compensate is not None and call.compensates is None:
            self.owed.append(call)

    def due(self, core: ReplayCore) -> bool:
        """Whether a failure now has anything to compensate (or may have, once steps settle)."""
        return bool(self.owed) or any(
            c.step.compensate is not None and c.compensates is None for c in _in_flight(core)
        )


async def run_workflow(core: ReplayCore, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run the workflow's coroutine; if it fails or is cancelled, compensate, then re-raise."""
    try:
        value = await coro
        if core.saga.due(core):
            # A result that cannot be recorded fails the run: find out while the
            # steps can still be undone (the run's end encodes it again).
            wf = core.workflow
            _codec.encode_value(value, what=wf.name if wf else None, kind="workflow")
        return value
    except ContinueAsNew:
        raise  # the run carries on elsewhere: nothing is undone
    except (Exception, asyncio.CancelledError) as exc:
        if core.nd_error is not None or not core.saga.due(core):
            raise
        await compensate(core, _reason(core, exc), exc, deliver_cancel=False)
        raise


async def compensate(
    core: ReplayCore,
    reason: CompensationReason,
    exc: BaseException | None = None,
    *,
    deliver_cancel: bool = True,
) -> list[CompensationOutcome]:
    """Record the decision, let steps in flight settle, then undo the owed ones, newest first.

    Shielded: a cancel arriving meanwhile is held, and delivered afterwards when
    ``deliver_cancel`` (the workflow goes on after ``ctx.compensate()``).
    """
    saga = core.saga
    error = None
    if reason == "failed" and exc is not None:
        info = _codec.error_info(exc)
        # The traceback is in the run's end event already; the decision names the error.
        error = ErrorInfo(type=info.type, message=info.message)

    def decision(position: int) -> CompensationStarted:
        return CompensationStarted(seq=0, position=position, reason=reason, error=error)

    core.sync_call(decision, lambda ev: isinstance(ev, CompensationStarted))
    saga.active += 1
    try:
        await _settle(core)
        ran: list[CompensationOutcome] = []
        while saga.owed:
            # Popped one at a time: a step settling during a compensation still counts.
            ran.append(await _undo(core, saga.owed.pop()))
        saga.outcomes += ran
        return ran
    finally:
        saga.active -= 1
        if deliver_cancel and not saga.active and saga.held_cancel:
            saga.held_cancel = False
            core.cancel_main()


async def _settle(core: ReplayCore) -> None:
    """Wait until every step still running has an outcome in history.

    A gathered sibling of the step that failed may still complete: it is owed a
    compensation too. Steps the code stopped waiting for (cancelled) settle as
    soon as the runner records them as cancelled.
    """
    for call in _in_flight(core):
        if call.done:
            continue  # settled while this waited for an earlier one
        if call.settled is None:
            call.settled = core.loop.create_future()
        await call.settled


def _in_flight(core: ReplayCore) -> list[StepCall]:
    # Not done, and either still awaited or with an attempt under way: a step
    # nobody awaits that waits for a retry is never run again, so is not waited for.
    return [
        c
        for c in core.calls.values()
        if isinstance(c, StepCall)
        and not c.done
        and (not c.future.done() or c.last_failure is None)
    ]


async def _undo(core: ReplayCore, call: StepCall) -> CompensationOutcome:
    undo = call.step.compensate
    assert undo is not None
    coro = core.call_step(undo, (call.result, *call.args), {}, compensates=call.position)
    position = core.last_position
    outcome = CompensationOutcome(
        step=undo.name,
        position=position,
        compensates=call.position,
        compensated_step=call.step.name,
        ok=True,
    )
    try:
        await coro
    except Exception as exc:
        return msgspec.structs.replace(outcome, ok=False, error=_codec.error_info(exc))
    return outcome


def _reason(core: ReplayCore, exc: BaseException) -> CompensationReason:
    if isinstance(exc, asyncio.CancelledError) and core.cancel_reason is not None:
        return "timed_out" if core.cancel_reason == "deadline" else "cancelled"
    return "failed"
