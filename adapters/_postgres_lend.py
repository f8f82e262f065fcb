"""Lending the Postgres journal's pooled connections, one call at a time.

asyncpg's pool takes a connection back through a task of its own
(``asyncio.shield``): two more turns of the event loop on every call. A
journal whose calls mostly come one after another (a workflow's steps, each
one append) paid that on every step. The lender keeps one of the pool's
connections aside and lends it to whichever call finds it free; a call that
finds it busy takes one from the pool, as every call did before.

The kept connection also keeps the step's statements prepared
(:meth:`Lender.statement`): asyncpg's ``PreparedStatement`` objects, called
directly, skip the pool's connection proxy and the statement cache's lookup on
every step. Not with ``statement_cache_size=0`` (behind pgbouncer in transaction
mode, where a named statement may not outlive its transaction).

Claims have a connection of their own kept aside too (:meth:`Lender.claim`),
set to plan prepared statements generically, without JIT (``GENERIC``): the
claim and the queue admission are then planned once per worker process, not once on each of
the pool's connections a claim happens to land on (and again after each
ANALYZE of a small, busy table), with no ``SET``/``RESET`` round trips around
each admission. Nothing but claims runs on it; its setting is reset before it
goes back to the pool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from continuum_py.adapters._postgres_errors import RETRY, translate
from continuum_py.errors import JournalUnavailable

__all__ = ["GENERIC", "UNSET", "Lender"]

T = TypeVar("T")

# Errors after which running the call again is safe: a deadlock rolled it back
# whole, and a prepared statement whose result type changed under it (an ALTER
# TABLE, a changed search_path) failed before doing anything.
_AGAIN = (*RETRY, asyncpg.InvalidCachedStatementError)
GENERIC = "SET plan_cache_mode = force_generic_plan; SET jit = off"
"""The claim connection's settings (see the module's docstring and ``_postgres_queues``)."""
UNSET = "RESET plan_cache_mode; RESET jit"
"""The server's settings back."""


class Lender:
    """Runs calls on the pool's connections, the kept one first.

    Args:
        pool: an open ``asyncpg`` pool.
        keep: whether to keep a connection aside; not with a pool of one, whose
            only connection would then be out of reach of the pool's other users.
        prepare: whether the kept connection keeps statements prepared
            (:meth:`statement`); not when asyncpg's statement cache is off.
        claims: whether to keep a second connection aside for claims
            (:meth:`claim`); only in a pool of three or more, with prepared
            statements (a session setting must not reach another client's
            server connection behind pgbouncer).
    """

    def __init__(
        self, pool: Any, *, keep: bool, prepare: bool = True, claims: bool = False
    ) -> None:
        self.pool = pool
        self._keep = keep
        self._prepare = keep and prepare
        self._kept: Any = None
        self._stmts: dict[str, Any] = {}  # the kept connection's, by SQL text
        self._free = False
        self._taking = False  # a call is taking the kept connection from the pool
        self._closing = False
        self._claims = claims
        self.claiming: Any = None  # the claim connection, set to GENERIC
        self._claim_free = False
        self._claim_taking = False

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``fn(connection, *args)`` on the kept connection if it is free, else on a pooled one."""
        if self._kept is None and self._keep and not self._taking and not self._closing:
            await self._take()
        conn = self._kept
        if conn is None or not self._free:
            async with self.pool.acquire() as pooled:
                return await fn(pooled, *args)
        self._free = False
        try:
            result = await fn(conn, *args)
        except BaseException:
            await self._back(conn, _gone(conn))
            raise
        # A call that succeeded had its connection a moment ago: a lost one
        # fails the next call, which then gives it back.
        if self._closing or conn.is_in_transaction():
            await self._back(conn, False)
        else:
            self._free = True
        return result

    async def _back(self, conn: Any, gone: bool) -> None:
        """The kept connection is free again, or given back to the pool."""
        if self._closing or gone or conn.is_in_transaction():
            # The pool rolls back what a failed call left open, or replaces
            # a lost connection; a later call takes another.
            self._drop()
            await self.pool.release(conn)
        else:
            self._free = True

    async def claim(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``fn(connection, *args)`` on the claim connection if it is free, else as :meth:`run`.

        ``fn`` finds the setting ``GENERIC`` on its connection when that
        connection is :attr:`claiming`; on another, the server's own.
        """
        if self.claiming is None and self._claims and not self._claim_taking and not self._closing:
            await self._take_claiming()
        conn = self.claiming
        if conn is None or not self._claim_free:
            return await self.run(fn, *args)
        self._claim_free = False
        try:
            result = await fn(conn, *args)
        except BaseException:
            await self._claim_back(conn, _gone(conn))
            raise
        if self._closing or conn.is_in_transaction():
            await self._claim_back(conn, False)
        else:
            self._claim_free = True
        return result

    async def _take_claiming(self) -> None:
        self._claim_taking = True
        try:
            conn = await self.pool.acquire()
            try:
                await conn.execute(GENERIC)
            except BaseException:
                await self.pool.release(conn)
                raise
        finally:
            self._claim_taking = False
        if self._closing:
            await self._unset(conn)
            return
        self.claiming, self._claim_free = conn, True

    async def _claim_back(self, conn: Any, gone: bool) -> None:
        """The claim connection is free again, or goes back to the pool, its setting reset."""
        if self._closing or gone or conn.is_in_transaction():
            self.claiming = None
            if gone:
                await self.pool.release(conn)
            else:
                await self._unset(conn)
        else:
            self._claim_free = True

    async def _unset(self, conn: Any) -> None:
        """Give ``conn`` back to the pool with the server's setting (or end it)."""
        try:
            if conn.is_in_transaction():
                await conn.execute("ROLLBACK")
            await conn.execute(UNSET)
        except Exception:
            conn.terminate()  # the pool opens another in its place
        await self.pool.release(conn)

    async def write(
        self,
        where: str,
        what: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        claim: bool = False,
    ) -> T:
        """:meth:`run` (:meth:`claim` if ``claim``) for a write, tried again if rolled back.

        Thrice, after what rolled it back whole: a deadlock, or a prepared
        statement whose result type changed under it (prepared again).

        Driver errors are translated (:func:`translate`); no context managers here,
        as this is every step's path.
        """
        for attempt in range(4):
            try:
                return await (self.claim(fn, *args) if claim else self.run(fn, *args))
            except _AGAIN as exc:
                if isinstance(exc, asyncpg.InvalidCachedStatementError):
                    self._stmts = {}  # prepared again on the next use
                if attempt == 3:
                    raise JournalUnavailable(
                        f"Postgres journal at {where}: {what} kept failing: {exc}"
                    ) from exc
            except Exception as exc:
                new = translate(exc, where, what)
                if new is None:
                    raise
                raise new from exc
        raise AssertionError("unreachable")

    def statement(self, conn: Any, sql: str) -> Any:
        """``sql`` as prepared on ``conn`` by :meth:`prepare`, or ``None``.

        Call ``.fetch(*args)`` on what it returns, or ``conn.fetch(sql, *args)`` on ``None``.
        """
        return self._stmts.get(sql) if conn is self._kept else None

    async def prepare(self, conn: Any, sql: str) -> Any:
        """Prepare ``sql`` on ``conn`` and keep it, if ``conn`` is the kept connection; else ``None``."""
        if conn is not self._kept or not self._prepare:
            return None
        stmt = self._stmts[sql] = await conn.prepare(sql)
        return stmt

    def _drop(self) -> None:
        self._kept = None
        self._stmts = {}

    async def _take(self) -> None:
        self._taking = True
        try:
            conn = await self.pool.acquire()
        finally:
            self._taking = False
        if self._closing:
            await self.pool.release(conn)
            return
        self._kept, self._free, self._stmts = conn, True, {}

    async def aclose(self) -> None:
        """Give the kept connection back to the pool (a call using it gives it back when done)."""
        self._closing = True
        conn = self._kept
        if conn is not None and self._free:
            self._drop()
            await self.pool.release(conn)
        conn = self.claiming
        if conn is not None and self._claim_free:
            self.claiming = None
            await self._unset(conn)


def _gone(conn: Any) -> bool:
    """Closed, or already taken back by the pool (it does so when the server ends it)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # the pool detached it: its connection died
        return True
