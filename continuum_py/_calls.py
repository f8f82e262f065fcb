"""What workflow code asked for, one object per call-order position.

The replay core makes a :class:`Call` when the code asks (a step, a timer, a
signal wait, a child run, a synchronous call), marks it recorded when history
holds its command event, and resolves its future when history holds its outcome.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from continuum_py.events import (
    CompensationStarted,
    EventPublished,
    MarkerRecorded,
    SideEffectRecorded,
    SignalReceived,
    StepFailed,
)
from continuum_py.workflow import StepDef, WorkflowDef


class Call(msgspec.Struct, eq=False):
    """Something the workflow asked for at one call-order position.

    ``msgspec.Struct`` for constructors made in C (a step makes one per call);
    compared by identity.
    """

    position: int
    future: asyncio.Future[Any]
    recorded: bool = False
    """History holds the event that records the call."""
    done: bool = False
    """History holds its outcome (or it needs none)."""

    @property
    def describe(self) -> str:
        return type(self).__name__


class StepCall(Call, kw_only=True):
    """A step call."""

    step: StepDef[Any, Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    attempt: int = 0
    """The newest attempt recorded as scheduled."""
    failures: int = 0
    """Attempts recorded as failed (not final)."""
    last_failure: StepFailed | None = None
    """The last non-final failure, if it came after the newest scheduled attempt."""
    encoded_args: msgspec.Raw | None = None
    compensates: int | None = None
    """For a compensation, the position of the step it undoes."""
    result: Any = None
    """The decoded result, once completed (a compensation receives it)."""
    live_result: tuple[Any] | None = None
    """A result this process decoded as the step returned, for its StepCompleted
    to hand over instead of decoding the same bytes again (``(value,)``)."""
    settled: asyncio.Future[None] | None = None
    """Made by whoever must wait for the outcome to be recorded, awaited or not."""

    @property
    def describe(self) -> str:
        return f"StepScheduled({self.step.name})"


class TimerCall(Call, kw_only=True):
    """``ctx.sleep``."""

    duration: float = 0.0
    fire_at: float | None = None

    @property
    def describe(self) -> str:
        return "TimerStarted"


class WaitCall(Call, kw_only=True):
    """``ctx.wait_for_signal``."""

    name: str = ""
    timeout: float | None = None
    timeout_at: float | None = None
    type: Any = Any
    signal: SignalReceived | None = None
    """The signal handed to this wait; cleared when an abandoned wait gives it back."""

    @property
    def describe(self) -> str:
        return f"SignalWaitStarted({self.name})"


class ChildCall(Call, kw_only=True):
    """A child workflow awaited inside the workflow."""

    workflow: WorkflowDef[Any, Any]
    encoded_args: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"[]"))
    child_run_id: str = ""

    @property
    def describe(self) -> str:
        return f"ChildStarted({self.workflow.name})"


class SyncCall(Call, kw_only=True):
    """A synchronous call, answered at once.

    ``ctx.now``/``random``/``uuid4``, a patch marker, a published value, the
    decision to compensate. Its one event is both the command and the outcome.
    """

    event: SideEffectRecorded | MarkerRecorded | EventPublished | CompensationStarted | None = None

    @property
    def describe(self) -> str:
        ev = self.event
        if isinstance(ev, SideEffectRecorded):
            return f"SideEffectRecorded({ev.what})"
        if isinstance(ev, MarkerRecorded):
            return f"MarkerRecorded({ev.name})"
        if isinstance(ev, EventPublished):
            return f"EventPublished({ev.key})"
        if isinstance(ev, CompensationStarted):
            return f"CompensationStarted({ev.reason})"
        return "SyncCall"


def describe(call: Call | None) -> str:
    return "nothing" if call is None else call.describe


class ContinueAsNew(BaseException):
    """Raised by ``ctx.continue_as_new``; ends the run so a fresh one carries on.

    A ``BaseException`` so that ``except Exception`` in workflow code does not
    swallow it.
    """

    def __init__(self, args: msgspec.Raw) -> None:
        super().__init__("continue as new")
        self.encoded_args = args
