"""Liveness: a dead worker's runs are claimed at once, fenced; a live or unregistered one's are not."""

from __future__ import annotations

from typing import Any

import pytest

from continuum_py.errors import LeaseLost
from continuum_py.journal import AppendBatch, LivenessJournal
from continuum_py.testing._journal_helpers import claim_run, new_run, step_events
from continuum_py.testing.conformance._base import JournalCase, asyncio_tests

LONG = 3600.0  # no lease expires during a test: only liveness can move a run


@asyncio_tests
class LivenessTests(JournalCase):
    """Liveness (skipped for a journal that is not a LivenessJournal).

    ``release_liveness`` stands for the worker's process dying: the database or
    the OS lets go of the lock the same way.
    """

    @pytest.fixture
    def live_journal(self, journal: Any) -> Any:
        if not isinstance(journal, LivenessJournal):
            pytest.skip("this journal keeps no worker liveness")
        return journal

    async def test_a_dead_workers_run_is_claimed_at_once_and_its_writes_refused(
        self, live_journal: Any
    ) -> None:
        journal = live_journal
        await journal.start_run(new_run("r1"))
        assert await journal.hold_liveness("a") is True
        assert await journal.liveness_held("a") is True
        held = await claim_run(journal, "r1", "a", ttl=LONG)
        # Alive: nobody else may take it, though its lease is an hour long.
        assert await journal.claim("b", ttl=LONG, limit=10) == []
        assert await journal.find_runnable() == []
        assert await journal.dead_workers() == []

        await journal.release_liveness("a")
        assert await journal.dead_workers() == ["a"]
        assert await journal.find_runnable() == ["r1"]
        [taken] = await journal.claim("b", ttl=LONG, limit=10)
        assert (taken.run_id, taken.worker_id) == ("r1", "b")
        assert taken.token > held.token
        # The dead worker's write, had it been a zombie, is refused and lands nothing.
        [err] = await journal.append(
            [AppendBatch(lease=held, expected_seq=1, events=step_events("r1", 2, 1))]
        )
        assert isinstance(err, LeaseLost)
        assert [e.seq for e in await journal.load("r1")] == [1]
        [ok] = await journal.append(
            [AppendBatch(lease=taken, expected_seq=1, events=step_events("r1", 2, 1))]
        )
        assert ok is None
        # It leases nothing now: forgotten.
        assert await journal.dead_workers() == []

    async def test_an_owner_that_never_held_liveness_keeps_the_lease_rule(
        self, live_journal: Any
    ) -> None:
        journal = live_journal
        await journal.start_run(new_run("r1"))
        await journal.start_run(new_run("r2"))
        assert await journal.hold_liveness("a") is True
        [of_a] = await journal.claim("a", ttl=LONG, limit=1)
        [of_ops] = await journal.claim("ops", ttl=LONG, limit=1)  # never held liveness
        assert {of_a.run_id, of_ops.run_id} == {"r1", "r2"}
        assert await journal.claim("b", ttl=LONG, limit=10) == []
        await journal.release_liveness("a")
        taken = await journal.claim("b", ttl=LONG, limit=10)
        assert [lease.run_id for lease in taken] == [of_a.run_id]

    async def test_a_worker_back_alive_keeps_its_runs_and_takes_them_back_itself(
        self, live_journal: Any
    ) -> None:
        journal = live_journal
        await journal.start_run(new_run("r1"))
        assert await journal.hold_liveness("a") is True
        first = await claim_run(journal, "r1", "a", ttl=LONG)
        await journal.release_liveness("a")
        assert await journal.liveness_held("a") is False
        assert await journal.hold_liveness("a") is True  # a restarted process, same id
        assert await journal.dead_workers() == []
        assert await journal.claim("b", ttl=LONG, limit=10) == []
        [back] = await journal.claim("a", ttl=LONG, limit=10, reclaim_own=True)
        assert back.run_id == "r1" and back.token > first.token

    async def test_a_worker_let_go_with_forget_is_unregistered(self, live_journal: Any) -> None:
        journal = live_journal
        await journal.start_run(new_run("r1"))
        assert await journal.hold_liveness("a") is True
        await claim_run(journal, "r1", "a", ttl=LONG)
        await journal.release_liveness("a", forget=True)
        # Unregistered: its lease (a clean stop gives them back first) keeps the lease rule.
        assert await journal.dead_workers() == []
        assert await journal.claim("b", ttl=LONG, limit=10) == []

    async def test_a_dead_worker_leasing_nothing_is_forgotten(self, live_journal: Any) -> None:
        journal = live_journal
        await journal.start_run(new_run("r1"))
        assert await journal.hold_liveness("a") is True
        await journal.release_liveness("a")
        assert await journal.dead_workers() == []  # nothing to take: unregistered
        # So a later lease in its name, taken without liveness, keeps the lease rule.
        await claim_run(journal, "r1", "a", ttl=LONG)
        assert await journal.claim("b", ttl=LONG, limit=10) == []
