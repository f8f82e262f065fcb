"""The SQL of the SQLite journal's writes: appends, messages, new runs, run rows.

Each function runs inside a write transaction the caller opened (see
:mod:`._sqlite_writes`) and commits nothing itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from continuum_py.adapters._rules import (
    WAITING_STATUSES,
    bad_seqs,
    sql_in,
    why_refused,
)
from continuum_py.errors import JournalError
from continuum_py.journal import (
    INBOX_CHECKED_STATUSES,
    NOTIFY_PARENT_STATUSES,
    RUN_COLUMNS,
    TERMINAL_STATUSES,
    AppendBatch,
    NewRun,
    RunRecord,
    RunStatus,
    record_from_row,
)

__all__ = [
    "NOW",
    "RUN_COLS",
    "TERMINAL_SQL",
    "UPSERT_SNAPSHOT",
    "deliver",
    "get",
    "insert_run",
    "row",
    "write_batches",
]

NOW = "((julianday('now') - 2440587.5) * 86400.0)"
"""The journal clock in SQL: seconds since the epoch."""

TERMINAL_SQL = sql_in(TERMINAL_STATUSES)

RUN_COLS = ", ".join(RUN_COLUMNS)

_FENCE = "WHERE run_id = ? AND lease_token = ? AND lease_owner IS NOT NULL AND last_seq = ?"
_APPEND = f"UPDATE runs SET last_seq = ?, updated_at = {NOW} {_FENCE}"
_APPEND_SEEN = f"UPDATE runs SET last_seq = ?, updated_at = {NOW}, inbox_seen = ? {_FENCE}"

UPSERT_SNAPSHOT = (
    "INSERT INTO snapshots (run_id, seq, schema, data) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (run_id) DO UPDATE SET seq = excluded.seq, schema = excluded.schema, data = excluded.data"
)


def write_batches(
    conn: sqlite3.Connection, batches: Sequence[AppendBatch]
) -> list[JournalError | None]:
    """Write each batch that passes its fencing check; the caller commits."""
    results: list[JournalError | None] = []
    rows: list[tuple[str, int, str, int, bytes]] = []
    snaps: list[tuple[str, int, int, bytes]] = []
    for b in batches:
        run_id = b.lease.run_id
        bad = bad_seqs(b)
        if bad is not None:
            results.append(bad)
            continue
        new_last = b.expected_seq + len(b.events)
        # The fencing check is the WHERE clause of the write itself.
        parent, position = None, 0
        if b.status is None:
            # A step's append, the common write: it needs nothing back from the
            # row (no RETURNING), and leaves inbox_seen (in runs_unseen's
            # predicate) out of the SET unless it moves.
            if b.inbox_seen is None:
                cur = conn.execute(_APPEND, (new_last, run_id, b.lease.token, b.expected_seq))
            else:
                cur = conn.execute(
                    _APPEND_SEEN, (new_last, b.inbox_seen, run_id, b.lease.token, b.expected_seq)
                )
            landed = cur.rowcount == 1
        else:
            fence = _FENCE
            if b.status in INBOX_CHECKED_STATUSES:
                # The run ends only with every message recorded: a cancel sent
                # before this write is never dropped.
                fence += f" AND inbox_last <= {_int_or(b.inbox_seen, 'inbox_seen')}"
            got = conn.execute(
                f"UPDATE runs SET last_seq = ?, updated_at = {NOW}, "
                "inbox_seen = COALESCE(?, inbox_seen), status = ?, outcome = ?, reason = ?, "
                f"wake_at = ?, lease_owner = NULL, lease_expires_at = NULL {fence} "
                "RETURNING parent_run_id, parent_position",
                (
                    new_last,
                    b.inbox_seen,
                    b.status.value,
                    b.outcome,
                    b.reason,
                    b.wake_at if b.status in WAITING_STATUSES else None,
                    run_id,
                    b.lease.token,
                    b.expected_seq,
                ),
            ).fetchall()
            landed = bool(got)
            if landed:
                parent, position = got[0]
        if not landed:
            results.append(why_refused(b, get(conn, run_id)))
            continue
        results.append(None)
        rows.extend((e.run_id, e.seq, e.kind, e.schema, e.data) for e in b.events)
        if b.snapshot is not None:
            sn = b.snapshot
            snaps.append((sn.run_id, sn.seq, sn.schema, sn.data))
        if parent is not None and b.status in NOTIFY_PARENT_STATUSES:
            deliver(conn, parent, "child", str(position), b.outcome or b"")
        if b.status == RunStatus.CONTINUED and b.continued_to is not None:
            _forward_unseen(conn, run_id, b.continued_to)
    if rows:
        conn.executemany(
            "INSERT INTO events (run_id, seq, kind, schema, data) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
    if snaps:
        conn.executemany(UPSERT_SNAPSHOT, snaps)
    return results


def deliver(
    conn: sqlite3.Connection,
    run_id: str,
    kind: str,
    name: str,
    data: bytes,
    *,
    only_unfinished: bool = False,
) -> int | None:
    """Add an inbox message; its id, or ``None`` if the run is missing (or finished)."""
    guard = f" AND status NOT IN ({TERMINAL_SQL})" if only_unfinished else ""
    got = conn.execute(
        f"UPDATE runs SET inbox_last = inbox_last + 1, updated_at = {NOW} "
        f"WHERE run_id = ?{guard} RETURNING inbox_last",
        (run_id,),
    ).fetchall()
    if not got:
        return None
    msg_id = int(got[0][0])
    conn.execute(
        f"INSERT INTO inbox (run_id, id, kind, name, data, at) VALUES (?, ?, ?, ?, ?, {NOW})",
        (run_id, msg_id, kind, name, data),
    )
    return msg_id


def _forward_unseen(conn: sqlite3.Connection, run_id: str, target: str) -> None:
    """Move the messages ``run_id`` never recorded to ``target``'s inbox, in order."""
    rows = conn.execute(
        "SELECT kind, name, data FROM inbox WHERE run_id = ? "
        "AND id > (SELECT inbox_seen FROM runs WHERE run_id = ?) ORDER BY id",
        (run_id, run_id),
    ).fetchall()
    for kind, name, data in rows:
        deliver(conn, target, kind, name, data)


def insert_run(conn: sqlite3.Connection, run: NewRun, *, queued: bool = False) -> bool:
    """Insert ``run``'s row and first event unless its run_id is taken; whether it was.

    ``queued``: it waits for admission in a queue (a claim leaves it alone).
    """
    ev = run.first_event
    cur = conn.execute(
        "INSERT INTO runs (run_id, workflow, status, created_at, updated_at, last_seq, "
        "wake_at, parent_run_id, parent_position, queued_waiting) "
        f"VALUES (?, ?, 'pending', {NOW}, {NOW}, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
        (
            run.run_id,
            run.workflow,
            ev.seq,
            run.wake_at,
            run.parent_run_id,
            run.parent_position,
            int(queued),
        ),
    )
    if cur.rowcount != 1:
        return False
    conn.execute(
        "INSERT INTO events (run_id, seq, kind, schema, data) VALUES (?, ?, ?, ?, ?)",
        (ev.run_id, ev.seq, ev.kind, ev.schema, ev.data),
    )
    return True


def get(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    row = conn.execute(f"SELECT {RUN_COLS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return record_from_row(row) if row else None


def row(rec: RunRecord) -> tuple[Any, ...]:
    """``rec`` as the values of :data:`RUN_COLUMNS`, in order."""
    return tuple(
        rec.status.value if name == "status" else getattr(rec, name) for name in RUN_COLUMNS
    )


def _int_or(value: int | None, column: str) -> str:
    # An int is inlined (never user text); None means the stored column.
    return column if value is None else str(int(value))
