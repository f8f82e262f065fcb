"""The Postgres journal's append statements: fence, events, snapshot and run end in one.

Since layout 8 a run's tail and its fence live in a narrow row of its own
(``heads``: ``token``, ``last_seq``, ``inbox_seen``, ``updated_at``), which the
database keeps in step with the runs row's lease on every lease change. A step's
batch (no new status) checks and moves that row only: held token and expected
tail in the ``WHERE`` of its ``UPDATE``, so a stale writer changes nothing, and
the events go in only when the row did, in the same statement. A batch that sets
a status (ends, suspends or parks the run) updates the runs row as well, fenced
by that row's own token under its row lock, and then its heads row.
"""

from __future__ import annotations

from continuum_py.adapters._postgres_sql import _ENDS, _NOTIFY_PARENT, _NOW

__all__ = ["BATCH_FIELDS", "SCALAR_EVENTS", "append_many", "append_one"]

SCALAR_EVENTS = 2
"""A batch of at most this many events passes them as scalars (a step's two, a run's end)."""

BATCH_FIELDS = (
    ("run_id", "text"),
    ("token", "bigint"),
    ("expected", "bigint"),
    ("new_last", "bigint"),
    ("status", "text"),
    ("outcome", "bytea"),
    ("reason", "text"),
    ("wake_at", "float8"),
    ("inbox_seen", "bigint"),
)
"""A status batch's parameters, in order: ``$1`` to ``$9``; a step's are ``$1``-``$4`` and
``inbox_seen`` as ``$5``."""

# A status batch's fenced UPDATE of the runs row, over one batch's values (an SQL
# expression for each of BATCH_FIELDS): it lands only for the lease's holder at
# the expected tail, and a run ends only with every message recorded (a column of
# the row itself, so a concurrent send's row lock orders the two). The tail is
# the heads row's; that row is not locked here: only the holder moves it.
_ENDING_UPDATE = """UPDATE {s}.runs r SET
        last_seq = {new_last},
        updated_at = {now},
        inbox_seen = COALESCE({inbox_seen}, hd.inbox_seen),
        status = {status},
        outcome = {outcome},
        reason = {reason},
        lease_owner = NULL,
        lease_expires_at = NULL,
        wake_at = CASE WHEN {status} = 'suspended' THEN {wake_at} END
    FROM {source}{s}.heads hd
    WHERE r.run_id = {run_id} AND hd.run_id = r.run_id
        AND r.lease_token = {token} AND r.lease_owner IS NOT NULL AND hd.last_seq = {expected}
        AND ({status} NOT IN ({ends})
             OR r.inbox_last <= COALESCE({inbox_seen}, hd.inbox_seen)){extra}
    RETURNING r.run_id, r.status, r.wake_at, r.parent_run_id, r.parent_position"""


def _ending_update(s: str, values: dict[str, str], source: str = "", extra: str = "") -> str:
    return _ENDING_UPDATE.format(s=s, now=_NOW, ends=_ENDS, source=source, extra=extra, **values)


def _events_rows(n: int, events: int | None) -> str:
    """Events as rows ``x(seq, kind, schema, data)`` from parameter ``$n`` on."""
    if events is None:
        return f"unnest(${n}::bigint[], ${n + 1}::text[], ${n + 2}::int[], ${n + 3}::bytea[])"
    return (
        "(VALUES "
        + ", ".join(
            f"(${i}::bigint, ${i + 1}::text, ${i + 2}::int, ${i + 3}::bytea)"
            for i in range(n, n + 4 * events, 4)
        )
        + ")"
    )


def append_one(s: str, *, status: bool, snapshot: bool, ending: bool, events: int | None) -> str:
    """One batch's append, with scalar parameters, leaving out what it does not need.

    ``status=False`` (a step's batch): ``$1``..``$4`` run, token, expected, new
    last, ``$5`` inbox_seen; it writes the heads row, never the runs row.
    ``status=True``: ``$1``..``$9`` the batch (:data:`BATCH_FIELDS`), ``$10`` the
    channel. Then the snapshot's seq, schema and data (``snapshot`` only), then
    the events: ``events`` of them as (seq, kind, schema, data) scalars each, or
    with ``events=None`` four arrays of any length. ``ending``: the batch ends the
    run (a status of ``NOTIFY_PARENT_STATUSES``), and the outcome a child owes its
    parent (an inbox message, a notification) goes in the same statement. With
    one batch the parent's row is never the batch's own, and one statement is one
    transaction: no BEGIN and COMMIT round trips around it. It returns a row if
    the batch landed.
    """
    if status:
        n = len(BATCH_FIELDS) + 2  # the next parameter's number
        values = {k: f"${i}::{t}" for i, (k, t) in enumerate(BATCH_FIELDS, 1)}
        ctes = [
            f"u AS ({_ending_update(s, values)})",
            f"""hu AS (
    UPDATE {s}.heads hd SET last_seq = $4::bigint, updated_at = {_NOW},
        inbox_seen = COALESCE($9::bigint, hd.inbox_seen), token = NULL
    FROM u WHERE hd.run_id = u.run_id
)""",
        ]
    else:
        n = 6
        ctes = [
            f"""u AS (
    UPDATE {s}.heads hd SET last_seq = $4::bigint, updated_at = {_NOW},
        inbox_seen = COALESCE($5::bigint, hd.inbox_seen)
    WHERE hd.run_id = $1::text AND hd.token = $2::bigint AND hd.last_seq = $3::bigint
    RETURNING hd.run_id
)"""
        ]
    if snapshot:
        ctes.append(f"""sn AS (
    INSERT INTO {s}.snapshots (run_id, seq, schema, data)
    SELECT u.run_id, ${n}::bigint, ${n + 1}::int, ${n + 2}::bytea FROM u
    ON CONFLICT (run_id) DO UPDATE
        SET seq = excluded.seq, schema = excluded.schema, data = excluded.data
)""")
        n += 3
    if events != 0:
        ctes.append(f"""e AS (
    INSERT INTO {s}.events (run_id, seq, kind, schema, data)
    SELECT u.run_id, x.seq, x.kind, x.schema, x.data
    FROM u, {_events_rows(n, events)} AS x(seq, kind, schema, data)
)""")
    if ending:
        ctes.append(f"""p AS (
    UPDATE {s}.runs pr SET inbox_last = pr.inbox_last + 1, updated_at = {_NOW}
    FROM u WHERE pr.run_id = u.parent_run_id AND u.status IN ({_NOTIFY_PARENT})
    RETURNING pr.run_id, pr.inbox_last, u.parent_position
)""")
        ctes.append(f"""i AS (
    INSERT INTO {s}.inbox (run_id, id, kind, name, data, at)
    SELECT p.run_id, p.inbox_last, 'child', p.parent_position::text,
        COALESCE($6::bytea, ''::bytea), {_NOW}
    FROM p RETURNING run_id
)""")
    with_ = ",\n".join(ctes)
    if not status:
        return f"\nWITH {with_}\nSELECT u.run_id FROM u"
    tell_parent = "(SELECT pg_notify($10, i.run_id) FROM i)" if ending else "NULL"
    return f"""
WITH {with_}
SELECT u.run_id, u.status, u.parent_run_id, u.parent_position,
    CASE WHEN u.status = 'suspended' AND u.wake_at IS NOT NULL
         THEN pg_notify($10, u.run_id) END,
    {tell_parent}
FROM u"""


def append_many(s: str) -> str:
    """One statement per group commit (batches of distinct runs, as arrays).

    Status batches go through the runs row's fenced UPDATE (``u``, then their heads
    rows: ``he``), steps' batches through their heads row's (``hs``); the event and
    snapshot inserts keep only the runs that landed (``h``). A batch that ends a child run is held back (it does
    not land): written on its own by :func:`append_one`, it tells its parent in
    the same statement, which one statement for many runs cannot do safely (the
    parent's row may be one of the batches' own).
    """
    cols = ", ".join(name for name, _ in BATCH_FIELDS)
    arrays = ", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(BATCH_FIELDS, 1))
    update = _ending_update(
        s,
        {name: f"b.{name}" for name, _ in BATCH_FIELDS},
        "b, ",
        f"\n        AND b.status IS NOT NULL AND (b.status NOT IN ({_NOTIFY_PARENT})"
        " OR r.parent_run_id IS NULL)",
    )
    return f"""
WITH b AS (SELECT * FROM unnest({arrays}) AS b({cols})),
u AS ({update}),
hs AS (
    UPDATE {s}.heads hd SET last_seq = b.new_last, updated_at = {_NOW},
        inbox_seen = COALESCE(b.inbox_seen, hd.inbox_seen)
    FROM b
    WHERE hd.run_id = b.run_id AND b.status IS NULL
        AND hd.token = b.token AND hd.last_seq = b.expected
    RETURNING hd.run_id
),
he AS (
    UPDATE {s}.heads hd SET last_seq = b.new_last, updated_at = {_NOW},
        inbox_seen = COALESCE(b.inbox_seen, hd.inbox_seen), token = NULL
    FROM u JOIN b USING (run_id)
    WHERE hd.run_id = u.run_id
    RETURNING hd.run_id
),
h AS (SELECT run_id FROM hs UNION ALL SELECT run_id FROM he),
e AS (
    INSERT INTO {s}.events (run_id, seq, kind, schema, data)
    SELECT x.run_id, x.seq, x.kind, x.schema, x.data
    FROM unnest($10::text[], $11::bigint[], $12::text[], $13::int[], $14::bytea[])
        AS x(run_id, seq, kind, schema, data)
    WHERE x.run_id IN (SELECT run_id FROM h)
),
sn AS (
    INSERT INTO {s}.snapshots (run_id, seq, schema, data)
    SELECT x.run_id, x.seq, x.schema, x.data
    FROM unnest($15::text[], $16::bigint[], $17::int[], $18::bytea[]) AS x(run_id, seq, schema, data)
    WHERE x.run_id IN (SELECT run_id FROM h)
    ON CONFLICT (run_id) DO UPDATE
        SET seq = excluded.seq, schema = excluded.schema, data = excluded.data
)
SELECT h.run_id, u.status, u.parent_run_id, u.parent_position,
    CASE WHEN u.status = 'suspended' AND u.wake_at IS NOT NULL
         THEN pg_notify($19, u.run_id) END
FROM h LEFT JOIN u USING (run_id)"""
