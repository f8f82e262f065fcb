"""Model-based check of the journal protocol: random operations against a plain-Python model.

The machine starts runs, claims them (several workers, expiring or long leases,
reclaiming its own), appends with current or stale tokens and right or wrong
tails (alone or grouped), renews, releases, parks and loads, and after every
step compares the journal with the model: seqs 1..n with no gaps, a stale token
never writes, tokens only grow, and loads return exactly what was accepted.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from continuum_py._client import stored
from continuum_py.errors import JournalConflict, LeaseLost, RunNotFound
from continuum_py.events import RunStarted
from continuum_py.journal import AppendBatch, Lease, NewRun, RunStatus, Snapshot, StoredEvent

RUN_IDS = ["r1", "r2", "r3"]
WORKERS = ["w1", "w2", "w3"]
TTLS = [0.0, 3600.0]  # expired at once, or live for the whole example
LIVE = (RunStatus.PENDING, RunStatus.RUNNING)


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

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def fenced(self, lease: Lease) -> bool:
        return lease.token == self.token and self.owner is not None


class JournalMachine(RuleBasedStateMachine):
    """Subclasses say which journal to open."""

    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        # On tmpfs when there is one: fsync costs are not what this checks.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.tmp = tempfile.mkdtemp(prefix="continuum-model-", dir=shm)
        self.journal = self.runner.run(self.open_journal())
        self.model: dict[str, ModelRun] = {}
        self.issued: list[Lease] = []
        self.counter = 0

    async def open_journal(self):
        raise NotImplementedError

    def teardown(self) -> None:
        try:
            self.runner.run(self.journal.aclose())
        finally:
            self.runner.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, coro):
        return self.runner.run(coro)

    def data(self, run_id: str, seq: int) -> bytes:
        self.counter += 1
        return f"{run_id}:{seq}:{self.counter}".encode()

    def runnable(self, worker: str | None, own: bool) -> set[str]:
        return {
            rid
            for rid, m in self.model.items()
            if m.status in LIVE and (m.owner is None or not m.live or (own and m.owner == worker))
        }

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

    # ---- rules ----
    @initialize(run_ids=st.sets(st.sampled_from(RUN_IDS), min_size=1))
    def some_runs(self, run_ids):
        for rid in sorted(run_ids):
            self.start_run(rid, None, 0.0)

    @rule(
        target=leases,
        run_id=st.sampled_from(RUN_IDS),
        claim_for=st.none() | st.sampled_from(WORKERS),
        ttl=st.sampled_from(TTLS),
    )
    def start_run(self, run_id, claim_for, ttl):
        first = RunStarted(seq=1, run_id=run_id, workflow="wf", args=b"[]")  # type: ignore[arg-type]
        ev = msgspec_replace_data(stored(run_id, first), self.data(run_id, 1))
        rec, lease, created = self.run(
            self.journal.start_run(
                NewRun(run_id=run_id, workflow="wf", first_event=ev), claim_for=claim_for, ttl=ttl
            )
        )
        assert created == (run_id not in self.model)
        assert rec.run_id == run_id and rec.workflow == "wf"
        if not created:
            assert lease is None
            return multiple()
        self.model[run_id] = ModelRun(events=[(1, ev.data)])
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
    )
    def claim(self, worker, ttl, limit, reclaim_own):
        runnable = self.runnable(worker, reclaim_own)
        got = self.run(self.journal.claim(worker, ttl=ttl, limit=limit, reclaim_own=reclaim_own))
        ids = [lease.run_id for lease in got]
        assert len(ids) == len(set(ids)) == min(limit, len(runnable))
        assert set(ids) <= runnable
        event(f"claim: {len(got)} of {len(runnable)} runnable")
        for lease in got:
            assert lease.worker_id == worker
            self.took(lease, ttl)
        return multiple(*got)

    @precondition(lambda self: self.issued)
    @rule(data=st.data())
    def append(self, data):
        # Any lease ever issued: the newest of its run, or stale.
        writes = data.draw(
            st.lists(
                st.tuples(
                    st.sampled_from(self.issued),
                    st.sampled_from([0, 0, 0, -1, 1]),
                    st.integers(0, 3),
                    st.sampled_from([None, None, None, RunStatus.COMPLETED, RunStatus.PARKED]),
                    st.booleans(),
                ),
                min_size=1,
                max_size=3,
            )
        )
        # Tails are chosen from the state before the group, then checked batch by batch.
        batches = []
        for lease, offset, n, status, snap in writes:
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
                    outcome=b"end" if status == RunStatus.COMPLETED else None,
                    reason="parked by the model" if status == RunStatus.PARKED else None,
                    snapshot=snapshot,
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
            else:
                assert res is None, res
                m.events.extend((e.seq, e.data) for e in b.events)
                if b.snapshot is not None:
                    m.snapshot = (b.snapshot.seq, b.snapshot.data)
                if b.status is not None:
                    m.status, m.owner, m.live, m.reason = b.status, None, False, b.reason

    @rule(lease=leases, ttl=st.sampled_from(TTLS))
    def renew(self, lease, ttl):
        m = self.model[lease.run_id]
        [new] = self.run(self.journal.renew([lease], ttl=ttl))
        if not m.fenced(lease):
            assert new is None
            return
        assert new is not None and new.token == lease.token and new.run_id == lease.run_id
        m.live = ttl > 0

    @rule(lease=leases)
    def release(self, lease):
        m = self.model[lease.run_id]
        ok = self.run(self.journal.release(lease))
        assert ok == m.fenced(lease)
        if ok:
            m.owner, m.live = None, False
            if m.status == RunStatus.RUNNING:
                m.status = RunStatus.PENDING

    @rule(run_id=st.sampled_from(RUN_IDS))
    def resume_to_pending(self, run_id):
        ok = self.run(self.journal.set_status(run_id, RunStatus.PENDING, reason=None))
        m = self.model.get(run_id)
        assert ok == (m is not None and not m.status.terminal)
        if ok:
            m.status, m.owner, m.live, m.reason = RunStatus.PENDING, None, False, None

    @rule(run_id=st.sampled_from(RUN_IDS), after=st.integers(0, 8))
    def load_after(self, run_id, after):
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
    def journal_matches_model(self):
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
            snap, tail = self.run(self.journal.load_with_snapshot(rid))
            if m.snapshot is None:
                assert snap is None and [(r.seq, r.data) for r in tail] == m.events
            else:
                assert (snap.seq, snap.data) == m.snapshot
                assert [(r.seq, r.data) for r in tail] == m.events[m.snapshot[0] :]
        listed = self.run(self.journal.list_runs())
        assert {r.run_id for r in listed} == set(self.model)
        assert set(self.run(self.journal.find_runnable())) == self.runnable(None, False)


def msgspec_replace_data(ev: StoredEvent, data: bytes) -> StoredEvent:
    # Opaque to the journal: distinct bytes per event make "load returns what was accepted" sharp.
    return StoredEvent(run_id=ev.run_id, seq=ev.seq, kind=ev.kind, schema=ev.schema, data=data)


class MemoryMachine(JournalMachine):
    async def open_journal(self):
        from continuum_py.adapters.memory import MemoryJournal

        return MemoryJournal()


class SQLiteMachine(JournalMachine):
    async def open_journal(self):
        from continuum_py.adapters.sqlite import SQLiteJournal

        j = SQLiteJournal(f"{self.tmp}/model.db")
        await j.connect()
        return j


_settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MemoryMachine.TestCase.settings = _settings
SQLiteMachine.TestCase.settings = _settings
TestMemoryJournalModel = MemoryMachine.TestCase
TestSQLiteJournalModel = SQLiteMachine.TestCase
