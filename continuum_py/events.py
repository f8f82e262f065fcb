"""The events of a run's history: the only record of what a run did.

Every event is a frozen :class:`msgspec.Struct` in one tagged union
(:data:`AnyEvent`). The tag is the class name and is stored beside the encoded
bytes as the event's ``kind``. User values (arguments, results) are embedded as
already-encoded JSON (:class:`msgspec.Raw`) so a history reads as plain JSON.

Schema evolution follows msgspec's rules: a new field gets a default and goes
at the end, an existing field never changes type. Anything else bumps
:data:`SCHEMA_VERSION`; a journal written by a newer version is refused with
:class:`~continuum_py.errors.SchemaTooNew` instead of being misread.
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec

__all__ = [
    "SCHEMA_VERSION",
    "AnyEvent",
    "ErrorInfo",
    "Event",
    "RunCompleted",
    "RunFailed",
    "RunStarted",
    "StepCompleted",
    "StepFailed",
    "StepScheduled",
]

SCHEMA_VERSION = 1
"""The newest event schema this library writes and reads."""


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
    """

    run_id: str
    workflow: str
    args: msgspec.Raw


class StepScheduled(Event, frozen=True, kw_only=True):
    """An attempt of a step is about to run; durable before the step body starts.

    Attributes:
        position: the step's call-order position in the workflow.
        step: the step's name.
        attempt: 1 for the first attempt, then 2, 3, ...
        args: the step's positional arguments, as a JSON array.
    """

    position: int
    step: str
    attempt: int
    args: msgspec.Raw


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


class RunFailed(Event, frozen=True, kw_only=True):
    """The workflow raised.

    Attributes:
        error: what it raised.
    """

    error: ErrorInfo


AnyEvent: TypeAlias = (
    RunStarted | StepScheduled | StepCompleted | StepFailed | RunCompleted | RunFailed
)
"""The union of every event type, for decoding."""
