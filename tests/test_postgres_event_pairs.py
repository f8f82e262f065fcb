"""Layout 9: a step's two events in one row of the Postgres events table.

Readers see one event per seq, as before: ``load`` from any seq (inside a row
holding two as well), ``load_with_snapshot`` after a snapshot taken between a
row's two events, a read-only open of layout 8, and a schema upgraded from
layout 8 with its histories as they were.
"""

from __future__ import annotations

import asyncpg
import pytest
from helpers import claim_run, new_run, step_batch, step_events

from continuum_py.adapters.postgres import MIGRATIONS, PostgresJournal
from continuum_py.journal import AppendBatch, Snapshot

pytestmark = pytest.mark.postgres


async def _rows(dsn: str, schema: str, run_id: str) -> list[tuple[int, bool]]:
    """(seq, holds two) of each of the run's rows."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f'SELECT seq, kind2 IS NOT NULL FROM "{schema}".events WHERE run_id = $1 ORDER BY seq',
            run_id,
        )
        return [(r[0], r[1]) for r in rows]
    finally:
        await conn.close()


async def test_a_steps_two_events_are_one_row_and_read_back_as_two(pg_test_schema):
    dsn, schema = pg_test_schema
    async with PostgresJournal(dsn, schema=schema) as j:
        await j.start_run(new_run("r"))
        lease = await claim_run(j, "r")
        written = []
        for i in range(3):
            b = step_batch(lease, 1 + 2 * i, i + 1)
            written += b.events
            assert await j.append([b]) == [None]
        assert await _rows(dsn, schema, "r") == [(1, False), (2, True), (4, True), (6, True)]
        events = await j.load("r")
        assert [e.seq for e in events] == list(range(1, 8))
        assert events[1:] == written  # kind, schema and data as written, in order
        for after in range(8):
            assert [e.seq for e in await j.load("r", after_seq=after)] == list(range(after + 1, 8))


async def test_a_snapshot_between_a_rows_two_events_loads_the_second(pg_test_schema):
    dsn, schema = pg_test_schema
    async with PostgresJournal(dsn, schema=schema) as j:
        await j.start_run(new_run("r"))
        lease = await claim_run(j, "r")
        assert await j.append([step_batch(lease, 1, 1)]) == [None]  # the row of seqs 2 and 3
        snap = Snapshot(run_id="r", seq=2, schema=1, data=b"state")
        assert await j.take_snapshot(lease, snap) is None
        got, tail = await j.load_with_snapshot("r")
        assert got == snap
        assert [e.seq for e in tail] == [3]
        assert await j.append([step_batch(lease, 3, 2)]) == [None]
        got, tail = await j.load_with_snapshot("r")
        assert [e.seq for e in tail] == [3, 4, 5]


async def test_a_schema_from_before_migration_9_keeps_its_histories(pg_test_schema):
    """Layout 8's one-event rows read back alike, read-only and once upgraded; new steps pair."""
    dsn, name = pg_test_schema
    assert MIGRATIONS[8].version == 9
    old = PostgresJournal(dsn, schema=name)
    old.migrations = MIGRATIONS[:8]
    async with old:
        await old.start_run(new_run("r"))
        lease = await claim_run(old, "r")
        # Layout 8's statements insert one event a row: so does the group-commit one.
        batch = AppendBatch(lease=lease, expected_seq=1, events=step_events("r", 2, 1))
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                f'INSERT INTO "{name}".events (run_id, seq, kind, schema, data) '
                "SELECT 'r', x.seq, x.kind, x.schema, x.data FROM unnest("
                "$1::bigint[], $2::text[], $3::int[], $4::bytea[]) AS x(seq, kind, schema, data)",
                [e.seq for e in batch.events],
                [e.kind for e in batch.events],
                [e.schema for e in batch.events],
                [e.data for e in batch.events],
            )
            await conn.execute(f'UPDATE "{name}".heads SET last_seq = 3 WHERE run_id = $1', "r")
        finally:
            await conn.close()
    async with PostgresJournal(dsn, schema=name, read_only=True) as reader:
        # A read-only open cannot upgrade: it reads layout 8's rows as they are.
        before = await reader.load("r")
        assert [e.seq for e in before] == [1, 2, 3]
        assert before[1:] == batch.events
        assert (await reader.load_with_snapshot("r"))[1] == before
    async with PostgresJournal(dsn, schema=name) as new:
        assert await new.load("r") == before
        assert await new.append([step_batch(lease, 3, 2)]) == [None]
        assert await _rows(dsn, name, "r") == [(1, False), (2, False), (3, False), (4, True)]
        assert [e.seq for e in await new.load("r")] == [1, 2, 3, 4, 5]
        assert [e.seq for e in await new.load("r", after_seq=2)] == [3, 4, 5]
        assert [e.seq for e in (await new.load_with_snapshot("r"))[1]] == [1, 2, 3, 4, 5]
