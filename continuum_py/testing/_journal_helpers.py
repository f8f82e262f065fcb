"""Rows and leases the journal conformance suite builds (no pytest here: tests/ uses them too)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from continuum_py._client import stored
from continuum_py.events import RunStarted, StepCompleted, StepScheduled
from continuum_py.journal import AppendBatch, Journal, Lease, NewRun, RunStatus, StoredEvent


def new_run(run_id: str, workflow: str = "wf", args: bytes = b"[]", **fields: Any) -> NewRun:
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
    events: tuple[StoredEvent, ...] | list[StoredEvent] = (),
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


async def claim_all(
    journal: Journal, worker: str = "w1", *, ttl: float = 30.0, now: float | None = None
) -> dict[str, Lease]:
    """Claim every runnable run; their leases by run_id."""
    return {
        lease.run_id: lease for lease in await journal.claim(worker, ttl=ttl, limit=1000, now=now)
    }


async def claim_run(
    journal: Journal,
    run_id: str,
    worker: str = "w1",
    *,
    ttl: float = 30.0,
    now: float | None = None,
) -> Lease:
    """Claim ``run_id``, which must be the only runnable run; its lease."""
    leases = await journal.claim(worker, ttl=ttl, limit=1000, now=now)
    assert [lease.run_id for lease in leases] == [run_id]
    return leases[0]


def step_events(
    run_id: str, start_seq: int, position: int, name: str = "s", result: bytes = b"1"
) -> list[StoredEvent]:
    """A step's StepScheduled and StepCompleted, at ``start_seq`` and the seq after."""
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


def step_batch(lease: Lease, expected_seq: int, position: int = 1) -> AppendBatch:
    """A batch writing one step's two events after ``expected_seq``, under ``lease``."""
    return AppendBatch(
        lease=lease,
        expected_seq=expected_seq,
        events=step_events(lease.run_id, expected_seq + 1, position),
    )
