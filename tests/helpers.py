"""Shared test helpers (imported as `helpers` thanks to pytest's rootdir insertion)."""

from __future__ import annotations

import time

import msgspec

from continuum_py._client import stored
from continuum_py.events import RunStarted, StepCompleted, StepScheduled
from continuum_py.journal import AppendBatch, Lease, NewRun, RunStatus


def new_run(run_id: str, workflow: str = "wf", args: bytes = b"[]", **fields) -> NewRun:
    """A NewRun with its RunStarted; ``fields`` sets wake_at, parent_run_id, parent_position."""
    first = RunStarted(
        seq=1, at=time.time(), run_id=run_id, workflow=workflow, args=msgspec.Raw(args)
    )
    return NewRun(run_id=run_id, workflow=workflow, first_event=stored(run_id, first), **fields)


def suspend_batch(
    lease: Lease,
    expected_seq: int,
    *,
    wake_at: float | None = None,
    inbox_seen: int | None = None,
    events=(),
) -> AppendBatch:
    """The batch a runner writes to suspend its run (releasing the lease)."""
    return AppendBatch(
        lease=lease,
        expected_seq=expected_seq,
        events=list(events),
        status=RunStatus.SUSPENDED,
        wake_at=wake_at,
        inbox_seen=inbox_seen,
    )


async def claim_all(journal, worker: str = "w1", *, ttl: float = 30.0, now=None) -> dict:
    """Claim every runnable run; their leases by run_id."""
    return {
        lease.run_id: lease for lease in await journal.claim(worker, ttl=ttl, limit=1000, now=now)
    }


async def claim_run(journal, run_id: str, worker: str = "w1", *, ttl: float = 30.0, now=None):
    """Claim ``run_id``, which must be the only runnable run; its lease."""
    leases = await journal.claim(worker, ttl=ttl, limit=1000, now=now)
    assert [lease.run_id for lease in leases] == [run_id]
    return leases[0]


def step_events(run_id: str, start_seq: int, position: int, name: str = "s", result: bytes = b"1"):
    return [
        stored(
            run_id,
            StepScheduled(
                seq=start_seq, position=position, step=name, attempt=1, args=msgspec.Raw(b"[]")
            ),
        ),
        stored(
            run_id,
            StepCompleted(
                seq=start_seq + 1,
                position=position,
                step=name,
                attempt=1,
                result=msgspec.Raw(result),
            ),
        ),
    ]


async def wait_until(predicate, *, timeout: float = 5.0, interval: float = 0.005):
    """Poll the async ``predicate`` until it returns something truthy; fail after ``timeout``."""
    import asyncio

    async with asyncio.timeout(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(interval)


def journal_maker(url: str):
    """A function giving a fresh journal object on the same storage each call (a "restart")."""
    from continuum_py._schemes import journal_from_url

    if url.startswith("memory"):
        shared = journal_from_url(url)
        return lambda: shared
    return lambda: journal_from_url(url)


async def journal_state(engine) -> dict:
    """Every run's row and decoded history, to compare before and after an operation."""
    return {r.run_id: (r, await engine.history(r.run_id)) for r in await engine.list_runs()}
