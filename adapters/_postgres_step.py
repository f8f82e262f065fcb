"""The connection a transactional step gets on Postgres: the lent pool connection, guarded.

A step's own SQL commits or rolls back with its completion, in the engine's
transaction; transaction control in that SQL is refused before it is sent,
and SQL that ends the transaction anyway is noticed after.
"""

from __future__ import annotations

from typing import Any

from continuum_py.adapters._tx_guard import control_statement, ended_message, refusal_message
from continuum_py.errors import ConfigurationError

__all__ = ["StepConnection"]


class StepConnection:
    """The connection a transactional step gets on Postgres (``step_connection()``).

    It forwards everything to the pooled ``asyncpg`` connection, but refuses
    SQL text holding transaction control (``BEGIN``, ``START TRANSACTION``,
    ``COMMIT``, ``END``, ``ROLLBACK``, ``ABORT``, ``SAVEPOINT``, ``RELEASE``,
    ``PREPARE TRANSACTION``), in any statement of a multi-statement string, with
    ``ConfigurationError`` before it is sent: the transaction belongs to the
    engine, which commits it with the step's completion. The step then fails,
    is not retried, and its writes roll back, even if it caught the error. To
    undo part of a step, use ``async with connection.transaction():``, a
    savepoint asyncpg opens and closes itself.

    Attributes:
        refusal: the ``ConfigurationError`` of a refused statement (or of SQL
            that ended the transaction), else ``None``.
    """

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.refusal: ConfigurationError | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __repr__(self) -> str:
        return f"<StepConnection {self._conn!r}>"

    def _check(self, query: object) -> None:
        found = control_statement(query) if isinstance(query, str) else None
        if found is not None:
            self.refusal = ConfigurationError(refusal_message(found))
            raise self.refusal

    def _after(self) -> None:
        # A statement the check let through must not end the transaction unnoticed.
        if self.refusal is None and not self._conn.is_in_transaction():
            self.refusal = ConfigurationError(ended_message())
            raise self.refusal

    async def _call(self, method: str, query: object, *args: Any, **kwargs: Any) -> Any:
        self._check(query)
        try:
            return await getattr(self._conn, method)(query, *args, **kwargs)
        finally:
            self._after()

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """``asyncpg.Connection.execute``, refusing transaction control."""
        return await self._call("execute", query, *args, **kwargs)

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> Any:
        """``asyncpg.Connection.executemany``, refusing transaction control."""
        return await self._call("executemany", command, args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """``asyncpg.Connection.fetch``, refusing transaction control."""
        return await self._call("fetch", query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """``asyncpg.Connection.fetchrow``, refusing transaction control."""
        return await self._call("fetchrow", query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """``asyncpg.Connection.fetchval``, refusing transaction control."""
        return await self._call("fetchval", query, *args, **kwargs)

    async def fetchmany(self, query: str, args: Any, **kwargs: Any) -> Any:
        """``asyncpg.Connection.fetchmany``, refusing transaction control."""
        return await self._call("fetchmany", query, args, **kwargs)

    async def prepare(self, query: str, **kwargs: Any) -> Any:
        """``asyncpg.Connection.prepare``, refusing transaction control."""
        return await self._call("prepare", query, **kwargs)

    def cursor(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """``asyncpg.Connection.cursor``, refusing transaction control."""
        self._check(query)
        return self._conn.cursor(query, *args, **kwargs)
