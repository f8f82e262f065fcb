"""The step's statement, prepared on the Postgres journal's kept connection.

A step's append runs an asyncpg ``PreparedStatement`` kept with the journal's
kept connection. It must stay correct when the statement goes stale under it
(a result type changed by ``ALTER TABLE``), and a stale writer must still be
refused through it.
"""

from __future__ import annotations

import asyncpg
import pytest
from helpers import claim_run, new_run, step_batch

from continuum_py.adapters.postgres import PostgresJournal
from continuum_py.errors import LeaseLost

pytestmark = pytest.mark.postgres


async def _prepared_on_kept(journal: PostgresJournal) -> list[str]:
    """The named statements prepared on the journal's kept connection (its session's view)."""
    assert journal._lend.steps is not None
    kept = journal._lend.steps.conn
    assert kept is not None
    rows = await kept.fetch("SELECT statement FROM pg_prepared_statements")
    return [r[0] for r in rows]


async def test_a_step_statement_whose_result_type_changed_is_prepared_again(pg_test_schema):
    """ALTER TABLE changes what the prepared statement returns: the next step still lands."""
    dsn, schema = pg_test_schema
    async with PostgresJournal(dsn, schema=schema) as j:
        await j.start_run(new_run("r"))
        lease = await claim_run(j, "r")
        assert await j.append([step_batch(lease, 1, 1)]) == [None]
        step_sql = j._appender._step
        assert step_sql in await _prepared_on_kept(j)
        admin = await asyncpg.connect(dsn)
        try:
            # The step statement returns heads.run_id: its type changes under it.
            await admin.execute(f'ALTER TABLE "{schema}".heads ALTER COLUMN run_id TYPE varchar')
        finally:
            await admin.close()
        assert await j.append([step_batch(lease, 3, 2)]) == [None]
        assert await j.append([step_batch(lease, 5, 3)]) == [None]
        assert [e.seq for e in await j.load("r")] == list(range(1, 8))


async def test_a_stale_writer_is_refused_through_the_prepared_statement(pg_test_schema):
    """Worker 1's prepared step statement writes nothing once worker 2 has the run."""
    dsn, schema = pg_test_schema
    async with (
        PostgresJournal(dsn, schema=schema) as j1,
        PostgresJournal(dsn, schema=schema) as j2,
    ):
        await j1.start_run(new_run("r"))
        old = await claim_run(j1, "r")
        assert await j1.append([step_batch(old, 1, 1)]) == [None]
        assert j1._appender._step in await _prepared_on_kept(j1)
        new = await j2.seize("r", "w2", ttl=30.0)
        assert new is not None
        [refused] = await j1.append([step_batch(old, 3, 2)])
        assert isinstance(refused, LeaseLost)
        assert await j2.append([step_batch(new, 3, 2)]) == [None]
        assert [e.seq for e in await j1.load("r")] == [1, 2, 3, 4, 5]
