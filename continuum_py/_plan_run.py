"""How a plan runs, as workflow code: apply, then roll back on failure, then clean up.

Everything here runs on the workflow loop and uses only the public workflow
primitives: each hook is a step, a retry wait or a pause is ``ctx.sleep``, each
branch status change is ``ctx.set_event``. Tasks are created and looked at in a
fixed order (never by iterating a set of finished tasks), so a replay makes
the same calls at the same positions.

The run's own task waits through :meth:`PlanRun._wait`, which shields what it
waits for: the first cancel of the run interrupts it once, stops the plan (no
new hook starts), and the rollback and cleanup still run to their end.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import inspect
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from continuum_py import _codec
from continuum_py.errors import EncodingError, PlanError, PlanFailed, PlanTimedOut, StepError
from continuum_py.events import ErrorInfo
from continuum_py.plan import (
    APPLY_HOOKS,
    OUTCOME_KEY,
    SHAPE_KEY,
    STATUS_KEY,
    Branch,
    PlanState,
    Retry,
    hook_step_name,
)
from continuum_py.workflow import Context, StepDef, StepInfo

if TYPE_CHECKING:
    from continuum_py.plan import Plan

_CANCELLED = "asyncio.exceptions.CancelledError"


class HookOutcome(msgspec.Struct, frozen=True, array_like=True):
    """What a hook's step records: its result, the state it wrote, its attempt."""

    result: msgspec.Raw
    writes: dict[str, msgspec.Raw]
    attempt: int


class HookStep(StepDef[[], HookOutcome]):
    """A hook run as a step; its recorded result always decodes as :class:`HookOutcome`."""

    @property
    def return_type(self) -> Any:
        return HookOutcome


class _BranchFailed(Exception):
    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


class PlanRun:
    """One run of a plan, driven from inside its workflow."""

    def __init__(self, plan: Plan, ctx: Context, args: tuple[Any, ...]) -> None:
        self.plan = plan
        self.ctx = ctx
        self.graph = plan.graph()
        self.input = tuple(args)
        self.results: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        self.status: dict[str, str] = dict.fromkeys(plan.branches, "pending")
        self.failures: dict[str, ErrorInfo] = {}
        self.rollback_errors: dict[str, ErrorInfo] = {}
        self.cleanup_errors: dict[str, ErrorInfo] = {}
        self.rolled_back: list[str] = []
        self.skipped: list[str] = []
        self.apply_done: list[str] = []  # apply function succeeded, in that order
        self.applied: list[str] = []  # pre, apply and post succeeded, in that order
        # Dependencies not yet applied (and past their pause), and the branches with none
        # left, as (index of addition, name): started in that order, so replays match.
        self.blocking = {n: len(set(b.after)) for n, b in plan.branches.items()}
        self.ready = [(b.index, n) for n, b in plan.branches.items() if not self.blocking[n]]
        heapq.heapify(self.ready)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping = False
        self.cancelled = False  # the run's cancel arrived (at any point)
        self.cancel_outcome = False  # ... during the apply phase: the plan ends cancelled
        self.timed_out = False
        loop = asyncio.get_running_loop()
        self._stop_signal: asyncio.Future[None] = loop.create_future()
        self._wake: asyncio.Future[None] | None = None
        self._steps: dict[str, HookStep] = {}

    # ---- the plan, start to end ----
    async def run(self) -> dict[str, Any]:
        plan = self.plan
        shape = [
            {"name": n, "after": list(b.after), "hooks": [k for k in APPLY_HOOKS if b.hook(k)]}
            for n, b in plan.branches.items()
        ]
        self.ctx.set_event(SHAPE_KEY, {"branches": shape})
        deadline = None
        if plan.timeout is not None:
            deadline = asyncio.ensure_future(self._deadline(plan.timeout))
        await self._wait(asyncio.ensure_future(self._apply_phase()))
        # Only a cancel during the apply phase cancels the plan; one that comes while it
        # rolls back or cleans up changes nothing (those go on either way).
        self.cancel_outcome = self.cancelled
        for name in self.graph.order:
            if self.status[name] == "pending":
                self.skipped.append(name)
                self._set(name, "skipped")
        # A branch failure rolls back unless continue_on_error; a cancel or a timeout always does.
        if self.cancel_outcome or self.timed_out or (self.failures and not plan.continue_on_error):
            await self._wait(asyncio.ensure_future(self._rollback_phase()))
        if deadline is not None:
            deadline.cancel()
        await self._wait(asyncio.ensure_future(self._cleanup_phase()))
        return self._end()

    def _end(self) -> dict[str, Any]:
        if not (self.cancel_outcome or self.timed_out or self.failures or self.cleanup_errors):
            return dict(self.results)
        self.ctx.set_event(
            OUTCOME_KEY,
            {
                "failures": self.failures,
                "rolled_back": self.rolled_back,
                "rollback_errors": self.rollback_errors,
                "skipped": self.skipped,
                "cleanup_errors": self.cleanup_errors,
            },
        )
        if self.cancel_outcome:
            raise asyncio.CancelledError("the plan was cancelled; rollback and cleanup ran")
        cls = PlanTimedOut if self.timed_out else PlanFailed
        message = self._message()
        err = cls(
            self.ctx.run_id,
            message,
            failures=dict(self.failures),
            rolled_back=list(self.rolled_back),
            rollback_errors=dict(self.rollback_errors),
            skipped=list(self.skipped),
            cleanup_errors=dict(self.cleanup_errors),
        )
        # The run records str(err) as its error message: make that the plan's own words,
        # so handle.result() does not say "run ... failed" twice.
        err.args = (message,)
        raise err

    def _message(self) -> str:
        parts = []
        if self.timed_out:
            parts.append(f"passed its timeout of {self.plan.timeout:g}s")
        for name, info in self.failures.items():
            parts.append(f"branch {name!r} failed ({info.type}: {info.message})")
        if not parts:
            parts.append("applied every branch, but a cleanup failed")
        tail = [f"rolled back: {', '.join(self.rolled_back) or 'nothing'}"]
        for label, errs in (("rollback", self.rollback_errors), ("cleanup", self.cleanup_errors)):
            for name, info in errs.items():
                tail.append(f"{label} of {name!r} failed ({info.type}: {info.message})")
        if self.skipped:
            tail.append(f"skipped: {', '.join(self.skipped)}")
        return f"plan {self.plan.name!r} " + "; ".join(parts) + "; " + "; ".join(tail)

    async def _wait(self, fut: asyncio.Future[Any]) -> None:
        """Wait for ``fut``; the run's cancel stops the plan but does not cut this short."""
        while not fut.done():
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                if fut.done():
                    break
                self.cancelled = True
                self._stop()
        fut.result()

    def _stop(self) -> None:
        """Start nothing new; wake retry waits and pauses so they give up."""
        self.stopping = True
        if not self._stop_signal.done():
            self._stop_signal.set_result(None)
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _deadline(self, seconds: float) -> None:
        await self.ctx.sleep(seconds)
        self.timed_out = True
        self._stop()

    async def _sleep(self, seconds: float) -> bool:
        """A durable wait that the plan stopping ends early; True if it ran its course."""
        if self.stopping:
            return False
        timer = asyncio.ensure_future(self.ctx.sleep(seconds))
        await asyncio.wait([timer, self._stop_signal], return_when=asyncio.FIRST_COMPLETED)
        if timer.done():
            return True
        timer.cancel()
        return False

    # ---- apply ----
    async def _apply_phase(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.stopping:
                self._start_ready()
            if not self.tasks:
                return
            self._wake = loop.create_future()
            await self._wake

    def _start_ready(self) -> None:
        while self.ready:
            _, name = heapq.heappop(self.ready)
            # Not published: history shows it as the branch's first hook step.
            self.status[name] = "applying"
            self.tasks[name] = asyncio.ensure_future(self._branch_task(name))

    def _release(self, name: str) -> None:
        for dependent in self.graph.dependents[name]:
            self.blocking[dependent] -= 1
            if not self.blocking[dependent]:
                heapq.heappush(self.ready, (self.plan.branches[dependent].index, dependent))

    async def _branch_task(self, name: str) -> None:
        try:
            await self._branch(self.plan.branches[name])
        finally:
            del self.tasks[name]
            self._poke()

    async def _branch(self, b: Branch) -> None:
        try:
            for kind in APPLY_HOOKS:
                if b.hook(kind) is None:
                    continue
                value = await self._apply_hook(b, kind)
                if kind == "apply":
                    self.results[b.name] = value
                    self.apply_done.append(b.name)
        except (_BranchFailed, Exception) as exc:
            # Anything else raised here (a result that no longer decodes) fails the branch too.
            info = exc.info if isinstance(exc, _BranchFailed) else _codec.error_info(exc)
            self.failures[b.name] = info
            self._set(b.name, "failed", error=f"{info.type}: {info.message}")
            if not self.plan.continue_on_error:
                self._stop()
            return
        self.applied.append(b.name)
        # Not published: history shows it as the completion of its last hook step.
        self.status[b.name] = "applied"
        pause = self.plan.pauses.get(b.name)
        if pause and not await self._sleep(pause):
            return
        self._release(b.name)

    async def _apply_hook(self, b: Branch, kind: str) -> Any:
        failures = 0
        while True:
            try:
                return await self._hook(b, kind)
            except StepError as exc:
                failures += 1
                if self.stopping or b.on_error is None:
                    raise _BranchFailed(_info(exc)) from None
                decision = await self._on_error(b, exc, failures)
                if decision is None:
                    raise _BranchFailed(_info(exc)) from None
                if not await self._sleep(decision.after):
                    raise _BranchFailed(_info(exc)) from None

    async def _on_error(self, b: Branch, exc: StepError, failures: int) -> Retry | None:
        assert b.on_error is not None
        state = PlanState(self.input, self.results, self.values, writable=False)
        try:
            decision = b.on_error(state, exc, failures)
            if inspect.isawaitable(decision):
                decision = await decision
        except Exception as err:
            raise _BranchFailed(_codec.error_info(err)) from None
        if decision is not None and not isinstance(decision, Retry):
            bad = PlanError(
                f"branch {b.name!r}: on_error must return Retry(after=...) or None, "
                f"got {decision!r}"
            )
            raise _BranchFailed(_codec.error_info(bad))
        return decision

    # ---- rollback and cleanup ----
    async def _rollback_phase(self) -> None:
        loop = asyncio.get_running_loop()
        targets = set(self.apply_done)
        done: dict[str, asyncio.Future[None]] = {n: loop.create_future() for n in self.apply_done}

        async def one(name: str) -> None:
            for dep in self.graph.dependents[name]:
                if dep in targets:
                    await done[dep]
            b = self.plan.branches[name]
            if b.rollback is not None:
                before = self.status[name]
                # Not published: history shows it as the branch's rollback step.
                self.status[name] = "rolling_back"
                try:
                    await self._final_hook(b, "rollback")
                except _BranchFailed as exc:
                    self.rollback_errors[name] = exc.info
                    self._set(name, before, rollback_error=f"{exc.info.type}: {exc.info.message}")
                else:
                    self.rolled_back.append(name)
                    self.status[name] = "rolled_back"  # its rollback step completed
            done[name].set_result(None)

        await asyncio.gather(*[one(n) for n in reversed(self.apply_done)])

    async def _cleanup_phase(self) -> None:
        for name in reversed(self.applied):
            b = self.plan.branches[name]
            if b.cleanup is None:
                continue
            try:
                await self._final_hook(b, "cleanup")
            except _BranchFailed as exc:
                self.cleanup_errors[name] = exc.info
                self._set(
                    name, self.status[name], cleanup_error=f"{exc.info.type}: {exc.info.message}"
                )

    async def _final_hook(self, b: Branch, kind: str) -> None:
        """A rollback or cleanup hook; run again once if the run's cancel interrupted it."""
        for _ in range(2):
            cancelled_before = self.cancelled
            try:
                await self._hook(b, kind)
                return
            except StepError as exc:
                interrupted = (
                    exc.error_type == _CANCELLED and self.cancelled and not cancelled_before
                )
                if not interrupted:
                    raise _BranchFailed(_info(exc)) from None
                last = exc
            except Exception as exc:
                raise _BranchFailed(_codec.error_info(exc)) from None
        raise _BranchFailed(_info(last))

    # ---- one hook, as a step ----
    def _hook(self, b: Branch, kind: str) -> Coroutine[Any, Any, Any]:
        fn = b.hook(kind)
        assert fn is not None
        name = hook_step_name(self.plan.name, b.name, kind)
        state = PlanState(self.input, self.results, self.values)
        rtype = b.result_type() if kind == "apply" else Any

        async def body() -> HookOutcome:
            value = await fn(state)
            raw = _codec.encode_value(value, what=name)
            if rtype is not Any:
                try:
                    _codec.decode_value(raw, rtype)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    raise EncodingError(
                        name,
                        _codec.type_name(value),
                        f"does not match the return annotation: {exc}",
                    ) from exc
            info = StepInfo.current()
            return HookOutcome(raw, state.writes(), info.attempt if info else 1)

        step = self._steps.get(name)
        if step is None:
            step = self._steps[name] = HookStep(
                body, name=name, retry=b.policy(), timeout=b.timeout
            )
        else:
            # One step object per hook and run, given this call's body: cheaper than a new one.
            step = copy.copy(step)
            step.fn = body
        return self._taken(step(), rtype)

    async def _taken(self, call: Coroutine[Any, Any, HookOutcome], rtype: Any) -> Any:
        out = await call
        for key, raw in out.writes.items():
            self.values[key] = _codec.decode_value(raw)
        return _codec.decode_value(out.result, rtype)

    def _set(self, name: str, status: str, **extra: str) -> None:
        self.status[name] = status
        self.ctx.set_event(STATUS_KEY, {"branch": name, "status": status, **extra})


def _info(exc: StepError) -> ErrorInfo:
    return ErrorInfo(type=exc.error_type, message=exc.message, traceback=exc.traceback_text)
