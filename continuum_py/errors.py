"""Every public exception of continuum_py, in one place.

All of them derive from :class:`ContinuumError`, so ``except ContinuumError``
catches anything the engine raises on purpose. Each carries the fields a caller
needs to act on it, and a message that says what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from continuum_py.events import CompensationOutcome

__all__ = [
    "ChildRunFailed",
    "ConfigurationError",
    "ContinuumError",
    "EncodingError",
    "ExportCorrupt",
    "ExportTooNew",
    "ForkPointNotFound",
    "JournalConflict",
    "JournalCorrupt",
    "JournalError",
    "JournalUnavailable",
    "LeaseLost",
    "MessagesPending",
    "NonDeterminismError",
    "OwnerKind",
    "PlanError",
    "PlanFailed",
    "PlanTimedOut",
    "RunAlreadyExists",
    "RunAlreadyFinished",
    "RunCancelled",
    "RunFailed",
    "RunIdTaken",
    "RunInFlight",
    "RunNotFound",
    "RunTimedOut",
    "ScheduleNotFound",
    "SchemaTooNew",
    "SignalTimeout",
    "StepError",
    "WorkflowNotRegistered",
]


class ContinuumError(Exception):
    """Base class of every error continuum_py raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's default pickling calls __init__ with the message alone,
        # which our richer __init__s don't take; rebuild from the fields instead,
        # so errors cross process boundaries (pools, multiprocessing logging).
        return (_rebuild, (type(self), self.args, self.__dict__))


def error_type(cls: type[BaseException]) -> str:
    """The name a recorded error gives its class (``ErrorInfo.type``): ``module.QualName``.

    Compare recorded errors with ``error_type(RunTimedOut)``, not a string that
    could be misspelt. Builtins go bare (``"ValueError"``).
    """
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _rebuild(cls: type[ContinuumError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class ConfigurationError(ContinuumError):
    """The engine or a journal was set up wrongly (bad URL, missing folder, missing driver)."""


class WorkflowNotRegistered(ContinuumError):
    """A run names a workflow that no registry in this process knows.

    Attributes:
        name: the workflow name recorded in the run.
    """

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        hint = f"; registered: {', '.join(sorted(known))}" if known else ""
        super().__init__(
            f"workflow {name!r} is not registered in this process{hint}. "
            "Import the module that defines it (decorated with @workflow) before starting the engine."
        )


OwnerKind = Literal["step", "workflow", "value"]
"""What an :class:`EncodingError`'s value belonged to."""


class EncodingError(ContinuumError):
    """A value could not be encoded for the journal.

    Raised when the value is recorded, never at replay time; nothing is written.

    Attributes:
        owner: whose value it was, whatever its kind: a step's or a workflow's
            name, or for another value what it was (``"signal 'approve'"``);
            ``None`` if unknown. The message says which (``"step 'charge'"``,
            ``"workflow 'checkout'"``).
        owner_kind: what ``owner`` names: ``"step"``, ``"workflow"`` or ``"value"``.
        step: the older name of ``owner``, kept for existing code: despite its
            name it also holds workflow names and value descriptions.
        type_name: the type that could not be encoded.
    """

    def __init__(
        self,
        owner: str | None,
        type_name: str,
        detail: str = "",
        *,
        kind: OwnerKind = "step",
    ) -> None:
        self.owner = owner
        self.owner_kind: OwnerKind = kind
        self.type_name = type_name
        where = f"{kind} {owner!r}" if owner else "value"
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"{where}: cannot encode a value of type {type_name!r} for the journal{extra}. "
            "Use JSON-compatible values, dataclasses, msgspec Structs or TypedDicts."
        )

    @property
    def step(self) -> str | None:
        """The older name of :attr:`owner` (the same value, whatever its kind)."""
        return self.owner


class RunNotFound(ContinuumError):
    """No run with this run_id exists in the journal."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with run_id {run_id!r}")


class ScheduleNotFound(ConfigurationError):
    """No cron schedule with this name exists in the journal.

    Attributes:
        name: the schedule name asked for.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no schedule named {name!r}")


class RunAlreadyExists(ContinuumError):
    """A run_id is already taken by a run of a different workflow.

    Attributes:
        run_id: the run_id asked for.
        workflow: the workflow the existing run belongs to.
    """

    def __init__(self, run_id: str, workflow: str, requested: str) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.requested = requested
        super().__init__(
            f"run {run_id!r} already exists for workflow {workflow!r}; "
            f"cannot start it as {requested!r}. Pick another run_id."
        )


class RunAlreadyFinished(ContinuumError):
    """A signal or cancellation was sent to a run that is already over.

    Attributes:
        run_id: the run.
        status: its final status (``"completed"``, ``"failed"``, ...).
    """

    def __init__(self, run_id: str, status: str, what: str = "message") -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(f"run {run_id!r} is already {status}; cannot deliver the {what}")


class JournalError(ContinuumError):
    """Base class of errors raised by a journal."""


class LeaseLost(JournalError):
    """A write carried a stale fencing token: another runner owns the run now.

    Attributes:
        run_id: the run.
        token: the token the writer held.
        current_token: the token the journal holds (``None`` if released).
    """

    def __init__(self, run_id: str, token: int, current_token: int | None) -> None:
        self.run_id = run_id
        self.token = token
        self.current_token = current_token
        super().__init__(
            f"run {run_id!r}: lease token {token} is stale (journal holds {current_token}); "
            "another runner owns this run, nothing was written"
        )


class JournalConflict(JournalError):
    """A write expected a different tail of the run's history.

    Attributes:
        run_id: the run.
        expected_seq: the last seq the writer expected.
        actual_seq: the last seq the journal holds.
    """

    def __init__(self, run_id: str, expected_seq: int, actual_seq: int | None) -> None:
        self.run_id = run_id
        self.expected_seq = expected_seq
        self.actual_seq = actual_seq
        super().__init__(
            f"run {run_id!r}: expected history to end at seq {expected_seq}, "
            f"journal has {actual_seq}; nothing was written"
        )


class MessagesPending(JournalError):
    """A run cannot end yet: messages it has not recorded arrived (a cancel, a signal).

    The journal refuses the final write atomically with it, so a message
    accepted by ``engine.cancel`` or ``engine.signal`` is recorded in the run's
    history and acted on, never dropped. The runner reads the messages and
    lets the workflow see them before the run ends.

    Attributes:
        run_id: the run.
        inbox_seen: the last message id the refused write had recorded.
    """

    def __init__(self, run_id: str, inbox_seen: int | None) -> None:
        self.run_id = run_id
        self.inbox_seen = inbox_seen
        super().__init__(
            f"run {run_id!r} cannot end: messages after #{inbox_seen or 0} arrived and are "
            "not recorded yet; nothing was written"
        )


class JournalUnavailable(JournalError):
    """The journal cannot be reached right now (transient); the runner backs off."""


class JournalCorrupt(JournalError):
    """A stored event or snapshot cannot be read.

    The run is left untouched in the journal; nothing is overwritten.

    Attributes:
        run_id: the run.
        seq: the event's seq (``None`` for a snapshot or run row).
    """

    def __init__(self, run_id: str | None, seq: int | None, detail: str) -> None:
        self.run_id = run_id
        self.seq = seq
        if run_id is None:
            where = "journal"
        else:
            where = f"run {run_id!r} " + (f"event seq {seq}" if seq is not None else "snapshot")
        super().__init__(f"{where} is unreadable: {detail}")


class SchemaTooNew(JournalCorrupt):
    """The journal holds data written by a newer continuum_py.

    Attributes:
        found: the schema version stored.
        supported: the newest schema version this library reads.
    """

    def __init__(self, run_id: str | None, seq: int | None, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        what = f"run {run_id!r}" if run_id is not None else "this journal"
        JournalError.__init__(
            self,
            f"{what} was written with schema version {found}, this continuum_py reads up to "
            f"{supported}; upgrade continuum-py to use it (nothing was changed)",
        )
        self.run_id = run_id
        self.seq = seq


class NonDeterminismError(ContinuumError):
    """Workflow code asked for something other than what its history records.

    A worker parks the run, not fails it: deploy code that matches the history
    (or use ``ctx.patched``) and resume it with ``engine.resume(run_id)``.
    ``Replayer.replay`` raises it with ``offline=True``: an offline replay
    parks nothing and changes no run, and its message says so.

    Attributes:
        run_id: the run.
        position: the call-order position where code and history part.
        recorded: what history holds at that position.
        requested: what the code asked for.
        offline: raised by an offline replay (``Replayer``), not by a worker.
        where: the workflow source line that asked (``file:line in function: text``),
            when an offline replay knows it.
    """

    def __init__(
        self,
        run_id: str,
        position: int,
        recorded: str,
        requested: str,
        *,
        offline: bool = False,
        where: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.where = where
        self.position = position
        self.recorded = recorded
        self.requested = requested
        self.offline = offline
        then = (
            "this replay changed nothing (a worker running this code would park the run)"
            if offline
            else "the run is parked until code matching its history resumes it"
        )
        super().__init__(
            f"run {run_id} position {position}: history has {recorded}, code asked for "
            f"{requested}{f' at {where}' if where else ''}. Workflow code must be deterministic; "
            f"{then}"
        )


class StepError(ContinuumError):
    """Raised inside a workflow when a step failed for good.

    Attributes:
        step: the step's name.
        position: its call-order position.
        error_type: qualified name of the exception the step raised.
        message: that exception's message.
        traceback_text: the formatted traceback recorded with it.
        attempts: how many attempts were made.
    """

    def __init__(
        self,
        step: str,
        position: int,
        error_type: str,
        message: str,
        traceback_text: str = "",
        attempts: int = 1,
    ) -> None:
        self.step = step
        self.position = position
        self.error_type = error_type
        self.message = message
        self.traceback_text = traceback_text
        self.attempts = attempts
        super().__init__(
            f"step {step!r} (position {position}) failed after {attempts} attempt(s): "
            f"{error_type}: {message}"
        )


class RunFailed(ContinuumError):
    """Raised by ``handle.result()`` when the run failed.

    Attributes:
        run_id: the run.
        error_type: qualified name of the exception that failed the run.
        message: its message.
        traceback_text: the traceback recorded when it happened.
        compensations: the compensations the run ran before it ended, in the
            order they ran (``@step(compensate=...)``); check ``ok`` on each.
    """

    def __init__(
        self,
        run_id: str,
        error_type: str,
        message: str,
        traceback_text: str = "",
        *,
        compensations: Sequence[CompensationOutcome] = (),
    ) -> None:
        self.run_id = run_id
        self.error_type = error_type
        self.message = message
        self.traceback_text = traceback_text
        self.compensations = list(compensations)
        super().__init__(f"run {run_id} failed: {error_type}: {message}")


class RunCancelled(ContinuumError):
    """Raised by ``handle.result()`` when the run was cancelled.

    Attributes:
        run_id: the run.
        reason: why (``"cancel"``, or the reason given to ``engine.terminate``).
        compensations: the compensations the run ran before it ended.
    """

    def __init__(
        self,
        run_id: str,
        reason: str = "",
        *,
        compensations: Sequence[CompensationOutcome] = (),
    ) -> None:
        self.run_id = run_id
        self.reason = reason
        self.compensations = list(compensations)
        super().__init__(f"run {run_id} was cancelled" + (f": {reason}" if reason else ""))


class RunTimedOut(RunFailed, TimeoutError):
    """Raised by ``handle.result()`` when the run passed its ``timeout`` and was stopped.

    The workflow saw ``asyncio.CancelledError`` at the deadline and could clean up.
    """

    def __init__(
        self,
        run_id: str,
        message: str = "",
        traceback_text: str = "",
        *,
        compensations: Sequence[CompensationOutcome] = (),
    ) -> None:
        RunFailed.__init__(
            self,
            run_id,
            error_type(RunTimedOut),
            message or "the run passed its deadline",
            traceback_text,
            compensations=compensations,
        )


class PlanError(ContinuumError):
    """A plan that cannot run as defined: a cycle, a duplicate name, an unknown branch.

    Raised when the plan is defined or first used (started, previewed, drawn),
    before anything runs.
    """


class PlanFailed(RunFailed):
    """Raised by ``handle.result()`` when a plan failed; its rollback and cleanup have run.

    Attributes:
        failures: each failed branch's error (``ErrorInfo``: ``type``, ``message``).
        rolled_back: the branches rolled back, in the order their rollbacks finished.
        rollback_errors: each branch whose rollback failed for good, with its error.
        skipped: the branches that never started.
        cleanup_errors: each branch whose cleanup hook failed for good, with its error.
    """

    def __init__(
        self,
        run_id: str,
        message: str,
        *,
        failures: dict[str, Any] | None = None,
        rolled_back: list[str] | None = None,
        rollback_errors: dict[str, Any] | None = None,
        skipped: list[str] | None = None,
        cleanup_errors: dict[str, Any] | None = None,
        traceback_text: str = "",
    ) -> None:
        self.failures = failures or {}
        self.rolled_back = rolled_back or []
        self.rollback_errors = rollback_errors or {}
        self.skipped = skipped or []
        self.cleanup_errors = cleanup_errors or {}
        RunFailed.__init__(self, run_id, error_type(type(self)), message, traceback_text)


class PlanTimedOut(PlanFailed, TimeoutError):
    """Raised by ``handle.result()`` when a plan passed its ``timeout``.

    A :class:`PlanFailed` (with the same fields): its applied branches were rolled
    back and its cleanup hooks ran before it ended.
    """


class SignalTimeout(ContinuumError, TimeoutError):
    """Raised inside a workflow when ``ctx.wait_for_signal`` times out.

    Attributes:
        name: the signal waited for.
        timeout: the timeout in seconds.
    """

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(f"no signal {name!r} arrived within {timeout}s")


class ChildRunFailed(ContinuumError):
    """Raised inside a parent workflow when a child run it awaited failed or was cancelled.

    Attributes:
        child_run_id: the child run.
        workflow: the child's workflow name.
        error_type: qualified name of the child's error (``"cancelled"`` if cancelled).
        message: its message.
        traceback_text: the child's recorded traceback.
    """

    def __init__(
        self,
        child_run_id: str,
        workflow: str,
        error_type: str,
        message: str,
        traceback_text: str = "",
    ) -> None:
        self.child_run_id = child_run_id
        self.workflow = workflow
        self.error_type = error_type
        self.message = message
        self.traceback_text = traceback_text
        super().__init__(f"child run {child_run_id} ({workflow}) failed: {error_type}: {message}")


class RunIdTaken(ContinuumError):
    """A run id an import or a fork would create exists already; nothing was written.

    Attributes:
        run_id: the run id.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"a run with run_id {run_id!r} exists already; nothing was written "
            "(pick another run_id, or import into another journal)"
        )


class ExportCorrupt(ContinuumError):
    """An export (``engine.export_run``) that cannot be imported: truncated, altered or not one.

    Nothing was written.

    Attributes:
        run_id: the run whose part is damaged, when known.
        detail: what is wrong.
    """

    def __init__(self, detail: str, run_id: str | None = None) -> None:
        self.detail = detail
        self.run_id = run_id
        where = f" (run {run_id!r})" if run_id is not None else ""
        super().__init__(f"the export cannot be imported{where}: {detail}; nothing was written")


class ExportTooNew(ExportCorrupt):
    """An export written by a newer continuum_py (its format or event schema); nothing was written.

    Attributes:
        what: ``"format"`` or ``"event schema"``.
        found: the version in the export.
        supported: the newest version this library reads.
    """

    def __init__(self, what: str, found: int, supported: int, run_id: str | None = None) -> None:
        self.what = what
        self.found = found
        self.supported = supported
        super().__init__(
            f"it was written with {what} version {found}, this continuum_py reads up to "
            f"{supported}; upgrade continuum-py to import it",
            run_id,
        )


class ForkPointNotFound(ContinuumError, ValueError):
    """``engine.fork`` was given a point the run's history does not hold; nothing was recorded.

    Attributes:
        run_id: the run to fork.
        point: the point asked for (``"position 12"``, ``"step 'charge'"``, ``"its last failure"``).
    """

    def __init__(self, run_id: str, point: str, detail: str) -> None:
        self.run_id = run_id
        self.point = point
        super().__init__(f"cannot fork run {run_id!r} at {point}: {detail}; nothing was recorded")


class RunInFlight(ContinuumError):
    """A fork of a run that has not finished, without ``force=True``; nothing was recorded.

    Attributes:
        run_id: the run.
        status: where it stands.
    """

    def __init__(self, run_id: str, status: str) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(
            f"run {run_id!r} is {status}, still in flight: its history may still grow; "
            "fork it anyway with force=True (continuum fork --force), or wait for it to end"
        )
