"""Model-based check of queue admission: random starts, claims, ends and clock moves.

One queue with a random ``concurrency``, ``per_worker`` and ``rate``; runs
started with random priorities and dedup keys; claims by two workers with
random room at an engine clock that only moves forward; runs ending (finished
or parked) and terminated (seized and ended from outside, waiting or not). After every step the journal must have admitted exactly the runs
the model admits (priority, then FIFO, as many as the limits let in), a dedup
start must return the unfinished holder of its key, and the queue's load must
match the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from continuum_py.journal import AppendBatch, Lease, QueueJournal, RunStatus
from continuum_py.queues import Queue
from continuum_py.testing._journal_helpers import new_run
from continuum_py.testing.conformance._base import AsyncJournalMachine, JournalCase

WORKERS = ["w1", "w2"]
PERIOD = 10.0


@dataclass
class _Run:
    priority: int
    key: str | None
    seq: int
    admitted_at: float | None = None
    lease: Lease | None = None
    status: RunStatus = RunStatus.PENDING


class QueueMachine(AsyncJournalMachine):
    """The journal made by ``case`` against a model of one queue's rules."""

    def __init__(self, case: JournalCase) -> None:
        super().__init__(case)
        self.runs: dict[str, _Run] = {}
        self.now = 1_000_000.0
        self.queue = Queue("q")

    # ---- the model ----
    def holding(self, worker: str | None = None) -> int:
        return sum(
            1
            for r in self.runs.values()
            if r.admitted_at is not None
            and r.status in (RunStatus.PENDING, RunStatus.RUNNING)
            and (worker is None or (r.lease is not None and r.lease.worker_id == worker))
        )

    def waiting(self) -> list[str]:
        w = [
            (r.priority, r.seq, rid)
            for rid, r in self.runs.items()
            if r.admitted_at is None and r.status == RunStatus.PENDING
        ]
        return [rid for _, _, rid in sorted(w)]

    def expected_admits(self, worker: str, limit: int) -> list[str]:
        q = self.queue
        room = limit
        if q.concurrency is not None:
            room = min(room, q.concurrency - self.holding())
        if q.per_worker is not None:
            room = min(room, q.per_worker - self.holding(worker))
        if q.rate is not None:
            recent = sum(
                1
                for r in self.runs.values()
                if r.admitted_at is not None and r.admitted_at > self.now - q.rate[1]
            )
            room = min(room, q.rate[0] - recent)
        return self.waiting()[: max(room, 0)]

    # ---- rules ----
    @initialize(
        concurrency=st.none() | st.integers(1, 3),
        per_worker=st.none() | st.integers(1, 2),
        rate=st.none() | st.integers(1, 4),
    )
    def declare(self, concurrency: Any, per_worker: Any, rate: Any) -> None:
        self.queue = Queue("q", concurrency, per_worker, None if rate is None else (rate, PERIOD))
        assert isinstance(self.journal, QueueJournal)
        self.run(self.journal.declare_queue(self.queue))

    @rule(priority=st.integers(0, 2), key=st.none() | st.sampled_from(["k1", "k2"]))
    def start(self, priority: int, key: str | None) -> None:
        run_id = f"r{len(self.runs) + 1:03d}"
        rec, created = self.run(
            self.journal.start_queued(new_run(run_id), "q", priority=priority, dedup_key=key)
        )
        holder = next(
            (
                rid
                for rid, r in self.runs.items()
                if key is not None and r.key == key and not r.status.terminal
            ),
            None,
        )
        if holder is not None:
            assert (rec.run_id, created) == (holder, False)
            return
        assert (rec.run_id, created) == (run_id, True)
        self.runs[run_id] = _Run(priority=priority, key=key, seq=len(self.runs))

    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(1, 4))
    def claim(self, worker: str, limit: int) -> None:
        expected = self.expected_admits(worker, limit)
        leases = self.run(self.journal.claim(worker, ttl=3600.0, limit=limit, now=self.now))
        # Released runs that hold a slot come back through the ordinary claim too.
        admitted = [x.run_id for x in leases if self.runs[x.run_id].admitted_at is None]
        assert admitted == expected
        for lease in leases:
            r = self.runs[lease.run_id]
            if r.admitted_at is None:
                r.admitted_at = self.now
            r.lease, r.status = lease, RunStatus.RUNNING

    @precondition(lambda self: any(r.status == RunStatus.RUNNING for r in self.runs.values()))
    @rule(data=st.data(), status=st.sampled_from([RunStatus.COMPLETED, RunStatus.PARKED]))
    def end(self, data: Any, status: RunStatus) -> None:
        running = sorted(rid for rid, r in self.runs.items() if r.status == RunStatus.RUNNING)
        rid = data.draw(st.sampled_from(running))
        r = self.runs[rid]
        assert r.lease is not None
        batch = AppendBatch(
            lease=r.lease,
            expected_seq=1,
            events=[],
            status=status,
            outcome=b"x" if status.terminal else None,
            reason=None if status.terminal else "held",
        )
        assert self.run(self.journal.append([batch])) == [None]
        r.status, r.lease = status, None

    @precondition(lambda self: any(not r.status.terminal for r in self.runs.values()))
    @rule(data=st.data())
    def terminate(self, data: Any) -> None:
        """``engine.terminate``'s writes: seize the run, then end it cancelled."""
        live = sorted(rid for rid, r in self.runs.items() if not r.status.terminal)
        rid = data.draw(st.sampled_from(live))
        lease = self.run(self.journal.seize(rid, "terminator", ttl=3600.0))
        assert lease is not None
        batch = AppendBatch(
            lease=lease, expected_seq=1, events=[], status=RunStatus.CANCELLED, outcome=b"x"
        )
        assert self.run(self.journal.append([batch])) == [None]
        r = self.runs[rid]
        r.status, r.lease = RunStatus.CANCELLED, None
        if r.admitted_at is None:  # ended while waiting: it left the line
            assert self.run(self.journal.queue_entry(rid)) is None

    @rule(seconds=st.sampled_from([0.5, 3.0, 10.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def the_limits_hold_and_the_load_matches(self) -> None:
        q = self.queue
        if q.concurrency is not None:
            assert self.holding() <= q.concurrency
        loads = self.run(self.journal.queue_loads(now=self.now))
        [load] = [x for x in loads if x.queue.name == "q"]
        assert load.holding == self.holding()
        assert list(load.waiting) == self.waiting()


class QueueModelTests(JournalCase):
    """The queue model check, run with ``queue_model_settings``."""

    queue_model_settings: ClassVar[settings] = settings(
        max_examples=40,
        stateful_step_count=20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )

    def test_queue_admission_does_what_the_model_does(self) -> None:
        run_state_machine_as_test(
            lambda: QueueMachine(self),  # type: ignore[arg-type]
            settings=self.queue_model_settings,
        )
