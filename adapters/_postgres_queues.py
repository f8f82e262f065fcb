"""The Postgres journal's queues: definitions, queued starts, and admission in a claim.

Admission runs in one transaction that first locks the rows (``FOR UPDATE``,
in name order) of the queues with waiting runs: a second worker's admission
for the same queue waits there, then counts the slots the first one filled.
The count and the leases it decides are one transaction, never count-then-claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from continuum_py.adapters._rules import LIVE_STATUSES, admit, queue_from_row, rate_since, sql_in
from continuum_py.journal import TERMINAL_STATUSES, Lease, NewRun
from continuum_py.queues import Queue, QueueLoad

__all__ = ["PostgresQueues", "Taken"]

_LIVE = sql_in(LIVE_STATUSES)
_TERMINAL = sql_in(TERMINAL_STATUSES)
_NOW = "extract(epoch FROM clock_timestamp())::float8"
_QCOLS = "name, concurrency, per_worker, rate_n, rate_period"


class PostgresQueues:
    """The queue statements of one schema, run on a connection the caller holds."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        self.s = s
        self.declare = (
            f"INSERT INTO {s}.queues ({_QCOLS}) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, "
            "per_worker = excluded.per_worker, rate_n = excluded.rate_n, "
            "rate_period = excluded.rate_period"
        )
        self.stored = f"SELECT {_QCOLS} FROM {s}.queues ORDER BY name"
        # Whether any run waits for admission (in one of the queues $1, NULL: any);
        # a superset of lock_waiting's queues, from the queue_waiting index.
        self.any_waiting = (
            f"SELECT EXISTS (SELECT 1 FROM {s}.queue_runs WHERE admitted_at IS NULL "
            "AND ($1::text[] IS NULL OR queue = ANY($1::text[])))"
        )
        # The last admission found runs waiting: the next one goes straight to its
        # transaction; else it looks first (one round trip instead of three).
        self.waiting_seen = True
        self.lock_waiting = (
            f"SELECT {_QCOLS} FROM {s}.queues qq WHERE EXISTS (SELECT 1 FROM {s}.queue_runs w "
            "WHERE w.queue = qq.name AND w.admitted_at IS NULL) "
            "AND ($1::text[] IS NULL OR qq.name = ANY($1::text[])) ORDER BY name FOR UPDATE"
        )
        # One round trip per queue: the lock on its row is held for as short a time
        # as can be. $1 queue, $2 worker, $3 rate window start (NULL: no rate),
        # $4 now, $5 waiting runs wanted. load_tidy's UPDATE (admitted
        # runs seen finished leave the slot index) does not change the counts,
        # which join the runs' statuses.
        tidy = f"""tidy AS (
    UPDATE {s}.queue_runs q SET done = true FROM {s}.runs r
    WHERE q.queue = $1 AND q.admitted_at IS NOT NULL AND NOT q.done
      AND r.run_id = q.run_id AND r.status IN ({_TERMINAL})
),"""
        load = f"""
WITH {{tidy}}
slots AS (
    SELECT count(*) AS holding,
           count(*) FILTER (WHERE r.status = 'running' AND r.lease_owner = $2::text) AS mine
    FROM {s}.queue_runs q JOIN {s}.runs r ON r.run_id = q.run_id
    WHERE q.queue = $1 AND q.admitted_at IS NOT NULL AND NOT q.done AND r.status IN ({_LIVE})
)
SELECT slots.holding, slots.mine,
    CASE WHEN $3::float8 IS NULL THEN 0 ELSE (SELECT count(*) FROM {s}.queue_runs
        WHERE queue = $1 AND admitted_at > $3::float8) END,
    ARRAY(SELECT q.run_id FROM {s}.queue_runs q JOIN {s}.runs r ON r.run_id = q.run_id
        WHERE q.queue = $1 AND q.admitted_at IS NULL AND r.status = 'pending'
          AND (r.wake_at IS NULL OR r.wake_at <= $4::float8)
        ORDER BY q.priority, q.seq LIMIT $5)
FROM slots"""
        self.load = load.format(tidy="")
        self.load_tidy = load.format(tidy=tidy)
        self.lease = f"""
WITH a AS (UPDATE {s}.queue_runs SET admitted_at = $4::float8 WHERE run_id = ANY($3::text[]))
UPDATE {s}.runs SET status = 'running', lease_owner = $1, lease_token = lease_token + 1,
    lease_expires_at = {_NOW} + $2::float8, updated_at = {_NOW}, wake_at = NULL
WHERE run_id = ANY($3::text[])
RETURNING run_id, lease_token, lease_expires_at, created_at"""
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
        tidy: bool = False,
    ) -> list[QueueLoad]:
        """The load of each of ``queues`` (locked by the caller when it admits).

        With ``tidy`` (an admission, which writes anyway), admitted runs seen
        finished are marked done first; the counts join the runs' statuses, so
        they are the same without it.
        """
        out = []
        for q in queues:
            since = rate_since(q, now) if q.rate is not None else None
            holding, mine, recent, waiting = await conn.fetchrow(
                self.load_tidy if tidy else self.load, q.name, worker_id, since, now, limit
            )
            out.append(QueueLoad(q, holding, mine, recent, list(waiting)))
        return out

    async def admit(
        self,
        conn: Any,
        worker_id: str,
        ttl: float,
        limit: int,
        now: float | None,
        served: frozenset[str] | None,
        turn: int,
    ) -> list[Lease]:
        """Admit and lease what the queues' limits let in, in one transaction."""
        names = None if served is None else sorted(served)
        if not self.waiting_seen and not await conn.fetchval(self.any_waiting, names):
            return []
        async with conn.transaction():
            if now is None:
                now = float(await conn.fetchval(f"SELECT {_NOW}"))
            rows = await conn.fetch(self.lock_waiting, names)
            self.waiting_seen = bool(rows)
            if not rows:
                return []
            loads = await self.loads(
                conn, [queue_from_row(r) for r in rows], worker_id, now, limit, tidy=True
            )
            run_ids = admit(loads, limit, turn)
            if not run_ids:
                return []
            got = await conn.fetch(self.lease, worker_id, float(ttl), run_ids, now)
        by_id = {r[0]: r for r in got}
        return [
            Lease(run_id=r, worker_id=worker_id, token=by_id[r][1], expires_at=by_id[r][2])
            for r in run_ids
            if r in by_id
        ]

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


class Taken(Exception):
    """A plain start took the run id between the look and the insert (rolls back)."""
