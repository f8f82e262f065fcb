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


class _Kept:
    """One of the pool's connections kept aside, lent to one call at a time.

    Taken from the pool at the first call (and ``setup`` run on it); given back
    (``reset`` run first, a transaction left open rolled back) when a call
    leaves it in a transaction, fails on a lost connection, or on close. The
    pool's own reset is off (``no_reset`` in ``postgres``), hence ``reset``.
    """

    def __init__(
        self,
        pool: Any,
        *,
        setup: str | None = None,
        reset: str | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.pool = pool
        self.setup = setup
        self.reset = reset
        self.on_drop = on_drop
        self.conn: Any = None
        self.free = False
        self.taking = False  # a call is taking it from the pool
        self.closing = False

    async def lend(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        otherwise: Callable[..., Awaitable[T]],
    ) -> T:
        """``fn(conn, *args)`` on the kept connection if it is free, else ``otherwise(fn, *args)``."""
        if self.conn is None and not self.taking and not self.closing:
            await self._take()
        conn = self.conn
        if conn is None or not self.free:
            return await otherwise(fn, *args)
        self.free = False
        try:
            result = await fn(conn, *args)
        except BaseException:
            await self._back(conn, _gone(conn))
            raise
        # A call that succeeded had its connection a moment ago: a lost one
        # fails the next call, which then gives it back.
        if self.closing or conn.is_in_transaction():
            await self._back(conn, False)
        else:
            self.free = True
        return result

    async def _take(self) -> None:
        self.taking = True
        try:
            conn = await self.pool.acquire()
            if self.setup is not None:
                try:
                    await conn.execute(self.setup)
                except BaseException:
                    await self.pool.release(conn)
                    raise
        finally:
            self.taking = False
        if self.closing:
            await self._release(conn, False)
            return
        self.conn, self.free = conn, True

    async def _back(self, conn: Any, gone: bool) -> None:
        """The kept connection is free again, or given back to the pool."""
        if self.closing or gone or conn.is_in_transaction():
            # A later call takes another; the pool replaces a lost one.
            self.conn = None
            if self.on_drop is not None:
                self.on_drop()
            await self._release(conn, gone)
        else:
            self.free = True

    async def _release(self, conn: Any, gone: bool) -> None:
        if self.reset is not None and not gone:
            try:
                if conn.is_in_transaction():
                    await conn.execute("ROLLBACK")
                await conn.execute(self.reset)
            except Exception:
                conn.terminate()  # the pool opens another in its place
        # Without a reset, the pool rolls back what a failed call left open.
        await self.pool.release(conn)

    async def close(self) -> None:
        """Give it back now if free (a call using it gives it back when done)."""
        self.closing = True
        conn = self.conn
        if conn is not None and self.free:
            self.conn = None
            if self.on_drop is not None:
                self.on_drop()
            await self._release(conn, False)


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

    Attributes:
        steps: the kept connection (``None`` without ``keep``).
        claims: the claim connection, set to ``GENERIC`` (``None`` without ``claims``).
    """

    def __init__(
        self, pool: Any, *, keep: bool, prepare: bool = True, claims: bool = False
    ) -> None:
        self.pool = pool
        self._prepare = keep and prepare
        self._stmts: dict[str, Any] = {}  # the kept connection's, by SQL text
        self.steps = _Kept(pool, on_drop=self._stmts.clear) if keep else None
        self.claims = _Kept(pool, setup=GENERIC, reset=UNSET) if claims else None

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``fn(connection, *args)`` on the kept connection if it is free, else on a pooled one."""
        if self.steps is None:
            return await self._pooled(fn, *args)
        return await self.steps.lend(fn, args, self._pooled)

    async def _pooled(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async with self.pool.acquire() as pooled:
            return await fn(pooled, *args)

    async def claim(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``fn(connection, *args)`` on the claim connection if it is free, else as :meth:`run`.

        ``fn`` finds the setting ``GENERIC`` on its connection when that
        connection is :attr:`claiming`; on another, the server's own.
        """
        if self.claims is None:
            return await self.run(fn, *args)
        return await self.claims.lend(fn, args, self.run)

    @property
    def claiming(self) -> Any:
        """The claim connection now kept, if any."""
        return None if self.claims is None else self.claims.conn

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
                    self._stmts.clear()  # prepared again on the next use
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

    def _is_kept(self, conn: Any) -> bool:
        return self.steps is not None and conn is self.steps.conn

    def statement(self, conn: Any, sql: str) -> Any:
        """``sql`` as prepared on ``conn`` by :meth:`prepare`, or ``None``.

        Call ``.fetch(*args)`` on what it returns, or ``conn.fetch(sql, *args)`` on ``None``.
        """
        return self._stmts.get(sql) if self._is_kept(conn) else None

    async def prepare(self, conn: Any, sql: str) -> Any:
        """Prepare ``sql`` on ``conn`` and keep it, if ``conn`` is the kept connection; else ``None``."""
        if not self._prepare or not self._is_kept(conn):
            return None
        stmt = self._stmts[sql] = await conn.prepare(sql)
        return stmt

    async def aclose(self) -> None:
        """Give the kept connections back to the pool (a call using one gives it back when done)."""
        for kept in (self.steps, self.claims):
            if kept is not None:
                await kept.close()


def _gone(conn: Any) -> bool:
    """Closed, or already taken back by the pool (it does so when the server ends it)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # the pool detached it: its connection died
        return True
