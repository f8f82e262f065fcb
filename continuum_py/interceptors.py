"""Interceptors: code of yours around every step attempt and every run, for tracing and metrics.

Pass them to ``Engine(interceptors=[...])``. They run live only: a replay (a
resumed run re-running its recorded history, ``Replayer``) calls none of them,
so each step attempt and each run start and end is seen exactly once.

.. versionadded:: 0.2
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from continuum_py.journal import RunStatus
from continuum_py.workflow import StepInfo

__all__ = ["Interceptor"]


class Interceptor:
    """Wraps step attempts and sees runs start and end; subclass and override what you need.

    The defaults do nothing. With several interceptors the first given is the
    outermost.
    """

    async def step(self, info: StepInfo, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """Run one attempt of a step: await ``attempt()`` and return what it returns.

        ``attempt()`` runs the step body under its timeout; it raises what the
        body raised (a ``TimeoutError`` when the timeout passed). What this
        method returns or raises is the attempt's outcome: an exception raised
        here fails the attempt, and the step's retry policy decides what follows.

        Args:
            info: the attempt's ``StepInfo`` (run, position, attempt number, step name).
            attempt: runs the attempt; call it once.
        """
        return await attempt()

    async def run_started(self, run_id: str, workflow: str) -> None:
        """A run was driven for the first time. Errors here are logged and ignored."""

    async def run_ended(self, run_id: str, workflow: str, status: RunStatus) -> None:
        """A run ended (completed, failed, cancelled or continued as new), once it is recorded.

        Errors here are logged and ignored.
        """
