"""The SQLite journal's table layout: its versions, their migrations, and the checks on open.

The layout's version is kept in ``PRAGMA user_version``. A read-write open
creates the tables or upgrades an older layout in place, in one transaction;
a read-only open upgrades nothing and only checks it can read what it finds.
"""

from __future__ import annotations

import sqlite3

from continuum_py.adapters._rules import (
    Migration,
    pending_migrations,
    readable_layout,
    refuse_newer,
)
from continuum_py.adapters._schedules import SQLITE_TABLE as SQLITE_SCHEDULES_TABLE
from continuum_py.adapters._sqlite_thread import SQLiteThread
from continuum_py.errors import ConfigurationError

__all__ = [
    "MIGRATIONS",
    "OLDEST_READABLE",
    "STORAGE_VERSION",
    "check_readable",
    "migrate",
    "version",
]

STORAGE_VERSION = 8  # MIGRATIONS[-1].version, checked below
"""Version of the table layout, kept in ``PRAGMA user_version``.

1: runs, events, snapshots. 2: inbox table; runs gain parent_run_id,
parent_position, inbox_last, inbox_seen; indexes for waking runs.
3: indexes for listing runs (all of them, or one workflow's) by creation time.
4: runs gain forked_from (``engine.fork``), with an index to list a run's forks.
5: schedules table (cron schedules shared by every worker).
6: queues and queue_runs (``Queue``): definitions, and each queued run's place.
7: runs gain queued_waiting (a queued run not yet admitted), with an index a
claim reads pending runs from that leaves those out.
8: a trigger: a run that ends while waiting in a queue leaves the line.
"""

# The table layout's history, oldest first; a fresh file applies every step.
# Each step's statements are separated by ";\n" (SQLite runs one at a time).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runs, events, snapshots",
        """CREATE TABLE IF NOT EXISTS runs (
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
)""",
    ),
    # runs_by_wake: due timers and scheduled starts, a range on wake_at within
    # one status. runs_unseen: suspended runs with unseen messages, few at any
    # time, so a partial index finds them without reading those that still wait.
    Migration(
        2,
        "inbox; runs gain parent and inbox columns; indexes for waking runs",
        """ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE runs ADD COLUMN parent_position INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN inbox_last INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN inbox_seen INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS inbox (
    run_id TEXT NOT NULL,
    id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (run_id, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_by_wake ON runs (status, wake_at);
CREATE INDEX IF NOT EXISTS runs_unseen ON runs (created_at) WHERE status = 'suspended' AND inbox_last > inbox_seen""",
    ),
    Migration(
        3,
        "indexes for listing runs",
        # list_runs pages by (created_at, run_id), newest or oldest first, with a
        # keyset; these answer it, alone or within one workflow, without sorting
        # the table. A run_id prefix is a range on the primary key; one status
        # uses runs_by_status.
        """CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow, created_at, run_id)""",
    ),
    Migration(
        4,
        "runs gain forked_from",
        # Few runs are forks: a partial index lists a run's forks without
        # growing with the others.
        """ALTER TABLE runs ADD COLUMN forked_from TEXT;
CREATE INDEX IF NOT EXISTS runs_forked ON runs (forked_from, created_at) WHERE forked_from IS NOT NULL""",
    ),
    Migration(5, "schedules table", SQLITE_SCHEDULES_TABLE),
    Migration(
        6,
        "queues",
        # queue_waiting: a queue's waiting runs in admission order. queue_slots:
        # its admitted runs not yet seen finished (the slots a claim counts);
        # queue_started: admissions by time (the rate window). queue_dedup: one
        # unfinished run per (queue, dedup_key); done is set once its run is seen
        # finished, which frees the key.
        """CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    concurrency INTEGER,
    per_worker INTEGER,
    rate_n INTEGER,
    rate_period REAL
);
CREATE TABLE IF NOT EXISTS queue_runs (
    run_id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    dedup_key TEXT,
    admitted_at REAL,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_waiting ON queue_runs (queue, priority, seq) WHERE admitted_at IS NULL;
CREATE INDEX IF NOT EXISTS queue_slots ON queue_runs (queue) WHERE admitted_at IS NOT NULL AND done = 0;
CREATE INDEX IF NOT EXISTS queue_started ON queue_runs (queue, admitted_at) WHERE admitted_at IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS queue_dedup ON queue_runs (queue, dedup_key) WHERE dedup_key IS NOT NULL AND done = 0""",
    ),
    Migration(
        7,
        "runs waiting for admission stay out of the claim's scan",
        # queued_waiting: a queued run whose queue_runs row has no admitted_at.
        # A claim reads pending runs from runs_claimable, which leaves those out:
        # with thousands waiting, each claim would otherwise step over all of them.
        """ALTER TABLE runs ADD COLUMN queued_waiting INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET queued_waiting = 1
    WHERE run_id IN (SELECT run_id FROM queue_runs WHERE admitted_at IS NULL);
CREATE INDEX IF NOT EXISTS runs_claimable ON runs (status, created_at) WHERE queued_waiting = 0""",
    ),
    Migration(
        8,
        "a run that ends while waiting in a queue leaves the line",
        # A queued run ended before its admission (terminate) kept its entry
        # waiting, and every claim ran the admission for it, for good. Its entry
        # now goes in the statement that ends it (its dedup key is freed; it
        # never held a slot nor counted in a rate window). The trigger's body
        # is on one line: statements here are split at ";" and a line end.
        """CREATE TRIGGER IF NOT EXISTS queue_line_end AFTER UPDATE OF status ON runs
    WHEN NEW.queued_waiting = 1 AND NEW.status IN ('completed', 'failed', 'cancelled', 'continued')
BEGIN DELETE FROM queue_runs WHERE run_id = NEW.run_id AND admitted_at IS NULL; END;
DELETE FROM queue_runs WHERE admitted_at IS NULL AND run_id IN (SELECT run_id FROM runs
    WHERE status IN ('completed', 'failed', 'cancelled', 'continued'))""",
    ),
)


def _statements(m: Migration) -> list[str]:
    return [part for part in m.sql.split(";\n") if part.strip()]


# From version v to v + 1: its statements.
_MIGRATIONS: dict[int, list[str]] = {m.version - 1: _statements(m) for m in MIGRATIONS}

# The oldest table layout a read-only open can read: it cannot upgrade the
# file, and the layouts after this one add nothing the reads need (layout 4
# adds forked_from, which every read of a run's row selects).
OLDEST_READABLE = 4


assert MIGRATIONS[-1].version == STORAGE_VERSION


async def version(conn: SQLiteThread) -> int:
    """The file's layout version; raises ``SchemaTooNew`` if newer than ours."""
    row = await conn.call(lambda c: c.execute("PRAGMA user_version").fetchone())
    return refuse_newer(int(row[0]) if row else 0, STORAGE_VERSION)


async def check_readable(conn: SQLiteThread, path: str) -> None:
    """A read-only open: the file must hold a layout the reads understand (nothing is upgraded).

    Raises:
        ConfigurationError: the file holds no journal, or an older layout.
        SchemaTooNew: the file was written by a newer continuum_py.
    """
    found = await version(conn)
    if found == 0:
        raise ConfigurationError(
            f"SQLite file {path!r} holds no continuum journal (it has no tables)"
        )
    problem = readable_layout(found, STORAGE_VERSION, OLDEST_READABLE, f"SQLite journal {path!r}")
    if problem is not None:
        raise ConfigurationError(problem)


async def migrate(conn: SQLiteThread) -> None:
    """Create the tables (new file) or upgrade an older layout, in one transaction."""
    if await version(conn) == STORAGE_VERSION:
        return

    def run(raw: sqlite3.Connection) -> None:
        raw.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have
            # upgraded the file since we looked.
            found = int(raw.execute("PRAGMA user_version").fetchone()[0])
            for step in pending_migrations(found, MIGRATIONS):
                for statement in _statements(step):
                    raw.execute(statement)
            raw.execute(f"PRAGMA user_version = {STORAGE_VERSION}")
            raw.commit()
        except BaseException:
            raw.rollback()
            raise

    await conn.call(run)
