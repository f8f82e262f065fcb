"""The shared journal: Postgres through asyncpg, for many workers on many machines.

Every write is one statement or one transaction, and its fencing check (lease token,
lease held, expected tail) is the ``WHERE`` of an ``UPDATE`` in it (of the run's narrow
``heads`` row for a step's batch), so a stale writer's events never land.
:meth:`PostgresJournal.append` writes one batch with one statement of scalar
parameters, and a whole group commit with one statement whose batches and events
travel as arrays and are expanded with ``unnest`` (``_postgres_append``).
Claims use ``FOR UPDATE SKIP LOCKED``, so concurrent workers never get the same
run, and every lease and timestamp comes from the database clock.

Tables live in their own schema (``continuum`` by default; ``?schema=name`` in
the URL), created and upgraded by versioned migrations under an advisory lock.
Workers learn of new work at once through ``LISTEN``/``NOTIFY``
(:meth:`PostgresJournal.listen`).

Behind pgbouncer in transaction mode, asyncpg's prepared statements break
(asyncpg issues #198 and #1058): add ``?statement_cache_size=0`` to the URL.
``LISTEN`` also needs a session-mode connection, so point a listening worker's
URL straight at Postgres or at a session-mode pool.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import msgspec

from continuum_py._log import get_logger
from continuum_py.adapters._postgres_append import Appender, one_statement, plan
from continuum_py.adapters._postgres_connect import close, connect_kwargs, no_reset, settings
from continuum_py.adapters._postgres_errors import connect_error, translated
from continuum_py.adapters._postgres_lend import Lender
from continuum_py.adapters._postgres_listen import PostgresListening
from continuum_py.adapters._postgres_liveness import PostgresLiveness
from continuum_py.adapters._postgres_queues import ClaimArgs, PostgresQueues, Taken
from continuum_py.adapters._postgres_sql import (
    MIGRATIONS,
    Statements,
    current_version,
    migrate,
)
from continuum_py.adapters._postgres_step import StepConnection
from continuum_py.adapters._postgres_wake import WakeOne
from continuum_py.adapters._rules import (
    JournalBase,
    Migration,
    RunFilter,
    bad_seqs,
    check_whole_runs,
    queue_from_row,
    readable_layout,
    whole_record,
)
from continuum_py.adapters._schedules import PostgresSchedules
from continuum_py.errors import (
    ConfigurationError,
    JournalError,
    LeaseLost,
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

__all__ = ["MIGRATIONS", "Migration", "PostgresJournal", "PostgresTransaction", "StepConnection"]

T = TypeVar("T")

log = get_logger()


# The oldest schema layout a read-only open can read: it cannot upgrade the
# schema, and the migrations after this one add nothing the reads need.
# Raise it with a migration that adds a column or table the reads use
# (layout 3 adds forked_from; before layout 8's heads, reads use the runs row).
_OLDEST_READABLE = 3

_NOT_CONNECTED = "PostgresJournal is not connected; use `async with` or connect()"


# ---- the journal ----


class PostgresJournal(PostgresListening, PostgresSchedules, JournalBase):
    """A :class:`~continuum_py.journal.Journal` in a Postgres schema.

    Also a :class:`~continuum_py.journal.NotifyingJournal`, a
    :class:`~continuum_py.journal.LivenessJournal` and a
    :class:`~continuum_py.journal.TransactionalJournal`.

    Args:
        dsn: a ``postgresql://`` URL. Query parameters ``schema``, ``pool_size``,
            ``application_name``, ``statement_cache_size`` and ``connect_timeout``
            configure the journal (the keyword arguments win); the rest go to asyncpg.
        schema: the schema holding the tables (default ``continuum``); created if
            missing, so several apps can share one database.
        pool_size: most connections in the pool (at least 1 is kept open). With
            2 or more, one of them is kept for the journal's own calls that come
            one after another, and transactional steps share the others.
        application_name: shown in ``pg_stat_activity`` (default ``continuum_py``).
        statement_cache_size: asyncpg's prepared statement cache; 0 behind pgbouncer
            (which also keeps the step's statement from being prepared by name).
        connect_timeout: seconds to wait for a new connection.
        read_only: only read: the schema must exist (nothing is created or
            upgraded), sessions are read-only, and every write raises
            ``ConfigurationError``.

    Raises:
        ConfigurationError: a URL that cannot be parsed, a schema name that is
            not a plain identifier, or a bad pool size.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        pool_size: int | None = None,
        application_name: str | None = None,
        statement_cache_size: int | None = None,
        connect_timeout: float | None = None,
        read_only: bool = False,
    ) -> None:
        self.read_only = read_only
        s = settings(
            dsn,
            schema=schema,
            pool_size=pool_size,
            application_name=application_name,
            statement_cache_size=statement_cache_size,
            connect_timeout=connect_timeout,
        )
        self._settings = s
        self.schema = s.schema
        self.pool_size = s.pool_size
        self.application_name = s.application_name
        self._dsn = s.dsn
        self.where = s.where
        self._database = s.database
        self.channel = s.channel
        self.wake_channel = s.wake_channel
        self.migrations: Sequence[Migration] = MIGRATIONS
        self._sql = Statements(self.schema)
        self._appender = Appender(self._sql, self.schema, self.channel)
        self._qsql = PostgresQueues(
            self.schema, s.wake_channel, prepared=s.statement_cache_size != 0
        )
        self._qsql.set_generic = lambda conn: (
            self._lender is None or conn is not self._lender.claiming
        )
        self._turn = 0  # where this journal's claims start their round of queues
        self.served_queues: frozenset[str] | None = None
        self._pool: Any = None
        self._lender: Lender | None = None
        self._callbacks: list[Callable[[str], None]] = []
        self._listen_conn: Any = None
        self._listen_lost: asyncio.Event | None = None
        self._listener: asyncio.Task[None] | None = None
        self._closed = False
        self._liveness = PostgresLiveness(self.schema, self._connect_one)
        self._wake_one = WakeOne(self._liveness.holds, lambda: self._dispatch(None, 0, "", ""))

    @classmethod
    def from_url(cls, url: str, *, read_only: bool = False) -> PostgresJournal:
        """Open from a ``postgresql://`` URL (call :meth:`connect` or use ``async with``)."""
        return cls(url, read_only=read_only)

    def __repr__(self) -> str:
        return f"PostgresJournal({self.where}/{self._database}, schema={self.schema!r})"

    def _left_open(self) -> bool:
        return getattr(self, "_pool", None) is not None

    def _connect_kwargs(self) -> dict[str, Any]:
        return connect_kwargs(self._settings, read_only=self.read_only)

    async def connect(self) -> None:
        """Open the pool and create or upgrade the schema.

        Raises:
            JournalUnavailable: Postgres cannot be reached.
            ConfigurationError: unknown database, refused login, bad URL.
            SchemaTooNew: the schema was made by a newer continuum_py.
        """
        if self._pool is not None:
            return
        if self._closed:
            raise ConfigurationError("this PostgresJournal was closed; open a new one")
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self.pool_size,
                reset=no_reset,
                **self._connect_kwargs(),
            )
        except Exception as exc:
            raise connect_error(exc, self.where, self._database) from exc
        try:
            with self._errors("migrate"):
                async with pool.acquire() as conn:
                    if self.read_only:
                        await self._check_readable(conn)
                    else:
                        await migrate(conn, self.schema, self.migrations)
        except asyncpg.InsufficientPrivilegeError as exc:
            pool.terminate()
            raise ConfigurationError(
                f"Postgres at {self.where}: not allowed to create or upgrade schema "
                f"{self.schema!r} ({exc}); grant the privilege or have an owner run it once"
            ) from exc
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool
        prepared = self._settings.statement_cache_size != 0
        self._lender = Lender(
            pool, keep=self.pool_size > 1, prepare=prepared, claims=prepared and self.pool_size > 2
        )
        self._appender.lender = self._lender

    async def _check_readable(self, conn: Any) -> None:
        """A read-only open: the schema must hold a layout it can read (nothing is created)."""
        latest = self.migrations[-1].version if self.migrations else 0
        found = await current_version(conn, self.schema)
        if found is None:
            raise ConfigurationError(
                f"Postgres at {self.where}/{self._database} has no continuum journal in schema "
                f"{self.schema!r} (nothing was created)"
            )
        problem = readable_layout(
            found, latest, _OLDEST_READABLE, f"Postgres schema {self.schema!r}"
        )
        if problem is not None:
            raise ConfigurationError(problem)
        self._sql = Statements(self.schema, heads=found >= 8)

    def _writable(self) -> None:
        if self.read_only:
            raise ConfigurationError(
                f"Postgres journal {self.where}/{self._database} schema {self.schema!r} is open "
                "read-only; it records nothing, nothing was written"
            )

    @property
    def _p(self) -> Any:
        if self._pool is None:
            raise ConfigurationError(_NOT_CONNECTED)
        return self._pool

    @property
    def _lend(self) -> Lender:
        if self._lender is None:
            raise ConfigurationError(_NOT_CONNECTED)
        return self._lender

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Translate driver errors: a lost connection is ``JournalUnavailable``."""
        return translated(self.where, what)

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[Any]:
        with self._errors(what):
            return list(await self._lend.run(lambda conn: conn.fetch(sql, *args)))

    def _write(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> Awaitable[T]:
        """Run ``fn(connection, *args)``; a deadlock rolled it back whole, so try again.

        Not a coroutine itself: one frame fewer on every write's path.
        """
        self._writable()
        return self._lend.write(self.where, what, fn, *args)

    # ---- runs ----
    async def start_run(
        self, run: NewRun, *, claim_for: str | None = None, ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None, bool]:
        args = self._start_args(run, claim_for, ttl)

        async def tx(conn: Any) -> tuple[RunRecord, Lease | None, bool]:
            row = await conn.fetchrow(self._sql.start_run, *args)
            if row is None:
                row = await conn.fetchrow(self._sql.get_run, run.run_id)
                return record_from_row(row), None, False
            rec = record_from_row(row)
            lease = None
            if claim_for is not None and rec.lease_owner is not None:
                assert rec.lease_expires_at is not None
                lease = Lease(
                    run_id=rec.run_id,
                    worker_id=claim_for,
                    token=rec.lease_token,
                    expires_at=rec.lease_expires_at,
                )
            return rec, lease, True

        return await self._write("start_run", tx)

    def _start_args(
        self, run: NewRun, claim_for: str | None, ttl: float, *, queued: bool = False
    ) -> tuple[Any, ...]:
        ev = run.first_event
        return (
            run.run_id,
            run.workflow,
            ev.seq,
            claim_for,
            float(ttl),
            run.wake_at,
            run.parent_run_id,
            run.parent_position,
            ev.seq,
            ev.kind,
            ev.schema,
            ev.data,
            self.channel,
            queued,
        )

    # ---- queues ----
    async def declare_queue(self, queue: Queue) -> None:
        """Store ``queue``'s definition (replacing one of the same name)."""
        rate = queue.rate or (None, None)

        async def tx(conn: Any) -> None:
            await conn.execute(
                self._qsql.declare,
                queue.name,
                queue.concurrency,
                queue.per_worker,
                rate[0],
                None if rate[1] is None else float(rate[1]),
            )

        await self._write("declare_queue", tx)

    async def stored_queues(self) -> list[Queue]:
        """Every stored queue definition, by name."""
        rows = await self._fetch("stored_queues", self._qsql.stored)
        return [queue_from_row(r) for r in rows]

    async def start_queued(
        self, run: NewRun, queue: str, *, priority: int = 0, dedup_key: str | None = None
    ) -> tuple[RunRecord, bool]:
        """Create ``run`` waiting in ``queue``; see :class:`~continuum_py.journal.QueueJournal`."""
        args = self._start_args(run, None, 0.0, queued=True)

        async def tx(conn: Any) -> tuple[Any, bool]:
            return await self._qsql.start(
                conn, run, queue, priority, dedup_key, self._sql.start_run, args, self._sql.get_run
            )

        try:
            row, created = await self._write("start_queued", tx)
        except Taken:
            row, created = (await self._fetch("get_run", self._sql.get_run, run.run_id))[0], False
        return record_from_row(row), created

    async def queue_loads(self, *, now: float | None = None) -> list[QueueLoad]:
        """Every stored queue's load at ``now`` (default: the journal clock)."""
        with self._errors("queue_loads"):
            async with (
                self._p.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                at = now
                if at is None:
                    at = float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
                queues = [queue_from_row(r) for r in await conn.fetch(self._qsql.stored)]
                return await self._qsql.loads(conn, queues, None, at, None)

    async def queue_entry(self, run_id: str) -> QueueEntry | None:
        """``(queue, priority, dedup_key, admitted)`` of a queued run, or ``None``."""
        rows = await self._fetch("queue_entry", self._qsql.entry, run_id)
        return None if not rows else QueueEntry(*rows[0])

    async def put_runs(self, runs: Sequence[WholeRun]) -> None:
        """Create whole runs in one transaction; see :class:`~continuum_py.journal.JournalImport`."""
        check_whole_runs(runs)

        async def tx(conn: Any) -> None:
            async with conn.transaction():
                now = await conn.fetchval(self._sql.now)
                for run in runs:
                    rec = whole_record(run, now)
                    values = [getattr(rec, name) for name in RUN_COLUMNS]
                    values[RUN_COLUMNS.index("status")] = rec.status.value
                    if await conn.fetchval(self._sql.put_run, *values, run.parent_position) is None:
                        raise RunIdTaken(run.run_id)  # rolls the whole transaction back
                    await conn.execute(
                        self._sql.put_events,
                        *(
                            list(col)
                            for col in zip(*(_event_row(e) for e in run.events), strict=True)
                        ),
                    )
                for run in runs:
                    if run.status in (RunStatus.PENDING, RunStatus.SUSPENDED):
                        await conn.execute("SELECT pg_notify($1, $2)", self.channel, run.run_id)

        await self._write("put_runs", tx)

    async def forks(self, run_id: str) -> list[RunRecord]:
        """The runs forked from ``run_id``, oldest first."""
        rows = await self._fetch("forks", self._sql.forks, run_id)
        return [record_from_row(r) for r in rows]

    async def get_run(self, run_id: str) -> RunRecord | None:
        rows = await self._fetch("get_run", self._sql.get_run, run_id)
        return record_from_row(rows[0]) if rows else None

    async def _select_runs(self, f: RunFilter) -> list[RunRecord]:
        tail, params = list_runs_sql(
            **msgspec.structs.asdict(f),
            param=lambda n: f"${n}",
            # Byte order, whatever the database's collation: a prefix is then a
            # range, read from the runs_by_id_bytes index.
            id_bytewise='run_id COLLATE "C"',
        )
        rows = await self._fetch("list_runs", self._sql.list_runs + tail, *params)
        return [record_from_row(r) for r in rows]

    # ---- events ----
    async def append(self, batches: Sequence[AppendBatch]) -> list[JournalError | None]:
        if len(batches) == 1 and one_statement(b := batches[0]) and bad_seqs(b) is None:
            return [await self._write("append", self._appender.one, b)]  # a step's
        results, rounds = plan(batches)
        if not rounds:
            return results
        if len(rounds) == 1 and len(rounds[0]) == 1 and one_statement(batches[rounds[0][0]]):
            i = rounds[0][0]
            results[i] = await self._write("append", self._appender.one, batches[i])
            return results
        # One statement is one transaction; a later round for the same run, or a
        # continue-as-new moving messages, needs a real one. (A child's end held
        # back by the group's statement is a statement of its own, whole by itself.)
        needs_tx = len(rounds) > 1 or not all(one_statement(batches[i]) for i in rounds[0])

        async def tx(conn: Any) -> list[JournalError | None]:
            out = list(results)
            if needs_tx:
                async with conn.transaction():
                    await self._appender.rounds(conn, batches, rounds, out)
            else:
                await self._appender.rounds(conn, batches, rounds, out)
            return out

        return await self._write("append", tx)

    async def load(self, run_id: str, *, after_seq: int = 0) -> list[StoredEvent]:
        rows = await self._fetch("load", self._sql.load, run_id, after_seq)
        if not rows and after_seq == 0 and not await self._fetch("load", self._sql.exists, run_id):
            raise RunNotFound(run_id)
        return [
            StoredEvent(run_id=run_id, seq=r[0], kind=r[1], schema=r[2], data=r[3]) for r in rows
        ]

    async def load_with_snapshot(self, run_id: str) -> tuple[Snapshot | None, list[StoredEvent]]:
        """The newest snapshot and the events after it, in one query."""
        rows = await self._fetch("load_with_snapshot", self._sql.load_with_snapshot, run_id)
        snap = None
        if rows and rows[0][0] == 0:
            _, seq, _, schema, data = rows.pop(0)
            snap = Snapshot(run_id=run_id, seq=seq, schema=schema, data=data)
        elif not rows and not await self._fetch("load", self._sql.exists, run_id):
            raise RunNotFound(run_id)
        return snap, [
            StoredEvent(run_id=run_id, seq=r[1], kind=r[2], schema=r[3], data=r[4]) for r in rows
        ]

    async def _snapshot(self, run_id: str) -> Snapshot | None:
        rows = await self._fetch("load_with_snapshot", self._sql.snapshot, run_id)
        if not rows:
            return None
        seq, schema, data = rows[0]
        return Snapshot(run_id=run_id, seq=seq, schema=schema, data=data)

    async def take_snapshot(self, lease: Lease, snapshot: Snapshot) -> JournalError | None:
        async def tx(conn: Any) -> JournalError | None:
            done = await conn.fetchval(
                self._sql.take_snapshot,
                lease.run_id,
                lease.token,
                snapshot.run_id,
                snapshot.seq,
                snapshot.schema,
                snapshot.data,
            )
            if done is not None:
                return None
            return LeaseLost(
                lease.run_id, lease.token, await conn.fetchval(self._sql.token, lease.run_id)
            )

        return await self._write("take_snapshot", tx)

    # ---- leases ----
    async def _claim(
        self, worker_id: str, ttl: float, limit: int, reclaim_own: bool, now: float | None
    ) -> list[Lease]:
        self._turn += 1
        self._wake_one.claiming()
        served = None if self.served_queues is None else sorted(self.served_queues)
        args = ClaimArgs(worker_id, float(ttl), reclaim_own, now, served, self._turn, self.channel)
        return await self._qsql.claim_runs(self._claim_write, self._sql.claim, args, limit)

    def _claim_write(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> Awaitable[T]:
        """:meth:`_write` on the claim connection (see ``_postgres_lend``) when it is free."""
        self._writable()
        return self._lend.write(self.where, what, fn, *args, claim=True)

    async def renew(self, leases: Sequence[Lease], *, ttl: float) -> list[Lease | None]:
        if not leases:
            return []

        async def tx(conn: Any) -> list[Any]:
            return list(
                await conn.fetch(
                    self._sql.renew,
                    [lease.run_id for lease in leases],
                    [lease.token for lease in leases],
                    float(ttl),
                )
            )

        got = {(r[0], r[1]): r[2] for r in await self._write("renew", tx)}
        out: list[Lease | None] = []
        for lease in leases:
            expires = got.get((lease.run_id, lease.token))
            out.append(
                None
                if expires is None
                else Lease(
                    run_id=lease.run_id,
                    worker_id=lease.worker_id,
                    token=lease.token,
                    expires_at=expires,
                )
            )
        return out

    async def seize(self, run_id: str, worker_id: str, *, ttl: float) -> Lease | None:
        async def tx(conn: Any) -> list[Any]:
            return list(await conn.fetch(self._sql.seize, run_id, worker_id, ttl))

        rows = await self._write("seize", tx)
        if not rows:
            if not await self._fetch("seize", self._sql.exists, run_id):
                raise RunNotFound(run_id)
            return None
        return Lease(run_id=run_id, worker_id=worker_id, token=rows[0][0], expires_at=rows[0][1])

    async def release(self, lease: Lease) -> bool:
        async def tx(conn: Any) -> list[Any]:
            return list(
                await conn.fetch(self._sql.release, lease.run_id, lease.token, self.channel)
            )

        return len(await self._write("release", tx)) == 1

    async def find_runnable(self, *, limit: int = 100, now: float | None = None) -> list[str]:
        rows = await self._fetch("find_runnable", self._sql.find_runnable, limit, now)
        return [r[0] for r in rows]

    async def set_status(
        self, run_id: str, status: RunStatus, *, reason: str | None = None
    ) -> bool:
        async def tx(conn: Any) -> list[Any]:
            return list(
                await conn.fetch(
                    self._sql.set_status, run_id, RunStatus(status).value, reason, self.channel
                )
            )

        return len(await self._write("set_status", tx)) == 1

    # ---- inbox ----
    async def send(self, run_id: str, kind: str, name: str, data: bytes) -> int:
        async def tx(conn: Any) -> int:
            msg_id = await conn.fetchval(self._sql.send, run_id, kind, name, data, self.channel)
            if msg_id is not None:
                return int(msg_id)
            status = await conn.fetchval(self._sql.status, run_id)
            if status is None:
                raise RunNotFound(run_id)
            raise RunAlreadyFinished(run_id, status, what=kind)

        return await self._write("send", tx)

    async def inbox(self, run_id: str, *, after_id: int = 0) -> list[InboxMessage]:
        rows = await self._fetch("inbox", self._sql.inbox, run_id, after_id)
        return [
            InboxMessage(run_id=run_id, id=r[0], kind=r[1], name=r[2], data=r[3], at=r[4])
            for r in rows
        ]

    async def unseen_inbox(self, run_ids: Sequence[str]) -> list[str]:
        if not run_ids:
            return []
        found = {r[0] for r in await self._fetch("unseen_inbox", self._sql.unseen, list(run_ids))}
        return [r for r in dict.fromkeys(run_ids) if r in found]

    async def next_wake_at(self) -> float | None:
        rows = await self._fetch("next_wake_at", self._sql.next_wake)
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    # ---- transactional steps ----
    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """Open a transaction for a step's own SQL and its completion.

        Yields a :class:`PostgresTransaction`. Commits on a clean exit unless an
        ``append`` in it was refused; rolls back on an exception or a refusal.
        Errors raised by the body (including the driver's) pass through as they are.
        """
        self._writable()
        with self._errors("transaction"):
            conn = await self._p.acquire()
        try:
            tr = conn.transaction()
            with self._errors("transaction"):
                await tr.start()
            tx = PostgresTransaction(self, conn)
            try:
                yield tx
            except BaseException:
                with contextlib.suppress(Exception):
                    await tr.rollback()
                raise
            with self._errors("commit"):
                if tx.refused:
                    await tr.rollback()
                else:
                    await tr.commit()
        finally:
            try:
                # The step may have left a SET, LISTEN or lock on it: clear them.
                await conn.reset()
            except Exception:
                conn.terminate()  # the pool opens a new one in its place
            finally:
                with contextlib.suppress(Exception):
                    await self._p.release(conn)

    # ---- liveness ----
    async def hold_liveness(self, worker_id: str) -> bool:
        """Hold ``worker_id``'s advisory lock; see :class:`~continuum_py.journal.LivenessJournal`.

        Raises:
            JournalUnavailable: Postgres cannot be reached.
        """
        if self.read_only:
            return False
        if self._closed:
            raise ConfigurationError("this PostgresJournal was closed; open a new one")
        self._qsql.forget_names()  # its own queued starts name it from the next one on
        with self._errors("hold liveness"):
            return await self._liveness.hold(worker_id)

    async def liveness_held(self, worker_id: str) -> bool:
        """Whether the lock is still held (a lost one is taken again first, if it can be)."""
        return await self._liveness.held(worker_id)

    async def release_liveness(self, worker_id: str, *, forget: bool = False) -> None:
        """Let go of ``worker_id``'s lock, as its process ending would (``forget``: unregister)."""
        await self._liveness.release(worker_id, forget=forget)

    async def dead_workers(self) -> list[str]:
        """Registered workers whose lock is free and who lease running runs."""
        if self.read_only:
            return []
        rows = await self._fetch("dead workers", self._sql.dead_workers)
        return [r[0] for r in rows]

    async def aclose(self) -> None:
        self._closed = True
        self._wake_one.close()
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._listen_conn = self._listen_conn, None
        await close(conn, 5)
        await self._liveness.aclose()
        lender, self._lender = self._lender, None
        if lender is not None:
            with contextlib.suppress(Exception):  # closing the pool ends it anyway
                await lender.aclose()
        pool, self._pool = self._pool, None
        await close(pool, 10)


class PostgresTransaction:
    """One open transaction of :meth:`PostgresJournal.transaction`.

    Attributes:
        connection: a :class:`StepConnection` over the connection the pool lends
            (every method of ``asyncpg.Connection``); a step's own SQL on it
            commits or rolls back with the step's completion, and transaction
            control statements are refused. It is unusable once the block ends.
        refused: whether an ``append`` in it was refused (the transaction will
            roll back).
    """

    def __init__(self, journal: PostgresJournal, connection: Any) -> None:
        self.connection = StepConnection(connection)
        self.refused = False
        self._journal = journal
        self._conn = connection

    async def append(self, batch: AppendBatch) -> JournalError | None:
        """Write ``batch`` (fenced) inside this transaction; nothing is durable before commit."""
        results, rounds = plan([batch])
        with self._journal._errors("append"):
            if results[0] is None and one_statement(batch):
                results[0] = await self._journal._appender.one(self._conn, batch)
            else:
                await self._journal._appender.rounds(self._conn, [batch], rounds, results)
        if results[0] is not None:
            self.refused = True
        return results[0]


def _event_row(e: StoredEvent) -> tuple[str, int, str, int, bytes]:
    return (e.run_id, e.seq, e.kind, e.schema, e.data)
