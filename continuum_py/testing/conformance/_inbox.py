"""Inboxes, suspension and wake-ups, child notification: the same on every adapter.

Wake-up times are compared with the engine clock passed as ``claim(now=...)``;
the far-future ``FAR`` keeps them out of reach of any journal clock.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from continuum_py.errors import JournalConflict, LeaseLost, RunAlreadyFinished, RunNotFound
from continuum_py.journal import (
    NOTIFY_PARENT_STATUSES,
    TERMINAL_STATUSES,
    AppendBatch,
    Lease,
    RunStatus,
)
from continuum_py.testing._journal_helpers import (
    claim_all,
    claim_run,
    new_run,
    step_events,
    suspend_batch,
)
from continuum_py.testing.conformance._base import JournalCase, asyncio_tests

FAR = 1e12  # year 33658: never due on a journal clock, only on an engine clock we pass


def _end(
    lease: Lease, expected_seq: int, status: RunStatus, outcome: bytes | None = b"out"
) -> AppendBatch:
    return AppendBatch(
        lease=lease,
        expected_seq=expected_seq,
        events=[],
        status=status,
        outcome=outcome if status.terminal else None,
        reason="why" if status == RunStatus.PARKED else None,
    )


@asyncio_tests
class InboxTests(JournalCase):
    """Inboxes, suspension and wake-ups, scheduled starts, a child's outcome posted to its parent."""

    async def test_send_numbers_messages_per_run_and_inbox_reads_them_in_order(
        self, journal: Any
    ) -> None:
        await journal.start_run(new_run("r1"))
        await journal.start_run(new_run("r2"))
        assert await journal.send("r1", "signal", "approve", b"true") == 1
        assert await journal.send("r1", "signal", "note", b'"hi"') == 2
        assert await journal.send("r2", "signal", "approve", b"false") == 1
        assert await journal.send("r1", "cancel", "", b"") == 3

        msgs = await journal.inbox("r1")
        assert [(m.run_id, m.id, m.kind, m.name, m.data) for m in msgs] == [
            ("r1", 1, "signal", "approve", b"true"),
            ("r1", 2, "signal", "note", b'"hi"'),
            ("r1", 3, "cancel", "", b""),
        ]
        assert [m.id for m in await journal.inbox("r1", after_id=1)] == [2, 3]
        assert await journal.inbox("r1", after_id=3) == []
        assert [(m.id, m.data) for m in await journal.inbox("r2")] == [(1, b"false")]
        rec = await journal.get_run("r1")
        assert (rec.inbox_last, rec.inbox_seen) == (3, 0)
        # A message is an inbox entry, not a history event.
        assert len(await journal.load("r1")) == 1

    async def test_send_to_an_unknown_run_is_refused(self, journal: Any) -> None:
        with pytest.raises(RunNotFound) as ei:
            await journal.send("ghost", "signal", "approve", b"true")
        assert ei.value.run_id == "ghost"
        assert await journal.get_run("ghost") is None
        assert await journal.inbox("ghost") == []

    @pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
    async def test_send_to_a_finished_run_is_refused_and_nothing_is_written(
        self, journal: Any, status: Any
    ) -> None:
        await journal.start_run(new_run("r1"))
        await journal.send("r1", "signal", "early", b"1")
        lease = await claim_run(journal, "r1")
        # The run records the early message as it ends (it may not end with it unseen).
        end = msgspec.structs.replace(_end(lease, 1, status), inbox_seen=1)
        assert await journal.append([end]) == [None]
        before = await journal.get_run("r1")
        with pytest.raises(RunAlreadyFinished) as ei:
            await journal.send("r1", "cancel", "", b"")
        assert (ei.value.run_id, ei.value.status) == ("r1", status.value)
        assert "cancel" in str(ei.value)
        assert [m.id for m in await journal.inbox("r1")] == [1]
        after = await journal.get_run("r1")
        assert (after.inbox_last, after.status) == (before.inbox_last, status)

    @pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.PARKED, RunStatus.SUSPENDED])
    async def test_unfinished_runs_accept_messages(self, journal: Any, status: Any) -> None:
        await journal.start_run(new_run("r1"))
        lease = await claim_run(journal, "r1")
        if status == RunStatus.SUSPENDED:
            await journal.append([suspend_batch(lease, 1, wake_at=FAR)])
        elif status == RunStatus.PARKED:
            await journal.append([_end(lease, 1, status)])
        assert (await journal.get_run("r1")).status == status
        assert await journal.send("r1", "signal", "s", b"1") == 1
        assert (await journal.get_run("r1")).inbox_last == 1

    async def test_suspended_run_is_claimable_only_once_its_wake_at_is_due(
        self, journal: Any
    ) -> None:
        await journal.start_run(new_run("r1"))
        lease = await claim_run(journal, "r1")
        assert await journal.append([suspend_batch(lease, 1, wake_at=FAR)]) == [None]
        rec = await journal.get_run("r1")
        assert rec.status == RunStatus.SUSPENDED and rec.wake_at == FAR
        assert rec.lease_owner is None and rec.lease_expires_at is None

        # Not due: not on the journal clock, not just before, not for its old owner.
        assert await journal.find_runnable() == []
        assert await journal.find_runnable(now=FAR - 1) == []
        assert await journal.claim("w2", ttl=30, limit=10) == []
        assert await journal.claim("w1", ttl=30, limit=10, reclaim_own=True, now=FAR - 1) == []

        assert await journal.find_runnable(now=FAR) == ["r1"]
        [again] = await journal.claim("w2", ttl=30, limit=10, now=FAR)
        assert again.run_id == "r1" and again.token == lease.token + 1
        rec = await journal.get_run("r1")
        assert rec.status == RunStatus.RUNNING and rec.lease_owner == "w2"
        assert rec.wake_at is None  # claiming clears it
        assert await journal.claim("w3", ttl=30, limit=10, now=FAR + 10) == []

    async def test_suspended_run_without_wake_at_waits_for_a_message(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        lease = await claim_run(journal, "r1")
        assert await journal.append([suspend_batch(lease, 1, inbox_seen=0)]) == [None]
        assert (await journal.get_run("r1")).wake_at is None
        assert await journal.claim("w1", ttl=30, limit=10, now=FAR * 10) == []

        assert await journal.send("r1", "signal", "go", b"1") == 1
        assert await journal.unseen_inbox(["r1"]) == ["r1"]
        assert await journal.find_runnable(now=0.0) == ["r1"]
        again = await claim_run(journal, "r1", "w2", now=0.0)
        assert again.token == lease.token + 1

    async def test_a_message_that_arrived_before_the_suspension_landed_wakes_at_once(
        self, journal: Any
    ) -> None:
        # No lost wake-up: the runner records messages up to id 1 and suspends, but
        # message 2 came in while it was working. The run must not sleep on it.
        await journal.start_run(new_run("late"))
        await journal.start_run(new_run("caught-up"))
        leases = await claim_all(journal)
        for run_id in ("late", "caught-up"):
            await journal.send(run_id, "signal", "a", b"1")
            await journal.send(run_id, "signal", "b", b"2")
        res = await journal.append(
            [
                suspend_batch(leases["late"], 1, wake_at=FAR, inbox_seen=1),
                suspend_batch(leases["caught-up"], 1, wake_at=FAR, inbox_seen=2),
            ]
        )
        assert res == [None, None]
        assert await journal.unseen_inbox(["late", "caught-up"]) == ["late"]
        assert await journal.find_runnable(now=0.0) == ["late"]
        [lease] = await journal.claim("w2", ttl=30, limit=10, now=0.0)
        assert lease.run_id == "late"
        # The run that had seen everything sleeps until something new comes.
        assert await journal.claim("w2", ttl=30, limit=10, now=0.0) == []
        await journal.send("caught-up", "signal", "c", b"3")
        assert [lease.run_id for lease in await journal.claim("w2", ttl=30, limit=10, now=0.0)] == [
            "caught-up"
        ]

    async def test_a_running_run_with_new_messages_keeps_its_lease(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        await claim_run(journal, "r1", ttl=300)
        await journal.send("r1", "signal", "s", b"1")
        # Messages wake a suspended run; a live lease still belongs to its runner.
        assert await journal.claim("w2", ttl=30, limit=10, now=FAR) == []
        assert await journal.find_runnable(now=FAR) == []

    async def test_scheduled_start_is_not_claimable_before_it_is_due(self, journal: Any) -> None:
        rec, lease, created = await journal.start_run(new_run("r1", wake_at=FAR), claim_for="w1")
        assert created and lease is None
        assert rec.status == RunStatus.PENDING and rec.wake_at == FAR
        assert await journal.claim("w1", ttl=30, limit=10) == []
        assert await journal.claim("w1", ttl=30, limit=10, now=FAR - 0.5) == []
        assert await journal.find_runnable(now=FAR - 0.5) == []
        assert await journal.next_wake_at() == FAR

        lease = await claim_run(journal, "r1", now=FAR)
        assert lease.token == 1
        assert (await journal.get_run("r1")).wake_at is None
        assert await journal.next_wake_at() is None

    async def test_scheduled_start_already_due_is_claimed_at_start(self, journal: Any) -> None:
        rec, lease, created = await journal.start_run(new_run("r1", wake_at=1.0), claim_for="w1")
        assert created and lease is not None and lease.token == 1
        assert rec.status == RunStatus.RUNNING and rec.wake_at is None

    async def test_resuming_to_pending_clears_wake_at(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        lease = await claim_run(journal, "r1")
        await journal.append([suspend_batch(lease, 1, wake_at=FAR)])
        assert await journal.set_status("r1", RunStatus.PENDING) is True
        rec = await journal.get_run("r1")
        assert rec.status == RunStatus.PENDING and rec.wake_at is None
        assert await journal.next_wake_at() is None
        assert await journal.find_runnable(now=0.0) == ["r1"]

    async def test_next_wake_at_is_the_earliest_pending_or_suspended_wake(
        self, journal: Any
    ) -> None:
        assert await journal.next_wake_at() is None
        await journal.start_run(new_run("scheduled", wake_at=FAR + 500))
        await journal.start_run(new_run("sleeper"))
        await journal.start_run(new_run("waiter"))
        leases = await claim_all(journal)
        assert set(leases) == {"sleeper", "waiter"}
        assert await journal.next_wake_at() == FAR + 500
        await journal.append(
            [
                suspend_batch(leases["sleeper"], 1, wake_at=FAR + 100),
                suspend_batch(leases["waiter"], 1),  # waits for a message only
            ]
        )
        assert await journal.next_wake_at() == FAR + 100
        # Once the sleeper is claimed its wake_at is gone; the scheduled start is next.
        await claim_run(journal, "sleeper", now=FAR + 100)
        assert await journal.next_wake_at() == FAR + 500

    async def test_inbox_seen_is_stored_only_when_its_batch_lands(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        [old] = await journal.claim("w1", ttl=0.0, limit=10)
        [lease] = await journal.claim("w2", ttl=300, limit=10)
        for name in ("a", "b"):
            await journal.send("r1", "signal", name, b"1")

        stale = AppendBatch(lease=old, expected_seq=1, events=step_events("r1", 2, 1), inbox_seen=2)
        wrong_tail = AppendBatch(
            lease=lease, expected_seq=7, events=step_events("r1", 8, 1), inbox_seen=2
        )
        [e1, e2] = await journal.append([stale, wrong_tail])
        assert isinstance(e1, LeaseLost) and isinstance(e2, JournalConflict)
        assert (await journal.get_run("r1")).inbox_seen == 0
        assert await journal.unseen_inbox(["r1"]) == ["r1"]

        ok = AppendBatch(lease=lease, expected_seq=1, events=step_events("r1", 2, 1), inbox_seen=1)
        assert await journal.append([ok]) == [None]
        rec = await journal.get_run("r1")
        assert (rec.inbox_seen, rec.status, rec.lease_owner) == (1, RunStatus.RUNNING, "w2")
        assert await journal.unseen_inbox(["r1"]) == ["r1"]
        # A batch without inbox_seen leaves it alone.
        assert await journal.append(
            [AppendBatch(lease=lease, expected_seq=3, events=step_events("r1", 4, 2))]
        ) == [None]
        assert (await journal.get_run("r1")).inbox_seen == 1
        assert await journal.append(
            [AppendBatch(lease=lease, expected_seq=5, events=[], inbox_seen=2)]
        ) == [None]
        assert (await journal.get_run("r1")).inbox_seen == 2
        assert await journal.unseen_inbox(["r1"]) == []

    async def test_unseen_inbox_keeps_the_order_asked_and_skips_unknown_runs(
        self, journal: Any
    ) -> None:
        for run_id in ("a", "b", "c"):
            await journal.start_run(new_run(run_id))
        await journal.send("c", "signal", "s", b"1")
        await journal.send("a", "signal", "s", b"1")
        assert await journal.unseen_inbox(["c", "ghost", "b", "a"]) == ["c", "a"]
        assert await journal.unseen_inbox([]) == []

    @pytest.mark.parametrize("status", sorted(NOTIFY_PARENT_STATUSES))
    async def test_a_finished_child_posts_its_outcome_to_the_parent_inbox(
        self, journal: Any, status: Any
    ) -> None:
        await journal.start_run(new_run("parent"))
        parent_lease = await claim_run(journal, "parent")
        await journal.append([suspend_batch(parent_lease, 1, inbox_seen=0)])
        rec, _, _ = await journal.start_run(
            new_run("child", parent_run_id="parent", parent_position=7)
        )
        assert rec.parent_run_id == "parent"
        child = await claim_run(journal, "child")
        assert await journal.append([_end(child, 1, status, outcome=b"final-event")]) == [None]

        [msg] = await journal.inbox("parent")
        assert (msg.run_id, msg.id, msg.kind, msg.name, msg.data) == (
            "parent",
            1,
            "child",
            "7",
            b"final-event",
        )
        parent = await journal.get_run("parent")
        assert (parent.inbox_last, parent.inbox_seen) == (1, 0)
        # The message wakes the suspended parent.
        assert await journal.find_runnable(now=0.0) == ["parent"]
        assert await journal.inbox("child") == []

    @pytest.mark.parametrize(
        "status", [RunStatus.CONTINUED, RunStatus.PARKED, RunStatus.SUSPENDED, None]
    )
    async def test_a_child_that_does_not_finish_for_good_posts_nothing(
        self, journal: Any, status: Any
    ) -> None:
        await journal.start_run(new_run("parent"))
        await claim_run(journal, "parent")
        await journal.start_run(new_run("child", parent_run_id="parent", parent_position=3))
        child = await claim_run(journal, "child")
        if status is None:
            batch = AppendBatch(lease=child, expected_seq=1, events=step_events("child", 2, 1))
        elif status == RunStatus.SUSPENDED:
            batch = suspend_batch(child, 1, wake_at=FAR)
        else:
            batch = _end(child, 1, status)
        assert await journal.append([batch]) == [None]
        assert await journal.inbox("parent") == []
        assert (await journal.get_run("parent")).inbox_last == 0

    async def test_a_stale_child_lease_ends_nothing_and_posts_nothing(self, journal: Any) -> None:
        await journal.start_run(new_run("parent"))
        await claim_run(journal, "parent", ttl=300)
        await journal.start_run(new_run("child", parent_run_id="parent", parent_position=2))
        [zombie] = await journal.claim("w1", ttl=0.0, limit=10)
        [fresh] = await journal.claim("w2", ttl=300, limit=10)
        assert zombie.run_id == fresh.run_id == "child"

        [err] = await journal.append([_end(zombie, 1, RunStatus.COMPLETED, outcome=b"zombie")])
        assert isinstance(err, LeaseLost)
        assert (await journal.get_run("child")).status == RunStatus.RUNNING
        assert await journal.inbox("parent") == []

        assert await journal.append([_end(fresh, 1, RunStatus.FAILED, outcome=b"fresh")]) == [None]
        assert [(m.name, m.data) for m in await journal.inbox("parent")] == [("2", b"fresh")]

    async def test_parent_notification_shares_the_group_commit_with_other_batches(
        self, journal: Any
    ) -> None:
        await journal.start_run(new_run("parent"))
        parent = await claim_run(journal, "parent", ttl=300)
        await journal.send("parent", "signal", "s", b"1")
        for run_id, pos in (("c1", 1), ("c2", 2)):
            await journal.start_run(new_run(run_id, parent_run_id="parent", parent_position=pos))
        kids = await claim_all(journal)
        res = await journal.append(
            [
                _end(kids["c2"], 1, RunStatus.COMPLETED, outcome=b"two"),
                AppendBatch(lease=parent, expected_seq=1, events=[], inbox_seen=1),
                _end(kids["c1"], 1, RunStatus.CANCELLED, outcome=b"one"),
            ]
        )
        assert res == [None, None, None]
        msgs = await journal.inbox("parent")
        assert [(m.id, m.kind, m.name, m.data) for m in msgs] == [
            (1, "signal", "s", b"1"),
            (2, "child", "2", b"two"),
            (3, "child", "1", b"one"),
        ]
        rec = await journal.get_run("parent")
        assert (rec.inbox_last, rec.inbox_seen) == (3, 1)

    async def test_a_child_whose_parent_is_missing_still_finishes(self, journal: Any) -> None:
        await journal.start_run(new_run("orphan", parent_run_id="ghost", parent_position=1))
        lease = await claim_run(journal, "orphan")
        assert await journal.append([_end(lease, 1, RunStatus.COMPLETED)]) == [None]
        rec = await journal.get_run("orphan")
        assert rec.status == RunStatus.COMPLETED and rec.parent_run_id == "ghost"
        assert await journal.get_run("ghost") is None

    async def test_continuing_moves_unrecorded_messages_to_the_next_run_atomically(
        self, journal: Any
    ) -> None:
        await journal.start_run(new_run("old"))
        lease = await claim_run(journal, "old")
        for name in ["a", "b", "c"]:
            await journal.send("old", "signal", name, name.encode())
        await journal.start_run(new_run("new"))
        await journal.send("new", "signal", "z", b"z")
        # The old run recorded message 1 only; 2 and 3 arrived after its last look.
        end = AppendBatch(
            lease=lease,
            expected_seq=1,
            events=[],
            status=RunStatus.CONTINUED,
            outcome=b"continued",
            inbox_seen=1,
            continued_to="new",
        )
        assert await journal.append([end]) == [None]
        moved = await journal.inbox("new")
        assert [(m.id, m.name, m.data) for m in moved] == [
            (1, "z", b"z"),
            (2, "b", b"b"),
            (3, "c", b"c"),
        ]
        assert (await journal.get_run("new")).inbox_last == 3
        with pytest.raises(RunAlreadyFinished):
            await journal.send("old", "signal", "d", b"d")

    async def test_a_refused_continue_moves_nothing(self, journal: Any) -> None:
        await journal.start_run(new_run("old"))
        [stale] = await journal.claim("w1", ttl=0.0, limit=10)
        await journal.claim("w2", ttl=30, limit=10)
        await journal.send("old", "signal", "a", b"a")
        await journal.start_run(new_run("new"))
        end = AppendBatch(
            lease=stale,
            expected_seq=1,
            events=[],
            status=RunStatus.CONTINUED,
            outcome=b"continued",
            inbox_seen=0,
            continued_to="new",
        )
        [err] = await journal.append([end])
        assert isinstance(err, LeaseLost)
        assert await journal.inbox("new") == []
        assert [m.name for m in await journal.inbox("old")] == ["a"]
