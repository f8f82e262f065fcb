"""Noticing, in a worker, that another process wrote to the SQLite file.

SQLite has no LISTEN/NOTIFY: a run started by another process (a web app's
``Engine(worker=False)``, ``continuum resume``) was found only by the worker's
claim poll, a second later by default. ``PRAGMA data_version`` on the writer
connection changes exactly when another connection commits to the file (never
for the connection's own commits), and reading it touches no page: it looks at
the WAL index in shared memory. A worker reads it every ``PROBE_INTERVAL`` and
looks for work when it moved. Any commit by another process moves it (another
worker's step too), so a look may find nothing; it costs one claim, at most
``1 / PROBE_INTERVAL`` a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable

import structlog

from continuum_py.adapters._sqlite_thread import SQLiteThread

__all__ = ["PROBE_INTERVAL", "ChangeWatch"]

PROBE_INTERVAL = 0.05  # seconds between reads of data_version while a worker listens

log = structlog.get_logger("continuum_py.journal")


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


class ChangeWatch:
    """Calls back when another connection has committed to the file since the last look.

    Args:
        writer: the journal's writer connection (its own commits do not count).
        interval: seconds between looks.
    """

    def __init__(self, writer: SQLiteThread, interval: float = PROBE_INTERVAL) -> None:
        self._writer = writer
        self._interval = interval
        self._callbacks: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

    async def add(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each look that finds a foreign commit, until :meth:`close`."""
        self._callbacks.append(callback)
        if self._task is None:
            last = await self._read()
            self._task = asyncio.get_running_loop().create_task(
                self._watch(last), name="continuum-sqlite-watch"
            )

    async def _read(self) -> int:
        # On the loop's thread when the connection is idle (a read of shared
        # memory, no hop); queued behind the writer's calls otherwise.
        if not self._writer.pending:
            with contextlib.suppress(RuntimeError):
                return self._writer.run_here(_version)
        return await self._writer.call(_version)

    async def _watch(self, last: int) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                now = await self._read()
            except sqlite3.Error as exc:
                # A locked or lost file only delays work: the claim poll goes on.
                log.warning("journal.watch_failed", error=str(exc))
                continue
            if now == last:
                continue
            last = now
            for cb in list(self._callbacks):
                try:
                    cb()
                except Exception:
                    log.exception("journal.listen_callback_failed")

    async def close(self) -> None:
        """Stop looking."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
