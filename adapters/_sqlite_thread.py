"""A ``sqlite3`` connection on a thread of its own, driven from asyncio.

The SQLite journal hands each write transaction to this thread as one
callable: one hop across threads per commit, not one per statement (each hop
costs about as much as the fsync itself). Calls run one at a time, in the
order they were made, so a call queued before another always runs first.

:meth:`SQLiteThread.run_here` runs a call on the caller's thread instead, for a
journal that knows nothing else waits (see ``_sqlite_writes``); it is only
allowed while no call is queued or running on the thread (:attr:`pending`).
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


class SQLiteThread:
    """One connection, opened, used and closed on one thread.

    Args:
        name: the thread's name, shown in debuggers and ``top -H``.

    Attributes:
        pending: the calls made and not yet settled: queued, running, or
            finished with their result still on its way to the event loop.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self.pending = 0
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
                loop.call_soon_threadsafe(self._settle, fut, ok, result)
            del job, fn, fut, result

    def _settle(self, fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
        # On the event loop: the call has run, so it no longer counts as pending.
        self.pending -= 1
        if fut.cancelled():
            return  # the caller stopped waiting; the call itself has run
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

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
        return await self.submit(fn)

    def submit(self, fn: Callable[[Any], T]) -> asyncio.Future[T]:
        """Queue ``fn(connection)`` on the thread now; a future of its result.

        As :meth:`call`, but the call is queued before this returns, so it runs
        before any call made after it.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, fut, loop))
        self.pending += 1
        return fut

    def run_here(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the calling thread, blocking it until ``fn`` returns.

        No hop: the caller saves the two thread wake-ups of :meth:`call`, but
        its thread (the event loop's) waits for ``fn``, fsync included. The
        connection must have been opened with ``check_same_thread=False``.

        Raises:
            RuntimeError: a call is pending on the thread (the connection is
                in use there), or the connection is not open.
        """
        if self.pending or self._conn is None:
            raise RuntimeError("the connection is busy on its thread, or not open")
        return fn(self._conn)

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
