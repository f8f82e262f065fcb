"""Transactional journals: a step's own SQL and its completion commit together.

The append semantics run on every adapter. The SQL parts need a real
connection (the memory journal has none) and use only parameterless SQL that
SQLite and Postgres both accept.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from continuum_py.errors import LeaseLost
from continuum_py.journal import AppendBatch, JournalTransaction, TransactionalJournal
from continuum_py.testing._journal_helpers import (
    claim_all,
    claim_run,
    new_run,
    step_batch,
    step_events,
)
from continuum_py.testing.conformance._base import JournalCase, asyncio_tests


async def _table(journal: Any) -> str | None:
    """A fresh table for the step's own rows, or None when there is no connection."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    async with journal.transaction() as tx:
        if tx.connection is None:
            return None
        await tx.connection.execute(f"CREATE TABLE {name} (k TEXT NOT NULL)")
    return name


async def _rows(journal: Any, table: str | None) -> list[tuple[Any, ...]]:
    if table is None:
        return []
    async with journal.transaction() as tx:
        return [tuple(r) for r in await tx.connection.fetch(f"SELECT k FROM {table} ORDER BY k")]


@asyncio_tests
class TransactionTests(JournalCase):
    """``transaction()``: a step's own SQL and its completion commit or roll back together (skipped for a journal that is not a TransactionalJournal)."""

    @pytest.fixture
    def tx_journal(self, journal: Any) -> Any:
        if not isinstance(journal, TransactionalJournal):
            pytest.skip("this journal has no transaction()")
        return journal

    async def test_clean_exit_commits_the_append_and_the_steps_sql(self, tx_journal: Any) -> None:
        journal = tx_journal
        table = await _table(journal)
        await journal.start_run(new_run("r1"))
        lease = await claim_run(journal, "r1")
        async with journal.transaction() as tx:
            assert isinstance(tx, JournalTransaction)
            if table is not None:
                await tx.connection.execute(f"INSERT INTO {table} (k) VALUES ('charged')")
                assert await tx.connection.fetchval(f"SELECT count(*) FROM {table}") == 1
            assert await tx.append(step_batch(lease, 1)) is None
            # Nothing is visible outside the transaction before it commits.
            assert [e.seq for e in await journal.load("r1")] == [1]
            assert (await journal.get_run("r1")).last_seq == 1
        assert [e.seq for e in await journal.load("r1")] == [1, 2, 3]
        assert (await journal.get_run("r1")).last_seq == 3
        if table is not None:
            assert await _rows(journal, table) == [("charged",)]
        # The lease is still the runner's: it carries on appending.
        assert await journal.append([step_batch(lease, 3, 2)]) == [None]

    async def test_an_exception_rolls_back_the_append_and_the_steps_sql(
        self, tx_journal: Any
    ) -> None:
        journal = tx_journal
        table = await _table(journal)
        await journal.start_run(new_run("r1"))
        lease = await claim_run(journal, "r1")

        async def step() -> None:
            async with journal.transaction() as tx:
                if table is not None:
                    await tx.connection.execute(f"INSERT INTO {table} (k) VALUES ('charged')")
                assert await tx.append(step_batch(lease, 1)) is None
                raise RuntimeError("step blew up")

        with pytest.raises(RuntimeError, match="step blew up"):
            await step()
        assert [e.seq for e in await journal.load("r1")] == [1]
        assert await _rows(journal, table) == []
        # Nothing half-done is left behind: the same write lands afterwards.
        assert await journal.append([step_batch(lease, 1)]) == [None]

    async def test_a_refused_append_rolls_back_the_whole_transaction(self, tx_journal: Any) -> None:
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
            assert await tx.append(step_batch(leases["a"], 1)) is None
            err = await tx.append(stale)
            assert isinstance(err, LeaseLost) and err.run_id == "b"
        # No exception, but nothing committed: not a's batch, not the step's row.
        assert [e.seq for e in await journal.load("a")] == [1]
        assert [e.seq for e in await journal.load("b")] == [1]
        assert await _rows(journal, table) == []

    async def test_an_open_transaction_does_not_block_other_runs_forever(
        self, tx_journal: Any
    ) -> None:
        journal = tx_journal
        await journal.start_run(new_run("a"))
        await journal.start_run(new_run("b"))
        leases = await claim_all(journal)
        async with asyncio.timeout(10):  # a deadlock fails here instead of hanging
            async with journal.transaction() as tx:
                other = asyncio.create_task(journal.append([step_batch(leases["b"], 1)]))
                for _ in range(5):
                    await asyncio.sleep(0)  # let the other append start and queue
                assert await tx.append(step_batch(leases["a"], 1)) is None
            assert await other == [None]
        assert [e.seq for e in await journal.load("a")] == [1, 2, 3]
        assert [e.seq for e in await journal.load("b")] == [1, 2, 3]

    async def test_two_transactions_on_different_runs_both_commit(self, tx_journal: Any) -> None:
        journal = tx_journal
        await journal.start_run(new_run("a"))
        await journal.start_run(new_run("b"))
        leases = await claim_all(journal)

        async def step(run_id: str) -> None:
            async with journal.transaction() as tx:
                await asyncio.sleep(0)
                assert await tx.append(step_batch(leases[run_id], 1)) is None

        async with asyncio.timeout(10):
            await asyncio.gather(step("a"), step("b"))
        assert [e.seq for e in await journal.load("a")] == [1, 2, 3]
        assert [e.seq for e in await journal.load("b")] == [1, 2, 3]
