"""Worker liveness kept by Postgres: a session advisory lock per worker on a connection of its own.

A worker holds ``pg_advisory_lock(key)`` (``key``: a 64-bit digest of the schema
and its id) on a dedicated connection for as long as it lives, and registers
``(worker_id, key)`` in the schema's ``workers`` table. When its process dies,
the kernel closes the socket and the server ends the session, which lets go of
the lock at once. A claim takes a run leased by a registered worker whose lock
it can take with ``pg_try_advisory_xact_lock`` as if the lease had expired (see
:class:`~continuum_py.journal.LivenessJournal`); the lock so taken ends with the
claim's transaction.

The lock needs a session of its own: behind pgbouncer in transaction mode, point
the journal's URL at Postgres itself or at a session-mode pool (as for LISTEN).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from continuum_py._log import get_logger
from continuum_py.adapters._postgres_connect import close
from continuum_py.adapters._postgres_errors import UNAVAILABLE

__all__ = ["PostgresLiveness", "liveness_key"]

log = get_logger()

PING_EVERY = 5.0
"""Seconds between checks that a liveness connection still answers (a silent drop closes nothing)."""

RETAKE_BACKOFF_MAX = 5.0
"""Longest pause, in seconds, between tries to take a lost lock again."""

# Session settings of a liveness connection: never ended for idling (it idles
# by design), and a dead peer found within about 25 s where TCP is used.
_SESSION = (
    ("idle_session_timeout", "0"),
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
)


def liveness_key(schema: str, worker_id: str) -> int:
    """The advisory lock key of ``worker_id`` in ``schema``: a signed 64-bit digest."""
    digest = hashlib.blake2b(f"{schema}/{worker_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _Held:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lost = False
        self.pinged = time.monotonic()
        conn.add_termination_listener(self._on_lost)

    def _on_lost(self, _conn: Any) -> None:
        self.lost = True


class PostgresLiveness:
    """The liveness locks one journal holds, each on its own connection.

    Args:
        schema: the journal's schema (quoted into SQL and part of each key).
        connect: opens a new connection to the journal's database.
    """

    def __init__(self, schema: str, connect: Callable[[], Awaitable[Any]]) -> None:
        self.schema = schema
        self._connect = connect
        self._held: dict[str, _Held] = {}
        # Lost and not yet taken again: worker id -> (next try, pause after it).
        self._lost: dict[str, tuple[float, float]] = {}
        s = f'"{schema}"'
        self._register = (
            f"INSERT INTO {s}.workers (worker_id, lock_key, since) "
            "VALUES ($1, $2, extract(epoch FROM clock_timestamp())) "
            "ON CONFLICT (worker_id) DO UPDATE SET lock_key = excluded.lock_key, since = excluded.since"
        )
        self._forget = f"DELETE FROM {s}.workers WHERE worker_id = $1"

    async def hold(self, worker_id: str) -> bool:
        """Take ``worker_id``'s lock on a new connection and register it; ``False`` if held elsewhere."""
        if worker_id in self._held:
            return await self.held(worker_id)
        key = liveness_key(self.schema, worker_id)
        conn = await self._connect()
        try:
            for name, value in _SESSION:
                with contextlib.suppress(Exception):  # an older server lacks some
                    await conn.execute(f"SELECT set_config('{name}', '{value}', false)")
            # A claim may hold the lock for the length of its transaction: retry a moment.
            for attempt in range(5):
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    break
                if attempt == 4:
                    await close(conn, 5)
                    return False
                await asyncio.sleep(0.02)
            await conn.execute(self._register, worker_id, key)
        except BaseException:
            conn.terminate()
            raise
        self._held[worker_id] = _Held(conn)
        self._lost.pop(worker_id, None)
        return True

    def holds(self, worker_id: str) -> bool:
        """Whether this process holds ``worker_id``'s lock (as far as it knows, without a look)."""
        return worker_id in self._held

    async def held(self, worker_id: str) -> bool:
        """Whether the lock is still held; a lost one is taken again first if it can be.

        While Postgres cannot be reached, it is tried again with a growing pause
        (up to :data:`RETAKE_BACKOFF_MAX` seconds), ``False`` meanwhile.
        """
        entry = self._held.get(worker_id)
        if entry is not None and not entry.lost:
            if time.monotonic() - entry.pinged < PING_EVERY:
                return True
            try:
                async with asyncio.timeout(10):
                    await entry.conn.fetchval("SELECT 1")
                entry.pinged = time.monotonic()
                return True
            except Exception as exc:
                if not isinstance(exc, (*UNAVAILABLE, TimeoutError)):
                    raise
                entry.lost = True
        if entry is not None:
            log.warning("journal.liveness_lost", worker_id=worker_id, schema=self.schema)
            del self._held[worker_id]
            entry.conn.terminate()
            self._lost[worker_id] = (0.0, 0.1)
        retry = self._lost.get(worker_id)
        if retry is None:
            return False  # never held here, or let go of
        at, pause = retry
        if time.monotonic() < at:
            return False
        try:
            back = await self.hold(worker_id)
        except Exception as exc:
            back = False
            log.warning("journal.liveness_retake_failed", worker_id=worker_id, error=str(exc))
        if back:
            log.info("journal.liveness_regained", worker_id=worker_id, schema=self.schema)
        else:
            self._lost[worker_id] = (time.monotonic() + pause, min(pause * 2, RETAKE_BACKOFF_MAX))
        return back

    async def release(self, worker_id: str, *, forget: bool = False) -> None:
        """Let go of ``worker_id``'s lock and close its connection; unregister it if ``forget``."""
        self._lost.pop(worker_id, None)
        entry = self._held.pop(worker_id, None)
        if entry is not None:
            # Unlocked before closing: the server ends a closed session a moment later.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    if forget:
                        await entry.conn.execute(self._forget, worker_id)
                    await entry.conn.execute("SELECT pg_advisory_unlock_all()")
            await close(entry.conn, 5)

    async def aclose(self) -> None:
        """Let go of every lock held."""
        self._lost.clear()
        for worker_id in list(self._held):
            await self.release(worker_id)
