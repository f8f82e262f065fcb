"""Model-based check of the journal protocol: random operations against a plain-Python model.

The machine starts runs (some scheduled, one a child of another), claims them
(several workers, expiring or long leases, reclaiming its own, at engine-clock
times before and after wake-ups), appends with current or stale tokens and
right or wrong tails (alone or grouped; some suspend, finish or park the run and
record inbox messages as seen), sends messages, renews, releases, parks and
loads, and after every step compares the journal with the model: seqs 1..n with
no gaps, a stale token never writes, tokens only grow, loads return exactly what
was accepted, inboxes hold exactly what was sent (and what children posted), and
a run is runnable exactly when the model says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from continuum_py._client import stored
from continuum_py.errors import (
    JournalConflict,
    LeaseLost,
    MessagesPending,
    RunAlreadyFinished,
    RunNotFound,
)
from continuum_py.events import RunStarted
from continuum_py.journal import (
    INBOX_CHECKED_STATUSES,
    NOTIFY_PARENT_STATUSES,
    AppendBatch,
    Lease,
    NewRun,
    RunStatus,
    Snapshot,
    StoredEvent,
)
from continuum_py.testing.conformance._base import AsyncJournalMachine, JournalCase

RUN_IDS = ["r1", "r2", "r3"]
CHILD, PARENT, POSITION = "c1", "r1", 7  # c1 is a child run of r1 (which may not exist)
ALL_IDS = [*RUN_IDS, CHILD]
WORKERS = ["w1", "w2", "w3"]
TTLS = [0.0, 3600.0]  # expired at once, or live for the whole example
LIVE = (RunStatus.PENDING, RunStatus.RUNNING)
WAITING = (RunStatus.PENDING, RunStatus.SUSPENDED)
# Engine-clock times: wake-ups are compared with claim(now=...). None is the
# journal clock, far past every wake-up here.
WAKES = [None, 10.0, 100.0]
NOWS = [None, 0.0, 50.0, 200.0]


@dataclass
class ModelRun:
    events: list[tuple[int, bytes]]
    token: int = 0
    owner: str | None = None
    live: bool = False
    status: RunStatus = RunStatus.PENDING
    snapshot: tuple[int, bytes] | None = None
    reason: str | None = None
    tokens_seen: list[int] = field(default_factory=list)
    wake_at: float | None = None
    parent: str | None = None
    inbox: list[tuple[int, str, str, bytes]] = field(default_factory=list)
    inbox_seen: int = 0

    @property
    def inbox_last(self) -> int:
        return len(self.inbox)

    def ends_with_unseen(self, b: AppendBatch) -> bool:
        seen = self.inbox_seen if b.inbox_seen is None else b.inbox_seen
        return b.status in INBOX_CHECKED_STATUSES and self.inbox_last > seen

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def fenced(self, lease: Lease) -> bool:
        return lease.token == self.token and self.owner is not None


class JournalMachine(AsyncJournalMachine):
    """The journal made by ``case``, on a loop of its own, against a plain-Python model."""

    leases = Bundle("leases")

    def __init__(self, case: JournalCase) -> None:
        super().__init__(case)
        self.model: dict[str, ModelRun] = {}
        self.issued: list[Lease] = []
        self.counter = 0

    def data(self, run_id: str, seq: int) -> bytes:
        self.counter += 1
        return f"{run_id}:{seq}:{self.counter}".encode()

    def runnable(self, worker: str | None, own: bool, now: float | None = None) -> set[str]:
        t = math.inf if now is None else now
        out = set()
        for rid, m in self.model.items():
            if m.status == RunStatus.SUSPENDED:
                due = m.wake_at is not None and m.wake_at <= t
                if due or m.inbox_last > m.inbox_seen:
                    out.add(rid)
            elif m.status in LIVE:
                if m.status == RunStatus.PENDING and m.wake_at is not None and m.wake_at > t:
                    continue
                if m.owner is None or not m.live or (own and m.owner == worker):
                    out.add(rid)
        return out

    def deliver(self, run_id: str, kind: str, name: str, data: bytes) -> int:
        m = self.model[run_id]
        m.inbox.append((m.inbox_last + 1, kind, name, data))
        return m.inbox_last

    def took(self, lease: Lease, ttl: float) -> None:
        m = self.model[lease.run_id]
        # Tokens only grow: every claim gets a token above any issued before for the run.
        assert lease.token > max(m.tokens_seen, default=0)
        m.tokens_seen.append(lease.token)
        self.issued.append(lease)
        m.token, m.owner, m.live, m.status = (
            lease.token,
            lease.worker_id,
            ttl > 0,
            RunStatus.RUNNING,
        )
        m.wake_at = None  # a claim clears it

    # ---- rules ----
    @initialize(run_ids=st.sets(st.sampled_from(RUN_IDS), min_size=1), child=st.booleans())
    def some_runs(self, run_ids: Any, child: Any) -> None:
        for rid in sorted(run_ids | ({CHILD} if child else set())):
            self.start_run(rid, None, 0.0, None)

    @rule(
        target=leases,
        run_id=st.sampled_from(ALL_IDS),
        claim_for=st.none() | st.sampled_from(WORKERS),
        ttl=st.sampled_from(TTLS),
        wake_at=st.sampled_from(WAKES),
    )
    def start_run(self, run_id: Any, claim_for: Any, ttl: Any, wake_at: Any) -> Any:
        if run_id not in self.model and any(other > run_id for other in self.model):
            # Runs are created in run_id order only. Claims take the oldest
            # (created_at, run_id) first and journal clocks can tie, so any
            # other order could claim different runs when an example replays.
            return multiple()
        first = RunStarted(seq=1, run_id=run_id, workflow="wf", args=b"[]")  # type: ignore[arg-type]
        ev = msgspec_replace_data(stored(run_id, first), self.data(run_id, 1))
        parent = PARENT if run_id == CHILD else None
        new = NewRun(
            run_id=run_id,
            workflow="wf",
            first_event=ev,
            wake_at=wake_at,
            parent_run_id=parent,
            parent_position=POSITION if parent else 0,
        )
        rec, lease, created = self.run(self.journal.start_run(new, claim_for=claim_for, ttl=ttl))
        assert created == (run_id not in self.model)
        assert rec.run_id == run_id and rec.workflow == "wf"
        if not created:
            assert lease is None
            return multiple()
        # Every wake-up here is long past on the journal clock: claim_for takes the run.
        self.model[run_id] = ModelRun(events=[(1, ev.data)], wake_at=wake_at, parent=parent)
        if claim_for is None:
            assert lease is None and rec.status == RunStatus.PENDING
            return multiple()
        assert lease is not None and lease.worker_id == claim_for
        self.took(lease, ttl)
        return multiple(lease)

    @rule(
        target=leases,
        worker=st.sampled_from(WORKERS),
        ttl=st.sampled_from(TTLS),
        limit=st.integers(1, 3),
        reclaim_own=st.booleans(),
        now=st.sampled_from(NOWS),
    )
    def claim(self, worker: Any, ttl: Any, limit: Any, reclaim_own: Any, now: Any) -> Any:
        runnable = self.runnable(worker, reclaim_own, now)
        got = self.run(
            self.journal.claim(worker, ttl=ttl, limit=limit, reclaim_own=reclaim_own, now=now)
        )
        ids = [lease.run_id for lease in got]
        assert len(ids) == len(set(ids)) == min(limit, len(runnable))
        assert set(ids) <= runnable
        event(f"claim: {len(got)} of {len(runnable)} runnable")
        if any(self.model[lease.run_id].status == RunStatus.SUSPENDED for lease in got):
            event("claim: woke a suspended run")
        for lease in got:
            assert lease.worker_id == worker
            self.took(lease, ttl)
        return multiple(*got)

    @precondition(lambda self: self.issued)
    @rule(data=st.data())
    def append(self, data: Any) -> None:
        # Any lease ever issued: the newest of its run, or stale.
        writes = data.draw(
            st.lists(
                st.tuples(
                    st.sampled_from(self.issued),
                    st.sampled_from([0, 0, 0, -1, 1]),
                    st.integers(0, 3),
                    st.sampled_from(
                        [
                            None,
                            None,
                            None,
                            RunStatus.COMPLETED,
                            RunStatus.CONTINUED,
                            RunStatus.PARKED,
                            RunStatus.SUSPENDED,
                            RunStatus.SUSPENDED,
                        ]
                    ),
                    st.booleans(),
                    st.sampled_from(WAKES),
                    st.sampled_from([None, None, 0, 1, 2, 3]),
                ),
                min_size=1,
                max_size=3,
            )
        )
        # Tails are chosen from the state before the group, then checked batch by batch.
        batches = []
        for lease, offset, n, status, snap, wake_at, inbox_seen in writes:
            rid = lease.run_id
            expected = max(self.model[rid].last_seq + offset, 0)
            events = [
                StoredEvent(
                    run_id=rid,
                    seq=expected + 1 + i,
                    kind="StepScheduled",
                    schema=1,
                    data=self.data(rid, expected + 1 + i),
                )
                for i in range(n)
            ]
            snapshot = (
                Snapshot(run_id=rid, seq=expected + n, schema=1, data=self.data(rid, 0))
                if snap
                else None
            )
            batches.append(
                AppendBatch(
                    lease=lease,
                    expected_seq=expected,
                    events=events,
                    status=status,
                    outcome=self.data(rid, -1) if status and status.terminal else None,
                    reason="parked by the model" if status == RunStatus.PARKED else None,
                    snapshot=snapshot,
                    wake_at=wake_at if status == RunStatus.SUSPENDED else None,
                    inbox_seen=inbox_seen,
                )
            )
        results = self.run(self.journal.append(batches))
        assert len(results) == len(batches)
        for b, res in zip(batches, results, strict=True):
            m = self.model[b.lease.run_id]
            event(f"append: {type(res).__name__ if res else 'accepted'}")
            if not m.fenced(b.lease):
                assert isinstance(res, LeaseLost), res
                assert res.token == b.lease.token and res.current_token == m.token
            elif b.expected_seq != m.last_seq:
                assert isinstance(res, JournalConflict), res
                assert res.expected_seq == b.expected_seq and res.actual_seq == m.last_seq
            elif m.ends_with_unseen(b):
                assert isinstance(res, MessagesPending), res
            else:
                assert res is None, res
                m.events.extend((e.seq, e.data) for e in b.events)
                if b.snapshot is not None:
                    m.snapshot = (b.snapshot.seq, b.snapshot.data)
                if b.inbox_seen is not None:
                    m.inbox_seen = b.inbox_seen
                if b.status is not None:
                    m.status, m.owner, m.live, m.reason = b.status, None, False, b.reason
                    m.wake_at = b.wake_at if b.status in WAITING else None
                    # A child's final status reaches its parent in the same transaction.
                    if b.status in NOTIFY_PARENT_STATUSES and m.parent in self.model:
                        event("append: child posted to its parent")
                        self.deliver(m.parent, "child", str(POSITION), b.outcome or b"")

    def current_leases(self) -> list[Lease]:
        return [
            lease
            for lease in self.issued
            if self.model[lease.run_id].fenced(lease)
            and self.model[lease.run_id].status == RunStatus.RUNNING
        ]

    @precondition(lambda self: self.current_leases())
    @rule(
        data=st.data(),
        status=st.sampled_from(
            [
                RunStatus.SUSPENDED,
                RunStatus.SUSPENDED,
                RunStatus.COMPLETED,
                RunStatus.FAILED,
                RunStatus.CANCELLED,
                RunStatus.CONTINUED,
            ]
        ),
        wake_at=st.sampled_from(WAKES),
        seen_lag=st.sampled_from([None, 0, 1]),
    )
    def settle(self, data: Any, status: Any, wake_at: Any, seen_lag: Any) -> None:
        """The owner of a run suspends or ends it, as a runner does at the end of a turn."""
        lease = data.draw(st.sampled_from(self.current_leases()))
        m = self.model[lease.run_id]
        seen = None if seen_lag is None else max(m.inbox_last - seen_lag, 0)
        batch = AppendBatch(
            lease=lease,
            expected_seq=m.last_seq,
            events=[],
            status=status,
            outcome=self.data(lease.run_id, -1) if status.terminal else None,
            wake_at=wake_at if status == RunStatus.SUSPENDED else None,
            inbox_seen=seen,
        )
        if m.ends_with_unseen(batch):
            # A run may not end with messages it has not recorded; nothing changes.
            [res] = self.run(self.journal.append([batch]))
            assert isinstance(res, MessagesPending), res
            event(f"settle: {status.value} refused, messages pending")
            return
        assert self.run(self.journal.append([batch])) == [None]
        event(f"settle: {status.value}")
        if seen is not None:
            m.inbox_seen = seen
        m.status, m.owner, m.live, m.reason = status, None, False, None
        m.wake_at = batch.wake_at
        if status in NOTIFY_PARENT_STATUSES and m.parent in self.model:
            event("settle: child posted to its parent")
            self.deliver(m.parent, "child", str(POSITION), batch.outcome or b"")

    @rule(lease=leases, ttl=st.sampled_from(TTLS))
    def renew(self, lease: Any, ttl: Any) -> None:
        m = self.model[lease.run_id]
        [new] = self.run(self.journal.renew([lease], ttl=ttl))
        if not m.fenced(lease):
            assert new is None
            return
        assert new is not None and new.token == lease.token and new.run_id == lease.run_id
        m.live = ttl > 0

    @rule(lease=leases)
    def release(self, lease: Any) -> None:
        m = self.model[lease.run_id]
        ok = self.run(self.journal.release(lease))
        assert ok == m.fenced(lease)
        if ok:
            m.owner, m.live = None, False
            if m.status == RunStatus.RUNNING:
                m.status = RunStatus.PENDING

    @rule(run_id=st.sampled_from(ALL_IDS))
    def resume_to_pending(self, run_id: Any) -> None:
        ok = self.run(self.journal.set_status(run_id, RunStatus.PENDING, reason=None))
        m = self.model.get(run_id)
        assert ok == (m is not None and not m.status.terminal)
        if ok and m is not None:
            m.status, m.owner, m.live, m.reason = RunStatus.PENDING, None, False, None
            m.wake_at = None

    @rule(run_id=st.sampled_from([*ALL_IDS, "ghost"]), kind=st.sampled_from(["signal", "cancel"]))
    def send(self, run_id: Any, kind: Any) -> None:
        data = self.data(run_id, 0)
        m = self.model.get(run_id)
        if m is None:
            with pytest.raises(RunNotFound):
                self.run(self.journal.send(run_id, kind, "s", data))
        elif m.status.terminal:
            with pytest.raises(RunAlreadyFinished) as ei:
                self.run(self.journal.send(run_id, kind, "s", data))
            assert ei.value.status == m.status.value
        else:
            got = self.run(self.journal.send(run_id, kind, "s", data))
            assert got == self.deliver(run_id, kind, "s", data)

    @rule(run_id=st.sampled_from(ALL_IDS), after=st.integers(0, 8))
    def load_after(self, run_id: Any, after: Any) -> None:
        m = self.model.get(run_id)
        if m is None:
            if after == 0:
                with pytest.raises(RunNotFound) as ei:
                    self.run(self.journal.load(run_id))
                assert ei.value.run_id == run_id
            return
        rows = self.run(self.journal.load(run_id, after_seq=after))
        assert [(r.seq, r.data) for r in rows] == m.events[after:]

    # ---- invariants ----
    @invariant()
    def journal_matches_model(self) -> None:
        for rid, m in self.model.items():
            rows = self.run(self.journal.load(rid))
            assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
            assert [(r.seq, r.data) for r in rows] == m.events
            assert all(r.run_id == rid for r in rows)
            rec = self.run(self.journal.get_run(rid))
            assert rec.last_seq == m.last_seq and rec.status == m.status
            assert rec.lease_token == m.token and rec.lease_owner == m.owner
            if m.status == RunStatus.PARKED:
                assert rec.reason == m.reason
            assert rec.wake_at == m.wake_at and rec.parent_run_id == m.parent
            assert (rec.inbox_last, rec.inbox_seen) == (m.inbox_last, m.inbox_seen)
            inbox = self.run(self.journal.inbox(rid))
            assert [(x.id, x.kind, x.name, x.data) for x in inbox] == m.inbox
            snap, tail = self.run(self.journal.load_with_snapshot(rid))
            if m.snapshot is None:
                assert snap is None and [(r.seq, r.data) for r in tail] == m.events
            else:
                assert (snap.seq, snap.data) == m.snapshot
                assert [(r.seq, r.data) for r in tail] == m.events[m.snapshot[0] :]
        listed = self.run(self.journal.list_runs())
        assert {r.run_id for r in listed} == set(self.model)
        for now in (None, 50.0):  # past every wake-up; between the two
            got = self.run(self.journal.find_runnable(now=now))
            assert set(got) == self.runnable(None, False, now), now
        unseen = [
            rid
            for rid in ALL_IDS
            if rid in self.model and self.model[rid].inbox_last > self.model[rid].inbox_seen
        ]
        assert self.run(self.journal.unseen_inbox(ALL_IDS)) == unseen
        wakes = [
            m.wake_at for m in self.model.values() if m.status in WAITING and m.wake_at is not None
        ]
        assert self.run(self.journal.next_wake_at()) == min(wakes, default=None)


def msgspec_replace_data(ev: StoredEvent, data: bytes) -> StoredEvent:
    # Opaque to the journal: distinct bytes per event make "load returns what was accepted" sharp.
    return StoredEvent(run_id=ev.run_id, seq=ev.seq, kind=ev.kind, schema=ev.schema, data=data)


class ModelTests(JournalCase):
    """The model-based check, run with ``model_settings`` (a subclass may lower them)."""

    model_settings: ClassVar[settings] = settings(
        max_examples=60,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )

    def test_the_journal_does_what_the_model_does(self) -> None:
        # A factory, not the class: each machine takes its journal from this test case.
        run_state_machine_as_test(
            lambda: JournalMachine(self),  # type: ignore[arg-type]
            settings=self.model_settings,
        )
