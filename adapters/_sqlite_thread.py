"""A ``sqlite3`` connection on a thread of its own, driven from asyncio.

The SQLite journal hands each write transaction to this thread as one
callable: one hop across threads per commit, not one per statement (each hop
costs about as much as the fsync itself). Calls run one at a time, in the
order they were made, so a call queued before another always runs first.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["SQLiteThread"]

T = TypeVar("T")

_Job = tuple[Callable[[Any], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return  # the caller stopped waiting; the call itself has run
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class SQLiteThread:
    """One connection, opened, used and closed on one thread.

    Args:
        name: the thread's name, shown in debuggers and ``top -H``.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        # A daemon: a journal dropped without aclose() must not keep the
        # process from exiting (SQLite's commits are durable as they return).
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut, loop = job
            try:
                result, ok = fn(self._conn), True
            except BaseException as exc:
                result, ok = exc, False
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, fut, ok, result)
            del job, fn, fut, result

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Start the thread and open its connection there with ``connect()``."""
        self._thread.start()

        def opened(_: sqlite3.Connection | None) -> None:
            self._conn = connect()

        try:
            await self.call(opened)
        except BaseException:
            self._jobs.put(None)
            raise

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(connection)`` on the thread; its result, or its exception, here.

        ``fn`` gets the ``sqlite3.Connection`` (``None`` only before it is open).

        Cancelling the caller does not stop ``fn`` once queued: it still runs,
        in order.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, fut, loop))
        return await fut

    async def close(self) -> None:
        """Close the connection and end the thread."""

        def close(conn: sqlite3.Connection | None) -> None:
            if conn is not None:
                conn.close()

        try:
            await self.call(close)
        finally:
            self._conn = None
            self._jobs.put(None)
