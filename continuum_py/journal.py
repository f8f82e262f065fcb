"""The journal protocol: where runs, their histories, snapshots and leases live.

Adapters (``continuum_py.adapters.memory``, ``.sqlite``) implement
:class:`Journal`. They store opaque bytes: the engine encodes events and
snapshots, checks schema versions and replays; an adapter only keeps rows,
assigns nothing, and enforces fencing and ordering atomically with each write.

Terminal transitions (complete, fail) and parking are part of
:meth:`Journal.append`: an :class:`AppendBatch` may carry a new status, so the
last event and the status change land in one transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from continuum_py.errors import JournalError

__all__ = [
    "AppendBatch",
    "Journal",
    "Lease",
    "NewRun",
    "RunRecord",
    "RunStatus",
    "Snapshot",
    "StoredEvent",
]


class RunStatus(enum.StrEnum):
    """Where a run stands."""

    PENDING = "pending"
    """Waiting for a worker."""
    RUNNING = "running"
    """Held by a worker's lease."""
    PARKED = "parked"
    """Stopped by a ``NonDeterminismError``; resumes with ``engine.resume``."""
    COMPLETED = "completed"
    """The workflow returned."""
    FAILED = "failed"
    """The workflow raised."""
    CANCELLED = "cancelled"
    """The run was cancelled."""

    @property
    def terminal(self) -> bool:
        """Whether the run is over for good."""
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One history event as the journal stores it.

    Attributes:
        run_id: the run.
        seq: 1..n with no gaps within the run.
        kind: the event's tag, e.g. ``"StepCompleted"``.
        schema: the event schema version it was written with.
        data: the msgspec-encoded event; opaque to adapters.
    """

    run_id: str
    seq: int
    kind: str
    schema: int
    data: bytes


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The replay state of a run as of event ``seq``; opaque bytes to adapters."""

    run_id: str
    seq: int
    schema: int
    data: bytes


class NewRun(msgspec.Struct, frozen=True, kw_only=True):
    """A run to create, with its first event (``RunStarted``, seq 1)."""

    run_id: str
    workflow: str
    first_event: StoredEvent
    wake_at: float | None = None


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """A worker's claim on a run.

    Attributes:
        run_id: the run.
        worker_id: who holds it.
        token: the fencing token; grows by one with every claim of the run.
        expires_at: journal-clock time when the lease lapses unless renewed.
    """

    run_id: str
    worker_id: str
    token: int
    expires_at: float


class RunRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The journal's row for a run.

    Attributes:
        run_id: the run.
        workflow: its workflow name.
        status: where it stands.
        created_at: when it was created (journal clock).
        updated_at: when its row last changed.
        last_seq: seq of its last event.
        lease_owner: the worker holding its lease, if any.
        lease_token: the newest fencing token issued.
        lease_expires_at: when the lease lapses.
        outcome: the encoded final event of a finished run.
        reason: why a run is parked.
    """

    run_id: str
    workflow: str
    status: RunStatus
    created_at: float
    updated_at: float
    last_seq: int
    lease_owner: str | None = None
    lease_token: int = 0
    lease_expires_at: float | None = None
    outcome: bytes | None = None
    reason: str | None = None


class AppendBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Events for one run, written all or nothing.

    Attributes:
        lease: the writer's lease; a stale token refuses the batch.
        expected_seq: the run's last seq as the writer knows it.
        events: the new events, seq ``expected_seq + 1`` onwards.
        status: a new status to set with the events (terminal, or parked).
        outcome: for a terminal status, the encoded final event.
        reason: for parked, why.
        snapshot: a snapshot to store with the events.
    """

    lease: Lease
    expected_seq: int
    events: Sequence[StoredEvent]
    status: RunStatus | None = None
    outcome: bytes | None = None
    reason: str | None = None
    snapshot: Snapshot | None = None


@runtime_checkable
class Journal(Protocol):
    """Storage for runs, histories, snapshots and leases.

    Every write that carries a lease is fenced: it lands only while the lease's
    token is still the run's newest, checked atomically with the write.
    """

    async def start_run(
        self, run: NewRun, *, claim_for: str | None = None, ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None, bool]:
        """Create the run, or return the existing one for that run_id (never a second).

        Returns:
            ``(record, lease, created)``; ``lease`` is set when ``claim_for`` was
            given and the run was created (claimed atomically with the insert).
        """
        ...

    async def append(self, batches: Sequence[AppendBatch]) -> list[JournalError | None]:
        """Write the batches in one transaction (group commit).

        Each batch is checked on its own: a stale token gives ``LeaseLost`` and a
        wrong tail ``JournalConflict`` in its slot of the result, and none of its
        events are written. Returns once every accepted batch is durable.
        """
        ...

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run's row, or ``None``."""
        ...

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 1000
    ) -> list[RunRecord]:
        """Runs, oldest first, optionally of one status."""
        ...

    async def load(self, run_id: str, *, after_seq: int = 0) -> list[StoredEvent]:
        """The run's events with seq greater than ``after_seq``, in order."""
        ...

    async def load_with_snapshot(self, run_id: str) -> tuple[Snapshot | None, list[StoredEvent]]:
        """The newest snapshot and the events after it (all events if none)."""
        ...

    async def take_snapshot(self, lease: Lease, snapshot: Snapshot) -> JournalError | None:
        """Store a snapshot (fenced); replaces the previous one."""
        ...

    async def claim(
        self, worker_id: str, *, ttl: float, limit: int, reclaim_own: bool = False
    ) -> list[Lease]:
        """Lease up to ``limit`` runnable runs: pending, or with an expired lease.

        With ``reclaim_own``, runs whose lease ``worker_id`` still holds are taken
        at once too (a restarted worker resuming its own runs). Each claim bumps
        the run's fencing token.
        """
        ...

    async def renew(self, leases: Sequence[Lease], *, ttl: float) -> list[Lease | None]:
        """Extend leases; ``None`` in a slot means that lease was lost."""
        ...

    async def release(self, lease: Lease) -> bool:
        """Give a lease back so any worker may claim the run; ``False`` if it was lost."""
        ...

    async def find_runnable(self, *, limit: int = 100) -> list[str]:
        """Run ids a worker could claim now."""
        ...

    async def set_status(
        self, run_id: str, status: RunStatus, *, reason: str | None = None
    ) -> bool:
        """Move a non-terminal run to ``status`` (used to resume a parked run)."""
        ...

    async def aclose(self) -> None:
        """Close connections; the journal is unusable afterwards."""
        ...
