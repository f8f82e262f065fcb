"""Transactional journals: a step's own SQL and its completion commit together.

The append semantics run on every adapter. The SQL parts need a real
connection (the memory journal has none) and use only parameterless SQL that
SQLite and Postgres both accept.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from helpers import claim_all, claim_run, new_run, step_events

from continuum_py.errors import LeaseLost
from continuum_py.journal import AppendBatch, JournalTransaction, TransactionalJournal


@pytest.fixture
def tx_journal(journal):
    if not isinstance(journal, TransactionalJournal):
        pytest.skip("this journal has no transaction()")
    return journal


async def _table(journal) -> str | None:
    """A fresh table for the step's own rows, or None when there is no connection."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    async with journal.transaction() as tx:
        if tx.connection is None:
            return None
        await tx.connection.execute(f"CREATE TABLE {name} (k TEXT NOT NULL)")
    return name


async def _rows(journal, table: str | None) -> list[tuple]:
    if table is None:
        return []
    async with journal.transaction() as tx:
        return [tuple(r) for r in await tx.connection.fetch(f"SELECT k FROM {table} ORDER BY k")]


def _step(lease, expected_seq: int, position: int = 1) -> AppendBatch:
    return AppendBatch(
        lease=lease,
        expected_seq=expected_seq,
        events=step_events(lease.run_id, expected_seq + 1, position),
    )


async def test_clean_exit_commits_the_append_and_the_steps_sql(tx_journal):
    journal = tx_journal
    table = await _table(journal)
    await journal.start_run(new_run("r1"))
    lease = await claim_run(journal, "r1")
    async with journal.transaction() as tx:
        assert isinstance(tx, JournalTransaction)
        if table is not None:
            await tx.connection.execute(f"INSERT INTO {table} (k) VALUES ('charged')")
            assert await tx.connection.fetchval(f"SELECT count(*) FROM {table}") == 1
        assert await tx.append(_step(lease, 1)) is None
        # Nothing is visible outside the transaction before it commits.
        assert [e.seq for e in await journal.load("r1")] == [1]
        assert (await journal.get_run("r1")).last_seq == 1
    assert [e.seq for e in await journal.load("r1")] == [1, 2, 3]
    assert (await journal.get_run("r1")).last_seq == 3
    if table is not None:
        assert await _rows(journal, table) == [("charged",)]
    # The lease is still the runner's: it carries on appending.
    assert await journal.append([_step(lease, 3, 2)]) == [None]


async def test_an_exception_rolls_back_the_append_and_the_steps_sql(tx_journal):
    journal = tx_journal
    table = await _table(journal)
    await journal.start_run(new_run("r1"))
    lease = await claim_run(journal, "r1")

    async def step() -> None:
        async with journal.transaction() as tx:
            if table is not None:
                await tx.connection.execute(f"INSERT INTO {table} (k) VALUES ('charged')")
            assert await tx.append(_step(lease, 1)) is None
            raise RuntimeError("step blew up")

    with pytest.raises(RuntimeError, match="step blew up"):
        await step()
    assert [e.seq for e in await journal.load("r1")] == [1]
    assert await _rows(journal, table) == []
    # Nothing half-done is left behind: the same write lands afterwards.
    assert await journal.append([_step(lease, 1)]) == [None]


async def test_a_refused_append_rolls_back_the_whole_transaction(tx_journal):
    journal = tx_journal
    table = await _table(journal)
    await journal.start_run(new_run("a"))
    await journal.start_run(new_run("b"))
    leases = await claim_all(journal)
    stale = AppendBatch(
        lease=leases["b"].__class__(
            run_id="b", worker_id="w1", token=leases["b"].token - 1, expires_at=0
        ),
        expected_seq=1,
        events=step_events("b", 2, 1),
    )
    async with journal.transaction() as tx:
        if table is not None:
            await tx.connection.execute(f"INSERT INTO {table} (k) VALUES ('charged')")
        assert await tx.append(_step(leases["a"], 1)) is None
        err = await tx.append(stale)
        assert isinstance(err, LeaseLost) and err.run_id == "b"
    # No exception, but nothing committed: not a's batch, not the step's row.
    assert [e.seq for e in await journal.load("a")] == [1]
    assert [e.seq for e in await journal.load("b")] == [1]
    assert await _rows(journal, table) == []


async def test_an_open_transaction_does_not_block_other_runs_forever(tx_journal):
    journal = tx_journal
    await journal.start_run(new_run("a"))
    await journal.start_run(new_run("b"))
    leases = await claim_all(journal)
    async with asyncio.timeout(10):  # a deadlock fails here instead of hanging
        async with journal.transaction() as tx:
            other = asyncio.create_task(journal.append([_step(leases["b"], 1)]))
            for _ in range(5):
                await asyncio.sleep(0)  # let the other append start and queue
            assert await tx.append(_step(leases["a"], 1)) is None
        assert await other == [None]
    assert [e.seq for e in await journal.load("a")] == [1, 2, 3]
    assert [e.seq for e in await journal.load("b")] == [1, 2, 3]


async def test_two_transactions_on_different_runs_both_commit(tx_journal):
    journal = tx_journal
    await journal.start_run(new_run("a"))
    await journal.start_run(new_run("b"))
    leases = await claim_all(journal)

    async def step(run_id: str) -> None:
        async with journal.transaction() as tx:
            await asyncio.sleep(0)
            assert await tx.append(_step(leases[run_id], 1)) is None

    async with asyncio.timeout(10):
        await asyncio.gather(step("a"), step("b"))
    assert [e.seq for e in await journal.load("a")] == [1, 2, 3]
    assert [e.seq for e in await journal.load("b")] == [1, 2, 3]


# ---- adapter specifics ----


@pytest.fixture
async def sqlite_journal(tmp_path):
    from continuum_py.adapters.sqlite import SQLiteJournal

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
            await journal.append([_step(lease, 1)])
        assert await tx.append(_step(lease, 1)) is None
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
            assert await tx.append(_step(lease, 1)) is None
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
    assert await journal.append([_step(lease, 1)]) == [None]


async def test_memory_transaction_checks_its_batches_again_at_commit():
    # Nothing locks the memory journal while a transaction is open; a batch
    # that no longer fits at commit is refused then, and nothing is applied.
    from continuum_py.adapters.memory import MemoryJournal

    journal = MemoryJournal()
    await journal.start_run(new_run("a"))
    await journal.start_run(new_run("b"))
    leases = await claim_all(journal, ttl=0.0)

    async def step() -> None:
        async with journal.transaction() as tx:
            assert tx.connection is None
            assert await tx.append(_step(leases["a"], 1)) is None
            assert await tx.append(_step(leases["b"], 1)) is None
            await journal.claim("w2", ttl=30, limit=1)  # takes a over: its lease lapsed

    with pytest.raises(LeaseLost) as ei:
        await step()
    assert ei.value.run_id == "a"
    assert [e.seq for e in await journal.load("a")] == [1]
    assert [e.seq for e in await journal.load("b")] == [1]
