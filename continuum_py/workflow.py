"""The workflow vocabulary: ``@workflow``, ``@step``, ``Context``, ``RetryPolicy``, ``StepInfo``."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import inspect
import math
import random
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, ParamSpec, TypeVar, overload

import msgspec

from continuum_py import _validate
from continuum_py._log import WorkflowLogger
from continuum_py._retry import RetryPolicy as RetryPolicy
from continuum_py._runtime import _RUNTIME, _runtime
from continuum_py._runtime import WorkflowRuntime as WorkflowRuntime
from continuum_py._runtime import set_runtime as set_runtime
from continuum_py._step_info import CURRENT_STEP as CURRENT_STEP
from continuum_py._step_info import StepInfo as StepInfo
from continuum_py._step_info import in_transaction as in_transaction
from continuum_py._step_info import step_connection as step_connection
from continuum_py._workflow_loop import ENTERED
from continuum_py.errors import ConfigurationError, WorkflowNotRegistered
from continuum_py.events import CompensationOutcome

T = TypeVar("T")

__all__ = [
    "Context",
    "Registry",
    "RetryPolicy",
    "StepDef",
    "StepInfo",
    "WorkflowDef",
    "WorkflowRuntime",
    "default_registry",
    "step",
    "step_connection",
    "workflow",
]

P = ParamSpec("P")
R = TypeVar("R")


class StepDef(Generic[P, R]):
    """A durable step: made by :func:`step`. Call it like the function it wraps.

    Inside a workflow the call is recorded and its result replayed; anywhere else
    it is the plain coroutine function, so steps are easy to unit-test.
    """

    def __init__(
        self,
        fn: Callable[P, Awaitable[R]],
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        transactional: bool = False,
        compensate: StepDef[..., Any] | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(f"@step needs an async def function, got {fn!r}")
        if compensate is not None and not isinstance(compensate, StepDef):
            raise ConfigurationError(
                f"@step compensate must be a step (a function decorated with @step), "
                f"got {compensate!r}; it is called as undo(result, *args)"
            )
        _validate.name("@step name", name)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"@step retry must be a RetryPolicy or None, got {retry!r}")
        if timeout is not None:
            # NaN compares false with everything: unchecked it meant "no limit at all".
            _validate.number("@step timeout", timeout, inclusive=False, unit=" (seconds) or None")
        _validate.flag("@step transactional", transactional)
        self.fn = fn
        self.name = name or fn.__qualname__
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.transactional = transactional
        self.compensate = compensate
        self._return_type: Any = None
        functools.update_wrapper(self, fn)

    @property
    def return_type(self) -> Any:
        """The annotated return type, used to decode recorded results (``Any`` if unknown)."""
        if self._return_type is None:
            self._return_type = _hint(self.fn, "return")
        return self._return_type

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Run the step: recorded inside a workflow, a plain call anywhere else."""
        loop = ENTERED.loop or asyncio._get_running_loop()  # _runtime(), in line: a hot path
        runtime: WorkflowRuntime | None = getattr(loop, _RUNTIME, None)
        if runtime is None:
            return _plain(self.fn, *args, **kwargs)
        return runtime.call_step(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<step {self.name}>"


async def _plain(fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
    return await fn(*args, **kwargs)


def _arity(sig: inspect.Signature) -> tuple[float, float]:
    """How many positional arguments after ``ctx`` surely fit ``sig``: ``(low, high)``.

    ``(1, 0)`` (nothing fits by count) when a keyword-only parameter has no
    default: then ``Signature.bind`` decides.
    """
    params = list(sig.parameters.values())
    if not params or params[0].kind not in (
        params[0].POSITIONAL_ONLY,
        params[0].POSITIONAL_OR_KEYWORD,
    ):
        return (1, 0)  # no plain first parameter for ctx: let bind() decide
    low, high = 0, 0.0
    for p in params[1:]:
        if p.kind is p.VAR_POSITIONAL:
            high = float("inf")
        elif p.kind is p.KEYWORD_ONLY or p.kind is p.VAR_KEYWORD:
            if p.kind is p.KEYWORD_ONLY and p.default is p.empty:
                return (1, 0)
        else:
            high += 1
            if p.default is p.empty:
                low += 1
    return (low, high)


def _hint(fn: Callable[..., Any], key: str) -> Any:
    try:
        return typing.get_type_hints(fn).get(key, Any)
    except Exception:
        # Unresolvable forward references: fall back to untyped decoding.
        return Any


@overload
def step(fn: Callable[P, Awaitable[R]], /) -> StepDef[P, R]: ...
@overload
def step(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    transactional: bool = False,
    compensate: StepDef[..., Any] | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], StepDef[P, R]]: ...


def step(
    fn: Callable[P, Awaitable[R]] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    transactional: bool = False,
    compensate: StepDef[..., Any] | None = None,
) -> StepDef[P, R] | Callable[[Callable[P, Awaitable[R]]], StepDef[P, R]]:
    """Make an async function a durable step.

    Used bare (``@step``) or with options (``@step(retry=..., timeout=30)``).

    Args:
        fn: the coroutine function.
        name: the name recorded in history (default: the function's qualified name).
        retry: the retry policy (default: ``RetryPolicy()``, 3 attempts).
        timeout: seconds one attempt may take (a finite number > 0); a timed-out
            attempt counts as a failure.
        transactional: run the step inside a journal transaction: its own SQL on
            :func:`step_connection` commits together with the record of its
            completion, so its database writes happen exactly once. Needs a
            journal with a database (SQLite, Postgres; on ``memory://`` the step
            fails with ``ConfigurationError``); keep such steps short, since the
            transaction is open while the step runs. Its SQL may not run
            ``COMMIT``, ``ROLLBACK`` or other transaction control.
        compensate: a step that undoes this one, called as
            ``compensate(result, *args)`` (this step's result, then its
            arguments) when the run fails for good or is cancelled after this
            step completed, or when the workflow calls ``ctx.compensate()``.
            Compensations run newest completion first, each journaled and
            retried under its own policy; see the sagas how-to.

    Raises:
        ConfigurationError: an option of the wrong type or range (the message
            names it), or ``fn`` is not an ``async def`` function.
    """

    def wrap(f: Callable[P, Awaitable[R]]) -> StepDef[P, R]:
        return StepDef(
            f,
            name=name,
            retry=retry,
            timeout=timeout,
            transactional=transactional,
            compensate=compensate,
        )

    return wrap(fn) if fn is not None else wrap


class WorkflowDef(Generic[P, R]):
    """A workflow: made by :func:`workflow`; start it with ``engine.start``."""

    def __init__(self, fn: Callable[..., Awaitable[R]], *, name: str | None = None) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(f"@workflow needs an async def function, got {fn!r}")
        _validate.name("@workflow name", name)
        self.fn = fn
        self.name = name or fn.__qualname__
        self._arg_types: list[Any] | None = None
        self._result_type: Any = None
        self._signature: inspect.Signature | None = None
        self._arity: tuple[float, float] | None = None
        functools.update_wrapper(self, fn)

    @property
    def signature(self) -> inspect.Signature:
        """The workflow function's signature (``ctx`` first), read once."""
        if self._signature is None:
            self._signature = inspect.signature(self.fn)
        return self._signature

    def check_args(self, args: tuple[Any, ...]) -> None:
        """Raise ``TypeError`` unless ``args`` (after ``ctx``) fit the signature.

        Counting is enough for most signatures; ``Signature.bind`` (about a
        tenth of a busy start loop) only runs for the others, and for the error.
        """
        if self._arity is None:
            self._arity = _arity(self.signature)
        low, high = self._arity
        if not low <= len(args) <= high:
            self.signature.bind(None, *args)

    @property
    def result_type(self) -> Any:
        """The annotated return type, used to decode the run's result (``Any`` if unknown)."""
        if self._result_type is None:
            self._result_type = _hint(self.fn, "return")
        return self._result_type

    @property
    def arg_types(self) -> list[Any]:
        """Annotated types of the arguments after ``ctx``, used to decode them."""
        if self._arg_types is None:
            params = list(self.signature.parameters.values())[1:]
            hints: dict[str, Any]
            try:
                hints = typing.get_type_hints(self.fn)
            except Exception:
                hints = {}
            self._arg_types = [
                hints.get(p.name, Any)
                for p in params
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
        return self._arg_types

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """Inside a workflow: start this workflow as a child run and wait for it.

        The call takes the parent's arguments without ``ctx`` (``await
        child(order_id)``); the child is a run of its own (id
        ``"{parent_run_id}.{position}"``) with its own history, and its failure
        reaches the parent as :class:`~continuum_py.ChildRunFailed`.

        Anywhere else it calls the workflow function directly, with no
        recording: for unit tests.
        """
        runtime = _runtime()
        if runtime is None:
            return self.fn(*args, **kwargs)
        if kwargs:
            raise TypeError(
                f"child workflow {self.name!r}: pass arguments positionally (got {sorted(kwargs)})"
            )
        self_def: WorkflowDef[Any, Any] = self
        result: Awaitable[R] = runtime.call_child(self_def, tuple(args))
        return result

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"


class Registry:
    """Workflows by name, so a resumed run finds its code after a restart.

    ``@workflow`` adds to :data:`default_registry`; pass ``Engine(registry=...)``
    to use another (two engines in one test need not share one).
    """

    def __init__(self) -> None:
        self._workflows: dict[str, WorkflowDef[Any, Any]] = {}

    def add(self, wf: WorkflowDef[Any, Any]) -> None:
        """Register ``wf`` under its name; a different workflow of the same name is refused."""
        old = self._workflows.get(wf.name)
        if old is not None and old.fn is not wf.fn and not _same_origin(old.fn, wf.fn):
            raise ConfigurationError(
                f"two workflows are named {wf.name!r} ({old.fn.__module__} and "
                f"{wf.fn.__module__}); give one @workflow(name=...)"
            )
        self._workflows[wf.name] = wf

    def get(self, name: str) -> WorkflowDef[Any, Any]:
        """The workflow registered as ``name``; raises ``WorkflowNotRegistered``."""
        try:
            return self._workflows[name]
        except KeyError:
            raise WorkflowNotRegistered(name, list(self._workflows)) from None

    def names(self) -> list[str]:
        """Registered workflow names."""
        return sorted(self._workflows)


def _same_origin(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    # The same source function imported twice (as __main__ and as a module) is
    # one workflow, not a clash.
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return bool(
        a.__qualname__ == b.__qualname__
        and code_a is not None
        and code_b is not None
        and code_a.co_filename == code_b.co_filename
    )


default_registry = Registry()
"""The registry ``@workflow`` adds to unless given another."""


@overload
def workflow(fn: Callable[..., Awaitable[R]], /) -> WorkflowDef[..., R]: ...
@overload
def workflow(
    *, name: str | None = None, registry: Registry | None = None
) -> Callable[[Callable[..., Awaitable[R]]], WorkflowDef[..., R]]: ...


def workflow(
    fn: Callable[..., Awaitable[R]] | None = None,
    /,
    *,
    name: str | None = None,
    registry: Registry | None = None,
) -> WorkflowDef[..., R] | Callable[[Callable[..., Awaitable[R]]], WorkflowDef[..., R]]:
    """Make an ``async def f(ctx: Context, ...)`` a durable workflow.

    Args:
        fn: the coroutine function; its first parameter receives the :class:`Context`.
        name: the name recorded with each run (default: the function's qualified name).
        registry: where to register it (default: :data:`default_registry`).
    """
    if registry is not None and not isinstance(registry, Registry):
        raise ConfigurationError(f"@workflow registry must be a Registry or None, got {registry!r}")

    def wrap(f: Callable[..., Awaitable[R]]) -> WorkflowDef[..., R]:
        wf: WorkflowDef[..., R] = WorkflowDef(f, name=name)
        (registry or default_registry).add(wf)
        return wf

    return wrap(fn) if fn is not None else wrap


@dataclass
class Context:
    """What a workflow receives as its first argument.

    Everything on it is recorded in the run's history and replays identically.

    Attributes:
        run_id: the run's id.
        workflow: the workflow's name.
    """

    run_id: str
    workflow: str
    _runtime: WorkflowRuntime = field(repr=False)

    @property
    def is_replaying(self) -> bool:
        """True while the code is re-running against recorded history."""
        return self._runtime.replaying

    @property
    def logger(self) -> WorkflowLogger:
        """A logger bound to run_id, going where the engine's lines go; silent while replaying."""
        return self._runtime.logger

    # ---- time ----
    def sleep(self, seconds: float | dt.timedelta) -> Coroutine[Any, Any, None]:
        """Wait durably for ``seconds``.

        The run is suspended (its lease given back) and any worker resumes it
        when the timer is due, also after a restart.

        Raises:
            ValueError: ``seconds`` is negative or not a finite number.
        """
        return self._runtime.sleep(_seconds(seconds, "ctx.sleep"))

    def now(self) -> dt.datetime:
        """The current time (UTC, timezone-aware), recorded once and replayed as recorded."""
        runtime = self._runtime
        raw = runtime.side_effect("now", runtime.clock)
        return dt.datetime.fromtimestamp(_decode_float(raw), dt.UTC)

    def random(self) -> float:
        """A random float in [0, 1), recorded once and replayed as recorded."""
        return _decode_float(self._runtime.side_effect("random", random.random))

    def uuid4(self) -> uuid.UUID:
        """A random UUID, recorded once and replayed as recorded."""
        raw = self._runtime.side_effect("uuid4", lambda: str(uuid.uuid4()))
        return uuid.UUID(msgspec.json.decode(raw, type=str))

    # ---- signals and published values ----
    @overload
    def wait_for_signal(
        self, name: str, *, timeout: float | dt.timedelta | None = None
    ) -> Coroutine[Any, Any, Any]: ...
    @overload
    def wait_for_signal(
        self, name: str, *, timeout: float | dt.timedelta | None = None, type: type[T]
    ) -> Coroutine[Any, Any, T]: ...

    def wait_for_signal(
        self,
        name: str,
        *,
        timeout: float | dt.timedelta | None = None,
        type: Any = Any,
    ) -> Coroutine[Any, Any, Any]:
        """Wait durably for the signal ``name`` sent with ``engine.signal``; return its payload.

        Signals sent before the wait, or while no worker ran, are kept and
        delivered in the order they were sent, one per wait.

        Args:
            name: the signal name.
            timeout: seconds (or a timedelta) to wait at most; ``None`` waits forever.
            type: decode the payload as this type (default: plain JSON values).

        Raises:
            SignalTimeout: ``timeout`` passed first (a ``TimeoutError``).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"wait_for_signal needs a non-empty signal name, got {name!r}")
        secs = None if timeout is None else _seconds(timeout, "wait_for_signal timeout")
        return self._runtime.wait_for_signal(name, secs, type)

    def set_event(self, key: str, value: Any) -> None:
        """Publish ``value`` under ``key`` for callers of ``engine.get_event``.

        Recorded in history; the newest value of a key wins.

        Raises:
            EncodingError: ``value`` cannot be encoded.
        """
        if not isinstance(key, str) or not key:
            raise ValueError(f"set_event needs a non-empty key, got {key!r}")
        self._runtime.publish(key, value)

    # ---- control flow ----
    def continue_as_new(self, *args: Any) -> NoReturn:
        """End this run and start a fresh one of the same workflow with ``args``.

        The new run starts with an empty history, so an endless loop keeps a
        bounded history. Its id is this run's id with ``~2``, ``~3``, ... appended;
        ``handle.result()`` on any run of the chain follows it to the end.

        Raises:
            EncodingError: an argument cannot be encoded (the run carries on).
        """
        self._runtime.continue_as_new(args)

    def patched(self, change_id: str) -> bool:
        """Whether to take the new branch of a code change.

        ``True`` for runs that reach this point with code that has the change
        (new runs, and old runs past the point where they stopped); ``False``
        when replaying a history recorded by the old code here. Keep the old
        branch until no run started before the change is still open.
        """
        if not isinstance(change_id, str) or not change_id:
            raise ValueError(f"patched needs a non-empty change id, got {change_id!r}")
        return self._runtime.patched(change_id)

    def compensate(self) -> Coroutine[Any, Any, list[CompensationOutcome]]:
        """Run the compensations of the steps completed so far, now, newest first.

        For a workflow that catches an error and goes on: each completed step
        with a ``compensate=`` step is undone (journaled, retried under the
        compensation's own policy), then forgotten, so a later failure of the
        run compensates only what completed after this call. A compensation
        that fails for good does not stop the others.

        Returns:
            One :class:`~continuum_py.events.CompensationOutcome` per
            compensation, in the order they ran.
        """
        return self._runtime.compensate()

    async def wait_first(self, *aws: Awaitable[Any], cancel_rest: bool = True) -> tuple[int, Any]:
        """Wait for the first of ``aws`` (steps, ``ctx.sleep``, signal waits, child runs).

        Replays identically: which one won is decided by recorded history. A
        losing signal wait consumes nothing: a signal it was handed goes to the
        next wait for that name.

        Returns:
            ``(index, result)`` of the first to finish; if it raised, that
            exception is raised instead.

        Args:
            aws: the awaitables to race.
            cancel_rest: cancel the other steps and child runs (a cancelled step
                is recorded as cancelled, a cancelled child run is cancelled).
                Losing signal waits are always withdrawn: nothing could read
                their signal.
        """
        if not aws:
            raise ValueError("wait_first needs at least one awaitable")
        tasks = [asyncio.ensure_future(a) for a in aws]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._abandon(tasks)
            raise
        index = min(i for i, t in enumerate(tasks) if t in done)
        losers = [t for i, t in enumerate(tasks) if i != index]
        self._abandon(losers if cancel_rest else [t for t in losers if self._runtime.is_wait(t)])
        return index, tasks[index].result()

    def as_completed(self, aws: Iterable[Awaitable[Any]]) -> AsyncIterator[tuple[int, Any]]:
        """Yield ``(index, result)`` of each of ``aws`` as it finishes, in recorded order.

        A failed awaitable raises its exception when its turn comes. Leaving the
        loop early (``break``, an exception) cancels the awaitables not yielded
        yet, and their signal waits give back what they were handed; wrap the
        iterator in ``contextlib.aclosing`` to make that happen at a point you
        choose rather than when the iterator is dropped.
        """
        return _AsCompleted(self, [asyncio.ensure_future(a) for a in aws])

    def _abandon(self, tasks: Iterable[asyncio.Future[Any]]) -> None:
        for t in tasks:
            t.cancel()
            self._runtime.withdraw(t)


class _AsCompleted:
    """``ctx.as_completed``: an async iterator that gives back what it did not yield."""

    def __init__(self, ctx: Context, tasks: list[asyncio.Future[Any]]) -> None:
        self._ctx = ctx
        self._tasks = tasks
        self._left = dict.fromkeys(range(len(tasks)))
        self._ready: list[int] = []

    def __aiter__(self) -> _AsCompleted:
        return self

    async def __anext__(self) -> tuple[int, Any]:
        if not self._ready:
            pending = [self._tasks[i] for i in self._left]
            if not pending:
                raise StopAsyncIteration
            try:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                await self.aclose()
                raise
            self._ready = [i for i in self._left if self._tasks[i] in done]
        i = self._ready.pop(0)
        del self._left[i]
        return i, self._tasks[i].result()

    async def aclose(self) -> None:
        """Cancel what was not yielded yet; its signal waits give back their signals."""
        self._close()

    def _close(self) -> None:
        left, self._left, self._ready = self._left, {}, []
        self._ctx._abandon(self._tasks[i] for i in left)

    def __del__(self) -> None:
        # Left by `break` or an exception: CPython drops the iterator right there,
        # so this runs at the same point of the code on every replay.
        if self._left:
            self._close()


def _seconds(value: float | dt.timedelta, what: str) -> float:
    secs = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(secs, bool) or not isinstance(secs, int | float):
        raise TypeError(f"{what} takes seconds (a number) or a timedelta, got {value!r}")
    if not math.isfinite(secs) or secs < 0:
        raise ValueError(f"{what} needs a finite, non-negative duration, got {value!r}")
    return float(secs)


def _decode_float(raw: msgspec.Raw) -> float:
    return float(msgspec.json.decode(raw))
