"""The conformance suite on the SQLite journal, and what only the SQLite journal does."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from helpers import claim_run, new_run, step_batch

from continuum_py._schemes import journal_from_url
from continuum_py.adapters.sqlite import SQLiteJournal
from continuum_py.journal import Journal
from continuum_py.testing.conformance import JournalConformance


class TestSQLiteJournal(JournalConformance):
    async def make_journal(self) -> Journal:
        # A new file each call: the model check makes one journal per example.
        return journal_from_url(f"sqlite:///{self.tmp_path}/journal-{uuid.uuid4().hex[:8]}.db")


# ---- transactions: what only SQLite's connection does ----


@pytest.fixture
async def sqlite_journal(tmp_path):

    async with SQLiteJournal(str(tmp_path / "j.db")) as j:
        yield j


async def test_sqlite_connection_takes_parameters(sqlite_journal):
    journal = sqlite_journal
    async with journal.transaction() as tx:
        conn = tx.connection
        assert await conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)") == -1
        assert await conn.execute("INSERT INTO kv VALUES (?, ?)", ("a", 1)) == 1
        assert (
            await conn.executemany(
                "INSERT INTO kv VALUES (:k, :v)",
                [
                    {"k": "b", "v": 2},
                    {"k": "c", "v": 3},
                ],
            )
            == 2
        )
        assert await conn.fetch("SELECT k, v FROM kv WHERE v >= ? ORDER BY k", (2,)) == [
            ("b", 2),
            ("c", 3),
        ]
        assert await conn.fetchval("SELECT v FROM kv WHERE k = ?", ("c",)) == 3
        assert await conn.fetchval("SELECT v FROM kv WHERE k = ?", ("zz",)) is None
    with pytest.raises(RuntimeError, match="transaction is over"):
        await conn.fetch("SELECT k FROM kv")
    async with journal.transaction() as tx:
        assert await tx.connection.fetchval("SELECT sum(v) FROM kv") == 6


async def test_sqlite_journal_write_inside_own_transaction_is_refused_not_deadlocked(
    sqlite_journal,
):
    journal = sqlite_journal
    await journal.start_run(new_run("r1"))
    lease = await claim_run(journal, "r1")
    async with asyncio.timeout(10), journal.transaction() as tx:
        with pytest.raises(RuntimeError, match="append"):
            await journal.append([step_batch(lease, 1)])
        assert await tx.append(step_batch(lease, 1)) is None
    assert [e.seq for e in await journal.load("r1")] == [1, 2, 3]


async def test_sqlite_cancelled_transaction_leaves_nothing_and_the_journal_usable(
    sqlite_journal,
):
    journal = sqlite_journal
    await journal.start_run(new_run("r1"))
    lease = await claim_run(journal, "r1")
    inside = asyncio.Event()

    async def step() -> None:
        async with journal.transaction() as tx:
            await tx.connection.execute("CREATE TABLE side (k TEXT)")
            await tx.connection.execute("INSERT INTO side VALUES ('x')")
            assert await tx.append(step_batch(lease, 1)) is None
            inside.set()
            await asyncio.Event().wait()  # cancelled here

    task = asyncio.create_task(step())
    async with asyncio.timeout(10):
        await inside.wait()
        waiting = asyncio.create_task(journal.send("r1", "signal", "s", b"1"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await waiting == 1
    assert [e.seq for e in await journal.load("r1")] == [1]
    async with journal.transaction() as tx:
        tables = await tx.connection.fetch("SELECT name FROM sqlite_master WHERE name = 'side'")
    assert tables == []
    assert await journal.append([step_batch(lease, 1)]) == [None]
