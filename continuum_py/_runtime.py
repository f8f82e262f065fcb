"""What workflow code asks of whatever runs it (the replay core), and how it finds it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import msgspec

from continuum_py._log import WorkflowLogger
from continuum_py._workflow_loop import ENTERED
from continuum_py.events import CompensationOutcome

if TYPE_CHECKING:
    from continuum_py.workflow import StepDef, WorkflowDef

__all__ = ["WorkflowRuntime", "set_runtime"]


class WorkflowRuntime(Protocol):
    """What this vocabulary asks of whatever runs workflow code: the replay core.

    The runtime runs the code on an event loop of its own and registers itself
    there with :func:`set_runtime`; being on such a loop is what "inside a
    workflow" means (as in Temporal's SDK). The runtime builds every event;
    this module only checks arguments and hands them on.
    """

    @property
    def replaying(self) -> bool:
        """True while the code re-runs against recorded history."""
        ...

    @property
    def logger(self) -> WorkflowLogger:
        """The run's logger, quiet while replaying."""
        ...

    @property
    def clock(self) -> Callable[[], float]:
        """Durable time, read once for ``ctx.now()`` and recorded."""
        ...

    def call_step(
        self, step: StepDef[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, Any]:
        """A step called inside the workflow: its recorded (or new) outcome."""
        ...

    def call_child(
        self, wf: WorkflowDef[Any, Any], args: tuple[Any, ...]
    ) -> Coroutine[Any, Any, Any]:
        """A child run started inside the workflow: its recorded (or new) result."""
        ...

    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        """A durable timer of ``seconds`` (checked: finite, >= 0)."""
        ...

    def wait_for_signal(
        self, name: str, timeout: float | None, type_: Any
    ) -> Coroutine[Any, Any, Any]:
        """A durable wait for the signal ``name``, decoding its payload as ``type_``."""
        ...

    def side_effect(self, what: str, make: Callable[[], Any]) -> msgspec.Raw:
        """The JSON value recorded at this point as ``what``; ``make()`` it when live."""
        ...

    def publish(self, key: str, value: Any) -> None:
        """Record ``value`` as the newest one published under ``key``."""
        ...

    def patched(self, change_id: str) -> bool:
        """Whether to take the new branch of the change ``change_id``."""
        ...

    def continue_as_new(self, args: tuple[Any, ...]) -> NoReturn:
        """End the run so a fresh one carries on with ``args``."""
        ...

    def is_wait(self, aw: Any) -> bool:
        """Whether ``aw`` (a coroutine or its task) is a signal wait."""
        ...

    def compensate(self) -> Coroutine[Any, Any, list[CompensationOutcome]]:
        """Run the compensations of the steps completed so far, newest first, and forget them."""
        ...

    def withdraw(self, aw: Any) -> None:
        """Give back the signal handed to the abandoned wait ``aw``, if any."""
        ...


_RUNTIME = "_continuum_workflow_runtime"


def set_runtime(loop: asyncio.AbstractEventLoop, runtime: WorkflowRuntime) -> None:
    """Make workflow code running on ``loop`` record through ``runtime``."""
    setattr(loop, _RUNTIME, runtime)


def _runtime() -> WorkflowRuntime | None:
    loop = ENTERED.loop or asyncio._get_running_loop()
    runtime: WorkflowRuntime | None = getattr(loop, _RUNTIME, None)
    return runtime
