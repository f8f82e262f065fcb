"""An in-process journal: fast, for tests and experiments; forgets everything on exit."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import msgspec

from continuum_py.errors import JournalConflict, JournalError, LeaseLost, RunNotFound
from continuum_py.journal import (
    AppendBatch,
    Lease,
    NewRun,
    RunRecord,
    RunStatus,
    Snapshot,
    StoredEvent,
)

__all__ = ["MemoryJournal"]

_LIVE = (RunStatus.PENDING, RunStatus.RUNNING)


class MemoryJournal:
    """A :class:`~continuum_py.journal.Journal` held in dictionaries.

    Args:
        clock: the journal clock for leases (seconds); defaults to ``time.time``.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._runs: dict[str, RunRecord] = {}
        self._events: dict[str, list[StoredEvent]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._wake: dict[str, float | None] = {}
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> MemoryJournal:
        """Open from a ``memory://`` URL."""
        return cls()

    async def __aenter__(self) -> MemoryJournal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start_run(
        self, run: NewRun, *, claim_for: str | None = None, ttl: float = 30.0
    ) -> tuple[RunRecord, Lease | None, bool]:
        existing = self._runs.get(run.run_id)
        if existing is not None:
            return existing, None, False
        now = self._clock()
        lease = None
        rec = RunRecord(
            run_id=run.run_id,
            workflow=run.workflow,
            status=RunStatus.PENDING,
            created_at=now,
            updated_at=now,
            last_seq=1,
        )
        if claim_for is not None and (run.wake_at is None or run.wake_at <= now):
            lease = Lease(run_id=run.run_id, worker_id=claim_for, token=1, expires_at=now + ttl)
            rec = msgspec.structs.replace(
                rec,
                status=RunStatus.RUNNING,
                lease_owner=claim_for,
                lease_token=1,
                lease_expires_at=lease.expires_at,
            )
        self._runs[run.run_id] = rec
        self._events[run.run_id] = [run.first_event]
        self._wake[run.run_id] = run.wake_at
        return rec, lease, True

    def _check(self, batch: AppendBatch) -> JournalError | None:
        rec = self._runs.get(batch.lease.run_id)
        if rec is None or rec.lease_token != batch.lease.token or rec.lease_owner is None:
            return LeaseLost(
                batch.lease.run_id, batch.lease.token, rec.lease_token if rec else None
            )
        if rec.last_seq != batch.expected_seq:
            return JournalConflict(batch.lease.run_id, batch.expected_seq, rec.last_seq)
        for i, ev in enumerate(batch.events):
            if ev.seq != batch.expected_seq + 1 + i or ev.run_id != rec.run_id:
                return JournalConflict(batch.lease.run_id, batch.expected_seq + i, ev.seq - 1)
        return None

    async def append(self, batches: Sequence[AppendBatch]) -> list[JournalError | None]:
        results: list[JournalError | None] = []
        now = self._clock()
        for batch in batches:
            err = self._check(batch)
            results.append(err)
            if err is not None:
                continue
            run_id = batch.lease.run_id
            rec = self._runs[run_id]
            self._events[run_id].extend(batch.events)
            changes: dict[str, object] = {
                "last_seq": batch.expected_seq + len(batch.events),
                "updated_at": now,
            }
            if batch.status is not None:
                changes.update(
                    status=batch.status,
                    outcome=batch.outcome,
                    reason=batch.reason,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            self._runs[run_id] = msgspec.structs.replace(rec, **changes)
            if batch.snapshot is not None:
                self._snapshots[run_id] = batch.snapshot
        return results

    async def get_run(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 1000
    ) -> list[RunRecord]:
        runs = sorted(self._runs.values(), key=lambda r: (r.created_at, r.run_id))
        if status is not None:
            runs = [r for r in runs if r.status == status]
        return runs[:limit]

    async def load(self, run_id: str, *, after_seq: int = 0) -> list[StoredEvent]:
        events = self._events.get(run_id)
        if events is None:
            raise RunNotFound(run_id)
        return list(events[after_seq:])

    async def load_with_snapshot(self, run_id: str) -> tuple[Snapshot | None, list[StoredEvent]]:
        snap = self._snapshots.get(run_id)
        return snap, await self.load(run_id, after_seq=snap.seq if snap else 0)

    async def take_snapshot(self, lease: Lease, snapshot: Snapshot) -> JournalError | None:
        rec = self._runs.get(lease.run_id)
        if rec is None or rec.lease_token != lease.token or rec.lease_owner is None:
            return LeaseLost(lease.run_id, lease.token, rec.lease_token if rec else None)
        self._snapshots[lease.run_id] = snapshot
        return None

    def _runnable(self, rec: RunRecord, now: float, worker_id: str | None, own: bool) -> bool:
        if rec.status not in _LIVE:
            return False
        wake = self._wake.get(rec.run_id)
        if wake is not None and wake > now:
            return False
        if rec.lease_owner is None or (rec.lease_expires_at or 0.0) <= now:
            return True
        return own and rec.lease_owner == worker_id

    async def claim(
        self, worker_id: str, *, ttl: float, limit: int, reclaim_own: bool = False
    ) -> list[Lease]:
        now = self._clock()
        leases: list[Lease] = []
        for rec in sorted(self._runs.values(), key=lambda r: (r.created_at, r.run_id)):
            if len(leases) >= limit:
                break
            if not self._runnable(rec, now, worker_id, reclaim_own):
                continue
            lease = Lease(
                run_id=rec.run_id,
                worker_id=worker_id,
                token=rec.lease_token + 1,
                expires_at=now + ttl,
            )
            self._runs[rec.run_id] = msgspec.structs.replace(
                rec,
                status=RunStatus.RUNNING,
                lease_owner=worker_id,
                lease_token=lease.token,
                lease_expires_at=lease.expires_at,
                updated_at=now,
            )
            leases.append(lease)
        return leases

    async def renew(self, leases: Sequence[Lease], *, ttl: float) -> list[Lease | None]:
        now = self._clock()
        out: list[Lease | None] = []
        for lease in leases:
            rec = self._runs.get(lease.run_id)
            if rec is None or rec.lease_token != lease.token or rec.lease_owner is None:
                out.append(None)
                continue
            new = msgspec.structs.replace(lease, expires_at=now + ttl)
            self._runs[lease.run_id] = msgspec.structs.replace(rec, lease_expires_at=new.expires_at)
            out.append(new)
        return out

    async def release(self, lease: Lease) -> bool:
        rec = self._runs.get(lease.run_id)
        if rec is None or rec.lease_token != lease.token or rec.lease_owner is None:
            return False
        self._runs[lease.run_id] = msgspec.structs.replace(
            rec,
            status=RunStatus.PENDING if rec.status == RunStatus.RUNNING else rec.status,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=self._clock(),
        )
        return True

    async def find_runnable(self, *, limit: int = 100) -> list[str]:
        now = self._clock()
        return [r.run_id for r in self._runs.values() if self._runnable(r, now, None, False)][
            :limit
        ]

    async def set_status(
        self, run_id: str, status: RunStatus, *, reason: str | None = None
    ) -> bool:
        rec = self._runs.get(run_id)
        if rec is None or rec.status.terminal:
            return False
        self._runs[run_id] = msgspec.structs.replace(
            rec, status=status, reason=reason, lease_owner=None, lease_expires_at=None
        )
        return True

    async def aclose(self) -> None:
        self._closed = True
