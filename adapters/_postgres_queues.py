"""The Postgres journal's queues: definitions, queued starts, and admission in a claim.

Admission is one statement (one transaction): it locks the rows of the queues
with waiting runs (``FOR UPDATE SKIP LOCKED``), counts their slots, picks and
leases the runs their limits let in, and marks those queues' rows admitted
from. The count and the leases it decides are one transaction, never
count-then-claim; no client round trip falls while the locks are held. A
queue whose row another claim holds is skipped, and that claim wakes the
workers if it leaves runs it had no room for.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import asyncpg  # type: ignore[import-untyped]

from continuum_py.adapters._postgres_lend import GENERIC, UNSET
from continuum_py.adapters._postgres_sql import admission_lock, claim_ctes, start_run_sql
from continuum_py.adapters._postgres_wake import NAMES_TTL
from continuum_py.adapters._rules import LIVE_STATUSES, rate_since, sql_in
from continuum_py.journal import TERMINAL_STATUSES, Lease, NewRun
from continuum_py.queues import Queue, QueueLoad

__all__ = ["Admitted", "ClaimArgs", "PostgresQueues", "Taken"]

_LIVE = sql_in(LIVE_STATUSES)
_TERMINAL = sql_in(TERMINAL_STATUSES)
_NOW = "extract(epoch FROM clock_timestamp())::float8"
_QCOLS = "name, concurrency, per_worker, rate_n, rate_period"
_TRIES = 3  # admission statements per claim when other claims keep admitting in between
_CONTENDED_WAIT = 0.002  # seconds before looking again at a queue another admission held
# The admission runs on its prepared statement's generic plan. Left to Postgres's
# choice (plan_cache_mode = auto) it is planned again for its parameters at many
# executions: after the first five, whenever the generic plan's estimate is above
# the average of the custom plans so far (those made while the tables were empty
# are cheap), as after each autovacuum ANALYZE of the bench's fresh tables. Planning
# its ~60 nodes cost about as much as running it. Without JIT: with 200,000 runs,
# the generic plan's estimates (a LIMIT and a rate window not known) passed
# jit_above_cost, and compiling it took 1.4 s of an admission whose work is 2 ms.
# Set for that statement only (a session SET, reset after it: the admission
# commits on its own, so no round trip falls inside its locks), so the journal's
# other statements and a step's own SQL on a lent connection keep the server's
# choice. The journal's claim connection is set so for good (_postgres_lend).


class PostgresQueues:
    """The queue statements of one schema, run on a connection the caller holds."""

    def __init__(self, schema: str, wake_channel: str, *, prepared: bool = True) -> None:
        s = f'"{schema}"'
        self.s = s
        # Statements are prepared (asyncpg's cache is on): the admission's plan is
        # kept, so it is set to the generic one. Not behind pgbouncer (cache off),
        # where a session SET could reach another client's server connection.
        self.generic = prepared
        # Whether a connection needs the setting set around the admission: not
        # the journal's claim connection, which has it already (_postgres_lend).
        self.set_generic: Callable[[Any], bool] = lambda conn: True
        self.wake_channel = wake_channel
        self.waiting = True  # whether the last claim saw queued runs waiting
        self.declare = (
            f"INSERT INTO {s}.queues ({_QCOLS}) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, "
            "per_worker = excluded.per_worker, rate_n = excluded.rate_n, "
            "rate_period = excluded.rate_period"
        )
        self.stored = f"SELECT {_QCOLS} FROM {s}.queues ORDER BY name"
        # A queue's load, for reports (queue_loads): $1 queue, $2 worker,
        # $3 rate window start (NULL: no rate), $4 now, $5 waiting runs wanted.
        self.load = f"""
WITH slots AS (
    SELECT count(*) AS holding,
           count(*) FILTER (WHERE r.status = 'running' AND r.lease_owner = $2::text) AS mine
    FROM {s}.runs r WHERE r.queue = $1 AND r.status IN ({_LIVE})
)
SELECT slots.holding, slots.mine,
    CASE WHEN $3::float8 IS NULL THEN 0 ELSE (SELECT count(*) FROM {s}.queue_runs
        WHERE queue = $1 AND admitted_at > $3::float8) END,
    ARRAY(SELECT q.run_id FROM {s}.queue_runs q JOIN {s}.runs r ON r.run_id = q.run_id
        WHERE q.queue = $1 AND q.admitted_at IS NULL AND r.status = 'pending'
          AND (r.wake_at IS NULL OR r.wake_at <= $4::float8)
        ORDER BY q.priority, q.seq LIMIT $5)
FROM slots"""
        # Admission in one statement, so no client round trip falls inside the
        # queue row locks. It counts each queue's slots and finds the waiting
        # runs it has room for in its snapshot, then locks (SKIP LOCKED) the
        # rows of those queues only: a claim that finds nothing to admit locks
        # and writes nothing, and a queue another claim is admitting from is
        # left to it (which wakes the workers if it leaves runs it had no room
        # for). A locked row whose newest version is not the one the snapshot
        # saw was admitted from by a claim that committed in between (every
        # admission bumps its queues' ``admissions``): its counts are stale, so
        # it is left out and reported, and the caller runs the statement again.
        # Otherwise no admission happened since the snapshot, and none can
        # until this one commits: the counts hold.
        # $1 worker, $2 ttl, $3 limit, $4 now (NULL: the journal clock),
        # $5 served queues (NULL: all), $6 turn, $7 notify channel, $8 reclaim_own.
        # The pick is _rules.admit's round-robin spelled in SQL: the k-th
        # waiting run of each queue with room for k, queues in turn order.
        self.admission = f"""
WITH t AS MATERIALIZED (SELECT COALESCE($4::float8, {_NOW}) AS now),
waits AS MATERIALIZED (
    SELECT {_QCOLS}, admissions FROM {s}.queues qq
    -- A scalar subquery, not EXISTS: one index look per queue, never a scan of
    -- every waiting run.
    WHERE (SELECT true FROM {s}.queue_runs w
           WHERE w.queue = qq.name AND w.admitted_at IS NULL LIMIT 1)
      AND ($5::text[] IS NULL OR qq.name = ANY($5::text[]))
),
cand AS MATERIALIZED (
    -- A queue another admission is working on right now (it holds this lock
    -- until its statement ends) is left to it before anything is counted: the
    -- caller looks again a moment later (``contended``). Only a hint: the row
    -- lock and the admissions counter below keep the counts right.
    SELECT * FROM waits WHERE {admission_lock(schema, "waits.name")}
),
room AS MATERIALIZED (
    -- A limit not set counts nothing (LEAST skips NULLs; CASE skips the count).
    -- A queue's slots are its admitted runs still live (migration 9), counted
    -- from runs_queue_live alone: a run that ended or parked left it.
    SELECT f.name, f.admissions, LEAST($3::int + 1,
        CASE WHEN f.concurrency IS NOT NULL THEN f.concurrency
            - (SELECT count(*) FROM {s}.runs r WHERE r.queue = f.name AND r.status IN ({_LIVE}))
            END,
        CASE WHEN f.per_worker IS NOT NULL THEN f.per_worker
            - (SELECT count(*) FROM {s}.runs r WHERE r.queue = f.name AND r.status IN ({_LIVE})
               AND r.status = 'running' AND r.lease_owner = $1::text) END,
        CASE WHEN f.rate_n IS NOT NULL THEN f.rate_n - (SELECT count(*) FROM {s}.queue_runs
            WHERE queue = f.name AND admitted_at > t.now - f.rate_period) END) AS room
    FROM cand f CROSS JOIN t
),
due AS MATERIALIZED (
    -- The waiting runs each queue has room for (and one more: is any left?).
    SELECT w.run_id, rm.name AS queue, w.k
    FROM room rm CROSS JOIN t CROSS JOIN LATERAL (
        SELECT q.run_id, row_number() OVER (ORDER BY q.priority, q.seq) AS k
        FROM {s}.queue_runs q
        WHERE q.queue = rm.name AND q.admitted_at IS NULL
          AND (SELECT r.status = 'pending' AND (r.wake_at IS NULL OR r.wake_at <= t.now)
               FROM {s}.runs r WHERE r.run_id = q.run_id)
        ORDER BY q.priority, q.seq LIMIT $3::int + 1) w
    WHERE rm.room > 0 AND w.k <= rm.room
),
lk AS MATERIALIZED (
    SELECT name, admissions FROM {s}.queues
    WHERE name IN (SELECT queue FROM due)
    ORDER BY name FOR UPDATE SKIP LOCKED
),
fresh AS MATERIALIZED (
    SELECT rm.name,
        (row_number() OVER (ORDER BY rm.name) - 1 - $6::bigint % count(*) OVER ()
         + count(*) OVER ()) % count(*) OVER () AS turn_pos
    FROM lk JOIN room rm ON rm.name = lk.name AND rm.admissions = lk.admissions
),
elig AS MATERIALIZED (
    SELECT d.run_id, d.queue, d.k, f.turn_pos FROM due d JOIN fresh f ON f.name = d.queue
),
pick AS MATERIALIZED (
    SELECT run_id, queue, row_number() OVER (ORDER BY k, turn_pos) AS ord, 'pending'::text AS st
    FROM elig ORDER BY k, turn_pos LIMIT $3::int
),
bumped AS (
    UPDATE {s}.queues SET admissions = admissions + 1
    WHERE name = ANY(ARRAY(SELECT DISTINCT queue FROM pick))
),
leased AS (
    UPDATE {s}.runs r SET status = 'running', lease_owner = $1, lease_token = r.lease_token + 1,
        lease_expires_at = {_NOW} + $2::float8, updated_at = {_NOW}, wake_at = NULL,
        queued_waiting = false, queue = p.queue
    -- The status to find is pick's column, not a constant: a join condition,
    -- so no plan scans runs_by_status for it (a generic plan made while the
    -- table was small scanned every pending run, waiting ones included, at each
    -- admission). A row updated since the snapshot is tested again as it is now.
    FROM pick p WHERE r.run_id = p.run_id AND r.status = p.st
    RETURNING r.run_id, r.lease_token, r.lease_expires_at
),
-- The picked runs leave the line (one cancelled since the snapshot is not
-- leased: it leaves the line too, and holds no slot, not being live).
marked AS (
    UPDATE {s}.queue_runs q SET admitted_at = t.now
    FROM pick p CROSS JOIN t WHERE q.run_id = p.run_id
),
woken AS MATERIALIZED (
    SELECT pg_notify($7, '') FROM (SELECT 1) one
    WHERE (SELECT count(*) FROM elig) > (SELECT count(*) FROM pick)
),
-- Then the plain claim with the room left ($8: reclaim_own); the runs
-- admitted above were waiting in this snapshot, so it cannot take them.
{
            claim_ctes(
                s,
                own="($8 AND lease_owner = $1)",
                now="$4",
                limit="GREATEST($3::int - (SELECT count(*) FROM pick), 0)",
            )
        }
-- part 1: admitted (k: their order), 2: plain (k: created_at), 0: a summary row
-- (token: queues left out as stale; expiry: queues left to another admission;
-- k: queues with runs waiting: none, and the next claim need not admit first;
-- some, and more may come (a queue in use), so it admits first).
SELECT l.run_id, l.lease_token, l.lease_expires_at, p.ord::float8 AS k, 1 AS part
FROM leased l JOIN pick p USING (run_id)
UNION ALL
SELECT run_id, lease_token, lease_expires_at, created_at, 2 FROM u
UNION ALL
SELECT NULL, (SELECT count(*) FROM lk) - (SELECT count(*) FROM fresh),
    ((SELECT count(*) FROM waits) - (SELECT count(*) FROM cand))::float8,
    (SELECT count(*) FROM waits)::float8,
    0 - (SELECT count(*) FROM woken)::int"""
        # The notification of a queued start (on the wake channel, $13 here)
        # names one registered worker (the last parameter: :meth:`name_one`);
        # '' (every worker) when none is registered. The others look a moment
        # later (``_postgres_wake``), in case that one is busy or gone.
        self.names = f"SELECT array_agg(worker_id ORDER BY worker_id) FROM {s}.workers"
        self.names_ttl = NAMES_TTL
        self._names: list[str] = []
        self._names_until = float("-inf")  # monotonic time when _names is to be read again
        self._named = random.randrange(1 << 16)  # a count of starts: whose turn it is
        # A queued start in one statement, for the usual case: no run of that id,
        # and the dedup key (if any) free or held by a finished run (freed first:
        # the entry's insert reads ``freed``, so it runs after). $15 queue,
        # $16 priority, $17 key, $18 the worker named. It returns nothing when
        # the entry is not inserted (a queued run of that id exists, or the key
        # is held), and fails whole when a plain run of that id exists (its runs
        # row's key): :meth:`start` then takes the long way. No look for the run
        # first: that index probe cost every start ~15 µs of the server's CPU
        # (docs/performance.md), to spare only a start reusing a plain run's id
        # the error.
        self.start_queued = start_run_sql(
            s,
            before=f"""freed AS (
    UPDATE {s}.queue_runs q SET done = true FROM {s}.runs r
    WHERE $17::text IS NOT NULL AND q.queue = $15 AND q.dedup_key = $17 AND NOT q.done
      AND r.run_id = q.run_id AND r.status IN ({_TERMINAL})
    RETURNING q.run_id
),
entry AS (
    INSERT INTO {s}.queue_runs (run_id, queue, priority, dedup_key)
    SELECT $1::text, $15::text, $16::int, $17::text FROM (SELECT count(*) FROM freed) f
    ON CONFLICT DO NOTHING RETURNING run_id
),
""",
            source="c, entry",
            on_conflict=False,
            payload="$18::text",
        )
        # The same without a dedup key (no key to free: a smaller plan to start):
        # $1..$16, then the name ($17).
        self.start_queued_nokey = start_run_sql(
            s,
            before=f"""entry AS (
    INSERT INTO {s}.queue_runs (run_id, queue, priority)
    SELECT $1::text, $15::text, $16::int
    ON CONFLICT DO NOTHING RETURNING run_id
),
""",
            source="c, entry",
            on_conflict=False,
            payload="$17::text",
        )
        self.free_key = (
            f"UPDATE {s}.queue_runs q SET done = true FROM {s}.runs r WHERE q.queue = $1 "
            f"AND q.dedup_key = $2 AND NOT q.done AND r.run_id = q.run_id "
            f"AND r.status IN ({_TERMINAL})"
        )
        self.insert_entry = (
            f"INSERT INTO {s}.queue_runs (run_id, queue, priority, dedup_key) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING run_id"
        )
        self.holder = (
            f"SELECT run_id FROM {s}.queue_runs WHERE queue = $1 AND dedup_key = $2 AND NOT done"
        )
        self.entry = (
            f"SELECT queue, priority, dedup_key, admitted_at FROM {s}.queue_runs WHERE run_id = $1"
        )

    async def loads(
        self,
        conn: Any,
        queues: Sequence[Queue],
        worker_id: str | None,
        now: float,
        limit: int | None,
    ) -> list[QueueLoad]:
        """The load of each of ``queues``, for a report."""
        out = []
        for q in queues:
            since = rate_since(q, now) if q.rate is not None else None
            holding, mine, recent, waiting = await conn.fetchrow(
                self.load, q.name, worker_id, since, now, limit
            )
            out.append(QueueLoad(q, holding, mine, recent, list(waiting)))
        return out

    async def claim_runs(
        self,
        write: Callable[[str, Callable[[Any], Awaitable[Any]]], Awaitable[Any]],
        plain_claim: str,
        a: ClaimArgs,
        limit: int,
    ) -> list[Lease]:
        """A claim: queued runs admitted first, then plain runs (``write``: the journal's).

        While the last claim saw queued runs waiting, one statement admits and
        claims; otherwise the plain claim alone (``plain_claim``), which also
        looks whether some wait now, and if so admits them in this claim.
        A queue left to another admission (``contended``) is looked at again a
        moment later: that admission may not have seen runs started after its
        snapshot, nor have room for them. The look is the plain claim, so it
        costs an admission only if runs still wait.
        """
        leases: list[Lease] = []
        for attempt in range(_TRIES):
            got, contended = await self._claim_once(write, plain_claim, a, limit - len(leases))
            leases += got
            if not contended or len(leases) >= limit or attempt == _TRIES - 1:
                break
            await asyncio.sleep(_CONTENDED_WAIT)
            self.waiting = False
        return leases

    async def _claim_once(
        self,
        write: Callable[[str, Callable[[Any], Awaitable[Any]]], Awaitable[Any]],
        plain_claim: str,
        a: ClaimArgs,
        limit: int,
    ) -> tuple[list[Lease], bool]:
        """One pass of :meth:`claim_runs`: ``(leases, contended)``."""

        async def admit_and_claim(room: int) -> Admitted:
            async def tx(conn: Any) -> Admitted:
                return await self.claim(conn, a, room)

            got: Admitted = await write("claim", tx)
            self.waiting = got.waiting
            return got

        if self.waiting:
            got = await admit_and_claim(limit)
            return got.admitted + got.plain, got.contended

        async def tx(conn: Any) -> list[Any]:
            return list(
                await conn.fetch(
                    plain_claim, a.worker_id, a.ttl, limit, a.reclaim_own, a.now, a.served
                )
            )

        rows = await write("claim", tx)
        # The summary row, if runs wait: 1 in a queue free to admit from, else 0.
        free = next((r[1] for r in rows if r[0] is None), None)
        waiting = free == 1
        rows = sorted((r for r in rows if r[0] is not None), key=lambda r: (r[3], r[0]))
        plain = [
            Lease(run_id=r[0], worker_id=a.worker_id, token=r[1], expires_at=r[2]) for r in rows
        ]
        if not (waiting and len(plain) < limit):
            self.waiting = waiting
            return plain, free == 0
        # They came since the last look: admit them in this claim.
        got = await admit_and_claim(limit - len(plain))
        return got.admitted + plain + got.plain, got.contended

    async def claim(self, conn: Any, a: ClaimArgs, limit: int) -> Admitted:
        """Admit what the queues let in, then claim plain runs.

        Each statement is one transaction. A queue left out because another
        claim admitted from it after the statement's snapshot is tried again at
        once, with the room left.
        """
        admitted: list[Lease] = []
        plain: list[Any] = []
        waiting = True
        contended = False
        for _ in range(_TRIES):
            room = limit - len(admitted) - len(plain)
            rows = await self._admit(conn, a, room)
            admitted += [
                Lease(run_id=r[0], worker_id=a.worker_id, token=r[1], expires_at=r[2])
                for r in sorted((r for r in rows if r[4] == 1), key=lambda r: r[3])
            ]
            plain += [r for r in rows if r[4] == 2]
            stale, held, queued = next((r[1], r[2], r[3]) for r in rows if r[0] is None)
            waiting = queued > 0
            contended = held > 0
            if not stale or len(admitted) + len(plain) >= limit:
                break
        plain.sort(key=lambda r: (r[3], r[0]))
        return Admitted(
            admitted,
            [Lease(run_id=r[0], worker_id=a.worker_id, token=r[1], expires_at=r[2]) for r in plain],
            waiting,
            contended,
        )

    async def _admit(self, conn: Any, a: ClaimArgs, room: int) -> list[Any]:
        """One admission statement, on its generic plan (see ``GENERIC``).

        The journal's claim connection has that setting already (``_postgres_lend``).
        """
        args = (a.worker_id, a.ttl, room, a.now, a.served, a.turn, a.channel, a.reclaim_own)
        if not self.generic or not self.set_generic(conn):
            return list(await conn.fetch(self.admission, *args))
        await conn.execute(GENERIC)
        try:
            rows = await conn.fetch(self.admission, *args)
        except BaseException:
            # A lost connection has nothing to reset; a cancelled call may leave
            # the setting (only which plan the session's statements use).
            with contextlib.suppress(Exception):
                await conn.execute(UNSET)
            raise
        await conn.execute(UNSET)
        return list(rows)

    async def name_one(self, conn: Any) -> str:
        """The registered worker a queued start names, each in turn ('': none registered).

        The ids are read at most every ``names_ttl`` seconds (and after this
        journal registers a worker: :meth:`forget_names`), not in each start's
        statement, where reading the workers table cost ~25 µs of the server's
        CPU per start (docs/performance.md). A worker registered since is named
        after the next read; until then it finds runs in its own claims and in
        the look every worker not named takes a moment after a start.
        """
        now = time.monotonic()
        if now >= self._names_until:
            self._names = list(await conn.fetchval(self.names) or ())
            self._names_until = now + self.names_ttl
        if not self._names:
            return ""
        self._named += 1
        return self._names[self._named % len(self._names)]

    def forget_names(self) -> None:
        """Read the registered workers again at the next queued start."""
        self._names_until = float("-inf")

    async def start(
        self,
        conn: Any,
        run: NewRun,
        queue: str,
        priority: int,
        key: str | None,
        insert_run: str,
        run_args: Sequence[Any],
        get_run: str,
    ) -> tuple[Any, bool]:
        """Create ``run`` waiting in ``queue`` (one transaction); ``(row, created)``."""
        # $13, the channel: the one-statement start notifies on the wake channel.
        fast = (*run_args[:12], self.wake_channel, *run_args[13:])
        name = await self.name_one(conn)
        try:
            if key is None:
                row = await conn.fetchrow(self.start_queued_nokey, *fast, queue, priority, name)
            else:
                row = await conn.fetchrow(self.start_queued, *fast, queue, priority, key, name)
        except asyncpg.UniqueViolationError:
            row = None  # a run of that id was created meanwhile: nothing was written
        if row is not None:
            return row, True
        async with conn.transaction():
            row = await conn.fetchrow(get_run, run.run_id)
            if row is not None:
                return row, False
            if key is not None:
                await conn.execute(self.free_key, queue, key)
            if await conn.fetchval(self.insert_entry, run.run_id, queue, priority, key) is None:
                holder = await conn.fetchval(self.holder, queue, key) if key else None
                return await conn.fetchrow(get_run, holder or run.run_id), False
            row = await conn.fetchrow(insert_run, *run_args)
            if row is None:
                raise Taken
            return row, True


class Admitted(NamedTuple):
    """What one admission statement (and the plain claim in it) leased."""

    admitted: list[Lease]  # queued runs, in admission order
    plain: list[Lease]  # plain runs, oldest first
    waiting: bool  # runs waited in the queues served: the next claim admits first
    contended: bool  # a queue with runs waiting was left to another admission


class ClaimArgs(NamedTuple):
    """What a claim is asked: see :meth:`~continuum_py.journal.Journal.claim`."""

    worker_id: str
    ttl: float
    reclaim_own: bool
    now: float | None
    served: list[str] | None  # the queues the journal serves, by name (None: all)
    turn: int  # where its round of queues starts
    channel: str  # the journal's notification channel


class Taken(Exception):
    """A plain start took the run id between the look and the insert (rolls back)."""
