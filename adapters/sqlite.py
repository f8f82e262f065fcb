"""The embedded default journal: one SQLite file, WAL mode, ``synchronous=FULL``.

Writes go through one connection guarded by a lock, each append in one
``BEGIN IMMEDIATE`` transaction: the fencing check (lease token and expected
tail) is an ``UPDATE ... WHERE`` inside that transaction, so a stale writer's
events never land. Reads use a second connection; WAL lets them run beside
a writer. Several processes may share one file: SQLite's write lock
serialises them and ``busy_timeout`` makes them wait their turn.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aiosqlite

from continuum_py.errors import (
    ConfigurationError,
    JournalConflict,
    JournalCorrupt,
    JournalError,
    JournalUnavailable,
    LeaseLost,
    RunNotFound,
    SchemaTooNew,
)
from continuum_py.journal import (
    AppendBatch,
    Lease,
    NewRun,
    RunRecord,
    RunStatus,
    Snapshot,
    StoredEvent,
)

__all__ = ["SQLiteJournal"]

T = TypeVar("T")

STORAGE_VERSION = 1
"""Version of the table layout, kept in ``PRAGMA user_version``."""

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_seq INTEGER NOT NULL,
    lease_owner TEXT,
    lease_token INTEGER NOT NULL DEFAULT 0,
    lease_expires_at REAL,
    wake_at REAL,
    outcome BLOB,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    schema INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    run_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    schema INTEGER NOT NULL,
    data BLOB NOT NULL
);
PRAGMA user_version = {STORAGE_VERSION};
"""

_RUN_COLS = (
    "run_id, workflow, status, created_at, updated_at, last_seq, lease_owner, "
    "lease_token, lease_expires_at, outcome, reason"
)

_RUNNABLE = (
    f"status IN ('pending', 'running') AND (wake_at IS NULL OR wake_at <= {_NOW}) AND "
    f"(lease_owner IS NULL OR lease_expires_at <= {_NOW} OR (:own AND lease_owner = :worker))"
)


def _record(row: Any) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        workflow=row[1],
        status=RunStatus(row[2]),
        created_at=row[3],
        updated_at=row[4],
        last_seq=row[5],
        lease_owner=row[6],
        lease_token=row[7],
        lease_expires_at=row[8],
        outcome=row[9],
        reason=row[10],
    )


def path_from_url(url: str) -> str:
    """The file path of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigurationError(f"not a SQLite URL: {url!r}")
    if parts.netloc:
        raise ConfigurationError(
            f"SQLite URL {url!r} has a host part; use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not path:
        raise ConfigurationError(f"SQLite URL {url!r} names no file; e.g. sqlite:///runs.db")
    return path


class SQLiteJournal:
    """A :class:`~continuum_py.journal.Journal` in one SQLite file.

    Args:
        path: the database file (created if missing; its folder must exist), or
            ``":memory:"``.
        busy_timeout: seconds to wait for another process's write lock.
    """

    capabilities = frozenset({"multi_process"})

    def __init__(self, path: str, *, busy_timeout: float = 10.0) -> None:
        self.path = path
        self._busy_ms = int(busy_timeout * 1000)
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None

    @classmethod
    def from_url(cls, url: str) -> SQLiteJournal:
        """Open from a ``sqlite:///path`` URL (call :meth:`connect` or use ``async with``)."""
        return cls(path_from_url(url))

    async def __aenter__(self) -> SQLiteJournal:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open the file, create or check the tables."""
        if self._w is not None:
            return
        if self.path != ":memory:":
            folder = os.path.dirname(os.path.abspath(self.path))  # noqa: ASYNC240 - no I/O
            if not os.path.isdir(folder):  # noqa: ASYNC240 - one stat at connect
                raise ConfigurationError(
                    f"cannot open SQLite journal {self.path!r}: folder {folder!r} does not exist"
                )
        try:
            self._w = await aiosqlite.connect(self.path, isolation_level="IMMEDIATE")
            # Refuse a newer layout before anything writes to the file (switching to
            # WAL rewrites its header), so such a file is left byte-for-byte untouched.
            await self._w.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            await self._version(self._w)
            await self._setup(self._w)
            await self._migrate(self._w)
            if self.path != ":memory:":
                self._r = await aiosqlite.connect(self.path, isolation_level=None)
                await self._setup(self._r)
        except sqlite3.DatabaseError as exc:
            await self.aclose()
            raise JournalCorrupt(
                None, None, f"{self.path!r} is not a usable SQLite database ({exc})"
            ) from exc
        except BaseException:
            await self.aclose()
            raise

    async def _setup(self, conn: aiosqlite.Connection) -> None:
        await conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        if self.path != ":memory:":
            await conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk when it returns (WAL's NORMAL may lose the last ones).
        await conn.execute("PRAGMA synchronous = FULL")

    async def _version(self, conn: aiosqlite.Connection) -> int:
        """The file's layout version; raises ``SchemaTooNew`` if newer than ours."""
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > STORAGE_VERSION:
            raise SchemaTooNew(None, None, version, STORAGE_VERSION)
        return version

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        if await self._version(conn) < STORAGE_VERSION:
            await conn.executescript("BEGIN IMMEDIATE;\n" + _SCHEMA + "\nCOMMIT;")

    @property
    def _wc(self) -> aiosqlite.Connection:
        if self._w is None:
            raise ConfigurationError(
                "SQLiteJournal is not connected; use `async with` or connect()"
            )
        return self._w

    @property
    def _rc(self) -> aiosqlite.Connection:
        return self._r if self._r is not None else self._wc

    async def _fetchall(self, sql: str, params: Any = ()) -> list[Any]:
        try:
            return list(await self._rc.execute_fetchall(sql, params))
        except sqlite3.OperationalError as exc:
            raise JournalUnavailable(f"SQLite read failed: {exc}") from exc

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` as one write transaction in the connection's thread.

        The whole transaction is one hop to aiosqlite's thread (its
        ``_execute``), not one per statement: each hop costs about as much as
        the fsync itself, and a durable step should cost one commit, not three.
        """
        aconn = self._wc
        raw = aconn._conn

        def run() -> T:
            try:
                out = fn(raw)
                raw.commit()
                return out
            except BaseException:
                raw.rollback()
                raise

        try:
            result: T = await aconn._execute(run)  # type: ignore[no-untyped-call]
            return result
        except sqlite3.IntegrityError as exc:
            raise JournalConflict("?", -1, None) from exc
        except sqlite3.OperationalError as exc:
            raise JournalUnavailable(f"SQLite write failed: {exc}") from exc

    # ---- runs ----
    async def start_run(
        self, run: NewRun, *, claim_for: str | None = None, ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None, bool]:
        ev = run.first_event

        def tx(conn: sqlite3.Connection) -> tuple[RunRecord | None, Lease | None, bool]:
            cur = conn.execute(
                "INSERT INTO runs (run_id, workflow, status, created_at, updated_at, last_seq, wake_at) "
                f"VALUES (?, ?, 'pending', {_NOW}, {_NOW}, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                (run.run_id, run.workflow, ev.seq, run.wake_at),
            )
            created = cur.rowcount == 1
            lease = None
            if created:
                conn.execute(
                    "INSERT INTO events (run_id, seq, kind, schema, data) VALUES (?, ?, ?, ?, ?)",
                    (ev.run_id, ev.seq, ev.kind, ev.schema, ev.data),
                )
                if claim_for is not None:
                    row = conn.execute(
                        "UPDATE runs SET status = 'running', lease_owner = ?, "
                        f"lease_token = lease_token + 1, lease_expires_at = {_NOW} + ? "
                        f"WHERE run_id = ? AND (wake_at IS NULL OR wake_at <= {_NOW}) "
                        "RETURNING lease_token, lease_expires_at",
                        (claim_for, ttl, run.run_id),
                    ).fetchone()
                    if row is not None:
                        lease = Lease(
                            run_id=run.run_id, worker_id=claim_for, token=row[0], expires_at=row[1]
                        )
            return _get(conn, run.run_id), lease, created

        rec, lease, created = await self._tx(tx)
        assert rec is not None
        return rec, lease, created

    async def get_run(self, run_id: str) -> RunRecord | None:
        rows = await self._fetchall(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = ?", (run_id,))
        return _record(rows[0]) if rows else None

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 1000
    ) -> list[RunRecord]:
        if status is None:
            rows = await self._fetchall(
                f"SELECT {_RUN_COLS} FROM runs ORDER BY created_at, run_id LIMIT ?", (limit,)
            )
        else:
            rows = await self._fetchall(
                f"SELECT {_RUN_COLS} FROM runs WHERE status = ? ORDER BY created_at, run_id LIMIT ?",
                (RunStatus(status).value, limit),
            )
        return [_record(r) for r in rows]

    # ---- events ----
    async def append(self, batches: Sequence[AppendBatch]) -> list[JournalError | None]:
        def tx(conn: sqlite3.Connection) -> list[JournalError | None]:
            results: list[JournalError | None] = []
            rows: list[tuple[str, int, str, int, bytes]] = []
            snaps: list[tuple[str, int, int, bytes]] = []
            for b in batches:
                run_id = b.lease.run_id
                bad = _check_seqs(b)
                if bad is not None:
                    results.append(bad)
                    continue
                new_last = b.expected_seq + len(b.events)
                if b.status is None:
                    cur = conn.execute(
                        f"UPDATE runs SET last_seq = ?, updated_at = {_NOW} WHERE run_id = ? "
                        "AND lease_token = ? AND lease_owner IS NOT NULL AND last_seq = ?",
                        (new_last, run_id, b.lease.token, b.expected_seq),
                    )
                else:
                    cur = conn.execute(
                        f"UPDATE runs SET last_seq = ?, updated_at = {_NOW}, status = ?, outcome = ?, "
                        "reason = ?, lease_owner = NULL, lease_expires_at = NULL WHERE run_id = ? "
                        "AND lease_token = ? AND lease_owner IS NOT NULL AND last_seq = ?",
                        (
                            new_last,
                            b.status.value,
                            b.outcome,
                            b.reason,
                            run_id,
                            b.lease.token,
                            b.expected_seq,
                        ),
                    )
                if cur.rowcount != 1:
                    results.append(_why(conn, b))
                    continue
                results.append(None)
                rows.extend((e.run_id, e.seq, e.kind, e.schema, e.data) for e in b.events)
                if b.snapshot is not None:
                    sn = b.snapshot
                    snaps.append((sn.run_id, sn.seq, sn.schema, sn.data))
            if rows:
                conn.executemany(
                    "INSERT INTO events (run_id, seq, kind, schema, data) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
            if snaps:
                conn.executemany(_UPSERT_SNAPSHOT, snaps)
            return results

        return await self._tx(tx)

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
        rows = await self._fetchall(
            "SELECT run_id, seq, schema, data FROM snapshots WHERE run_id = ?", (run_id,)
        )
        snap = (
            Snapshot(run_id=rows[0][0], seq=rows[0][1], schema=rows[0][2], data=bytes(rows[0][3]))
            if rows
            else None
        )
        return snap, await self.load(run_id, after_seq=snap.seq if snap else 0)

    async def take_snapshot(self, lease: Lease, snapshot: Snapshot) -> JournalError | None:
        def tx(conn: sqlite3.Connection) -> JournalError | None:
            row = conn.execute(
                "SELECT lease_token, lease_owner FROM runs WHERE run_id = ?", (lease.run_id,)
            ).fetchone()
            if row is None or row[0] != lease.token or row[1] is None:
                return LeaseLost(lease.run_id, lease.token, row[0] if row else None)
            conn.execute(
                _UPSERT_SNAPSHOT, (snapshot.run_id, snapshot.seq, snapshot.schema, snapshot.data)
            )
            return None

        return await self._tx(tx)

    # ---- leases ----
    async def claim(
        self, worker_id: str, *, ttl: float, limit: int, reclaim_own: bool = False
    ) -> list[Lease]:
        if limit <= 0:
            return []

        def tx(conn: sqlite3.Connection) -> list[Lease]:
            rows = conn.execute(
                "UPDATE runs SET status = 'running', lease_owner = :worker, "
                f"lease_token = lease_token + 1, lease_expires_at = {_NOW} + :ttl, updated_at = {_NOW} "
                f"WHERE run_id IN (SELECT run_id FROM runs WHERE {_RUNNABLE} "
                "ORDER BY created_at, run_id LIMIT :limit) "
                "RETURNING run_id, lease_token, lease_expires_at",
                {"worker": worker_id, "ttl": ttl, "limit": limit, "own": int(reclaim_own)},
            ).fetchall()
            return [
                Lease(run_id=r[0], worker_id=worker_id, token=r[1], expires_at=r[2]) for r in rows
            ]

        return await self._tx(tx)

    async def renew(self, leases: Sequence[Lease], *, ttl: float) -> list[Lease | None]:
        def tx(conn: sqlite3.Connection) -> list[Lease | None]:
            out: list[Lease | None] = []
            for lease in leases:
                row = conn.execute(
                    f"UPDATE runs SET lease_expires_at = {_NOW} + ? WHERE run_id = ? "
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

    async def release(self, lease: Lease) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, "
                "status = CASE status WHEN 'running' THEN 'pending' ELSE status END, "
                f"updated_at = {_NOW} WHERE run_id = ? AND lease_token = ? AND lease_owner IS NOT NULL",
                (lease.run_id, lease.token),
            )
            return cur.rowcount == 1

        return await self._tx(tx)

    async def find_runnable(self, *, limit: int = 100) -> list[str]:
        rows = await self._fetchall(
            f"SELECT run_id FROM runs WHERE {_RUNNABLE} ORDER BY created_at, run_id LIMIT :limit",
            {"own": 0, "worker": "", "limit": limit},
        )
        return [r[0] for r in rows]

    async def set_status(
        self, run_id: str, status: RunStatus, *, reason: str | None = None
    ) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE runs SET status = ?, reason = ?, lease_owner = NULL, lease_expires_at = NULL, "
                f"updated_at = {_NOW} WHERE run_id = ? "
                "AND status NOT IN ('completed', 'failed', 'cancelled')",
                (RunStatus(status).value, reason, run_id),
            )
            return cur.rowcount == 1

        return await self._tx(tx)

    async def aclose(self) -> None:
        for attr in ("_r", "_w"):
            conn = getattr(self, attr)
            setattr(self, attr, None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    def __del__(self) -> None:
        if self._w is not None:
            warnings.warn(
                f"SQLiteJournal({self.path!r}) was never closed; use `async with` or aclose()",
                ResourceWarning,
                stacklevel=1,
            )


_UPSERT_SNAPSHOT = (
    "INSERT INTO snapshots (run_id, seq, schema, data) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (run_id) DO UPDATE SET seq = excluded.seq, schema = excluded.schema, data = excluded.data"
)


def _get(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    row = conn.execute(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return _record(row) if row else None


def _why(conn: sqlite3.Connection, b: AppendBatch) -> JournalError:
    rec = _get(conn, b.lease.run_id)
    if rec is None or rec.lease_token != b.lease.token or rec.lease_owner is None:
        return LeaseLost(b.lease.run_id, b.lease.token, rec.lease_token if rec else None)
    return JournalConflict(b.lease.run_id, b.expected_seq, rec.last_seq)


def _check_seqs(b: AppendBatch) -> JournalError | None:
    for i, e in enumerate(b.events):
        if e.seq != b.expected_seq + 1 + i or e.run_id != b.lease.run_id:
            return JournalConflict(b.lease.run_id, b.expected_seq + i, e.seq - 1)
    return None
