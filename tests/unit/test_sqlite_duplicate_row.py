"""A journal whose tables disagree (an event stored past its run's tail) says so.

The SQL journals fence every write, so their own inserts meet an existing row
only when the tables were changed behind their back. Such an append used to
raise a placeholder ``JournalConflict("?", -1, None)`` naming no run; it is
``JournalCorrupt`` naming the duplicate, and nothing of the batch is written.
"""

from __future__ import annotations

import sqlite3

import pytest
from helpers import claim_run, new_run, step_events

from continuum_py._schemes import journal_from_url
from continuum_py.errors import JournalConflict, JournalCorrupt
from continuum_py.journal import AppendBatch


async def _stray_event(url: str, run_id: str, seq: int) -> None:
    """Store an event at ``seq`` behind the journal's back, its run's tail left as it was."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            conn.execute(
                "INSERT INTO events (run_id, seq, kind, schema, data) VALUES (?, ?, 'X', 1, x'00')",
                (run_id, seq),
            )
        conn.close()
        return
    import asyncpg

    dsn, _, schema = url.rpartition("?schema=")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f'INSERT INTO "{schema}".events (run_id, seq, kind, schema, data) '
            "VALUES ($1, $2, 'X', 1, '\\x00'::bytea)",
            run_id,
            seq,
        )
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "journal_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_append_meeting_a_stray_event_is_journal_corrupt_and_writes_nothing(journal_url):
    j = journal_from_url(journal_url)
    await j.connect()
    try:
        await j.start_run(new_run("r1"))
        lease = await claim_run(j, "r1")
        await _stray_event(journal_url, "r1", 3)
        batch = AppendBatch(lease=lease, expected_seq=1, events=step_events("r1", 2, 1))
        with pytest.raises(JournalCorrupt, match="already stored") as ei:
            await j.append([batch])
        assert not isinstance(ei.value, JournalConflict)
        rec = await j.get_run("r1")
        assert rec is not None and rec.last_seq == 1
        assert [e.seq for e in await j.load("r1")] == [1, 3]
    finally:
        await j.aclose()
