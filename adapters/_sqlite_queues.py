"""The SQLite journal's queues: storing definitions, queued starts, and admission in a claim.

A claim and a queued start run these inside one write transaction on the
writer thread (``BEGIN IMMEDIATE``, see :func:`begin`): SQLite lets one writer
in at a time across processes, so counting a queue's slots and leasing the
runs it admits cannot interleave with another worker's claim. Reports
(``queue_loads``, ``queue_entry``) run the reads alone on the reader.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from continuum_py.adapters._rules import LIVE_STATUSES, queue_from_row, rate_since, sql_in
from continuum_py.journal import TERMINAL_STATUSES
from continuum_py.queues import Queue, QueueEntry, QueueLoad

__all__ = [
    "WAITING_ENTRY",
    "begin",
    "declare",
    "entry",
    "insert_entry",
    "loads",
    "mark_admitted",
    "stored",
]

_LIVE = sql_in(LIVE_STATUSES)
_TERMINAL = sql_in(TERMINAL_STATUSES)

WAITING_ENTRY = "queued_waiting = 0"
"""SQL true for a run an ordinary claim may take: not a queued run waiting for admission.

``runs.queued_waiting`` is set by a queued start and cleared by the admission
(both in one transaction with the ``queue_runs`` row), so a claim neither
probes ``queue_runs`` for each pending run nor, through the ``runs_claimable``
index, steps over the waiting ones.
"""


def begin(conn: sqlite3.Connection) -> None:
    """Start the write transaction now, before the first read that a decision rests on."""
    if not conn.in_transaction:
        conn.execute("BEGIN IMMEDIATE")


def stored(conn: sqlite3.Connection) -> list[Queue]:
    """Every stored queue definition, by name."""
    rows = conn.execute(
        "SELECT name, concurrency, per_worker, rate_n, rate_period FROM queues ORDER BY name"
    ).fetchall()
    return [queue_from_row(r) for r in rows]


def declare(conn: sqlite3.Connection, q: Queue) -> None:
    """Store ``q``, replacing the stored definition of that name."""
    conn.execute(
        "INSERT INTO queues (name, concurrency, per_worker, rate_n, rate_period) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, "
        "per_worker = excluded.per_worker, rate_n = excluded.rate_n, "
        "rate_period = excluded.rate_period",
        (
            q.name,
            q.concurrency,
            q.per_worker,
            q.rate[0] if q.rate else None,
            q.rate[1] if q.rate else None,
        ),
    )


def insert_entry(
    conn: sqlite3.Connection, run_id: str, queue: str, priority: int, key: str | None
) -> str | None:
    """Add ``run_id`` to ``queue``'s line; ``None``, or the run already holding ``key``.

    A key held by a run seen finished is freed first (its entry marked done).
    """
    if key is not None:
        conn.execute(
            "UPDATE queue_runs SET done = 1 WHERE queue = ? AND dedup_key = ? AND done = 0 "
            f"AND run_id IN (SELECT run_id FROM runs WHERE status IN ({_TERMINAL}))",
            (queue, key),
        )
        row = conn.execute(
            "SELECT run_id FROM queue_runs WHERE queue = ? AND dedup_key = ? AND done = 0",
            (queue, key),
        ).fetchone()
        if row is not None:
            return str(row[0])
    # seq: the line's order. MAX(rowid) is one look at the table's b-tree end;
    # rows are never deleted, so it only grows.
    conn.execute(
        "INSERT INTO queue_runs (run_id, queue, priority, seq, dedup_key) "
        "VALUES (?, ?, ?, (SELECT COALESCE(MAX(rowid), 0) + 1 FROM queue_runs), ?)",
        (run_id, queue, priority, key),
    )
    return None


def loads(
    conn: sqlite3.Connection,
    worker_id: str | None,
    now: float,
    names: frozenset[str] | None,
    *,
    waiting_only: bool,
    limit: int | None,
    tidy: bool = False,
) -> list[QueueLoad]:
    """The load of each stored queue (of ``names``; with ``waiting_only``, those with waiting runs).

    ``limit`` caps each queue's waiting list (a claim needs no more). With
    ``tidy`` (a claim, which writes anyway), admitted runs seen finished are
    marked done first, which keeps the slot count's index small; the counts
    are the same without it (they join the runs' statuses).
    """
    out: list[QueueLoad] = []
    for q in stored(conn):
        if names is not None and q.name not in names:
            continue
        if (
            waiting_only
            and not conn.execute(
                "SELECT 1 FROM queue_runs WHERE queue = ? AND admitted_at IS NULL LIMIT 1",
                (q.name,),
            ).fetchone()
        ):
            continue
        if tidy:
            _tidy(conn, q.name)
        holding, mine = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(r.status = 'running' AND r.lease_owner = ?), 0) "
            "FROM queue_runs q JOIN runs r ON r.run_id = q.run_id "
            f"WHERE q.queue = ? AND q.admitted_at IS NOT NULL AND q.done = 0 AND r.status IN ({_LIVE})",
            (worker_id, q.name),
        ).fetchone()
        recent = 0
        if q.rate is not None:
            recent = conn.execute(
                "SELECT COUNT(*) FROM queue_runs WHERE queue = ? AND admitted_at > ?",
                (q.name, rate_since(q, now)),
            ).fetchone()[0]
        waiting = conn.execute(
            "SELECT q.run_id FROM queue_runs q JOIN runs r ON r.run_id = q.run_id "
            "WHERE q.queue = ? AND q.admitted_at IS NULL AND r.status = 'pending' "
            "AND (r.wake_at IS NULL OR r.wake_at <= ?) ORDER BY q.priority, q.seq LIMIT ?",
            (q.name, now, -1 if limit is None else limit),
        ).fetchall()
        out.append(QueueLoad(q, holding, mine, recent, [w[0] for w in waiting]))
    return out


def _tidy(conn: sqlite3.Connection, queue: str) -> None:
    """Mark ``queue``'s admitted runs seen finished done: they left the slot index."""
    conn.execute(
        "UPDATE queue_runs SET done = 1 WHERE queue = ? AND admitted_at IS NOT NULL "
        "AND done = 0 AND run_id IN (SELECT q.run_id FROM queue_runs q JOIN runs r "
        "ON r.run_id = q.run_id WHERE q.queue = ? AND q.admitted_at IS NOT NULL "
        f"AND q.done = 0 AND r.status IN ({_TERMINAL}))",
        (queue, queue),
    )


def mark_admitted(conn: sqlite3.Connection, run_ids: Sequence[str], now: float) -> None:
    """Record the admission of ``run_ids`` at ``now`` (engine clock)."""
    conn.executemany(
        "UPDATE queue_runs SET admitted_at = ? WHERE run_id = ?", [(now, r) for r in run_ids]
    )


def entry(conn: sqlite3.Connection, run_id: str) -> QueueEntry | None:
    """``(queue, priority, dedup_key, admitted)`` of a queued run, or ``None``."""
    row = conn.execute(
        "SELECT queue, priority, dedup_key, admitted_at FROM queue_runs WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    return None if row is None else QueueEntry(*row)
