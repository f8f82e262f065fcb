"""The workflow vocabulary: ``@workflow``, ``@step``, ``Context``, ``RetryPolicy``, ``StepInfo``."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import random
import typing
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

import msgspec

from continuum_py._log import WorkflowLogger
from continuum_py.errors import ConfigurationError, WorkflowNotRegistered

if TYPE_CHECKING:
    from continuum_py._replay import ReplayCore

__all__ = [
    "Context",
    "Registry",
    "RetryPolicy",
    "StepDef",
    "StepInfo",
    "WorkflowDef",
    "default_registry",
    "step",
    "workflow",
]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing step is retried.

    The delay before attempt ``n + 1`` is
    ``min(initial_interval * backoff ** (n - 1), max_interval)``, spread by up to
    ``jitter`` (a fraction) either way. Retrying stops at the first success.

    Args:
        max_attempts: attempts in all, the first included; 1 means no retry.
        initial_interval: seconds before the second attempt.
        backoff: factor by which the delay grows after each failure.
        max_interval: upper bound of a delay, in seconds.
        jitter: random spread of each delay, as a fraction (0.1 = ±10%).
        non_retryable: exception types (or qualified type names) that fail the
            step at once, whatever attempts are left.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.1
    non_retryable: tuple[type[BaseException] | str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}"
            )
        if self.initial_interval < 0 or self.max_interval < 0:
            raise ConfigurationError("RetryPolicy intervals must be >= 0")
        if self.backoff < 1:
            raise ConfigurationError(f"RetryPolicy.backoff must be >= 1, got {self.backoff}")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"RetryPolicy.jitter must be within 0..1, got {self.jitter}")

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt."""
        base = min(self.initial_interval * self.backoff ** max(failures - 1, 0), self.max_interval)
        if self.jitter and base:
            base *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return max(base, 0.0)

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` may be retried under this policy (attempts aside)."""
        for t in self.non_retryable:
            if isinstance(t, str):
                for klass in type(exc).__mro__:
                    if t in (klass.__qualname__, f"{klass.__module__}.{klass.__qualname__}"):
                        return False
            elif isinstance(exc, t):
                return False
        return True


NO_RETRY = RetryPolicy(max_attempts=1)


class StepInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a running step may know about itself.

    Attributes:
        run_id: the run the step belongs to.
        seq: the step's call-order position in the workflow.
        attempt: 1 for the first attempt; higher after a failure or a crash.
        idempotency_key: stable across attempts: ``"{run_id}:{seq}"``; pass it
            to external services so a repeated attempt is recognised.
        step: the step's name.
    """

    run_id: str
    seq: int
    attempt: int
    idempotency_key: str
    step: str

    @staticmethod
    def current() -> StepInfo | None:
        """The info of the step running in this task, or ``None`` outside a step."""
        return _current_step.get()


_current_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "continuum_step", default=None
)


def _running_core() -> ReplayCore | None:
    # The replay core drives workflow code on its own deterministic loop; being
    # on that loop is what "inside a workflow" means.
    loop = asyncio._get_running_loop()
    return getattr(loop, "core", None)


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
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(f"@step needs an async def function, got {fn!r}")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"step timeout must be > 0 seconds, got {timeout}")
        self.fn = fn
        self.name = name or fn.__qualname__
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
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
        core = _running_core()
        if core is None:
            return _plain(self.fn, *args, **kwargs)
        return core.call_step(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<step {self.name}>"


async def _plain(fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
    return await fn(*args, **kwargs)


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
    *, name: str | None = None, retry: RetryPolicy | None = None, timeout: float | None = None
) -> Callable[[Callable[P, Awaitable[R]]], StepDef[P, R]]: ...


def step(
    fn: Callable[P, Awaitable[R]] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> StepDef[P, R] | Callable[[Callable[P, Awaitable[R]]], StepDef[P, R]]:
    """Make an async function a durable step.

    Used bare (``@step``) or with options (``@step(retry=..., timeout=30)``).

    Args:
        fn: the coroutine function.
        name: the name recorded in history (default: the function's qualified name).
        retry: the retry policy (default: ``RetryPolicy()``, 3 attempts).
        timeout: seconds one attempt may take; a timed-out attempt counts as a failure.
    """

    def wrap(f: Callable[P, Awaitable[R]]) -> StepDef[P, R]:
        return StepDef(f, name=name, retry=retry, timeout=timeout)

    return wrap(fn) if fn is not None else wrap


class WorkflowDef(Generic[P, R]):
    """A workflow: made by :func:`workflow`; start it with ``engine.start``."""

    def __init__(self, fn: Callable[..., Awaitable[R]], *, name: str | None = None) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(f"@workflow needs an async def function, got {fn!r}")
        self.fn = fn
        self.name = name or fn.__qualname__
        self._arg_types: list[Any] | None = None
        functools.update_wrapper(self, fn)

    @property
    def arg_types(self) -> list[Any]:
        """Annotated types of the arguments after ``ctx``, used to decode them."""
        if self._arg_types is None:
            params = list(inspect.signature(self.fn).parameters.values())[1:]
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
        """Call the workflow function directly (no recording): for unit tests."""
        return self.fn(*args, **kwargs)

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

    def wrap(f: Callable[..., Awaitable[R]]) -> WorkflowDef[..., R]:
        wf: WorkflowDef[..., R] = WorkflowDef(f, name=name)
        (registry or default_registry).add(wf)
        return wf

    return wrap(fn) if fn is not None else wrap


@dataclass
class Context:
    """What a workflow receives as its first argument.

    Attributes:
        run_id: the run's id.
        workflow: the workflow's name.
    """

    run_id: str
    workflow: str
    _core: ReplayCore = field(repr=False)

    @property
    def is_replaying(self) -> bool:
        """True while the code is re-running against recorded history."""
        return self._core.replaying

    @property
    def logger(self) -> WorkflowLogger:
        """A structlog logger bound to run_id; silent while replaying."""
        return self._core.logger
