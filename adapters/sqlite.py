"""The embedded default journal: one SQLite file, WAL mode, ``synchronous=FULL``.

Writes go through one connection guarded by a lock, in ``BEGIN IMMEDIATE``
transactions: the fencing check (lease token and expected tail) is an
``UPDATE ... WHERE`` inside the transaction, so a stale writer's events never
land. Writes made while one is in flight share the next transaction, and a
write made while nothing else waits runs on the event loop's own thread (see
:mod:`._sqlite_writes`). Reads use a second connection; WAL lets them run beside
a writer. Several processes may share one file: SQLite's write lock
serialises them and ``busy_timeout`` makes them wait their turn.

:meth:`SQLiteJournal.transaction` opens a write transaction on that same
writer connection for a transactional step: the step's own SQL and its
completion commit together.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from continuum_py.adapters import _file_liveness as file_liveness
from continuum_py.adapters import _sqlite_queues as _queues
from continuum_py.adapters._file_liveness import FileLiveness
from continuum_py.adapters._rules import (
    JournalBase,
    RunFilter,
    admit,
    check_whole_runs,
    duplicate_row,
    lease_lost,
    whole_record,
)
from continuum_py.adapters._schedules import SQLiteSchedules
from continuum_py.adapters._sqlite_append import (
    NOW,
    RUN_COLS,
    TERMINAL_SQL,
    UPSERT_SNAPSHOT,
    deliver,
    get,
    insert_run,
    row,
    write_batches,
)
from continuum_py.adapters._sqlite_open import MODES, open_file
from continuum_py.adapters._sqlite_open import URL_OPTIONS as URL_OPTIONS
from continuum_py.adapters._sqlite_open import options_from_url as options_from_url
from continuum_py.adapters._sqlite_open import path_from_url as path_from_url
from continuum_py.adapters._sqlite_queues import WAITING_ENTRY
from continuum_py.adapters._sqlite_schema import _MIGRATIONS as _MIGRATIONS
from continuum_py.adapters._sqlite_schema import MIGRATIONS as MIGRATIONS
from continuum_py.adapters._sqlite_schema import STORAGE_VERSION as STORAGE_VERSION
from continuum_py.adapters._sqlite_step import TransactionConnection
from continuum_py.adapters._sqlite_thread import SQLiteThread
from continuum_py.adapters._sqlite_watch import ChangeWatch
from continuum_py.adapters._sqlite_writes import WriteGroups
from continuum_py.adapters._sqlite_writes import begin as _begin
from continuum_py.errors import (
    ConfigurationError,
    JournalError,
    JournalUnavailable,
    RunAlreadyFinished,
    RunIdTaken,
    RunNotFound,
)
from continuum_py.journal import (
    RUN_COLUMNS,
    AppendBatch,
    InboxMessage,
    Lease,
    NewRun,
    RunRecord,
    RunStatus,
    Snapshot,
    StoredEvent,
    WholeRun,
    list_runs_sql,
    record_from_row,
)
from continuum_py.queues import Queue, QueueEntry, QueueLoad

__all__ = ["SQLiteJournal", "SQLiteTransaction", "TransactionConnection"]

T = TypeVar("T")

# Engine-clock time for wake_at (journal clock when the caller gives none).
_WAKE_NOW = f"COALESCE(:now, {NOW})"
# continuum_dead(owner): the holder registered its liveness and its process is gone.
_LEASE_FREE = (
    f"(lease_owner IS NULL OR lease_expires_at <= {NOW} OR (:own AND lease_owner = :worker) "
    "OR continuum_dead(lease_owner))"
)
# One branch per way a run becomes runnable, each read from the index that
# bounds it, so finished runs and suspended runs that still wait are never
# scanned. INDEXED BY because the planner, with or without ANALYZE, prefers
# runs_by_status (it yields created_at order) and then reads every suspended
# run to find the few that are due or have mail.
_RUNNABLE = f"""
SELECT run_id, created_at FROM runs INDEXED BY runs_claimable
 WHERE status = 'pending' AND wake_at IS NULL AND {_LEASE_FREE} AND {WAITING_ENTRY}
UNION
SELECT run_id, created_at FROM runs INDEXED BY runs_by_wake
 WHERE status = 'pending' AND wake_at <= {_WAKE_NOW} AND {_LEASE_FREE} AND {WAITING_ENTRY}
UNION
SELECT run_id, created_at FROM runs INDEXED BY runs_by_status
 WHERE status = 'running' AND {_LEASE_FREE}
UNION
SELECT run_id, created_at FROM runs INDEXED BY runs_by_wake
 WHERE status = 'suspended' AND wake_at <= {_WAKE_NOW}
UNION
SELECT run_id, created_at FROM runs INDEXED BY runs_unseen
 WHERE status = 'suspended' AND inbox_last > inbox_seen
ORDER BY created_at, run_id LIMIT :limit
"""


class SQLiteTransaction:
    """One open transaction of :meth:`SQLiteJournal.transaction`.

    Attributes:
        connection: the :class:`TransactionConnection` for the step's own SQL.
        refused: whether an :meth:`append` was refused (the transaction then
            rolls back).
    """

    def __init__(self, journal: SQLiteJournal, connection: TransactionConnection) -> None:
        self.connection = connection
        self.refused = False
        self._journal = journal

    async def append(self, batch: AppendBatch) -> JournalError | None:
        """Write ``batch`` (fenced) inside this transaction; durable only at commit.

        Returns:
            ``None``, or the ``LeaseLost``/``JournalConflict`` that refused it; a
            refused batch rolls the whole transaction back at its end.
        """
        if not self.connection._open:
            raise RuntimeError("this SQLite transaction is over")
        [err] = await self._journal._call(lambda raw: write_batches(raw, [batch]))
        if err is not None:
            self.refused = True
        return err


class SQLiteJournal(SQLiteSchedules, JournalBase):
    """A :class:`~continuum_py.journal.Journal` in one SQLite file.

    Args:
        path: the database file (its folder must exist), or ``":memory:"``.
        busy_timeout: seconds to wait for another process's write lock.
        mode: ``"rwc"`` (default) reads and writes, creating the file if
            missing; ``"rw"`` reads and writes an existing file; ``"ro"``
            reads an existing file and refuses every write with
            ``ConfigurationError``, so it works on a file this process may
            not write.

    Raises:
        ConfigurationError: an unknown ``mode``, or ``"rw"``/``"ro"`` with
            ``":memory:"``.

    Attributes:
        read_only: whether the journal was opened with ``mode="ro"``.
    """

    def __init__(self, path: str, *, busy_timeout: float = 10.0, mode: str = "rwc") -> None:
        self._w: SQLiteThread | None = None
        self._r: SQLiteThread | None = None
        if mode not in MODES:
            raise ConfigurationError(
                f"SQLite journal mode {mode!r} is not one of {', '.join(MODES)}"
            )
        if path == ":memory:" and mode != "rwc":
            raise ConfigurationError(f"a :memory: SQLite journal cannot be opened with mode={mode}")
        self.path = path
        self.mode = mode
        self.read_only = mode == "ro"
        self._busy_ms = int(busy_timeout * 1000)
        # Every write transaction, ordinary or a step's own (transaction()),
        # runs on the one writer connection while holding this lock. A second
        # connection with BEGIN IMMEDIATE would also work, but SQLite allows
        # one writer per file anyway: other writers would spin in busy_timeout
        # on a thread each and fail with SQLITE_BUSY if a step's SQL outlasted
        # it. Queued on this lock they simply wait, in order, without polling.
        self._lock = asyncio.Lock()
        self._writes = WriteGroups(
            self._connections, self._lock, self._busy_ms, checkpoints=path != ":memory:"
        )
        self._tx_task: asyncio.Task[Any] | None = None
        self._turn = 0  # where this journal's claims start their round of queues
        self.served_queues: frozenset[str] | None = None
        self._watch: ChangeWatch | None = None
        self._liveness = (
            FileLiveness(Path(f"{path}-workers"))
            if path != ":memory:" and FileLiveness.supported()
            else None
        )

    @classmethod
    def from_url(cls, url: str, *, read_only: bool = False) -> SQLiteJournal:
        """Open from a ``sqlite:///path`` URL (call :meth:`connect` or use ``async with``).

        Args:
            url: ``sqlite:///relative.db`` or ``sqlite:////abs/path.db``, with
                an optional ``?mode=rwc|rw|ro``.
            read_only: open with ``mode="ro"`` whatever the URL says.

        Raises:
            ConfigurationError: a malformed URL or an unsupported option.
        """
        path, options = path_from_url(url), options_from_url(url)
        return cls(path, mode="ro" if read_only else options.get("mode", "rwc"))

    def __repr__(self) -> str:
        return f"SQLiteJournal({self.path!r})"

    def _left_open(self) -> bool:
        return self._w is not None or self._r is not None

    async def connect(self) -> None:
        """Open the file, create the tables or upgrade an older layout in place.

        With ``mode="ro"`` nothing is created or upgraded: the file is only read.

        Another process opening or upgrading the same file at the same moment can
        hold it briefly in a way SQLite's busy handler does not wait for (the
        switch to WAL, WAL recovery): such a "locked" or "busy" answer is retried
        for up to ``busy_timeout``, then raised as ``JournalUnavailable``.

        Raises:
            ConfigurationError: the folder is missing; with ``mode="rw"`` or
                ``"ro"`` the file is missing; the file, its folder or its
                ``-wal``/``-shm`` files may not be read (or, unless read-only,
                written) by this process; a read-only open of a file that holds
                no journal or an older layout it cannot upgrade.
            JournalCorrupt: the file is not a SQLite database.
            SchemaTooNew: the file was written by a newer continuum_py.
        """
        deadline = asyncio.get_running_loop().time() + self._busy_ms / 1000
        delay = 0.01
        while True:
            try:
                await self._connect_once()
                return
            except JournalUnavailable:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def _connect_once(self) -> None:
        if self._w is not None or self._r is not None:
            return
        self._w, self._r = await open_file(self.path, self.mode, self._busy_ms)
        live = self._liveness
        for conn, memo in ((self._w, True), (self._r, False)):
            if conn is not None:
                await conn.call(file_liveness.sql_function(live, memo=memo))
        if self._w is not None:
            self._writes.presize_wal()  # in the background: the first write waits for it

    @property
    def _wc(self) -> SQLiteThread:
        if self._w is None:
            if self._r is not None:
                raise ConfigurationError(
                    f"SQLite journal {self.path!r} is open read-only (mode=ro); "
                    "it records nothing, nothing was written"
                )
            raise ConfigurationError(
                "SQLiteJournal is not connected; use `async with` or connect()"
            )
        return self._w

    @property
    def _rc(self) -> SQLiteThread:
        return self._r if self._r is not None else self._wc

    async def _fetchall(self, sql: str, params: Any = ()) -> list[Any]:
        try:
            return await self._rc.call(lambda c: c.execute(sql, params).fetchall())
        except sqlite3.OperationalError as exc:
            raise JournalUnavailable(f"SQLite read failed: {exc}") from exc

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer connection in its thread, translating driver errors.

        One hop to the writer thread per call, not one per statement: each hop
        costs about as much as the fsync itself, and a durable step should cost
        one commit, not three.
        """
        writer = self._wc
        try:
            return await writer.call(self._writes.on_writer(fn))
        except sqlite3.IntegrityError as exc:
            raise duplicate_row(exc) from exc
        except sqlite3.OperationalError as exc:
            raise JournalUnavailable(f"SQLite write failed: {exc}") from exc

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` as (part of) one write transaction: see :mod:`._sqlite_writes`."""
        if self._tx_task is not None and self._tx_task is asyncio.current_task():
            raise RuntimeError(
                "this task holds an open SQLiteJournal.transaction(); write through its "
                "append() instead (the journal's own writes wait for the transaction to end)"
            )
        return await self._writes.run(fn)

    def _connections(self) -> tuple[SQLiteThread, SQLiteThread | None]:
        return self._wc, self._r

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SQLiteTransaction]:
        """Open a write transaction for a transactional step.

        Yields a :class:`SQLiteTransaction`: its ``connection`` runs the step's
        SQL, its ``append`` writes the step's completion, both in the same
        transaction. Commits on a clean exit unless an append was refused;
        rolls back on an exception or a refused append. While it is open the
        journal's other writes (any run) wait for it; reads go on and do not
        see it (except with ``":memory:"``, where one connection does both).

        Raises:
            RuntimeError: on a journal write by the task holding the transaction
                (it would wait for itself); use the transaction's ``append``.
        """
        if self._tx_task is not None and self._tx_task is asyncio.current_task():
            raise RuntimeError("SQLiteJournal.transaction() does not nest")
        async with self._lock:
            conn = TransactionConnection(self._wc)
            tx = SQLiteTransaction(self, conn)
            await self._call(_begin)
            self._tx_task = asyncio.current_task()
            try:
                try:
                    yield tx
                except BaseException:
                    await self._end(commit=False)
                    raise
                await self._end(commit=not tx.refused)
            finally:
                conn._open = False
                self._tx_task = None

    async def _end(self, *, commit: bool) -> None:
        def end(raw: sqlite3.Connection) -> None:
            if not commit:
                raw.rollback()
                return
            try:
                raw.commit()
            except BaseException:
                raw.rollback()
                raise

        # Shielded: a cancelled step still ends its transaction. The call is
        # queued on the connection's thread (which runs calls in order) before
        # the lock lets the next writer in.
        await asyncio.shield(self._call(end))
        if commit:
            self._writes.committed()

    # ---- runs ----
    async def start_run(
        self, run: NewRun, *, claim_for: str | None = None, ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None, bool]:

        def tx(conn: sqlite3.Connection) -> tuple[RunRecord | None, Lease | None, bool]:
            created = insert_run(conn, run)
            lease = None
            if created and claim_for is not None:
                rows = conn.execute(
                    "UPDATE runs SET status = 'running', lease_owner = ?, "
                    f"lease_token = lease_token + 1, lease_expires_at = {NOW} + ?, "
                    f"wake_at = NULL WHERE run_id = ? AND (wake_at IS NULL OR wake_at <= {NOW}) "
                    "RETURNING lease_token, lease_expires_at",
                    (claim_for, ttl, run.run_id),
                ).fetchall()
                if rows:
                    lease = Lease(
                        run_id=run.run_id,
                        worker_id=claim_for,
                        token=rows[0][0],
                        expires_at=rows[0][1],
                    )
            return get(conn, run.run_id), lease, created

        rec, lease, created = await self._tx(tx)
        assert rec is not None
        return rec, lease, created

    async def put_runs(self, runs: Sequence[WholeRun]) -> None:
        """Create whole runs in one transaction; see :class:`~continuum_py.journal.JournalImport`."""
        check_whole_runs(runs)

        def tx(conn: sqlite3.Connection) -> None:
            now = conn.execute(f"SELECT {NOW}").fetchone()[0]
            for run in runs:
                rec = whole_record(run, now)
                cur = conn.execute(
                    f"INSERT INTO runs ({RUN_COLS}, parent_position) "
                    f"VALUES ({', '.join('?' * (len(RUN_COLUMNS) + 1))}) "
                    "ON CONFLICT (run_id) DO NOTHING",
                    (*row(rec), run.parent_position),
                )
                if cur.rowcount != 1:
                    raise RunIdTaken(run.run_id)  # rolls the whole transaction back
                conn.executemany(
                    "INSERT INTO events (run_id, seq, kind, schema, data) VALUES (?, ?, ?, ?, ?)",
                    [(e.run_id, e.seq, e.kind, e.schema, e.data) for e in run.events],
                )

        await self._tx(tx)

    async def forks(self, run_id: str) -> list[RunRecord]:
        """The runs forked from ``run_id``, oldest first."""
        rows = await self._fetchall(
            f"SELECT {RUN_COLS} FROM runs WHERE forked_from = ? ORDER BY created_at, run_id",
            (run_id,),
        )
        return [record_from_row(r) for r in rows]

    async def get_run(self, run_id: str) -> RunRecord | None:
        rows = await self._fetchall(f"SELECT {RUN_COLS} FROM runs WHERE run_id = ?", (run_id,))
        return record_from_row(rows[0]) if rows else None

    async def _select_runs(self, f: RunFilter) -> list[RunRecord]:
        tail, params = list_runs_sql(**msgspec.structs.asdict(f), param=lambda _: "?")
        rows = await self._fetchall(f"SELECT {RUN_COLS} FROM runs{tail}", params)
        return [record_from_row(r) for r in rows]

    # ---- events ----
    async def append(self, batches: Sequence[AppendBatch]) -> list[JournalError | None]:
        return await self._tx(lambda conn: write_batches(conn, batches))

    async def load(self, run_id: str, *, after_seq: int = 0) -> list[StoredEvent]:
        rows = await self._fetchall(
            "SELECT seq, kind, schema, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq",
            (run_id, after_seq),
        )
        if not rows and after_seq == 0 and await self.get_run(run_id) is None:
            raise RunNotFound(run_id)
        return [
            StoredEvent(run_id=run_id, seq=r[0], kind=r[1], schema=r[2], data=bytes(r[3]))
            for r in rows
        ]

    async def load_with_snapshot(self, run_id: str) -> tuple[Snapshot | None, list[StoredEvent]]:
        """The newest snapshot and the events after it, in one hop to the reader thread."""

        def read(c: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            snap = c.execute(
                "SELECT seq, schema, data FROM snapshots WHERE run_id = ?", (run_id,)
            ).fetchall()
            rows = c.execute(
                "SELECT seq, kind, schema, data FROM events WHERE run_id = ? AND seq > ? "
                "ORDER BY seq",
                (run_id, snap[0][0] if snap else 0),
            ).fetchall()
            return snap, rows

        try:
            snap_rows, rows = await self._rc.call(read)
        except sqlite3.OperationalError as exc:
            raise JournalUnavailable(f"SQLite read failed: {exc}") from exc
        snap = None
        if snap_rows:
            seq, schema, data = snap_rows[0]
            snap = Snapshot(run_id=run_id, seq=seq, schema=schema, data=bytes(data))
        elif not rows and await self.get_run(run_id) is None:
            raise RunNotFound(run_id)
        return snap, [
            StoredEvent(run_id=run_id, seq=r[0], kind=r[1], schema=r[2], data=bytes(r[3]))
            for r in rows
        ]

    async def _snapshot(self, run_id: str) -> Snapshot | None:
        rows = await self._fetchall(
            "SELECT seq, schema, data FROM snapshots WHERE run_id = ?", (run_id,)
        )
        if not rows:
            return None
        seq, schema, data = rows[0]
        return Snapshot(run_id=run_id, seq=seq, schema=schema, data=bytes(data))

    async def take_snapshot(self, lease: Lease, snapshot: Snapshot) -> JournalError | None:
        def tx(conn: sqlite3.Connection) -> JournalError | None:
            lost = lease_lost(get(conn, lease.run_id), lease)
            if lost is not None:
                return lost
            conn.execute(
                UPSERT_SNAPSHOT, (snapshot.run_id, snapshot.seq, snapshot.schema, snapshot.data)
            )
            return None

        return await self._tx(tx)

    # ---- leases ----
    async def _claim(
        self, worker_id: str, ttl: float, limit: int, reclaim_own: bool, now: float | None
    ) -> list[Lease]:
        params = {
            "worker": worker_id,
            "ttl": ttl,
            "limit": limit,
            "own": int(reclaim_own),
            "now": now,
        }

        def tx(conn: sqlite3.Connection) -> list[Lease]:
            if self._liveness is not None:
                self._liveness.memo = {}  # one look at each worker per claim (writer thread)
            admitted = self._admit(conn, worker_id, ttl, limit, now)
            params["limit"] = limit - len(admitted)
            rows = conn.execute(
                "UPDATE runs SET status = 'running', lease_owner = :worker, "
                f"lease_token = lease_token + 1, lease_expires_at = {NOW} + :ttl, "
                f"updated_at = {NOW}, wake_at = NULL "
                f"WHERE run_id IN (SELECT run_id FROM ({_RUNNABLE})) "
                "RETURNING run_id, lease_token, lease_expires_at, created_at",
                params,
            ).fetchall()
            rows.sort(key=lambda r: (r[3], r[0]))
            return [
                Lease(run_id=r[0], worker_id=worker_id, token=r[1], expires_at=r[2])
                for r in admitted + rows
            ]

        return await self._tx(tx)

    def _admit(
        self, conn: sqlite3.Connection, worker_id: str, ttl: float, limit: int, now: float | None
    ) -> list[Any]:
        """Admit and lease the queued runs the queues' limits let in (in the claim's transaction)."""
        _queues.begin(conn)
        if now is None:
            now = conn.execute(f"SELECT {NOW}").fetchone()[0]
        assert now is not None
        loads = _queues.loads(
            conn, worker_id, now, self.served_queues, waiting_only=True, limit=limit, tidy=True
        )
        self._turn += 1
        run_ids = admit(loads, limit, self._turn)
        _queues.mark_admitted(conn, run_ids, now)
        return [
            conn.execute(
                "UPDATE runs SET status = 'running', lease_owner = ?, "
                f"lease_token = lease_token + 1, lease_expires_at = {NOW} + ?, "
                f"updated_at = {NOW}, wake_at = NULL, queued_waiting = 0 WHERE run_id = ? "
                "RETURNING run_id, lease_token, lease_expires_at, created_at",
                (worker_id, ttl, r),
            ).fetchone()
            for r in run_ids
        ]

    # ---- queues ----
    async def declare_queue(self, queue: Queue) -> None:
        """Store ``queue``'s definition (replacing one of the same name)."""
        await self._tx(lambda conn: _queues.declare(conn, queue))

    async def stored_queues(self) -> list[Queue]:
        """Every stored queue definition, by name."""
        return await self._read_queues(_queues.stored, [])

    async def start_queued(
        self, run: NewRun, queue: str, *, priority: int = 0, dedup_key: str | None = None
    ) -> tuple[RunRecord, bool]:
        """Create ``run`` waiting in ``queue``; see :class:`~continuum_py.journal.QueueJournal`."""

        def tx(conn: sqlite3.Connection) -> tuple[RunRecord | None, bool]:
            _queues.begin(conn)
            existing = get(conn, run.run_id)
            if existing is not None:
                return existing, False
            holder = _queues.insert_entry(conn, run.run_id, queue, priority, dedup_key)
            if holder is not None:
                return get(conn, holder), False
            return get(conn, run.run_id) if insert_run(conn, run, queued=True) else None, True

        rec, created = await self._tx(tx)
        assert rec is not None
        return rec, created

    async def queue_loads(self, *, now: float | None = None) -> list[QueueLoad]:
        """Every stored queue's load at ``now`` (default: the journal clock)."""

        def read(conn: sqlite3.Connection) -> list[QueueLoad]:
            at = conn.execute(f"SELECT {NOW}").fetchone()[0] if now is None else now
            return _queues.loads(conn, None, at, None, waiting_only=False, limit=None)

        return await self._read_queues(read, [])

    async def queue_entry(self, run_id: str) -> QueueEntry | None:
        """``(queue, priority, dedup_key, admitted)`` of a queued run, or ``None``."""
        return await self._read_queues(lambda conn: _queues.entry(conn, run_id), None)

    async def _read_queues(self, fn: Callable[[sqlite3.Connection], T], empty: T) -> T:
        """``fn`` on the reader; ``empty`` from a file older than queues (a read-only open)."""
        try:
            return await self._rc.call(fn)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return empty
            raise JournalUnavailable(f"SQLite read failed: {exc}") from exc

    async def renew(self, leases: Sequence[Lease], *, ttl: float) -> list[Lease | None]:
        def tx(conn: sqlite3.Connection) -> list[Lease | None]:
            out: list[Lease | None] = []
            for lease in leases:
                row = conn.execute(
                    f"UPDATE runs SET lease_expires_at = {NOW} + ? WHERE run_id = ? "
                    "AND lease_token = ? AND lease_owner IS NOT NULL RETURNING lease_expires_at",
                    (ttl, lease.run_id, lease.token),
                ).fetchone()
                out.append(
                    None
                    if row is None
                    else Lease(
                        run_id=lease.run_id,
                        worker_id=lease.worker_id,
                        token=lease.token,
                        expires_at=row[0],
                    )
                )
            return out

        return await self._tx(tx)

    async def seize(self, run_id: str, worker_id: str, *, ttl: float) -> Lease | None:
        def tx(conn: sqlite3.Connection) -> Lease | None:
            got = conn.execute(
                f"UPDATE runs SET lease_owner = ?, lease_token = lease_token + 1, "
                f"lease_expires_at = {NOW} + ?, updated_at = {NOW} "
                f"WHERE run_id = ? AND status NOT IN ({TERMINAL_SQL}) "
                "RETURNING lease_token, lease_expires_at",
                (worker_id, ttl, run_id),
            ).fetchall()
            if got:
                return Lease(
                    run_id=run_id, worker_id=worker_id, token=got[0][0], expires_at=got[0][1]
                )
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise RunNotFound(run_id)
            return None

        return await self._tx(tx)

    async def release(self, lease: Lease) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, "
                "status = CASE status WHEN 'running' THEN 'pending' ELSE status END, "
                f"updated_at = {NOW} WHERE run_id = ? AND lease_token = ? AND lease_owner IS NOT NULL",
                (lease.run_id, lease.token),
            )
            return cur.rowcount == 1

        return await self._tx(tx)

    async def find_runnable(self, *, limit: int = 100, now: float | None = None) -> list[str]:
        rows = await self._fetchall(
            f"SELECT run_id FROM ({_RUNNABLE}) ORDER BY created_at, run_id",
            {"own": 0, "worker": "", "limit": limit, "now": now},
        )
        return [r[0] for r in rows]

    async def set_status(
        self, run_id: str, status: RunStatus, *, reason: str | None = None
    ) -> bool:
        value = RunStatus(status).value

        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE runs SET status = ?, reason = ?, lease_owner = NULL, lease_expires_at = NULL, "
                "wake_at = CASE WHEN ? = 'suspended' THEN wake_at END, "
                f"updated_at = {NOW} WHERE run_id = ? AND status NOT IN ({TERMINAL_SQL})",
                (value, reason, value, run_id),
            )
            return cur.rowcount == 1

        return await self._tx(tx)

    # ---- inbox ----
    async def send(self, run_id: str, kind: str, name: str, data: bytes) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            msg_id = deliver(conn, run_id, kind, name, data, only_unfinished=True)
            if msg_id is not None:
                return msg_id
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            raise RunAlreadyFinished(run_id, row[0], what=kind)

        return await self._tx(tx)

    async def inbox(self, run_id: str, *, after_id: int = 0) -> list[InboxMessage]:
        rows = await self._fetchall(
            "SELECT id, kind, name, data, at FROM inbox WHERE run_id = ? AND id > ? ORDER BY id",
            (run_id, after_id),
        )
        return [
            InboxMessage(run_id=run_id, id=r[0], kind=r[1], name=r[2], data=bytes(r[3]), at=r[4])
            for r in rows
        ]

    async def unseen_inbox(self, run_ids: Sequence[str]) -> list[str]:
        unseen: set[str] = set()
        ids = list(dict.fromkeys(run_ids))
        # Chunked: SQLite caps the number of parameters in one statement.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = await self._fetchall(
                f"SELECT run_id FROM runs WHERE run_id IN ({marks}) AND inbox_last > inbox_seen",
                chunk,
            )
            unseen.update(r[0] for r in rows)
        return [r for r in run_ids if r in unseen]

    async def next_wake_at(self) -> float | None:
        # One MIN per status, each read from the end of runs_by_wake.
        rows = await self._fetchall(
            "SELECT MIN(w) FROM ("
            "SELECT MIN(wake_at) AS w FROM runs WHERE status = 'pending' AND wake_at IS NOT NULL "
            "UNION ALL "
            "SELECT MIN(wake_at) FROM runs WHERE status = 'suspended' AND wake_at IS NOT NULL)"
        )
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    # ---- liveness ----
    async def hold_liveness(self, worker_id: str) -> bool:
        """Hold ``worker_id``'s file lock; see :class:`~continuum_py.journal.LivenessJournal`.

        A ``:memory:`` journal has nobody else to tell: always ``True`` there;
        a read-only one runs no worker: ``False``, and nothing is created.
        """
        if self.read_only:
            return False
        if self._liveness is None:
            return True
        return await file_liveness.hold(self._liveness, worker_id)

    async def liveness_held(self, worker_id: str) -> bool:
        """Whether this journal holds ``worker_id``'s file lock (a file lock is never lost)."""
        return self._liveness.holds(worker_id) if self._liveness is not None else True

    async def release_liveness(self, worker_id: str, *, forget: bool = False) -> None:
        """Drop ``worker_id``'s file lock, as its process ending would (``forget``: and its file)."""
        if self._liveness is not None:
            self._liveness.release(worker_id, forget=forget)

    async def dead_workers(self) -> list[str]:
        """Registered workers whose lock is free and who lease running runs."""

        async def leasing(ids: list[str]) -> set[str]:
            marks = ", ".join("?" * len(ids))
            rows = await self._fetchall(
                "SELECT DISTINCT lease_owner FROM runs INDEXED BY runs_by_status "
                f"WHERE status = 'running' AND lease_owner IN ({marks})",
                ids,
            )
            return {r[0] for r in rows}

        return await file_liveness.dead_workers(self._liveness, leasing)

    async def watch_changes(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` soon after another process commits to the file, until :meth:`aclose`.

        A worker then looks for work at once instead of at its next poll: a
        run started by another process starts within about 50 ms (see
        ``_sqlite_watch``). Nothing to watch in a ``:memory:`` database, which
        no other process can open.
        """
        if self.path == ":memory:":
            return
        if self._watch is None:
            self._watch = ChangeWatch(self._wc)
        await self._watch.add(callback)

    async def aclose(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            await watch.close()
        self._writes.close()
        if self._liveness is not None:
            self._liveness.release_all()
        for attr in ("_r", "_w"):
            conn = getattr(self, attr)
            setattr(self, attr, None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
