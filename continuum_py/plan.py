"""Plans: a DAG of branches with hooks, rolled back and cleaned up durably.

A :class:`Plan` is a workflow. Each branch has an apply function and optional
``pre``/``post``/``rollback``/``cleanup`` hooks; each hook runs as a durable step
named ``"{plan}/{branch}/{hook}"``, so its outcome is journaled and replayed
like any step's. How a plan runs (the apply, rollback and cleanup phases) is in
``_plan_run``; this module holds the definition, its checks, the state hooks
receive, and the branch statuses read back from a run's history.
"""

from __future__ import annotations

import dataclasses
import heapq
import inspect
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import msgspec

from continuum_py import _codec, _validate
from continuum_py._runtime import _runtime
from continuum_py.errors import (
    ConfigurationError,
    EncodingError,
    PlanError,
    PlanFailed,
    PlanTimedOut,
    error_type,
)
from continuum_py.events import (
    AnyEvent,
    ErrorInfo,
    EventPublished,
    RunStarted,
    StepCompleted,
    StepScheduled,
)
from continuum_py.workflow import (
    Context,
    Registry,
    RetryPolicy,
    StepDef,
    WorkflowDef,
    _hint,
    default_registry,
)

__all__ = [
    "BranchState",
    "BranchStatus",
    "Plan",
    "PlanState",
    "Retry",
    "branch_statuses",
]

BranchState = Literal[
    "pending", "applying", "applied", "failed", "skipped", "rolling_back", "rolled_back"
]
"""Where a branch stands: see :attr:`BranchStatus.status`."""

Hook = Callable[["PlanState"], Awaitable[Any]]
OnError = Callable[["PlanState", Any, int], Any]
"""``on_error(state, exc, attempt)``: ``exc`` is the hook's ``StepError``; returns ``Retry`` or None."""

SHAPE_KEY = "continuum.plan"
"""The published key holding a plan run's branches and their dependencies."""
STATUS_KEY = "continuum.plan.branch"
"""The published key each branch status change is recorded under."""
OUTCOME_KEY = "continuum.plan.outcome"
"""The published key holding a failed plan's failures, rollbacks and skips."""
APPLY_HOOKS = ("pre", "apply", "post")


@dataclass(frozen=True)
class Retry:
    """What ``on_error`` returns to run the failed hook again, after ``after`` seconds.

    The wait is a durable timer (``ctx.sleep``): it survives a restart and
    blocks nothing else.
    """

    after: float = 0.0

    def __post_init__(self) -> None:
        _validate.number("Retry.after", self.after, unit=" (seconds)")


class PlanState:
    """What every plan function receives.

    Attributes:
        input: the plan's start arguments, as a tuple.
        results: each applied branch's apply result, by branch name (read-only).

    ``state[key]`` reads a value a hook wrote; ``state[key] = value`` writes
    one. Each write is recorded with the outcome of the hook that made it (a
    failed attempt's writes are dropped), so a resumed plan sees the same
    state. Values read back as JSON values (dicts, lists, strings, numbers).
    """

    __slots__ = ("_raw", "_values", "_writable", "_written", "input", "results")

    def __init__(
        self,
        input: tuple[Any, ...],
        results: Mapping[str, Any],
        values: Mapping[str, Any],
        *,
        writable: bool = True,
    ) -> None:
        self.input = input
        self.results: Mapping[str, Any] = MappingProxyType(dict(results))
        self._values = dict(values)
        self._written: dict[str, Any] = {}
        self._raw: dict[str, msgspec.Raw] = {}
        self._writable = writable

    def __getitem__(self, key: str) -> Any:
        if key in self._written:
            return self._written[key]
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        """Write ``value`` under ``key``; checked now, so a bad value fails here.

        Raises:
            EncodingError: ``value`` cannot be recorded (the message names the key).
            PlanError: the key is not a non-empty string, or the state is read-only.
        """
        if not self._writable:
            raise PlanError(
                f"PlanState is read-only in on_error; write {key!r} from a hook instead"
            )
        if not isinstance(key, str) or not key:
            raise PlanError(f"PlanState keys are non-empty strings, got {key!r}")
        self._raw[key] = _codec.encode_value(value, what=f"PlanState[{key!r}]", kind="value")
        self._written[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._written or key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter({**self._values, **self._written})

    def get(self, key: str, default: Any = None) -> Any:
        """``state[key]``, or ``default`` if nothing was written under ``key``."""
        if key in self._written:
            return self._written[key]
        return self._values.get(key, default)

    def writes(self) -> dict[str, msgspec.Raw]:
        """The values written through this state, encoded (for the plan's runner)."""
        return dict(self._raw)

    def __repr__(self) -> str:
        return f"<PlanState input={self.input!r} results={sorted(self.results)}>"


@dataclass
class Branch:
    """One branch of a plan, as :meth:`Plan.add` defined it."""

    name: str
    apply: Hook
    after: tuple[str, ...]
    rollback: Hook | None = None
    pre: Hook | None = None
    post: Hook | None = None
    cleanup: Hook | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    on_error: OnError | None = None
    index: int = 0
    _result_type: Any = field(default=None, repr=False)
    _policy: RetryPolicy | None = field(default=None, repr=False)

    def hook(self, kind: str) -> Hook | None:
        fn: Hook | None = getattr(self, kind)
        return fn

    def policy(self) -> RetryPolicy:
        """The retry policy of each hook: ``retry`` (default: one attempt).

        A value that cannot be recorded is never retried: it would fail the same way.
        """
        if self._policy is None:
            base = self.retry or RetryPolicy(max_attempts=1)
            nr = (*base.non_retryable, EncodingError)
            self._policy = dataclasses.replace(base, non_retryable=nr)
        return self._policy

    def result_type(self) -> Any:
        """The apply function's return annotation (``Any`` if none), to decode its result."""
        if self._result_type is None:
            self._result_type = _hint(self.apply, "return")
        return self._result_type


@dataclass
class _Graph:
    """The checked shape of a plan: dependents and a deterministic topological order."""

    order: list[str] = field(default_factory=list)
    dependents: dict[str, list[str]] = field(default_factory=dict)


class Plan(WorkflowDef[..., dict[str, Any]]):
    """A DAG of branches that applies, rolls back on failure, and cleans up: a workflow.

    Start it with ``engine.start(plan, *args)``, or await ``plan(*args)`` from a
    workflow to run it as a child run. ``handle.result()`` returns
    ``{branch: apply result}``, or raises :class:`~continuum_py.PlanFailed`,
    :class:`~continuum_py.PlanTimedOut` or :class:`~continuum_py.RunCancelled`.

    Args:
        name: the workflow name the plan's runs are recorded (and found) under.
        continue_on_error: when a branch fails, still run every branch that
            does not depend on it; nothing is rolled back then (see the how-to).
        timeout: seconds the plan has to apply its branches (and, after a
            failure, to roll them back) before it stops with ``PlanTimedOut``.
        registry: where to register the plan (default: the default registry).

    Raises:
        ConfigurationError: an option of the wrong type or range.
    """

    def __init__(
        self,
        name: str,
        continue_on_error: bool = False,
        timeout: float | None = None,
        *,
        registry: Registry | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"Plan name must be a non-empty string, got {name!r}")
        _validate.flag("Plan continue_on_error", continue_on_error)
        if timeout is not None:
            _validate.number("Plan timeout", timeout, inclusive=False, unit=" (seconds) or None")
        if registry is not None and not isinstance(registry, Registry):
            raise ConfigurationError(f"Plan registry must be a Registry or None, got {registry!r}")
        self.continue_on_error = continue_on_error
        self.timeout = timeout
        self.branches: dict[str, Branch] = {}
        self.pauses: dict[str, float] = {}
        self._graph: _Graph | None = None
        plan = self

        async def run_plan(ctx: Context, *args: Any) -> dict[str, Any]:
            from continuum_py._plan_run import PlanRun

            return await PlanRun(plan, ctx, args).run()

        run_plan.__qualname__ = run_plan.__name__ = f"plan {name}"
        super().__init__(run_plan, name=name)
        self._origin = _caller()
        target = registry or default_registry
        if name in target.names():
            old = target.get(name)
            if isinstance(old, Plan) and old._origin != self._origin:
                # Every plan runs the same function, so Registry.add cannot tell two apart.
                raise ConfigurationError(
                    f"two plans are named {name!r} ({old._origin} and {self._origin}); "
                    "give each its own name"
                )
        target.add(self)

    # ---- definition ----
    def add(
        self,
        name: str,
        apply: Hook,
        *,
        after: Iterable[str] = (),
        rollback: Hook | None = None,
        pre: Hook | None = None,
        post: Hook | None = None,
        cleanup: Hook | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        on_error: OnError | None = None,
    ) -> Plan:
        """Add a branch; each function is an ``async def f(state: PlanState)``.

        The branch starts once every branch in ``after`` is applied; it is applied
        once ``pre``, ``apply`` and ``post`` succeeded, each a durable step.

        Args:
            name: the branch's name, unique in the plan.
            apply: does the branch's work; its result is ``state.results[name]``.
            after: names of the branches it depends on (they may be added later).
            rollback: undoes ``apply`` when the plan fails.
            pre: runs before ``apply`` (a check, a reservation).
            post: runs after ``apply`` (a smoke test).
            cleanup: runs once the plan has ended, however it ended, if the branch
                was fully applied.
            retry: the retry policy of each hook (default: one attempt, no retry).
            timeout: seconds one attempt of a hook may take.
            on_error: ``on_error(state, exc, attempt)`` is called when a hook of the
                apply phase failed for good (``attempt`` counts those failures, from
                1); return :class:`Retry` to run that hook again, or ``None`` to
                fail the branch. It runs in the plan's workflow code: keep it
                deterministic (no I/O, no clock).

        Returns:
            The plan, so calls can be chained.

        Raises:
            PlanError: a duplicate name, a branch depending on itself, or a
                function that is not an ``async def``.
            ConfigurationError: ``retry`` or ``timeout`` of the wrong type.
        """
        if not isinstance(name, str) or not name.strip():
            raise PlanError(f"plan {self.name!r}: a branch name must be a non-empty string")
        if name in self.branches:
            raise PlanError(f"plan {self.name!r}: duplicate branch name {name!r}")
        if isinstance(after, str) or not isinstance(after, Iterable):
            raise PlanError(
                f"plan {self.name!r}: branch {name!r}: after must be a list of branch names, "
                f"got {after!r}"
            )
        deps = tuple(after)
        for dep in deps:
            if not isinstance(dep, str):
                raise PlanError(
                    f"plan {self.name!r}: branch {name!r}: after holds {dep!r}, not a branch name"
                )
        if name in deps:
            raise PlanError(f"plan {self.name!r}: cycle {name} -> {name}")
        hooks = {"apply": apply, "rollback": rollback, "pre": pre, "post": post, "cleanup": cleanup}
        for kind, fn in hooks.items():
            if fn is None and kind != "apply":
                continue
            if not _is_async(fn):
                raise PlanError(
                    f"plan {self.name!r}: branch {name!r}: {kind} must be an async def "
                    f"function taking a PlanState, got {fn!r}"
                )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"branch {name!r}: retry must be a RetryPolicy or None")
        if timeout is not None:
            _validate.number(
                f"branch {name!r} timeout", timeout, inclusive=False, unit=" (seconds) or None"
            )
        if on_error is not None and not callable(on_error):
            raise PlanError(f"plan {self.name!r}: branch {name!r}: on_error must be callable")
        self.branches[name] = Branch(
            name=name,
            apply=_unwrap(apply),
            after=deps,
            rollback=_unwrap(rollback),
            pre=_unwrap(pre),
            post=_unwrap(post),
            cleanup=_unwrap(cleanup),
            retry=retry,
            timeout=timeout,
            on_error=on_error,
            index=len(self.branches),
        )
        self._graph = None
        return self

    def pause(self, after: str, seconds: float) -> Plan:
        """Wait ``seconds`` (a durable timer) after ``after`` is applied, before its dependents start.

        Branches that do not depend on ``after`` go on meanwhile. Pauses are not
        taken once the plan is stopping, nor while rolling back or cleaning up.

        Raises:
            PlanError: a second pause after the same branch (an unknown branch is
                refused when the plan is first used).
            ConfigurationError: ``seconds`` is not a finite number >= 0.
        """
        if not isinstance(after, str) or not after:
            raise PlanError(f"plan {self.name!r}: pause needs a branch name, got {after!r}")
        if after in self.pauses:
            raise PlanError(f"plan {self.name!r}: a pause after {after!r} is already set")
        _validate.number(f"plan {self.name!r} pause", seconds, unit=" (seconds)")
        self.pauses[after] = float(seconds)
        self._graph = None
        return self

    # ---- checks ----
    def check(self) -> None:
        """Check the whole plan: unknown dependencies, pauses after unknown branches, cycles.

        Called when the plan is started, awaited as a child, previewed or drawn.

        Raises:
            PlanError: naming the problem (a cycle is named branch by branch).
        """
        self.graph()

    def graph(self) -> _Graph:
        """The checked graph (cached until the plan changes)."""
        if self._graph is not None:
            return self._graph
        if not self.branches:
            raise PlanError(f"plan {self.name!r} has no branches; add one with plan.add()")
        for b in self.branches.values():
            for dep in b.after:
                if dep not in self.branches:
                    raise PlanError(
                        f"plan {self.name!r}: branch {b.name!r} depends on unknown branch {dep!r}"
                    )
        for name in self.pauses:
            if name not in self.branches:
                raise PlanError(f"plan {self.name!r}: pause after unknown branch {name!r}")
        cycle = _find_cycle(self.branches)
        if cycle:
            raise PlanError(f"plan {self.name!r}: cycle {' -> '.join(cycle)}")
        dependents: dict[str, list[str]] = {n: [] for n in self.branches}
        for b in self.branches.values():
            for dep in dict.fromkeys(b.after):
                dependents[dep].append(b.name)
        # Topological, and among the branches free to go, the one added first.
        blocking = {n: len(set(b.after)) for n, b in self.branches.items()}
        ready = [(b.index, n) for n, b in self.branches.items() if not blocking[n]]
        order: list[str] = []
        while ready:
            _, name = heapq.heappop(ready)
            order.append(name)
            for d in dependents[name]:
                blocking[d] -= 1
                if not blocking[d]:
                    heapq.heappush(ready, (self.branches[d].index, d))
        self._graph = _Graph(order=order, dependents=dependents)
        return self._graph

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[dict[str, Any]]:
        """Inside a workflow: run the plan as a child run and wait for its result.

        Raises:
            PlanError: the plan does not check, or it is called outside a workflow
                (start it with ``engine.start(plan, ...)`` there).
        """
        self.check()
        if _runtime() is None:
            raise PlanError(
                f"plan {self.name!r} runs as a workflow: start it with engine.start(plan, ...), "
                "or await plan(...) inside a workflow"
            )
        return super().__call__(*args, **kwargs)

    # ---- previews ----
    def downstream(self, names: Iterable[str]) -> set[str]:
        """Every branch that depends, directly or not, on one of ``names``."""
        deps = self.graph().dependents
        out: set[str] = set()
        todo = list(names)
        while todo:
            for d in deps[todo.pop()]:
                if d not in out:
                    out.add(d)
                    todo.append(d)
        return out

    def rollback_order(self, failed: str | Iterable[str] | None = None) -> list[str]:
        """Preview the rollbacks a failure of ``failed`` would run, in a valid order.

        It assumes the worst case: every branch that does not depend on a failed
        one was applied before the plan stopped. A branch comes after everything
        that depends on it; the plan runs independent rollbacks concurrently.
        With ``failed=None``, every branch is assumed applied. Branches without a
        ``rollback`` hook are left out.

        Raises:
            PlanError: an unknown branch name, or a plan that does not check.
        """
        graph = self.graph()
        failed_set = {failed} if isinstance(failed, str) else set(failed or ())
        for name in failed_set:
            if name not in self.branches:
                raise PlanError(f"plan {self.name!r}: rollback_order: unknown branch {name!r}")
        gone = failed_set | self.downstream(failed_set)
        return [
            n
            for n in reversed(graph.order)
            if n not in gone and self.branches[n].rollback is not None
        ]

    def to_mermaid(self) -> str:
        """The plan as a Mermaid flowchart (``graph TD``), for docs.

        Each edge runs from a branch to one that depends on it; a pause is the
        edge's label; hooks are listed under the branch's name.
        """
        graph = self.graph()
        ids = {n: f"b{i}" for i, n in enumerate(graph.order)}
        lines = ["graph TD"]
        for n in graph.order:
            b = self.branches[n]
            hooks = [k for k in ("pre", "post", "rollback", "cleanup") if b.hook(k) is not None]
            label = _mermaid_text(n) + (f"<br/><small>{', '.join(hooks)}</small>" if hooks else "")
            lines.append(f'    {ids[n]}["{label}"]')
        for n in graph.order:
            pause = self.pauses.get(n)
            arrow = f" -->|pause {pause:g}s| " if pause is not None else " --> "
            for d in graph.dependents[n]:
                lines.append(f"    {ids[n]}{arrow}{ids[d]}")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"<plan {self.name} ({len(self.branches)} branches)>"


def _caller() -> str:
    """Where the plan being built was defined: ``file:line`` of the ``Plan(...)`` call."""
    frame = sys._getframe(2)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _is_async(fn: Any) -> bool:
    return isinstance(fn, StepDef) or inspect.iscoroutinefunction(fn)


def _unwrap(fn: Any) -> Any:
    # A @step given as a hook runs as the plan's own step (a plain call there).
    return fn.fn if isinstance(fn, StepDef) else fn


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _find_cycle(branches: Mapping[str, Branch]) -> list[str] | None:
    """A cycle as ``[a, b, ..., a]`` (depends-on order), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for start in branches:
        if state.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(branches[start].after))]
        state[start] = 1
        path.append(start)
        while stack:
            node, deps = stack[-1]
            nxt = next(deps, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            mark = state.get(nxt)
            if mark == 1:
                return [*path[path.index(nxt) :], nxt]
            if mark is None:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(branches[nxt].after)))
    return None


# ---- statuses, read back from a run's history ----


class BranchStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Where one branch of a plan run stands, from its history.

    Attributes:
        branch: the branch's name.
        status: ``pending`` (not started), ``applying`` (its hooks are running or
            waiting to retry), ``applied``, ``failed`` (for good), ``skipped`` (it
            never started: the plan stopped, or a branch it depends on failed),
            ``rolling_back`` or ``rolled_back``. A branch whose rollback failed
            stays ``applied``, with ``rollback_error`` set.
        attempts: attempts of its ``pre``, ``apply`` and ``post`` hooks so far.
        after: the branches it depends on.
        error: why it failed (``"Type: message"``), if it did.
        rollback_error: why its rollback failed, if it did.
        cleanup_error: why its cleanup hook failed, if it did.
    """

    branch: str
    status: BranchState
    attempts: int = 0
    after: list[str] = msgspec.field(default_factory=list)
    error: str | None = None
    rollback_error: str | None = None
    cleanup_error: str | None = None


def branch_statuses(events: list[AnyEvent]) -> list[BranchStatus] | None:
    """Every branch's status folded from a plan run's history; None if it is not a plan's.

    ``applying``, ``applied``, ``rolling_back`` and ``rolled_back`` are read from
    the hook steps themselves (a branch's first hook step, the completion of its
    last one, its rollback step and that step's completion), so a plan that
    goes well records nothing beyond its steps; the plan publishes the other
    statuses (and errors) as they happen. Whichever came last wins.
    """
    shape: list[Any] | None = None
    plan_name = ""
    updates: dict[str, dict[str, Any]] = {}
    highest: dict[int, tuple[str, int]] = {}
    last_hook: dict[str, str] = {}
    for ev in events:
        if isinstance(ev, RunStarted):
            plan_name = ev.workflow
        elif isinstance(ev, EventPublished):
            if ev.key == SHAPE_KEY:
                shape = msgspec.json.decode(ev.value)["branches"]
                last_hook = {b["name"]: (b.get("hooks") or ["apply"])[-1] for b in shape or []}
            elif ev.key == STATUS_KEY:
                update = msgspec.json.decode(ev.value)
                updates.setdefault(update.pop("branch"), {}).update(update)
        elif isinstance(ev, StepScheduled):
            branch, hook = _hook_of(plan_name, ev.step)
            if hook in APPLY_HOOKS:
                highest[ev.position] = (branch, ev.attempt)
                updates.setdefault(branch, {})["status"] = "applying"
            elif hook == "rollback":
                updates.setdefault(branch, {})["status"] = "rolling_back"
        elif isinstance(ev, StepCompleted):
            branch, hook = _hook_of(plan_name, ev.step)
            if hook and hook == last_hook.get(branch):
                updates.setdefault(branch, {})["status"] = "applied"
            elif hook == "rollback":
                updates.setdefault(branch, {})["status"] = "rolled_back"
    if shape is None:
        return None
    attempts: dict[str, int] = {}
    for branch, n in highest.values():
        attempts[branch] = attempts.get(branch, 0) + n
    out = []
    for item in shape:
        name = item["name"]
        update = updates.get(name, {})
        out.append(
            BranchStatus(
                branch=name,
                status=update.get("status", "pending"),
                attempts=attempts.get(name, 0),
                after=item["after"],
                error=update.get("error"),
                rollback_error=update.get("rollback_error"),
                cleanup_error=update.get("cleanup_error"),
            )
        )
    return out


def hook_step_name(plan: str, branch: str, hook: str) -> str:
    """The step name a hook is recorded under: stable across restarts and code changes."""
    return f"{plan}/{branch}/{hook}"


def _hook_of(plan: str, step_name: str) -> tuple[str, str]:
    """``(branch, hook)`` of a hook step's name; ``("", "")`` for any other step."""
    prefix = f"{plan}/"
    if not step_name.startswith(prefix):
        return "", ""
    branch, _, hook = step_name[len(prefix) :].rpartition("/")
    return (branch, hook) if branch else ("", "")


def plan_failure(run_id: str, error: Any, outcome: Mapping[str, Any]) -> PlanFailed | None:
    """The :class:`PlanFailed` (or ``PlanTimedOut``) a failed plan run ended with, or None.

    ``error`` is the run's recorded ``ErrorInfo``; ``outcome`` what the plan
    published under :data:`OUTCOME_KEY` as it ended (empty if unknown).
    """
    cls = PLAN_ERRORS.get(error.type)
    if cls is None:
        return None

    def infos(key: str) -> dict[str, ErrorInfo]:
        return msgspec.convert(outcome.get(key, {}), dict[str, ErrorInfo])

    return cls(
        run_id,
        error.message,
        failures=infos("failures"),
        rolled_back=list(outcome.get("rolled_back", [])),
        rollback_errors=infos("rollback_errors"),
        skipped=list(outcome.get("skipped", [])),
        cleanup_errors=infos("cleanup_errors"),
        traceback_text=error.traceback,
    )


PLAN_ERRORS: dict[str, type[PlanFailed]] = {
    error_type(PlanFailed): PlanFailed,
    error_type(PlanTimedOut): PlanTimedOut,
}
"""The recorded error types of a failed plan run."""
