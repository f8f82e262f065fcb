"""What a running step may know about itself (:class:`StepInfo`), and its transaction's connection."""

from __future__ import annotations

import contextvars
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

import msgspec

from continuum_py.errors import ConfigurationError
from continuum_py.journal import JournalTransaction

__all__ = ["CURRENT_STEP", "StepInfo", "in_transaction", "step_connection"]

T = TypeVar("T")


class StepInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a running step may know about itself.

    Attributes:
        run_id: the run the step belongs to.
        position: the step's call-order position in the workflow (the
            ``position`` of its events; not a ``seq`` in history).
        attempt: 1 for the first attempt; higher after a failure or a crash.
        idempotency_key: stable across attempts: ``"{run_id}:{position}"``; pass
            it to external services so a repeated attempt is recognised.
        step: the step's name.
    """

    run_id: str
    position: int
    attempt: int
    idempotency_key: str
    step: str

    @property
    def seq(self) -> int:
        """The older name of :attr:`position`, kept for existing code; the same value."""
        return self.position

    @staticmethod
    def current() -> StepInfo | None:
        """The info of the step running in this task, or ``None`` outside a step."""
        held = _current_step.get()
        if held is None or isinstance(held, StepInfo):
            return held
        run_id, position, attempt, step = held
        return StepInfo(
            run_id=run_id,
            position=position,
            attempt=attempt,
            idempotency_key=f"{run_id}:{position}",
            step=step,
        )


StepKey = tuple[str, int, int, str]
"""What :data:`CURRENT_STEP` may hold instead of a :class:`StepInfo`: ``(run_id,
position, attempt, step)``; ``StepInfo.current()`` builds the info from it."""

_current_step: contextvars.ContextVar[StepInfo | StepKey | None] = contextvars.ContextVar(
    "continuum_step", default=None
)
_current_tx: contextvars.ContextVar[JournalTransaction | None] = contextvars.ContextVar(
    "continuum_tx", default=None
)


class _Bound(Generic[T]):
    """Sets a context variable for the length of a ``with`` block.

    A class, not ``@contextmanager``: it runs once per step attempt, and a
    generator costs more.
    """

    __slots__ = ("_token", "_value", "_var")

    def __init__(self, var: contextvars.ContextVar[T], value: T) -> None:
        self._var = var
        self._value = value

    def __enter__(self) -> None:
        self._token = self._var.set(self._value)

    def __exit__(self, *exc: object) -> None:
        self._var.reset(self._token)


CURRENT_STEP = _current_step
"""For the runner: set it to a step's :class:`StepInfo` (or its :data:`StepKey`,
built into one only if the step asks) while its body runs, so
``StepInfo.current()`` is that info (set/reset in a ``try``/``finally``: this
runs once per step attempt, and a context manager costs more)."""


def in_transaction(tx: JournalTransaction) -> AbstractContextManager[None]:
    """For the runner: run a transactional step body inside this, for :func:`step_connection`."""
    return _Bound(_current_tx, tx)


def step_connection() -> Any:
    """The database connection of the running transactional step.

    Inside a ``@step(transactional=True)`` step, SQL run on this connection
    commits in the same transaction that records the step's completion, or
    not at all. For Postgres it is a
    :class:`~continuum_py.adapters.postgres.StepConnection` (every method of
    ``asyncpg.Connection``); for SQLite a
    :class:`~continuum_py.adapters.sqlite.TransactionConnection` with
    ``await execute(sql, params)``, ``executemany``, ``fetch`` and ``fetchval``.

    The transaction is the engine's: both refuse transaction control
    statements (``BEGIN``, ``COMMIT``, ``ROLLBACK``, ``SAVEPOINT``, ...) with
    ``ConfigurationError``, and the step then fails for good with its writes
    rolled back.

    Raises:
        ConfigurationError: called outside a transactional step.
    """
    tx = _current_tx.get()
    if tx is None:
        raise ConfigurationError(
            "step_connection() is only available inside a @step(transactional=True) step "
            "run by the engine"
        )
    return tx.connection
