"""Queues: admission under a queue's limits, priority order, dedup keys, served queues."""

from __future__ import annotations

from typing import Any

from continuum_py.journal import AppendBatch, Lease, QueueJournal, RunStatus
from continuum_py.queues import Queue
from continuum_py.testing._journal_helpers import new_run, suspend_batch
from continuum_py.testing.conformance._base import JournalCase, asyncio_tests

NOW = 1_000_000.0


async def _end(journal: Any, lease: Lease, status: RunStatus = RunStatus.COMPLETED) -> None:
    rec = await journal.get_run(lease.run_id)
    [err] = await journal.append(
        [
            AppendBatch(
                lease=lease,
                expected_seq=rec.last_seq,
                events=[],
                status=status,
                outcome=b"x" if status.terminal else None,
                reason="held" if status == RunStatus.PARKED else None,
            )
        ]
    )
    assert err is None


async def _queued(journal: Any, queue: Queue, *ids: str, priority: int = 0, **kw: Any) -> None:
    await journal.declare_queue(queue)
    for run_id in ids:
        _, created = await journal.start_queued(
            new_run(run_id, **kw), queue.name, priority=priority
        )
        assert created


async def _claim(journal: Any, worker: str = "w1", limit: int = 10, now: float = NOW) -> list[str]:
    return [x.run_id for x in await journal.claim(worker, ttl=30.0, limit=limit, now=now)]


@asyncio_tests
class QueueTests(JournalCase):
    """Queues (:class:`~continuum_py.journal.QueueJournal`); skipped for a journal without them."""

    async def _journal(self, journal: Any) -> Any:
        if not isinstance(journal, QueueJournal):
            import pytest

            pytest.skip("this journal keeps no queues")
        return journal

    async def test_a_claim_admits_no_more_than_the_concurrency_limit(self, journal: Any) -> None:
        j = await self._journal(journal)
        q = Queue("q", concurrency=2)
        await _queued(j, q, "a", "b", "c", "d")
        await j.start_run(new_run("plain"))
        first = await _claim(j, "w1")
        assert sorted(first) == ["a", "b", "plain"]
        assert await _claim(j, "w2") == []  # another worker: the limit is the queue's
        assert await j.find_runnable(now=NOW) == []  # waiting queued runs are not runnable
        leases = {x.run_id: x for x in await j.claim("w1", ttl=30.0, limit=0)}
        assert leases == {}
        # Finishing one frees one slot.
        rec = await j.get_run("a")
        lease = Lease(
            run_id="a", worker_id="w1", token=rec.lease_token, expires_at=rec.lease_expires_at
        )
        await _end(j, lease)
        assert await _claim(j, "w2") == ["c"]
        assert await _claim(j, "w2") == []

    async def test_priority_lower_first_and_fifo_within(self, journal: Any) -> None:
        j = await self._journal(journal)
        q = Queue("q", concurrency=1)
        await j.declare_queue(q)
        for run_id, prio in [("p3", 3), ("p1a", 1), ("p2", 2), ("p1b", 1), ("p0", 0)]:
            await j.start_queued(new_run(run_id), "q", priority=prio)
        order = []
        for _ in range(5):
            [lease] = await j.claim("w1", ttl=30.0, limit=5, now=NOW)
            order.append(lease.run_id)
            await _end(j, lease)
        assert order == ["p0", "p1a", "p1b", "p2", "p3"]

    async def test_dedup_key_returns_the_unfinished_run_then_is_free(self, journal: Any) -> None:
        j = await self._journal(journal)
        await j.declare_queue(Queue("q"))
        _, created = await j.start_queued(new_run("r1"), "q", dedup_key="user-7")
        assert created
        again, created = await j.start_queued(new_run("r2"), "q", dedup_key="user-7")
        assert (again.run_id, created) == ("r1", False)
        assert await j.get_run("r2") is None  # nothing recorded for the second start
        _, created = await j.start_queued(new_run("r3"), "other", dedup_key="user-7")
        assert created  # a key is per queue
        [lease] = [x for x in await j.claim("w1", ttl=30.0, limit=5, now=NOW) if x.run_id == "r1"]
        again, created = await j.start_queued(new_run("r2"), "q", dedup_key="user-7")
        assert (again.run_id, created) == ("r1", False)  # running still holds it
        await _end(j, lease)
        fresh, created = await j.start_queued(new_run("r4"), "q", dedup_key="user-7")
        assert (fresh.run_id, created) == ("r4", True)

    async def test_a_queued_start_of_an_existing_run_id_returns_that_run(
        self, journal: Any
    ) -> None:
        j = await self._journal(journal)
        await j.declare_queue(Queue("q", concurrency=5))
        await j.start_run(new_run("plain"))
        for key in (None, "k"):
            rec, created = await j.start_queued(new_run("plain"), "q", dedup_key=key)
            assert (rec.run_id, created) == ("plain", False)
        assert await j.queue_entry("plain") is None  # it stays a plain run
        _, created = await j.start_queued(new_run("a"), "q", priority=3)
        assert created
        rec, created = await j.start_queued(new_run("a"), "q", priority=1, dedup_key="k")
        assert (rec.run_id, created) == ("a", False)
        assert (await j.queue_entry("a"))[:3] == ("q", 3, None)  # the first start's place
        _, created = await j.start_queued(new_run("b"), "q", dedup_key="k")
        assert created  # the key "k" was never taken by the starts above
        assert sorted(await _claim(j)) == ["a", "b", "plain"]

    async def test_a_run_ended_while_waiting_leaves_the_line(self, journal: Any) -> None:
        """Terminated before its admission (seized, then ended): its entry goes at once."""
        j = await self._journal(journal)
        await _queued(j, Queue("q", concurrency=1), "busy")
        assert await _claim(j) == ["busy"]
        _, created = await j.start_queued(new_run("a"), "q", dedup_key="k")
        assert created
        lease = await j.seize("a", "terminator", ttl=30.0)
        assert lease is not None
        await _end(j, lease, RunStatus.CANCELLED)
        assert await j.queue_entry("a") is None
        assert (await j.get_run("a")).status == RunStatus.CANCELLED
        [load] = await j.queue_loads(now=NOW)
        assert (load.holding, load.waiting) == (1, [])
        _, created = await j.start_queued(new_run("b"), "q", dedup_key="k")
        assert created  # the key is free
        assert await _claim(j, "w2") == []  # "busy" still holds the only slot
        assert (await j.queue_entry("busy")) is not None  # an admitted run keeps its entry
        rec = await j.get_run("busy")
        busy = Lease(
            run_id="busy", worker_id="w1", token=rec.lease_token, expires_at=rec.lease_expires_at
        )
        await _end(j, busy)
        assert await _claim(j, "w2") == ["b"]

    async def test_per_worker_limit(self, journal: Any) -> None:
        j = await self._journal(journal)
        await _queued(j, Queue("q", concurrency=3, per_worker=1), "a", "b", "c", "d")
        assert await _claim(j, "w1") == ["a"]
        assert await _claim(j, "w1") == []
        assert await _claim(j, "w2") == ["b"]
        assert await _claim(j, "w3") == ["c"]
        assert await _claim(j, "w4") == []  # the global limit

    async def test_rate_lets_n_start_per_window_and_the_rest_wait(self, journal: Any) -> None:
        j = await self._journal(journal)
        await _queued(j, Queue("q", rate=(2, 10.0)), "a", "b", "c", "d", "e")
        assert await _claim(j, now=NOW) == ["a", "b"]
        assert await _claim(j, now=NOW + 9.9) == []
        assert await _claim(j, now=NOW + 10.0) == ["c", "d"]
        assert await _claim(j, now=NOW + 20.5) == ["e"]

    async def test_served_queues_and_round_robin(self, journal: Any) -> None:
        j = await self._journal(journal)
        await _queued(j, Queue("big"), *[f"b{i}" for i in range(6)])
        await _queued(j, Queue("small"), "s0", "s1")
        j.served_queues = frozenset({"small"})
        try:
            assert await _claim(j, limit=1) == ["s0"]
        finally:
            j.served_queues = None
        got = await _claim(j, limit=4)
        assert sum(r.startswith("s") for r in got) == 1 and len(got) == 4
        assert "s1" in got  # the small queue is not starved by the big one

    async def test_a_suspended_run_holds_its_slot_a_parked_one_does_not(self, journal: Any) -> None:
        j = await self._journal(journal)
        await _queued(j, Queue("q", concurrency=1), "a", "b", "c")
        [lease] = await j.claim("w1", ttl=30.0, limit=5, now=NOW)
        [err] = await j.append([suspend_batch(lease, 1, wake_at=NOW + 1000)])
        assert err is None
        assert await _claim(j) == []  # sleeping, it keeps its slot
        [lease] = await j.claim("w1", ttl=30.0, limit=5, now=NOW + 1000)
        assert lease.run_id == "a"  # woken, it runs again without waiting in line
        await _end(j, lease, RunStatus.PARKED)
        assert await _claim(j, now=NOW + 1000) == ["b"]

    async def test_a_run_due_later_does_not_block_the_line(self, journal: Any) -> None:
        j = await self._journal(journal)
        q = Queue("q", concurrency=1)
        await _queued(j, q, "later", wake_at=NOW + 100)
        await _queued(j, q, "now", priority=5)
        assert await _claim(j) == ["now"]
        rec = await j.get_run("now")
        await _end(
            j,
            Lease(run_id="now", worker_id="w1", token=rec.lease_token, expires_at=NOW + 30),
        )
        assert await _claim(j) == []
        assert await _claim(j, now=NOW + 100) == ["later"]

    async def test_queue_definitions_are_stored_and_replaced(self, journal: Any) -> None:
        j = await self._journal(journal)
        await j.declare_queue(Queue("q", concurrency=1, rate=(5, 2.5)))
        await j.declare_queue(Queue("a", per_worker=2))
        assert await j.stored_queues() == [
            Queue("a", per_worker=2),
            Queue("q", concurrency=1, rate=(5, 2.5)),
        ]
        await j.declare_queue(Queue("q", concurrency=3))
        assert (await j.stored_queues())[1] == Queue("q", concurrency=3)
        await _queued(j, Queue("q", concurrency=3), "r1")
        [load] = [x for x in await j.queue_loads(now=NOW) if x.queue.name == "q"]
        assert (load.holding, list(load.waiting)) == (0, ["r1"])
        assert await j.queue_entry("r1") == ("q", 0, None, None)
        assert await j.queue_entry("nope") is None
        await _claim(j, now=NOW + 5)
        assert await j.queue_entry("r1") == ("q", 0, None, NOW + 5)
