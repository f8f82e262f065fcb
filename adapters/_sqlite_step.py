"""The connection a transactional step gets on SQLite: the journal's writer, guarded.

A step's own SQL runs on the journal's writer connection, inside the write
transaction that also records the step's completion. Transaction control in
that SQL would end the engine's transaction, so it is refused before it runs,
and SQL that ends the transaction anyway is noticed after.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from continuum_py.adapters._sqlite_thread import SQLiteThread
from continuum_py.adapters._tx_guard import control_statement, ended_message, refusal_message
from continuum_py.errors import ConfigurationError

__all__ = ["TransactionConnection"]

T = TypeVar("T")


class TransactionConnection:
    """The journal's writer connection inside :meth:`.SQLiteJournal.transaction`.

    A transactional step runs its own SQL here; it commits or rolls back with
    the step's completion. Every call runs in the journal's writer thread. Usable only
    while the transaction is open.

    Transaction control (``BEGIN``, ``COMMIT``, ``END``, ``ROLLBACK``,
    ``SAVEPOINT``, ``RELEASE``) is refused with ``ConfigurationError`` before it
    runs: the transaction belongs to the engine. The step then fails, is not
    retried, and its writes roll back, even if it caught the error.

    Attributes:
        refusal: the ``ConfigurationError`` of a refused statement (or of SQL
            that ended the transaction), else ``None``; the engine fails the
            step with it.
    """

    def __init__(self, conn: SQLiteThread) -> None:
        self._aconn = conn
        self._open = True
        self.refusal: ConfigurationError | None = None

    async def _run(self, sql: object, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._open:
            raise RuntimeError("this SQLite transaction is over; its connection is closed to you")
        found = control_statement(sql) if isinstance(sql, str) else None
        if found is not None:
            self.refusal = ConfigurationError(refusal_message(found))
            raise self.refusal
        ended = False

        def guarded(raw: sqlite3.Connection) -> T:
            nonlocal ended
            try:
                return fn(raw)
            finally:
                # A statement the check let through, or an error that rolled the
                # transaction back (ON CONFLICT ROLLBACK), must not go unnoticed.
                ended = not raw.in_transaction

        try:
            result = await self._aconn.call(guarded)
        finally:
            if ended and self.refusal is None:
                self.refusal = ConfigurationError(ended_message())
        if ended:
            assert self.refusal is not None
            raise self.refusal
        return result

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one statement.

        Returns:
            The number of rows it changed (``-1`` for statements that change none).
        """
        return await self._run(sql, lambda raw: raw.execute(sql, params).rowcount)

    async def executemany(
        self, sql: str, params_seq: Iterable[Sequence[Any] | dict[str, Any]]
    ) -> int:
        """Run one statement once per parameter set; returns the rows changed in all."""
        rows = list(params_seq)
        return await self._run(sql, lambda raw: raw.executemany(sql, rows).rowcount)

    async def fetch(
        self, sql: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run a query; returns every row as a tuple."""
        return await self._run(
            sql, lambda raw: [tuple(r) for r in raw.execute(sql, params).fetchall()]
        )

    async def fetchval(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        """Run a query; returns the first column of its first row, or ``None`` if no row."""

        def one(raw: sqlite3.Connection) -> Any:
            row = raw.execute(sql, params).fetchone()
            return None if row is None else row[0]

        return await self._run(sql, one)
