"""The Postgres journal's SQL: the table layout's migrations and every statement.

Kept apart from :mod:`continuum_py.adapters.postgres`, which runs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from continuum_py._log import get_logger
from continuum_py.adapters._rules import (
    LIVE_STATUSES,
    WAITING_STATUSES,
    Migration,
    pending_migrations,
    refuse_newer,
    sql_in,
)
from continuum_py.adapters._schedules import POSTGRES_TABLE as POSTGRES_SCHEDULES_TABLE
from continuum_py.journal import (
    INBOX_CHECKED_STATUSES,
    NOTIFY_PARENT_STATUSES,
    RUN_COLUMNS,
    TERMINAL_STATUSES,
)

__all__ = [
    "ADMISSION_LOCK_CLASS",
    "COLS",
    "MIGRATIONS",
    "VERSION_TABLE",
    "Migration",
    "Statements",
    "admission_lock",
    "claim_ctes",
    "current_version",
    "migrate",
    "start_run_sql",
]

log = get_logger()


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runs, events, snapshots, inbox",
        """
CREATE TABLE {s}.runs (
    run_id text PRIMARY KEY,
    workflow text NOT NULL,
    status text NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    last_seq bigint NOT NULL,
    lease_owner text,
    lease_token bigint NOT NULL DEFAULT 0,
    lease_expires_at double precision,
    wake_at double precision,
    outcome bytea,
    reason text,
    parent_run_id text,
    parent_position integer NOT NULL DEFAULT 0,
    inbox_last bigint NOT NULL DEFAULT 0,
    inbox_seen bigint NOT NULL DEFAULT 0
);
-- Claims scan live runs oldest first; finished runs stay out of this index.
CREATE INDEX runs_live ON {s}.runs (created_at, run_id)
    WHERE status IN ('pending', 'running', 'suspended');
CREATE INDEX runs_by_status ON {s}.runs (status, created_at, run_id);
CREATE INDEX runs_wake ON {s}.runs (wake_at) WHERE wake_at IS NOT NULL;
CREATE TABLE {s}.events (
    run_id text NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    schema integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE {s}.snapshots (
    run_id text PRIMARY KEY,
    seq bigint NOT NULL,
    schema integer NOT NULL,
    data bytea NOT NULL
);
CREATE TABLE {s}.inbox (
    run_id text NOT NULL,
    id bigint NOT NULL,
    kind text NOT NULL,
    name text NOT NULL,
    data bytea NOT NULL,
    at double precision NOT NULL,
    PRIMARY KEY (run_id, id)
);
""",
    ),
    Migration(
        2,
        "indexes for listing runs",
        """
-- list_runs pages by (created_at, run_id), newest or oldest first, with a keyset:
-- over every run, or within one workflow. One status uses runs_by_status.
CREATE INDEX runs_by_created ON {s}.runs (created_at, run_id);
CREATE INDEX runs_by_workflow ON {s}.runs (workflow, created_at, run_id);
-- A run_id prefix is a range in byte order, whatever the database's collation.
CREATE INDEX runs_by_id_bytes ON {s}.runs (run_id COLLATE "C");
""",
    ),
    Migration(
        3,
        "runs gain forked_from",
        """
ALTER TABLE {s}.runs ADD COLUMN forked_from text;
-- Few runs are forks: a partial index lists a run's forks.
CREATE INDEX runs_forked ON {s}.runs (forked_from, created_at) WHERE forked_from IS NOT NULL;
""",
    ),
    Migration(
        4,
        "workers: who holds a liveness lock",
        """
-- A worker that holds a session advisory lock keyed lock_key while it lives.
-- A claim takes the runs of a registered worker whose lock is free at once.
CREATE TABLE {s}.workers (
    worker_id text PRIMARY KEY,
    lock_key bigint NOT NULL,
    since double precision NOT NULL
);
""",
    ),
    Migration(5, "schedules table", POSTGRES_SCHEDULES_TABLE),
    Migration(
        6,
        "queues",
        """
-- Queue definitions; a claim locks the rows of the queues it admits from.
CREATE TABLE {s}.queues (
    name text PRIMARY KEY,
    concurrency integer,
    per_worker integer,
    rate_n integer,
    rate_period double precision
);
-- Each queued run's place. done: its run was seen finished (frees its slot and key).
CREATE TABLE {s}.queue_runs (
    run_id text PRIMARY KEY,
    queue text NOT NULL,
    priority integer NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    dedup_key text,
    admitted_at double precision,
    done boolean NOT NULL DEFAULT false
);
CREATE INDEX queue_waiting ON {s}.queue_runs (queue, priority, seq) WHERE admitted_at IS NULL;
CREATE INDEX queue_slots ON {s}.queue_runs (queue) WHERE admitted_at IS NOT NULL AND NOT done;
CREATE INDEX queue_started ON {s}.queue_runs (queue, admitted_at) WHERE admitted_at IS NOT NULL;
-- One unfinished run per (queue, dedup_key): racing starts get one run.
CREATE UNIQUE INDEX queue_dedup ON {s}.queue_runs (queue, dedup_key)
    WHERE dedup_key IS NOT NULL AND NOT done;
""",
    ),
    Migration(
        7,
        "runs waiting for admission stay out of the claim's scan",
        """
-- queued_waiting: a queued run not yet admitted (its queue_runs row has no
-- admitted_at). A claim scans runs_claimable, which leaves those out: with
-- thousands waiting, each claim would otherwise step over all of them.
ALTER TABLE {s}.runs ADD COLUMN queued_waiting boolean NOT NULL DEFAULT false;
UPDATE {s}.runs r SET queued_waiting = true FROM {s}.queue_runs q
    WHERE q.run_id = r.run_id AND q.admitted_at IS NULL;
CREATE INDEX runs_claimable ON {s}.runs (created_at, run_id)
    WHERE status IN ('pending', 'running', 'suspended') AND NOT queued_waiting;
-- Each admission bumps its queues' rows: a claim whose snapshot predates
-- another's admission sees the bump on the row it locks, and counts again.
ALTER TABLE {s}.queues ADD COLUMN admissions bigint NOT NULL DEFAULT 0;
""",
    ),
    Migration(
        8,
        "a run's tail and fence in a narrow table of its own",
        """
-- heads: what a step's append checks and moves, so that a step writes this
-- narrow row, not the runs row with its many indexes. token: the run's lease
-- token while a lease is held (runs.lease_owner set), else NULL. The statements
-- that insert runs insert their heads rows; the trigger below sets the token on
-- every lease change of a runs row, whatever statement makes it, except an
-- append's (it moves last_seq, and sets the heads row itself). last_seq and
-- inbox_seen: the run's (the runs row's copies are brought up to date only when
-- its status changes); updated_at: its last append (a run's is the later of
-- this and its runs row's).
CREATE TABLE {s}.heads (
    run_id text PRIMARY KEY,
    token bigint,
    last_seq bigint NOT NULL,
    inbox_seen bigint NOT NULL,
    updated_at double precision NOT NULL
);
INSERT INTO {s}.heads (run_id, token, last_seq, inbox_seen, updated_at)
SELECT run_id, CASE WHEN lease_owner IS NOT NULL THEN lease_token END, last_seq, inbox_seen,
    updated_at
FROM {s}.runs;
CREATE FUNCTION {s}.heads_follow_lease() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    UPDATE {s}.heads SET token = CASE WHEN NEW.lease_owner IS NOT NULL THEN NEW.lease_token END
    WHERE run_id = NEW.run_id;
    RETURN NULL;
END
$f$;
-- Every claim, seize, release, park: a new token, or a lease taken or let go.
CREATE TRIGGER heads_lease AFTER UPDATE OF lease_token, lease_owner ON {s}.runs
    FOR EACH ROW WHEN (OLD.last_seq = NEW.last_seq
        AND (OLD.lease_token IS DISTINCT FROM NEW.lease_token
             OR (OLD.lease_owner IS NULL) <> (NEW.lease_owner IS NULL)))
    EXECUTE FUNCTION {s}.heads_follow_lease();
""",
    ),
    Migration(
        9,
        "a queued run's slot is counted from its runs row",
        """
-- queue: the queue a run was admitted from (set by the admission that leases
-- it). A queue's slots are its runs that are live (pending, running or
-- suspended): runs_queue_live lists them, so an admission counts a queue's
-- slots from that index alone, with no look at each slot's run nor a finished
-- slot to find and mark done; a run leaves the index as its status changes
-- (ends or parks), in the statement that changes it, at no cost to plain runs.
-- queue_runs.done now only frees a dedup key (a start sets it, as before).
ALTER TABLE {s}.runs ADD COLUMN queue text;
UPDATE {s}.runs r SET queue = q.queue FROM {s}.queue_runs q
    WHERE q.run_id = r.run_id AND q.admitted_at IS NOT NULL AND NOT q.done;
CREATE INDEX runs_queue_live ON {s}.runs (queue)
    WHERE queue IS NOT NULL AND status IN ('pending', 'running', 'suspended');
DROP INDEX {s}.queue_slots;
""",
    ),
    Migration(
        10,
        "a run that ends while waiting in a queue leaves the line",
        """
-- A queued run ended before its admission (terminate: seize, then the end) kept
-- its entry waiting: every claim then saw runs waiting in its queue and ran the
-- admission, stepping over the entry, for good. Its entry now goes in the
-- statement that ends it, whatever statement that is (it frees its dedup key;
-- it never held a slot nor counted in a rate window). The WHEN is tested on
-- each status change of a runs row; the function runs only for such a run.
CREATE FUNCTION {s}.queue_leave_line() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    DELETE FROM {s}.queue_runs WHERE run_id = NEW.run_id AND admitted_at IS NULL;
    RETURN NULL;
END
$f$;
CREATE TRIGGER queue_line_end AFTER UPDATE OF status ON {s}.runs
    FOR EACH ROW WHEN (NEW.queued_waiting
        AND NEW.status IN ('completed', 'failed', 'cancelled', 'continued'))
    EXECUTE FUNCTION {s}.queue_leave_line();
DELETE FROM {s}.queue_runs q USING {s}.runs r
    WHERE q.run_id = r.run_id AND q.admitted_at IS NULL
      AND r.status IN ('completed', 'failed', 'cancelled', 'continued');
""",
    ),
)
"""The table layout's history, oldest first; each is applied once, in its own transaction."""


VERSION_TABLE = "continuum_schema_version"

# float8 from the start (extract() computes a numeric first, then the cast).
_NOW = "date_part('epoch', clock_timestamp())"
_ENDS = sql_in(INBOX_CHECKED_STATUSES)
_NOTIFY_PARENT = sql_in(NOTIFY_PARENT_STATUSES)
_TERMINAL_SQL = sql_in(TERMINAL_STATUSES)
COLS = ", ".join(RUN_COLUMNS)
# A run's record: its runs row ``r`` joined with its heads row ``h`` (migration 8).
_FROM_HEADS = {
    "updated_at": "GREATEST(r.updated_at, h.updated_at)",
    "last_seq": "h.last_seq",
    "inbox_seen": "h.inbox_seen",
}
_RECORD = ", ".join(_FROM_HEADS.get(c, f"r.{c}") for c in RUN_COLUMNS)


def _dead(s: str) -> str:
    """A CTE ``dead``: registered workers whose liveness lock no session holds (their process died).

    ``pg_try_advisory_xact_lock`` takes each such lock until the statement's
    transaction ends, so a worker coming back cannot slip in between; live
    workers' locks are only tried. Materialized: one look per worker, not per row.
    """
    return (
        f"dead AS MATERIALIZED (SELECT worker_id FROM {s}.workers "
        "WHERE pg_try_advisory_xact_lock(lock_key))"
    )


def _runnable(own: str, now: str) -> str:
    """The claim predicate; ``own``: SQL true when the lease holder may take its run back.

    A lease is free when nobody holds it, it expired, it is ours to take back, or
    its holder is in the CTE ``dead`` (:func:`_dead`), which the statement must define.
    A queued run waiting for admission (``queued_waiting``) is never runnable here: the
    ``runs_claimable`` index leaves those out, so a claim does not scan them.
    """
    dead = "lease_owner IN (SELECT worker_id FROM dead)"
    free = f"(lease_owner IS NULL OR lease_expires_at <= {_NOW} OR {own} OR {dead})"
    due = f"COALESCE({now}::float8, {_NOW})"
    return (
        f"status IN ({sql_in(LIVE_STATUSES)}) AND NOT queued_waiting AND ("
        f"(status = 'pending' AND (wake_at IS NULL OR wake_at <= {due}) AND {free}) "
        f"OR (status = 'running' AND {free}) "
        f"OR (status = 'suspended' AND (wake_at <= {due} OR inbox_last > inbox_seen)))"
    )


HEADS_FROM_INS = """
    INSERT INTO {s}.heads (run_id, token, last_seq, inbox_seen, updated_at)
    SELECT run_id, CASE WHEN lease_owner IS NOT NULL THEN lease_token END, last_seq, inbox_seen,
        updated_at
    FROM ins"""
"""A new run's heads row, from the CTE ``ins`` (the runs rows inserted, returning them whole)."""


def start_run_sql(
    s: str,
    *,
    before: str = "",
    source: str = "c",
    on_conflict: bool = True,
    payload: str = "run_id",
) -> str:
    """The statement creating a run and its first event; it returns the run's row.

    $1..$14: :meth:`PostgresJournal._start_args`. ``before``: CTEs to put first;
    ``source``: what the insert selects from (``c`` joined with a CTE of
    ``before`` gates it); without ``on_conflict`` a taken run id is an error
    that undoes the whole statement. ``payload``: SQL for what the notification
    on channel $13 says when the run is not claimed at once.
    """
    conflict = "ON CONFLICT (run_id) DO NOTHING" if on_conflict else ""
    return f"""
WITH {before}t AS (SELECT {_NOW} AS now),
c AS (SELECT t.now, $4::text IS NOT NULL AND ($6::float8 IS NULL OR $6::float8 <= t.now) AS claim
      FROM t),
ins AS (
    INSERT INTO {s}.runs (run_id, workflow, status, created_at, updated_at, last_seq,
        lease_owner, lease_token, lease_expires_at, wake_at, parent_run_id, parent_position,
        queued_waiting)
    SELECT $1::text, $2::text, CASE WHEN c.claim THEN 'running' ELSE 'pending' END, c.now, c.now,
        $3::bigint,
        CASE WHEN c.claim THEN $4::text END, CASE WHEN c.claim THEN 1 ELSE 0 END,
        CASE WHEN c.claim THEN c.now + $5::float8 END,
        CASE WHEN c.claim THEN NULL ELSE $6::float8 END, $7::text, $8::int, $14::boolean
    FROM {source}
    {conflict}
    RETURNING {COLS}
),
ev AS (
    INSERT INTO {s}.events (run_id, seq, kind, schema, data)
    SELECT run_id, $9::bigint, $10::text, $11::int, $12::bytea FROM ins
),
hd AS ({HEADS_FROM_INS.format(s=s)})
SELECT {COLS}, CASE WHEN lease_owner IS NULL THEN pg_notify($13, {payload}) END FROM ins"""


ADMISSION_LOCK_CLASS = 0x636F6E71
"""The first key of the advisory lock an admission holds per queue while its
statement runs (a two-key lock: never one of the liveness locks, which take one
64-bit key); the second is a hash of the schema and queue names."""


def admission_lock(schema: str, name: str, *, shared: bool = False) -> str:
    """SQL trying the admission lock of the queue named by the SQL ``name`` (true: taken)."""
    key = "'" + schema.replace("'", "''") + ".' || " + name
    fn = "pg_try_advisory_xact_lock_shared" if shared else "pg_try_advisory_xact_lock"
    return f"{fn}({ADMISSION_LOCK_CLASS}, hashtext({key}))"


def claim_ctes(s: str, *, own: str, now: str, limit: str) -> str:
    """CTEs ``dead``, ``c`` and ``u`` of a claim: ``u`` returns the runs it leased.

    ``own``, ``now``: see :func:`_runnable`; the parameters ``$1`` (worker) and
    ``$2`` (ttl) are the statement's; ``limit``: SQL for how many to take.
    """
    return f"""{_dead(s)}, c AS (
    SELECT run_id FROM {s}.runs WHERE {_runnable(own, now)}
    ORDER BY created_at, run_id LIMIT {limit}
    FOR UPDATE SKIP LOCKED
),
u AS (
    -- By key (= ANY of an array): one index look per run on any plan. A join
    -- with c, on a generic plan (LIMIT unknown, so c estimated large), hashed
    -- over a scan of every run: 48 ms a claim with 200,000 runs, against 0.3.
    UPDATE {s}.runs r SET status = 'running', lease_owner = $1, lease_token = r.lease_token + 1,
        lease_expires_at = {_NOW} + $2::float8, updated_at = {_NOW}, wake_at = NULL
    WHERE r.run_id = ANY(ARRAY(SELECT run_id FROM c))
    RETURNING r.run_id, r.lease_token, r.lease_expires_at, r.created_at
)"""


class Statements:
    """Every statement, with the schema spelled in."""

    def __init__(self, schema: str, *, heads: bool = True) -> None:
        s = f'"{schema}"'
        self.start_run = start_run_sql(s)
        # heads=False: a layout before 8, read only (its runs rows are whole).
        runs = f"{s}.runs r JOIN {s}.heads h USING (run_id)" if heads else f"{s}.runs r"
        record = _RECORD if heads else ", ".join(f"r.{c}" for c in RUN_COLUMNS)
        self.get_run = f"SELECT {record} FROM {runs} WHERE r.run_id = $1"
        n = len(RUN_COLUMNS)
        self.put_run = (
            f"WITH ins AS (INSERT INTO {s}.runs ({COLS}, parent_position) "
            f"VALUES ({', '.join(f'${i}' for i in range(1, n + 2))}) "
            f"ON CONFLICT (run_id) DO NOTHING RETURNING {COLS}), "
            f"hd AS ({HEADS_FROM_INS.format(s=s)}) SELECT run_id FROM ins"
        )
        self.put_events = (
            f"INSERT INTO {s}.events (run_id, seq, kind, schema, data) "
            "SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::bytea[])"
        )
        self.forks = (
            f"SELECT {record} FROM {runs} WHERE r.forked_from = $1 ORDER BY r.created_at, r.run_id"
        )
        self.now = f"SELECT {_NOW}"
        # Its WHERE, ORDER BY and LIMIT come from journal.list_runs_sql.
        self.list_runs = f"SELECT {record} FROM {runs}"
        self.why = f"SELECT {record} FROM {runs} WHERE r.run_id = ANY($1::text[])"
        # Continue-as-new: the old run's unrecorded messages move to the new run.
        self.forward_unseen = f"""
WITH m AS (
    SELECT i.kind, i.name, i.data, row_number() OVER (ORDER BY i.id) AS n
    FROM {s}.inbox i
    WHERE i.run_id = $1 AND i.id > (SELECT inbox_seen FROM {s}.runs WHERE run_id = $1)
),
t AS (
    UPDATE {s}.runs SET inbox_last = inbox_last + (SELECT count(*) FROM m), updated_at = {_NOW}
    WHERE run_id = $2 AND EXISTS (SELECT 1 FROM m)
    RETURNING inbox_last - (SELECT count(*) FROM m) AS base
),
ins AS (
    INSERT INTO {s}.inbox (run_id, id, kind, name, data, at)
    SELECT $2::text, t.base + m.n, m.kind, m.name, m.data, {_NOW} FROM m, t
)
SELECT pg_notify($3, $2::text) FROM t"""
        self.load = (
            f"SELECT seq, kind, schema, data FROM {s}.events "
            "WHERE run_id = $1 AND seq > $2 ORDER BY seq"
        )
        self.exists = f"SELECT 1 FROM {s}.runs WHERE run_id = $1"
        self.snapshot = f"SELECT seq, schema, data FROM {s}.snapshots WHERE run_id = $1"
        # The snapshot row (kind NULL) first, then the events after it: one round trip.
        self.load_with_snapshot = f"""
WITH snap AS (SELECT seq, schema, data FROM {s}.snapshots WHERE run_id = $1)
SELECT 0 AS part, seq, NULL::text AS kind, schema, data FROM snap
UNION ALL
SELECT 1, e.seq, e.kind, e.schema, e.data FROM {s}.events e
WHERE e.run_id = $1 AND e.seq > COALESCE((SELECT seq FROM snap), 0)
ORDER BY part, seq"""
        self.take_snapshot = f"""
WITH ok AS (
    SELECT run_id FROM {s}.runs
    WHERE run_id = $1 AND lease_token = $2 AND lease_owner IS NOT NULL FOR SHARE
)
INSERT INTO {s}.snapshots (run_id, seq, schema, data)
SELECT $3::text, $4::bigint, $5::int, $6::bytea FROM ok
ON CONFLICT (run_id) DO UPDATE SET seq = excluded.seq, schema = excluded.schema, data = excluded.data
RETURNING run_id"""
        self.token = f"SELECT lease_token FROM {s}.runs WHERE run_id = $1"
        self.claim = f"""
WITH {claim_ctes(s, own="($4 AND lease_owner = $1)", now="$5", limit="$3")}
SELECT run_id, lease_token, lease_expires_at, created_at FROM u
UNION ALL
-- A row of NULLs but the token: queued runs wait in the queues $6 (NULL: any),
-- one index look per queue: 1 if in a queue no admission is working on now (the
-- claim admits next), else 0 (left to that admission; looked at again soon).
SELECT NULL, max(CASE WHEN {admission_lock(schema, "qq.name", shared=True)} THEN 1 ELSE 0 END),
    NULL, NULL
FROM {s}.queues qq
WHERE ($6::text[] IS NULL OR qq.name = ANY($6::text[]))
  AND (SELECT true FROM {s}.queue_runs w WHERE w.queue = qq.name AND w.admitted_at IS NULL LIMIT 1)
HAVING count(*) > 0"""
        self.find_runnable = (
            f"WITH {_dead(s)} SELECT run_id FROM {s}.runs WHERE {_runnable('false', '$2')} "
            "ORDER BY created_at, run_id LIMIT $1"
        )
        self.renew = f"""
UPDATE {s}.runs r SET lease_expires_at = {_NOW} + $3::float8
FROM unnest($1::text[], $2::bigint[]) AS l(run_id, token)
WHERE r.run_id = l.run_id AND r.lease_token = l.token AND r.lease_owner IS NOT NULL
RETURNING r.run_id, r.lease_token, r.lease_expires_at"""
        self.seize = f"""
UPDATE {s}.runs SET lease_owner = $2, lease_token = lease_token + 1,
    lease_expires_at = {_NOW} + $3::float8, updated_at = {_NOW}
WHERE run_id = $1 AND status NOT IN ({_TERMINAL_SQL})
RETURNING lease_token, lease_expires_at"""
        self.release = f"""
WITH u AS (
    UPDATE {s}.runs SET lease_owner = NULL, lease_expires_at = NULL,
        status = CASE status WHEN 'running' THEN 'pending' ELSE status END,
        updated_at = {_NOW}
    WHERE run_id = $1 AND lease_token = $2 AND lease_owner IS NOT NULL
    RETURNING run_id
)
SELECT pg_notify($3, run_id) FROM u"""
        self.set_status = f"""
WITH u AS (
    UPDATE {s}.runs SET status = $2::text, reason = $3, lease_owner = NULL,
        lease_expires_at = NULL, updated_at = {_NOW},
        wake_at = CASE WHEN $2::text = 'pending' THEN NULL ELSE wake_at END
    WHERE run_id = $1 AND status NOT IN ({_TERMINAL_SQL})
    RETURNING run_id, status
)
SELECT run_id, CASE WHEN status = 'pending' THEN pg_notify($4, run_id) END FROM u"""
        self.send = f"""
WITH u AS (
    UPDATE {s}.runs SET inbox_last = inbox_last + 1, updated_at = {_NOW}
    WHERE run_id = $1 AND status NOT IN ({_TERMINAL_SQL})
    RETURNING run_id, inbox_last
),
i AS (
    INSERT INTO {s}.inbox (run_id, id, kind, name, data, at)
    SELECT run_id, inbox_last, $2::text, $3::text, $4::bytea, {_NOW} FROM u RETURNING run_id, id
)
SELECT id, pg_notify($5, run_id) FROM i"""
        self.status = f"SELECT status FROM {s}.runs WHERE run_id = $1"
        self.inbox = (
            f"SELECT id, kind, name, data, at FROM {s}.inbox "
            "WHERE run_id = $1 AND id > $2 ORDER BY id"
        )
        self.unseen = (
            f"SELECT r.run_id FROM {runs} WHERE r.run_id = ANY($1::text[]) "
            f"AND r.inbox_last > {'h' if heads else 'r'}.inbox_seen"
        )
        # Dead registered workers (their lock is free): those leasing running
        # runs are returned, the others forgotten. The locks taken to look end
        # with the statement, so a worker coming back waits a moment at most.
        self.dead_workers = f"""
WITH {_dead(s)}, busy AS MATERIALIZED (
    SELECT DISTINCT r.lease_owner AS worker_id FROM {s}.runs r JOIN dead d
    ON r.lease_owner = d.worker_id WHERE r.status = 'running'
), gone AS (
    DELETE FROM {s}.workers w USING dead d
    WHERE w.worker_id = d.worker_id AND d.worker_id NOT IN (SELECT worker_id FROM busy)
)
SELECT worker_id FROM busy ORDER BY worker_id"""
        self.next_wake = (
            f"SELECT min(wake_at) FROM {s}.runs "
            f"WHERE wake_at IS NOT NULL AND status IN ({sql_in(WAITING_STATUSES)})"
        )


async def current_version(conn: Any, schema: str) -> int | None:
    """The schema's layout version, or ``None`` if it has no version table."""
    table = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".{VERSION_TABLE}')
    if table is None:
        return None
    version = await conn.fetchval(f'SELECT max(version) FROM "{schema}".{VERSION_TABLE}')
    return int(version or 0)


async def migrate(conn: Any, schema: str, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring ``schema`` up to the newest of ``migrations``; returns the version.

    Each migration runs in its own transaction under a transaction-level
    advisory lock keyed by the schema, so workers starting together apply it
    once. A schema newer than ``migrations`` raises ``SchemaTooNew`` and is left
    as it is.
    """
    latest = migrations[-1].version if migrations else 0
    found = await current_version(conn, schema)
    if found is not None and refuse_newer(found, latest) == latest:
        return latest
    q = f'"{schema}"'
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"continuum:{schema}")
            if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
                await conn.execute(f"CREATE SCHEMA {q}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {q}.{VERSION_TABLE} (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            found = int(await conn.fetchval(f"SELECT max(version) FROM {q}.{VERSION_TABLE}") or 0)
            pending = pending_migrations(found, migrations)
            if not pending:
                return found
            step = pending[0]
            await conn.execute(step.sql.format(s=q))
            await conn.execute(
                f"INSERT INTO {q}.{VERSION_TABLE} (version, name) VALUES ($1, $2)",
                step.version,
                step.name,
            )
            log.info("journal.migrated", schema=schema, version=step.version, name=step.name)
