"""One conformance suite, run against every journal adapter."""

from __future__ import annotations

from typing import Any

import pytest

from continuum_py.errors import JournalConflict, LeaseLost, RunNotFound
from continuum_py.journal import AppendBatch, RunStatus, Snapshot
from continuum_py.testing._journal_helpers import new_run, step_events
from continuum_py.testing.conformance._base import JournalCase, asyncio_tests


@asyncio_tests
class WriteTests(JournalCase):
    """Starting runs, fenced and ordered writes, claims, renewals, releases, parking and snapshots."""

    async def test_start_run_twice_returns_the_existing_run(self, journal: Any) -> None:
        rec, lease, created = await journal.start_run(new_run("r1"))
        assert created and lease is None and rec.status == RunStatus.PENDING
        rec2, lease2, created2 = await journal.start_run(new_run("r1", workflow="other"))
        assert not created2 and lease2 is None
        assert rec2.workflow == "wf"
        assert len(await journal.load("r1")) == 1

    async def test_start_run_can_claim_atomically(self, journal: Any) -> None:
        rec, lease, created = await journal.start_run(new_run("r1"), claim_for="w1", ttl=30)
        assert created and lease is not None and lease.token == 1
        assert rec.status == RunStatus.RUNNING and rec.lease_owner == "w1"
        # Nobody else can claim it while the lease is live.
        assert await journal.claim("w2", ttl=30, limit=10) == []

    async def test_append_with_current_lease_lands_in_order(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        [lease] = await journal.claim("w1", ttl=30, limit=10)
        res = await journal.append(
            [AppendBatch(lease=lease, expected_seq=1, events=step_events("r1", 2, 1))]
        )
        assert res == [None]
        events = await journal.load("r1")
        assert [e.seq for e in events] == [1, 2, 3]
        assert [e.kind for e in events] == ["RunStarted", "StepScheduled", "StepCompleted"]
        assert (await journal.get_run("r1")).last_seq == 3

    async def test_stale_lease_is_refused_and_nothing_is_written(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        [old] = await journal.claim("w1", ttl=0.0, limit=10)
        # The lease expired at once; another worker takes the run over with a newer token.
        [new] = await journal.claim("w2", ttl=30, limit=10)
        assert new.token > old.token
        [err] = await journal.append(
            [AppendBatch(lease=old, expected_seq=1, events=step_events("r1", 2, 1))]
        )
        assert isinstance(err, LeaseLost)
        assert err.token == old.token and err.current_token == new.token
        assert [e.seq for e in await journal.load("r1")] == [1]
        assert await journal.append(
            [AppendBatch(lease=new, expected_seq=1, events=step_events("r1", 2, 1))]
        ) == [None]

    async def test_wrong_tail_is_a_conflict_and_nothing_is_written(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        [lease] = await journal.claim("w1", ttl=30, limit=10)
        [err] = await journal.append(
            [AppendBatch(lease=lease, expected_seq=5, events=step_events("r1", 6, 1))]
        )
        assert isinstance(err, JournalConflict)
        assert err.expected_seq == 5 and err.actual_seq == 1
        assert len(await journal.load("r1")) == 1

    async def test_group_append_refuses_only_the_stale_batch(self, journal: Any) -> None:
        for rid in ("a", "b"):
            await journal.start_run(new_run(rid))
        leases = {l.run_id: l for l in await journal.claim("w1", ttl=30, limit=10)}
        stale = leases["b"].__class__(
            run_id="b", worker_id="w1", token=leases["b"].token - 1, expires_at=0
        )
        res = await journal.append(
            [
                AppendBatch(lease=leases["a"], expected_seq=1, events=step_events("a", 2, 1)),
                AppendBatch(lease=stale, expected_seq=1, events=step_events("b", 2, 1)),
            ]
        )
        assert res[0] is None and isinstance(res[1], LeaseLost)
        assert len(await journal.load("a")) == 3
        assert len(await journal.load("b")) == 1

    async def test_terminal_status_is_set_with_the_last_events(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        [lease] = await journal.claim("w1", ttl=30, limit=10)
        await journal.append(
            [
                AppendBatch(
                    lease=lease,
                    expected_seq=1,
                    events=step_events("r1", 2, 1),
                    status=RunStatus.COMPLETED,
                    outcome=b"x",
                )
            ]
        )
        rec = await journal.get_run("r1")
        assert rec.status == RunStatus.COMPLETED and rec.outcome == b"x" and rec.lease_owner is None
        assert await journal.claim("w1", ttl=30, limit=10, reclaim_own=True) == []
        assert [r.run_id for r in await journal.list_runs(status=RunStatus.COMPLETED)] == ["r1"]

    async def test_expired_lease_can_be_taken_over(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        [l1] = await journal.claim("w1", ttl=0.0, limit=10)
        [l2] = await journal.claim("w2", ttl=30, limit=10)
        assert l2.token == l1.token + 1 and l2.worker_id == "w2"
        assert await journal.renew([l1], ttl=30) == [None]
        assert await journal.release(l1) is False

    async def test_restarted_worker_reclaims_its_own_runs_at_once(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        [l1] = await journal.claim("w1", ttl=300, limit=10)
        assert await journal.claim("w1", ttl=300, limit=10) == []
        assert await journal.claim("w2", ttl=300, limit=10, reclaim_own=True) == []
        [l2] = await journal.claim("w1", ttl=300, limit=10, reclaim_own=True)
        assert l2.token == l1.token + 1

    async def test_release_makes_the_run_claimable(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        [l1] = await journal.claim("w1", ttl=300, limit=10)
        assert await journal.release(l1) is True
        assert (await journal.get_run("r1")).status == RunStatus.PENDING
        assert await journal.find_runnable() == ["r1"]
        [l2] = await journal.claim("w2", ttl=300, limit=10)
        assert l2.token == l1.token + 1

    async def test_snapshot_and_tail(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        [lease] = await journal.claim("w1", ttl=30, limit=10)
        snap = Snapshot(run_id="r1", seq=3, schema=1, data=b"state")
        await journal.append(
            [
                AppendBatch(
                    lease=lease, expected_seq=1, events=step_events("r1", 2, 1), snapshot=snap
                )
            ]
        )
        await journal.append(
            [AppendBatch(lease=lease, expected_seq=3, events=step_events("r1", 4, 2))]
        )
        got, tail = await journal.load_with_snapshot("r1")
        assert got == snap
        assert [e.seq for e in tail] == [4, 5]

    async def test_load_with_snapshot_without_one_and_of_an_unknown_run(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        [lease] = await journal.claim("w1", ttl=30, limit=10)
        await journal.append(
            [AppendBatch(lease=lease, expected_seq=1, events=step_events("r1", 2, 1))]
        )
        got, tail = await journal.load_with_snapshot("r1")
        assert got is None
        assert tail == await journal.load("r1")
        assert [e.seq for e in tail] == [1, 2, 3]
        with pytest.raises(RunNotFound) as ei:
            await journal.load_with_snapshot("ghost")
        assert ei.value.run_id == "ghost"

    async def test_claim_respects_limit_and_order(self, journal: Any) -> None:
        for i in range(5):
            await journal.start_run(new_run(f"r{i}"))
        first = await journal.claim("w1", ttl=30, limit=2)
        rest = await journal.claim("w2", ttl=30, limit=10)
        assert len(first) == 2 and len(rest) == 3
        assert {l.run_id for l in first} | {l.run_id for l in rest} == {f"r{i}" for i in range(5)}

    @pytest.mark.parametrize("status", [RunStatus.PARKED])
    async def test_parked_run_is_not_claimed_until_resumed(self, journal: Any, status: Any) -> None:
        await journal.start_run(new_run("r1"))
        [lease] = await journal.claim("w1", ttl=30, limit=10)
        await journal.append(
            [AppendBatch(lease=lease, expected_seq=1, events=[], status=status, reason="why")]
        )
        rec = await journal.get_run("r1")
        assert rec.status == status and rec.reason == "why"
        assert await journal.claim("w1", ttl=30, limit=10, reclaim_own=True) == []
        assert await journal.set_status("r1", RunStatus.PENDING) is True
        assert len(await journal.claim("w1", ttl=30, limit=10)) == 1
