"""How a run ends: the last event its finished workflow calls for, and what that closes.

The runner calls these once the workflow code has returned or raised: steps
still open are recorded as cancelled, the end event is made from the code's
outcome (or the deadline that stopped it), and a ``ctx.continue_as_new`` makes
the run that carries on. Work that must happen as a run ends (a saga's
compensations) belongs here, not in the runner's loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from continuum_py import _codec
from continuum_py._calls import ContinueAsNew, describe
from continuum_py._client import stored
from continuum_py._recording import Recorder
from continuum_py._replay import ReplayCore
from continuum_py.errors import EncodingError, RunTimedOut, error_type
from continuum_py.events import (
    AnyEvent,
    ContinuedAsNew,
    ErrorInfo,
    RunCancelledEvent,
    RunCompleted,
    RunFailedEvent,
    RunStarted,
)
from continuum_py.journal import NewRun, RunStatus

END_STATUS: dict[type[Any], RunStatus] = {
    RunCompleted: RunStatus.COMPLETED,
    RunFailedEvent: RunStatus.FAILED,
    RunCancelledEvent: RunStatus.CANCELLED,
    ContinuedAsNew: RunStatus.CONTINUED,
}
"""The run status each final event sets."""


def close_open_steps(core: ReplayCore, rec: Recorder, log: Any) -> None:
    """Record each step still open as cancelled; warn of work the code never awaited."""
    unawaited = core.unawaited()
    if unawaited:
        # Started with asyncio.create_task (or left running by wait_first) and
        # never awaited: steps are cancelled, children never started are dropped.
        log.warning(
            "run.unawaited_work",
            calls=[describe(c) + f" at position {c.position}" for c in unawaited],
            seq=rec.next_seq(),
        )
    for call in core.unfinished_steps():
        err = asyncio.CancelledError(
            f"step {call.step.name!r} was cancelled: the run ended before it finished"
        )
        rec.step_failed(call, call.attempt, err, final=True)


def end_event(core: ReplayCore, seq: int, now: float, *, continued_to: str = "") -> AnyEvent:
    """The final event for the finished workflow's outcome (``continued_to``: the next run)."""
    _, value = core.outcome()
    kind = core.end_kind()
    if kind is RunCompleted:
        wf = core.workflow
        try:
            raw = _codec.encode_value(value, what=wf.name if wf else None, kind="workflow")
        except EncodingError as exc:
            return RunFailedEvent(seq=seq, at=now, error=_codec.error_info(exc))
        return RunCompleted(seq=seq, at=now, result=raw)
    if kind is ContinuedAsNew:
        assert isinstance(value, ContinueAsNew)
        return ContinuedAsNew(seq=seq, at=now, new_run_id=continued_to, args=value.encoded_args)
    ran = core.saga.outcomes
    if kind is RunCancelledEvent:
        reason = core.cancel_reason or "cancel"
        return RunCancelledEvent(seq=seq, at=now, reason=reason, compensations=ran)
    if isinstance(value, asyncio.CancelledError) and core.cancel_reason == "deadline":
        timed_out = ErrorInfo(
            type=error_type(RunTimedOut), message="the run passed its deadline and was stopped"
        )
        return RunFailedEvent(seq=seq, at=now, error=timed_out, compensations=ran)
    return RunFailedEvent(seq=seq, at=now, error=_codec.error_info(value), compensations=ran)


def next_run_id(run_id: str) -> str:
    """The id of the run that continues ``run_id``: ``~2``, then ``~3``, ..."""
    base, _, n = run_id.rpartition("~")
    return f"{base}~{int(n) + 1}" if base and n.isdigit() else f"{run_id}~2"


def continuation(core: ReplayCore, run_id: str, now: float) -> NewRun:
    """The run a ``ctx.continue_as_new`` starts, carrying the signals not consumed yet."""
    started, wf, outcome = core.started, core.workflow, core.outcome()[1]
    assert started is not None
    assert wf is not None
    assert isinstance(outcome, ContinueAsNew)
    new_id = next_run_id(run_id)
    first = RunStarted(
        seq=1,
        at=now,
        run_id=new_id,
        workflow=wf.name,
        args=outcome.encoded_args,
        parent_run_id=started.parent_run_id,
        parent_position=started.parent_position,
        continued_from=run_id,
        carried_signals=core.unconsumed_signals(),
    )
    return NewRun(
        run_id=new_id,
        workflow=wf.name,
        first_event=stored(new_id, first),
        parent_run_id=started.parent_run_id,
        parent_position=started.parent_position,
    )
