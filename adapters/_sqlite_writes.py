"""The SQLite journal's write transactions: grouped, and run where they cost least.

Every write of :class:`~continuum_py.adapters.sqlite.SQLiteJournal` but a
transactional step's goes through :class:`WriteGroups`:

- **Alone, on the event loop's thread.** A write made while nothing else waits
  (no other write queued, no call pending on either connection's thread, no
  other callback ready to run on the loop) runs at once on the loop's own
  thread. A hop to the writer's thread and back wakes two sleeping threads,
  which on a small VM costs about as much as the fsync itself; blocking the
  loop for the commit delays nobody, as nothing else was ready to run.
- **Otherwise, grouped on the writer's thread.** Writes made while one is in
  flight queue up, and the next transaction runs them all, each in a savepoint
  of its own, with one commit and one fsync: a write that fails rolls back to
  its savepoint and fails alone; a commit that fails fails them all. Each
  caller learns its own write's result only once the commit is on disk, so a
  write counts as done exactly when it is durable, as before.

A write of a group sees the writes of those before it in the same group, as
it would had they committed one after another.

**Checkpoints on the writer's thread.** When the WAL holds about
:data:`CHECKPOINT_PAGES` pages, a ``PRAGMA wal_checkpoint(PASSIVE)`` is queued on
the writer's thread right after a commit, the write lock still held, and runs
there while the event loop goes on; the next write waits for it (writes made
meanwhile queue for the next group). It never runs on the event loop's thread,
and no transaction is open on the writer while it runs. SQLite then writes the WAL again from
its start, so the WAL stays small and commits overwrite blocks the file already
has: on ext4 an ``fdatasync`` after an append also syncs the file's new size,
and costs about 1.6 times as much as after an overwrite. The journal counts
commits, not pages: each checkpoint reports the WAL's size, from which the next
one's count of commits is set. SQLite's own automatic checkpoint (1,000 pages by
default) stays as the backstop should commits be far larger than usual or
checkpoints fail (each failure is logged; it never fails a write); it runs in
the commit that crosses it, wherever that commit runs. When the journal opens,
the WAL is given that size at once (:mod:`._sqlite_wal`), so even a process's
first commits overwrite it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar, cast

from continuum_py._log import get_logger
from continuum_py.adapters._rules import duplicate_row
from continuum_py.adapters._sqlite_thread import SQLiteThread
from continuum_py.adapters._sqlite_wal import presize
from continuum_py.errors import JournalUnavailable

__all__ = ["CHECKPOINT_EVERY", "WriteGroups"]

CHECKPOINT_PAGES = 256
"""About how many pages (4 KiB each) the WAL holds when the journal checkpoints it."""

PRESIZE_FRAMES = CHECKPOINT_PAGES + 64
"""Frames the WAL is given room for when the journal opens (:mod:`._sqlite_wal`):
checkpoints keep it at about :data:`CHECKPOINT_PAGES`, a few commits more at most."""

CHECKPOINT_EVERY = 32
"""Commits before the first checkpoint, before the WAL's growth per commit is known
(``0``: the journal never checkpoints; SQLite's automatic checkpoint alone does)."""

log = get_logger()

T = TypeVar("T")

_Write = Callable[[sqlite3.Connection], Any]
_Connections = Callable[[], tuple[SQLiteThread, SQLiteThread | None]]
_Job = tuple[_Write, "asyncio.Future[Any]"]


def translate(exc: BaseException) -> BaseException:
    """What a driver error raised by a write becomes for its caller (caused by it)."""
    if isinstance(exc, sqlite3.IntegrityError):
        out: BaseException = duplicate_row(exc)
    elif isinstance(exc, sqlite3.OperationalError):
        out = JournalUnavailable(f"SQLite write failed: {exc}")
    else:
        return exc
    out.__cause__ = exc
    return out


def begin(raw: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, after rolling back what an abandoned transaction() left open."""
    if raw.in_transaction:
        raw.rollback()
    raw.execute("BEGIN IMMEDIATE")


def _run_group(raw: sqlite3.Connection, writes: list[_Write]) -> list[tuple[bool, Any]]:
    """Run ``writes`` in one transaction; each one's ``(ok, result or exception)``.

    Raises what ends the whole transaction (a failed ``BEGIN`` or ``COMMIT``, or
    an error that rolled the transaction back): then no write of the group landed.
    """
    begin(raw)
    try:
        if len(writes) == 1:
            try:
                out = [(True, writes[0](raw))]
            except Exception as exc:
                out = [(False, exc)]
                raw.rollback()
                return out
        else:
            out = []
            for write in writes:
                raw.execute("SAVEPOINT continuum_write")
                try:
                    out.append((True, write(raw)))
                except Exception as exc:
                    if not raw.in_transaction:
                        raise  # the error ended the transaction: no write of it landed
                    raw.execute("ROLLBACK TO continuum_write")
                    out.append((False, exc))
                raw.execute("RELEASE continuum_write")
        raw.commit()
    except BaseException:
        if raw.in_transaction:
            raw.rollback()
        raise
    return out


def _passive_checkpoint(raw: sqlite3.Connection) -> int:
    """Copy the WAL into the database as far as no reader needs it; the WAL's pages.

    PASSIVE never waits for a reader; what a reader still needs is copied by a
    later checkpoint.
    """
    _busy, pages, _copied = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(pages)


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return  # its caller was cancelled: the write itself has run
    if isinstance(value, asyncio.CancelledError):
        fut.cancel()
    elif ok:
        fut.set_result(value)
    else:
        fut.set_exception(translate(value))


def _presized(fut: asyncio.Future[int]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("journal.wal_presize_failed", error=str(fut.exception()))


def alone(writer: SQLiteThread, reader: SQLiteThread | None) -> bool:
    """Whether nothing else waits: no call pending on either thread, no other callback ready."""
    if writer.pending or (reader is not None and reader.pending):
        return False
    # asyncio's own loop keeps the callbacks ready to run in _ready; another
    # loop (uvloop) does not say, and then every write goes to the thread.
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    return ready is not None and not ready


class WriteGroups:
    """The write transactions of one journal (see the module's docstring).

    Args:
        connections: the journal's writer and reader connections (the reader
            ``None`` if it has none); raises if the journal is closed.
        lock: held while a write transaction is open on the writer connection;
            the journal's transactional steps take it too.
        busy_ms: the writer connection's ``busy_timeout``: a write on the loop's
            thread does not wait for another process (it sets 0), and the next
            call on the writer's thread sets it back (:meth:`on_writer`).
        checkpoints: whether to checkpoint the WAL every :data:`CHECKPOINT_EVERY`
            commits (``False`` for a database with no WAL, ``":memory:"``).
    """

    def __init__(
        self, connections: _Connections, lock: asyncio.Lock, busy_ms: int, *, checkpoints: bool
    ) -> None:
        self._connections = connections
        self.lock = lock
        self._busy_ms = busy_ms
        self._queue: list[_Job] = []
        self._drainer: asyncio.Task[None] | None = None
        self._every = CHECKPOINT_EVERY if checkpoints else 0
        self._commits = 0  # since the last checkpoint was queued
        # A checkpoint, or the WAL's sizing, queued on the writer's thread: the
        # next write waits for it.
        self._checkpoint: asyncio.Future[int] | None = None
        # The writer's busy_timeout was left at 0 by a write on the loop's thread:
        # the next call on the writer's thread sets it back first (on_writer).
        self._busy_off = False

    def committed(self) -> None:
        """Count a commit on the writer, the write lock still held; checkpoint when due.

        The checkpoint is queued on the writer's thread at once, before any
        later call there, so it starts while the event loop goes on with the
        caller's work; the next write waits for it (:meth:`_after_checkpoint`).
        """
        if not self._every:
            return
        self._commits += 1
        if self._commits < self._every:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return  # still running: count on
        self._commits = 0
        try:
            writer, _ = self._connections()
        except Exception:
            return  # closed meanwhile
        # Not through on_writer(): a PASSIVE checkpoint never calls the busy handler.
        self._checkpoint = writer.submit(_passive_checkpoint)
        self._checkpoint.add_done_callback(self._checkpointed)

    def presize_wal(self) -> None:
        """Queue the WAL's sizing (:func:`._sqlite_wal.presize`) on the writer's thread.

        Called once the journal has opened its file, before any write; like a
        checkpoint it runs while the event loop goes on, and the first write
        waits for it. Failing, it is logged and fails no write: the WAL then
        grows commit by commit, as SQLite has it.
        """
        if not self._every:
            return
        writer, _ = self._connections()
        busy_ms = self._busy_ms
        self._checkpoint = writer.submit(lambda raw: presize(raw, PRESIZE_FRAMES, busy_ms))
        self._checkpoint.add_done_callback(_presized)

    def _checkpointed(self, fut: asyncio.Future[int]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            # The commits are durable in the WAL; SQLite's own autocheckpoint
            # remains the backstop, and the next checkpoint is tried again later.
            log.warning("journal.checkpoint_failed", error=str(exc))
            return
        pages = fut.result()
        if pages > 0:  # the WAL's size: set the count of commits to the next one
            self._every = min(max(self._every * CHECKPOINT_PAGES // pages, 8), 1024)

    async def _after_checkpoint(self) -> None:
        """Wait (holding the lock) for a checkpoint still running on the writer's thread."""
        ckpt = self._checkpoint
        if ckpt is not None:
            if not ckpt.done():
                # wait() neither raises the checkpoint's error (logged by
                # _checkpointed) nor cancels it if this caller is cancelled.
                await asyncio.wait([ckpt])
            if self._checkpoint is ckpt:
                self._checkpoint = None

    def on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
        """``fn``, to be queued on the writer's thread now, with its ``busy_timeout`` in force.

        A write on the loop's thread sets the writer's ``busy_timeout`` to 0 and
        leaves it so, sparing a sequence of such writes two ``PRAGMA`` statements
        each; the first call queued on the writer's thread after it sets it back.
        Calls there run in the order they were queued, and the loop's thread uses
        the connection only while none is pending, so clearing the flag here, as
        the call is queued, is exact.
        """
        if not self._busy_off:
            return fn
        self._busy_off = False
        pragma = f"PRAGMA busy_timeout = {self._busy_ms}"

        def restored(raw: sqlite3.Connection) -> T:
            raw.execute(pragma)
            return fn(raw)

        return restored

    def close(self) -> None:
        """Forget a checkpoint in flight: it still runs, before the connection closes."""
        self._checkpoint = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` as (part of) a write transaction; its result once committed."""
        writer, reader = self._connections()
        if self._drainer is None and not self.lock.locked():
            # No write in flight: this one goes at once (on this thread if
            # alone), and writes made meanwhile queue for the next group.
            async with self.lock:  # free: taken without yielding to the loop
                if self._checkpoint is not None:
                    await self._after_checkpoint()
                    writer, reader = self._connections()  # raises if closed meanwhile
                if alone(writer, reader):
                    done, out = self._run_here(writer, fn)
                    if done:
                        self.committed()
                        return cast(T, out)
                try:
                    [(ok, value)] = await writer.call(
                        self.on_writer(lambda raw: _run_group(raw, [fn]))
                    )
                except Exception as exc:
                    raise translate(exc)  # noqa: B904 - translate() sets the cause
                self.committed()
            if ok:
                return cast(T, value)
            raise translate(value)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        job: _Job = (fn, fut)
        self._queue.append(job)
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        try:
            return await fut
        except asyncio.CancelledError:
            # Not taken into a transaction yet: it never runs.
            if any(j is job for j in self._queue):
                self._queue = [j for j in self._queue if j is not job]
            raise

    def _run_here(
        self, writer: SQLiteThread, fn: Callable[[sqlite3.Connection], T]
    ) -> tuple[bool, T | None]:
        """``fn`` as one transaction on this thread: ``(True, result)``.

        ``(False, None)`` when another process holds the file's write lock:
        waiting for it (``busy_timeout``) here would block the event loop, so
        the write waits on the writer's thread instead.
        """

        def run(raw: sqlite3.Connection) -> tuple[bool, T | None]:
            if not self._busy_off:  # left at 0 until a call on the writer's thread
                raw.execute("PRAGMA busy_timeout = 0")
                self._busy_off = True
            try:
                begin(raw)
            except sqlite3.OperationalError:
                return False, None
            try:
                out = fn(raw)
                raw.commit()
            except BaseException:
                if raw.in_transaction:
                    raw.rollback()
                raise
            return True, out

        try:
            return writer.run_here(run)
        except Exception as exc:
            raise translate(exc)  # noqa: B904 - translate() sets the cause

    async def _drain(self) -> None:
        try:
            while self._queue:
                async with self.lock:
                    group, self._queue = self._queue, []
                    group = [j for j in group if not j[1].done()]
                    if group:
                        # Failures reach the group's callers; the next group still runs.
                        with contextlib.suppress(Exception):
                            await self._commit(group)
        finally:
            self._drainer = None

    async def _commit(self, group: list[_Job]) -> None:
        """Run ``group`` (holding the lock) and settle each caller's future."""
        await self._after_checkpoint()
        try:
            writer, reader = self._connections()
        except Exception as exc:  # closed meanwhile
            for _, fut in group:
                _settle(fut, False, exc)
            return
        if len(group) == 1 and alone(writer, reader):
            fn, fut = group[0]
            try:
                done, out = self._run_here(writer, fn)
            except Exception as exc:
                _settle(fut, False, exc)
                return
            if done:
                self.committed()
                _settle(fut, True, out)
                return
        writes = [fn for fn, _ in group]
        try:
            results = await writer.call(self.on_writer(lambda raw: _run_group(raw, writes)))
        except BaseException as exc:
            for _, fut in group:
                _settle(fut, False, exc)
            raise
        self.committed()
        for (_, fut), (ok, value) in zip(group, results, strict=True):
            _settle(fut, ok, value)
