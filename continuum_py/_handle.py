"""A reference to one run (``RunHandle``) and its steps as folded from history (``StepStatus``).

``Engine.start`` and ``Engine.get`` return a ``RunHandle``; it holds no
resources and reads everything through its engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import msgspec

from continuum_py import _codec
from continuum_py.errors import (
    ContinuumError,
    PlanError,
    RunCancelled,
    RunFailed,
    RunTimedOut,
    error_type,
)
from continuum_py.events import (
    AnyEvent,
    ContinuedAsNew,
    ErrorInfo,
    RunCancelledEvent,
    RunCompleted,
    RunFailedEvent,
    StepCompleted,
    StepFailed,
    StepScheduled,
)
from continuum_py.journal import RunRecord, RunStatus
from continuum_py.plan import (
    OUTCOME_KEY,
    PLAN_ERRORS,
    BranchStatus,
    Plan,
    branch_statuses,
    plan_failure,
)

if TYPE_CHECKING:
    from continuum_py.engine import Engine

__all__ = ["RunHandle", "RunWaiter", "StepState", "StepStatus", "step_statuses"]


class RunWaiter(asyncio.Event):
    """Set when a run ends in this process (or to make its waiters read it again).

    ``outcome`` is the run's final event, encoded, when the driver that ended it
    handed it over, so ``result()`` need not read it back from the journal.
    """

    def __init__(self) -> None:
        super().__init__()
        self.outcome: bytes | None = None


StepState = Literal["running", "pending", "completed", "failed"]
"""Where a step stands: see :attr:`StepStatus.status`."""


class StepStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Where one step of a run stands, from its history.

    Attributes:
        position: the step's call-order position.
        step: its name.
        status: ``"running"`` (an attempt started, no outcome yet), ``"pending"``
            (waiting to retry), ``"completed"`` or ``"failed"`` (for good).
        attempts: attempts started so far.
        last_error: the newest failure, if any.
        started_at: when the first attempt started (seconds since the epoch).
        finished_at: when it completed or failed for good.
        compensates: for a compensation, the position of the step it undoes.
    """

    position: int
    step: str
    status: StepState
    attempts: int
    last_error: ErrorInfo | None = None
    started_at: float = 0.0
    finished_at: float | None = None
    compensates: int | None = None


def step_statuses(events: list[AnyEvent]) -> list[StepStatus]:
    """Per-step statuses folded from a history, in position order."""
    out: dict[int, StepStatus] = {}
    for ev in events:
        if isinstance(ev, StepScheduled):
            old = out.get(ev.position)
            out[ev.position] = StepStatus(
                position=ev.position,
                step=ev.step,
                status="running",
                attempts=ev.attempt,
                last_error=old.last_error if old else None,
                started_at=old.started_at if old else ev.at,
                compensates=ev.compensates,
            )
        elif isinstance(ev, StepCompleted | StepFailed) and ev.position in out:
            old = out[ev.position]
            if isinstance(ev, StepCompleted):
                out[ev.position] = msgspec.structs.replace(
                    old, status="completed", finished_at=ev.at
                )
            else:
                out[ev.position] = msgspec.structs.replace(
                    old,
                    status="failed" if ev.final else "pending",
                    last_error=ev.error,
                    finished_at=ev.at if ev.final else None,
                )
    return [out[p] for p in sorted(out)]


R = TypeVar("R")


class RunHandle(Generic[R]):
    """A reference to one run; cheap to make, holds no resources.

    Attributes:
        run_id: the run's id.
        workflow: the workflow's name.
    """

    def __init__(self, engine: Engine, run_id: str, workflow: str, result_type: Any = Any) -> None:
        self._engine = engine
        self.run_id = run_id
        self.workflow = workflow
        self._result_type = result_type

    async def status(self) -> RunStatus:
        """Where the run stands now."""
        return (await self._engine._record(self.run_id)).status

    async def record(self) -> RunRecord:
        """The journal's full row for the run (status, lease, park reason, ...)."""
        return await self._engine._record(self.run_id)

    async def steps(self) -> list[StepStatus]:
        """Every step the run has started, with its status, attempts and last error."""
        return step_statuses(await self._engine.history(self.run_id))

    async def branches(self) -> list[BranchStatus]:
        """Each branch of a plan run, with its status and attempts, from its history.

        Raises:
            PlanError: the run is not a plan's.
        """
        statuses = branch_statuses(await self._engine.history(self.run_id))
        if statuses is not None:
            return statuses
        wf = (
            self._engine.registry.get(self.workflow)
            if self.workflow in self._engine.registry.names()
            else None
        )
        if isinstance(wf, Plan):
            # Not started yet: every branch is pending.
            return [
                BranchStatus(branch=b.name, status="pending", after=list(b.after))
                for b in wf.branches.values()
            ]
        raise PlanError(f"run {self.run_id} ({self.workflow}) is not a plan")

    async def signal(self, name: str, payload: Any = None) -> None:
        """Send a signal to the run (see :meth:`Engine.signal`)."""
        await self._engine.signal(self.run_id, name, payload)

    async def cancel(self) -> None:
        """Cancel the run (see :meth:`Engine.cancel`)."""
        await self._engine.cancel(self.run_id)

    async def result(self, *, timeout: float | None = None) -> R:
        """Wait for the run to finish and return its result.

        A run that continued as new (``ctx.continue_as_new``) is followed to the
        end of its chain.

        Raises:
            RunFailed: the workflow raised (``error_type``, ``message``, ``traceback_text``).
            RunTimedOut: the run passed its ``timeout`` (a ``RunFailed`` and a ``TimeoutError``).
            RunCancelled: the run was cancelled.
            PlanFailed: a plan failed (``PlanTimedOut``: it passed its timeout).
            TimeoutError: ``timeout`` seconds passed first.
        """
        run_id = self.run_id
        async with asyncio.timeout(timeout):
            delay = 0.02
            ended: bytes | None = None
            while True:
                if ended is None:
                    ended = await self._wait_for_end(run_id, delay)
                    delay = min(delay * 2, 1.0)
                    if ended is None:
                        continue
                end, ended = _codec.decode_event(run_id, None, 0, ended), None
                if isinstance(end, ContinuedAsNew):
                    run_id, delay = end.new_run_id, 0.02
                    continue
                if isinstance(end, RunFailedEvent) and end.error.type in PLAN_ERRORS:
                    try:
                        outcome = await self._engine.get_event(run_id, OUTCOME_KEY)
                    except KeyError:
                        outcome = {}  # raised by other code than a plan's: no details
                    failed = plan_failure(run_id, end.error, outcome)
                    assert failed is not None
                    raise failed
                return self._decode(run_id, end)

    async def _wait_for_end(self, run_id: str, delay: float) -> bytes | None:
        """The run's final event (encoded) if it has ended, after waiting up to ``delay`` s."""
        # Take the waiter before the read: a run that ends during the read sets it
        # (taken after, it would miss that and wait out the delay).
        waiter = self._engine._waiter(run_id)
        # A run this process drives sets the waiter whenever its driver stops
        # (handing over the final event if it ended): no read needed to know.
        if not self._engine._driving(run_id):
            try:
                rec = await self._engine._record(run_id)
            except BaseException:
                self._engine._drop_waiter(run_id, waiter)
                raise
            if rec.status.terminal and rec.outcome is not None:
                self._engine._drop_waiter(run_id, waiter)
                return rec.outcome
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await waiter.wait()
        # A run that ended in this process hands its final event over: no second read.
        return waiter.outcome

    def _decode(self, run_id: str, end: AnyEvent) -> R:
        if isinstance(end, RunCompleted):
            value: R = _codec.decode_value(end.result, self._result_type)
            return value
        if isinstance(end, RunFailedEvent):
            err, ran = end.error, end.compensations
            if err.type == error_type(RunTimedOut):
                raise RunTimedOut(run_id, err.message, err.traceback, compensations=ran)
            raise RunFailed(run_id, err.type, err.message, err.traceback, compensations=ran)
        if isinstance(end, RunCancelledEvent):
            raise RunCancelled(run_id, end.reason, compensations=end.compensations)
        raise ContinuumError(f"run {run_id}: unexpected final event {type(end).__name__}")

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id} ({self.workflow})>"
