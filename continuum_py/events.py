"""The events of a run's history: the only record of what a run did.

Every event is a frozen :class:`msgspec.Struct` in one tagged union
(:data:`AnyEvent`). The tag is the event's kind (its class name, but for the two
noted below) and is stored beside the encoded bytes as the event's ``kind``. User values (arguments, results) are embedded as
already-encoded JSON (:class:`msgspec.Raw`) so a history reads as plain JSON.

Schema evolution follows msgspec's rules: a new field gets a default and goes
at the end, an existing field never changes type. Anything else bumps
:data:`SCHEMA_VERSION`; a journal written by a newer version is refused with
:class:`~continuum_py.errors.SchemaTooNew` instead of being misread.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal, TypeAlias

import msgspec

__all__ = [
    "SCHEMA_VERSION",
    "AnyEvent",
    "CancelRequested",
    "ChildCompleted",
    "ChildStarted",
    "CompensationOutcome",
    "CompensationStarted",
    "ContinuedAsNew",
    "ErrorInfo",
    "Event",
    "EventPublished",
    "MarkerRecorded",
    "RunCancelledEvent",
    "RunCompleted",
    "RunFailedEvent",
    "RunStarted",
    "RunSuspended",
    "SideEffectRecorded",
    "SignalReceived",
    "SignalWaitStarted",
    "StepCompleted",
    "StepFailed",
    "StepScheduled",
    "TimerFired",
    "TimerStarted",
    "schema_of",
]

SCHEMA_VERSION = 3
"""The newest event schema this library writes and reads.

Each event is stored with the schema of its kind (:func:`schema_of`), not this
one: a history that uses no newer kind stays readable by a library that
predates it, so workers of two versions can share a journal during an upgrade.
"""


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An exception as recorded in history.

    Attributes:
        type: qualified name of the exception class, e.g. ``"myapp.CardDeclined"``.
        message: ``str(exception)``.
        traceback: the formatted traceback, for debugging.
    """

    type: str
    message: str
    traceback: str = ""


class CompensationOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How one compensation ended, as listed by a failed or cancelled run.

    Attributes:
        step: the compensation's step name.
        position: the compensation's own call-order position.
        compensates: the position of the completed step it undoes.
        compensated_step: that step's name.
        ok: whether the compensation completed (else it failed for good).
        error: what it raised, when it failed.
    """

    step: str
    position: int
    compensates: int
    compensated_step: str
    ok: bool
    error: ErrorInfo | None = None


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="kind"):
    """Base of every history event.

    Attributes:
        seq: position in the run's history, 1..n with no gaps.
        at: wall-clock time (seconds since the epoch) when the event was recorded.
    """

    seq: int
    at: float = 0.0


class RunStarted(Event, frozen=True, kw_only=True):
    """The run was created.

    Attributes:
        run_id: the run's id.
        workflow: the registered workflow name.
        args: the workflow's positional arguments, as a JSON array.
        deadline: when the run is stopped with ``RunTimedOut`` (engine clock).
        parent_run_id: the parent, for a child run.
        parent_position: the parent's position waiting for this child.
        continued_from: the run this one continues (``ctx.continue_as_new``).
        carried_signals: signals the run it continues had received but not yet
            consumed; waits here receive them first, in order.
    """

    run_id: str
    workflow: str
    args: msgspec.Raw
    deadline: float | None = None
    parent_run_id: str | None = None
    parent_position: int = 0
    continued_from: str | None = None
    carried_signals: list[SignalReceived] = []


class StepScheduled(Event, frozen=True, kw_only=True):
    """An attempt of a step is about to run; durable before the step body starts.

    Attributes:
        position: the step's call-order position in the workflow.
        step: the step's name.
        attempt: 1 for the first attempt, then 2, 3, ...
        args: the step's positional arguments, as a JSON array.
        compensates: for a compensation, the position of the step it undoes.
    """

    position: int
    step: str
    attempt: int
    args: msgspec.Raw
    compensates: int | None = None


class StepCompleted(Event, frozen=True, kw_only=True):
    """A step attempt returned; its result is final and never recomputed.

    Attributes:
        position: the step's call-order position.
        step: the step's name.
        attempt: the attempt that succeeded.
        result: the step's return value, as JSON.
    """

    position: int
    step: str
    attempt: int
    result: msgspec.Raw


class StepFailed(Event, frozen=True, kw_only=True):
    """A step attempt raised.

    Attributes:
        position: the step's call-order position.
        step: the step's name.
        attempt: the attempt that failed.
        error: what it raised.
        final: ``True`` when no attempt follows (the workflow sees a ``StepError``).
        retry_delay: seconds until the next attempt when not final.
    """

    position: int
    step: str
    attempt: int
    error: ErrorInfo
    final: bool
    retry_delay: float = 0.0


class RunCompleted(Event, frozen=True, kw_only=True):
    """The workflow returned.

    Attributes:
        result: its return value, as JSON.
    """

    result: msgspec.Raw


class RunFailedEvent(Event, frozen=True, kw_only=True, tag="RunFailed"):
    """The workflow raised; kind ``"RunFailed"``.

    Not :class:`continuum_py.errors.RunFailed`, the error ``handle.result()``
    raises for it.

    Attributes:
        error: what it raised.
        compensations: the compensations the run ran, in the order they ran
            (see ``@step(compensate=...)``).
    """

    error: ErrorInfo
    compensations: list[CompensationOutcome] = []


class TimerStarted(Event, frozen=True, kw_only=True):
    """``ctx.sleep`` started a durable timer.

    Attributes:
        position: the timer's call-order position.
        fire_at: when it fires (seconds since the epoch, engine clock).
    """

    position: int
    fire_at: float


class TimerFired(Event, frozen=True, kw_only=True):
    """A timer (a sleep, or a signal wait's timeout) came due.

    Attributes:
        position: the call-order position of the sleep or the wait.
    """

    position: int


class SignalWaitStarted(Event, frozen=True, kw_only=True):
    """``ctx.wait_for_signal`` began waiting.

    Attributes:
        position: the wait's call-order position.
        name: the signal name.
        timeout_at: when the wait gives up (``None``: never).
    """

    position: int
    name: str
    timeout_at: float | None = None


class SignalReceived(Event, frozen=True, kw_only=True):
    """A signal sent with ``engine.signal`` was recorded; waits consume them in order.

    Attributes:
        inbox_id: the inbox message it came from.
        name: the signal name.
        payload: its value, as JSON.
    """

    inbox_id: int
    name: str
    payload: msgspec.Raw


class SideEffectRecorded(Event, frozen=True, kw_only=True):
    """A value from ``ctx.now``, ``ctx.random`` or ``ctx.uuid4``, replayed as recorded.

    Attributes:
        position: its call-order position.
        what: ``"now"``, ``"random"`` or ``"uuid4"``.
        value: the value, as JSON.
    """

    position: int
    what: str
    value: msgspec.Raw


class MarkerRecorded(Event, frozen=True, kw_only=True):
    """``ctx.patched(change_id)`` was first asked by code that has the change.

    Attributes:
        position: its call-order position.
        name: the change id.
    """

    position: int
    name: str


class EventPublished(Event, frozen=True, kw_only=True):
    """``ctx.set_event(key, value)``: a value the run publishes for callers.

    Attributes:
        position: its call-order position.
        key: the key.
        value: the value, as JSON.
    """

    position: int
    key: str
    value: msgspec.Raw


class ChildStarted(Event, frozen=True, kw_only=True):
    """The workflow started a child run and waits for it.

    Attributes:
        position: the call's call-order position.
        child_run_id: the child run's id.
        workflow: the child's workflow name.
        args: its arguments, as a JSON array.
    """

    position: int
    child_run_id: str
    workflow: str
    args: msgspec.Raw


class ChildCompleted(Event, frozen=True, kw_only=True):
    """A child run ended.

    Attributes:
        inbox_id: the inbox message that brought the outcome.
        position: the parent's position that started the child.
        child_run_id: the child.
        ok: whether it completed (else it failed or was cancelled).
        result: its return value when ``ok``, as JSON.
        error: its error otherwise.
    """

    inbox_id: int
    position: int
    child_run_id: str
    ok: bool
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: ErrorInfo | None = None


CompensationReason = Literal["failed", "cancelled", "timed_out", "requested"]
"""Why compensations run: the run failed, was cancelled, passed its deadline, or
the workflow called ``ctx.compensate()``."""


class CompensationStarted(Event, frozen=True, kw_only=True):
    """The run decided to run the compensations of its completed steps.

    Recorded in the same append as the failure or cancel that caused it, so a
    crash cannot lose the decision; the compensations follow as steps whose
    ``StepScheduled.compensates`` names the step each undoes.

    Attributes:
        position: its call-order position.
        reason: ``"failed"``, ``"cancelled"``, ``"timed_out"`` or ``"requested"``
            (``ctx.compensate()``).
        error: the error that failed the run, for ``"failed"``.
    """

    position: int
    reason: CompensationReason
    error: ErrorInfo | None = None


CancelReason = Literal["cancel", "deadline"]
"""Why a run is asked to stop: ``engine.cancel``, or its deadline passed."""


class CancelRequested(Event, frozen=True, kw_only=True):
    """The run is to stop: ``engine.cancel``, or its deadline passed.

    Attributes:
        inbox_id: the inbox message (0 for a deadline).
        reason: ``"cancel"`` or ``"deadline"``.
    """

    inbox_id: int
    reason: CancelReason = "cancel"


class RunSuspended(Event, frozen=True, kw_only=True):
    """Nothing to do until a timer, a signal or a child: the lease was given back.

    Attributes:
        wake_at: when a timer wakes it (``None``: only a message does).
    """

    wake_at: float | None = None


class RunCancelledEvent(Event, frozen=True, kw_only=True, tag="RunCancelled"):
    """The workflow ended by cancellation; kind ``"RunCancelled"``.

    Not :class:`continuum_py.errors.RunCancelled`, the error ``handle.result()``
    raises for it.

    Attributes:
        reason: ``"cancel"``; for a terminated run, the reason given.
        terminated: ended from outside with nothing run (``engine.terminate``,
            or a cancel of a parked run): the workflow code did not see it, so
            replay stops here wherever the code was.
        compensations: the compensations the run ran, in the order they ran.
    """

    reason: str = "cancel"
    terminated: bool = False
    compensations: list[CompensationOutcome] = []


class ContinuedAsNew(Event, frozen=True, kw_only=True):
    """``ctx.continue_as_new``: this run ended, a fresh one carries on.

    Attributes:
        new_run_id: the run that continues.
        args: its arguments, as a JSON array.
    """

    new_run_id: str
    args: msgspec.Raw


AnyEvent: TypeAlias = (
    RunStarted
    | StepScheduled
    | StepCompleted
    | StepFailed
    | TimerStarted
    | TimerFired
    | SignalWaitStarted
    | SignalReceived
    | SideEffectRecorded
    | MarkerRecorded
    | EventPublished
    | ChildStarted
    | ChildCompleted
    | CancelRequested
    | CompensationStarted
    | RunSuspended
    | RunCompleted
    | RunFailedEvent
    | RunCancelledEvent
    | ContinuedAsNew
)
"""The union of every event type, for decoding."""

_KIND_SCHEMA: dict[type[Event], int] = {CompensationStarted: 3}
"""The schema that introduced each newer event kind; the others are schema 2."""


def schema_of(event: Event) -> int:
    """The schema an event is stored with: that of its kind."""
    return _KIND_SCHEMA.get(type(event), 2)


def schema_of_kind(cls: type[Event]) -> int:
    """The schema the events of class ``cls`` are stored with."""
    return _KIND_SCHEMA.get(cls, 2)


# The Python names differ from the errors of the same meaning; the kind does
# not (journals and golden histories store it). ``__name__`` stays the kind, so
# ``type(event).__name__`` and an event's repr read as its history stores it.
RunFailedEvent.__name__ = "RunFailed"
RunCancelledEvent.__name__ = "RunCancelled"

_DEPRECATED = {"RunFailed": RunFailedEvent, "RunCancelled": RunCancelledEvent}

if TYPE_CHECKING:
    RunFailed = RunFailedEvent
    """Deprecated: the older name of :class:`RunFailedEvent`."""
    RunCancelled = RunCancelledEvent
    """Deprecated: the older name of :class:`RunCancelledEvent`."""
else:

    def __getattr__(name: str) -> type[Event]:
        # The old names still import, with a warning: they read as the errors.
        new = _DEPRECATED.get(name)
        if new is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        warnings.warn(
            f"continuum_py.events.{name} is deprecated; use {new.__qualname__} "
            f"(continuum_py.errors.{name} is the error)",
            DeprecationWarning,
            stacklevel=2,
        )
        return new
