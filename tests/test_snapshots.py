"""Snapshots of replay state: a resumed run reads the snapshot and the tail, nothing older."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from helpers import journal_maker, wait_until

from continuum_py import (
    Context,
    Engine,
    Registry,
    RetryPolicy,
    RunStatus,
    SchemaTooNew,
    StepError,
    StepInfo,
    step,
    workflow,
)
from continuum_py._client import decode_snapshot
from continuum_py.events import SCHEMA_VERSION, StepFailed, StepScheduled
from continuum_py.journal import Snapshot

reg = Registry()
entered: dict[str, asyncio.Event] = {}
gates: dict[str, asyncio.Event] = {}
attempts: dict[str, list[int]] = {}


class Boom(Exception):
    pass


@step
async def add(a: int, b: int) -> int:
    return a + b


@step
async def block(key: str) -> str:
    entered.setdefault(key, asyncio.Event()).set()
    await gates.setdefault(key, asyncio.Event()).wait()
    return key


@step(
    retry=RetryPolicy(max_attempts=4, initial_interval=0.05, backoff=4, max_interval=0.2, jitter=0)
)
async def always_fails(key: str) -> int:
    info = StepInfo.current()
    assert info is not None
    attempts.setdefault(key, []).append(info.attempt)
    raise Boom(f"attempt {info.attempt}")


@workflow(registry=reg)
async def chain(ctx: Context, n: int, key: str) -> int:
    total = 0
    for i in range(n):
        total = await add(total, i)
    if key:
        total += len(await block(key))
    for i in range(n):
        total = await add(total, i)
    return total


@workflow(registry=reg)
async def fan(ctx: Context, key: str) -> list[Any]:
    out = await asyncio.gather(block(key), add(1, 2), always_fails(key), return_exceptions=True)
    return [f"StepError after {x.attempts}" if isinstance(x, StepError) else x for x in out]


@pytest.fixture(autouse=True)
def _reset():
    entered.clear()
    gates.clear()
    attempts.clear()


class RecordingJournal:
    """Wraps a journal and records which events each load hands to the engine."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.loads: list[tuple[str, int | None, list[int]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def load_with_snapshot(self, run_id: str):
        snap, rows = await self.inner.load_with_snapshot(run_id)
        self.loads.append(("load_with_snapshot", snap.seq if snap else None, [r.seq for r in rows]))
        return snap, rows

    async def load(self, run_id: str, *, after_seq: int = 0):
        rows = await self.inner.load(run_id, after_seq=after_seq)
        self.loads.append(("load", after_seq, [r.seq for r in rows]))
        return rows


def _timeless(history: list[Any]) -> list[Any]:
    return [msgspec.structs.replace(e, at=0.0) for e in history]


async def _crash_mid_run(make, every: int, run_id: str, fn, *args: Any) -> None:
    """Run until the run's blocking step is in flight, then stop the worker."""
    async with Engine(journal=make(), registry=reg, worker_id="w1", snapshot_every=every) as e:
        await e.start(fn, *args, run_id=run_id)
        await asyncio.wait_for(entered.setdefault(run_id, asyncio.Event()).wait(), 10)
        if fn is fan:
            # Stop once the failing step has failed twice and sits in retry backoff.
            async def in_backoff() -> bool:
                history = await e.history(run_id)
                return sum(isinstance(x, StepFailed) for x in history) == 2

            await wait_until(in_backoff)


async def _resume(make, every: int, run_id: str) -> tuple[Any, list[Any], RecordingJournal]:
    journal = RecordingJournal(make())
    gates.setdefault(run_id, asyncio.Event()).set()
    async with Engine(journal=journal, registry=reg, worker_id="w1", snapshot_every=every) as e:
        result = await (await e.get(run_id)).result(timeout=10)
        loads = list(journal.loads)
        history = await e.history(run_id)
    journal.loads = loads
    return result, _timeless(history), journal


async def test_snapshot_every_n_events_leaves_only_a_short_tail(journal_url):
    async with Engine(journal_url, registry=reg, worker_id="w1", snapshot_every=5) as e:
        assert await (await e.start(chain, 10, "", run_id="long")).result(timeout=10) == 90
        history = await e.history("long")
        snap, tail = await e.journal.load_with_snapshot("long")
    # As new as the newest kind of event it holds: steps only, so schema 2.
    assert snap is not None and snap.schema == 2 < SCHEMA_VERSION
    assert [r.seq for r in tail] == list(range(snap.seq + 1, len(history) + 1))
    assert len(tail) <= 5 + 2  # at most one interval plus the final append
    assert len(history) > 40


async def test_snapshot_every_zero_stores_none(journal_url):
    async with Engine(journal_url, registry=reg, worker_id="w1", snapshot_every=0) as e:
        assert await (await e.start(chain, 10, "", run_id="long")).result(timeout=10) == 90
        snap, rows = await e.journal.load_with_snapshot("long")
    assert snap is None
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))


@pytest.mark.parametrize("every", [1, 3])
async def test_resume_reads_no_event_older_than_the_snapshot(journal_url, tmp_path, every):
    baseline_url = "memory://" if journal_url == "memory://" else f"sqlite:///{tmp_path}/b.db"
    make_plain, make_snap = journal_maker(baseline_url), journal_maker(journal_url)

    await _crash_mid_run(make_plain, 0, "r", chain, 6, "r")
    plain_result, plain_history, plain_journal = await _resume(make_plain, 0, "r")
    # Without snapshots the resume reads the whole history: the check below can fail.
    assert plain_journal.loads[0] == ("load_with_snapshot", None, list(range(1, 15)))

    entered.clear()
    gates.clear()
    await _crash_mid_run(make_snap, every, "r", chain, 6, "r")
    result, history, journal = await _resume(make_snap, every, "r")
    (kind, snap_seq, seqs), *later = journal.loads
    assert kind == "load_with_snapshot" and snap_seq is not None and snap_seq > 1
    assert all(s > snap_seq for s in seqs)
    assert all(after >= snap_seq for _, after, _ in later)

    assert result == plain_result == 2 * 15 + 1
    assert history == plain_history
    # The step in flight at the crash ran again as attempt 2; everything else once.
    scheduled = [(e.step, e.attempt) for e in history if isinstance(e, StepScheduled)]
    assert scheduled.count(("block", 2)) == 1 and len(scheduled) == 14


async def test_snapshot_taken_during_retry_backoff_in_a_gather(journal_url, tmp_path):
    baseline_url = "memory://" if journal_url == "memory://" else f"sqlite:///{tmp_path}/b.db"
    make_plain, make_snap = journal_maker(baseline_url), journal_maker(journal_url)

    await _crash_mid_run(make_plain, 0, "g", fan, "g")
    plain_result, plain_history, _ = await _resume(make_plain, 0, "g")

    entered.clear()
    gates.clear()
    attempts.clear()
    await _crash_mid_run(make_snap, 1, "g", fan, "g")
    journal = make_snap()
    if getattr(journal, "connect", None):
        await journal.connect()
    snap, _ = await journal.load_with_snapshot("g")
    if journal_url != "memory://":
        await journal.aclose()
    state = decode_snapshot(snap)
    # At snapshot time: add done, block in flight, always_fails failed twice, waiting to retry.
    backoff = [e for e in state.events if isinstance(e, StepFailed)]
    assert [(e.position, e.attempt, e.final) for e in backoff] == [(3, 2, False)]
    assert state.failures == {3: 2}

    result, history, recorded = await _resume(make_snap, 1, "g")
    (_, snap_seq, seqs), *_ = recorded.loads
    assert snap_seq == snap.seq and all(s > snap_seq for s in seqs)
    assert result == plain_result == ["g", 3, "StepError after 4"]
    assert attempts["g"] == [1, 2, 3, 4]
    assert history == plain_history


async def test_snapshot_from_a_newer_schema_parks_the_run(journal_url):
    make = journal_maker(journal_url)
    await _crash_mid_run(make, 2, "s", chain, 4, "s")
    journal = make()
    if getattr(journal, "connect", None):
        await journal.connect()
    try:
        snap, _ = await journal.load_with_snapshot("s")
        events = await journal.load("s")
        [lease] = await journal.claim("tool", ttl=30, limit=10)
        future = Snapshot(run_id="s", seq=snap.seq, schema=SCHEMA_VERSION + 1, data=snap.data)
        assert await journal.take_snapshot(lease, future) is None
        assert await journal.release(lease)
    finally:
        if journal_url != "memory://":
            await journal.aclose()

    gates.setdefault("s", asyncio.Event()).set()
    async with Engine(journal=make(), registry=reg, worker_id="w1", poll_interval=0.05) as e:
        h = await e.get("s")

        async def parked():
            rec = await h.record()
            return rec if rec.status == RunStatus.PARKED else None

        rec = await wait_until(parked)
        assert rec.reason.startswith("SchemaTooNew")
        assert f"schema version {SCHEMA_VERSION + 1}" in rec.reason
        assert await e.journal.load("s") == events
        kept, _ = await e.journal.load_with_snapshot("s")
        assert kept == future

    with pytest.raises(SchemaTooNew) as ei:
        decode_snapshot(future)
    assert (ei.value.found, ei.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
