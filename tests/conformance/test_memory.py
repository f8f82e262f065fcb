"""The conformance suite on the memory journal, and what only the memory journal does."""

from __future__ import annotations

import pytest
from helpers import claim_all, new_run, step_batch

from continuum_py.adapters.memory import MemoryJournal
from continuum_py.errors import LeaseLost
from continuum_py.journal import Journal
from continuum_py.testing.conformance import JournalConformance


class TestMemoryJournal(JournalConformance):
    async def make_journal(self) -> Journal:
        return MemoryJournal()


async def test_memory_transaction_checks_its_batches_again_at_commit():
    # Nothing locks the memory journal while a transaction is open; a batch
    # that no longer fits at commit is refused then, and nothing is applied.
    journal = MemoryJournal()
    await journal.start_run(new_run("a"))
    await journal.start_run(new_run("b"))
    leases = await claim_all(journal, ttl=0.0)

    async def step() -> None:
        async with journal.transaction() as tx:
            assert tx.connection is None
            assert await tx.append(step_batch(leases["a"], 1)) is None
            assert await tx.append(step_batch(leases["b"], 1)) is None
            await journal.claim("w2", ttl=30, limit=1)  # takes a over: its lease lapsed

    with pytest.raises(LeaseLost) as ei:
        await step()
    assert ei.value.run_id == "a"
    assert [e.seq for e in await journal.load("a")] == [1]
    assert [e.seq for e in await journal.load("b")] == [1]
