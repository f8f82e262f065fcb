"""The rules every journal adapter follows, in one place; an adapter keeps only its storage.

An adapter stores rows. What a fenced write must check, which error a refused
batch gets, which statuses keep a ``wake_at``, how a layout version is judged
and the open/close boilerplate are the same for every storage, so they live
here: :class:`JournalBase` for the shared methods, and small functions for the
checks an adapter makes inside its own transaction (in Python for the memory
journal, in SQL for the others, then explained here when a fenced write
finds nothing to update).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol, Self

import msgspec

from continuum_py.errors import (
    JournalConflict,
    JournalCorrupt,
    JournalError,
    LeaseLost,
    MessagesPending,
    RunIdTaken,
    SchemaTooNew,
)
from continuum_py.journal import (
    INBOX_CHECKED_STATUSES,
    AppendBatch,
    Lease,
    RunRecord,
    RunStatus,
    Snapshot,
    StoredEvent,
    WholeRun,
)
from continuum_py.queues import Queue, QueueLoad

__all__ = [
    "LIVE_STATUSES",
    "WAITING_STATUSES",
    "JournalBase",
    "Migration",
    "QueueLoad",
    "RunFilter",
    "admit",
    "after",
    "bad_seqs",
    "check_whole_runs",
    "duplicate_row",
    "lease_free",
    "lease_held",
    "lease_lost",
    "pending_migrations",
    "queue_from_row",
    "queue_room",
    "rate_since",
    "readable_layout",
    "refusal",
    "refuse_newer",
    "sql_in",
    "whole_record",
    "why_refused",
]

WAITING_STATUSES: frozenset[RunStatus] = frozenset({RunStatus.PENDING, RunStatus.SUSPENDED})
"""Statuses whose ``wake_at`` is kept: it says when the run becomes runnable again."""

LIVE_STATUSES: frozenset[RunStatus] = WAITING_STATUSES | {RunStatus.RUNNING}
"""Statuses a claim may take a run from."""


def sql_in(statuses: Iterable[RunStatus]) -> str:
    """``'a', 'b'``: the statuses as SQL literals for ``IN (...)``, in a stable order."""
    return ", ".join(f"'{s.value}'" for s in sorted(statuses))


class _Fenced(Protocol):
    @property
    def lease_token(self) -> int: ...
    @property
    def lease_owner(self) -> str | None: ...


# ---- claims ----


def lease_free(
    rec: RunRecord,
    journal_now: float,
    worker_id: str | None,
    own: bool,
    dead: Callable[[str], bool],
) -> bool:
    """Whether a claim by ``worker_id`` may take ``rec``'s lease (its status aside).

    Free: nobody holds it; it expired (journal clock); ``own`` and the holder is
    ``worker_id`` (a restarted worker taking its runs back); or the holder
    registered its liveness and no longer holds it (``dead(owner)``: its process
    died, see :class:`~continuum_py.journal.LivenessJournal`). SQL adapters
    spell the same rule in their claim statement.
    """
    owner = rec.lease_owner
    if owner is None or (rec.lease_expires_at or 0.0) <= journal_now:
        return True
    return (own and owner == worker_id) or dead(owner)


# ---- fenced writes ----


def lease_held(row: _Fenced | None, lease: Lease) -> bool:
    """Whether ``lease`` is still the run's lease: its token is the newest and someone holds it."""
    return row is not None and row.lease_owner is not None and row.lease_token == lease.token


def lease_lost(row: _Fenced | None, lease: Lease) -> LeaseLost | None:
    """``LeaseLost`` unless ``lease`` is still the run's lease (``row``: the run's row)."""
    if row is not None and row.lease_owner is not None and row.lease_token == lease.token:
        return None  # lease_held(), in line: every append asks
    return LeaseLost(lease.run_id, lease.token, row.lease_token if row is not None else None)


def bad_seqs(batch: AppendBatch) -> JournalConflict | None:
    """A ``JournalConflict`` if the batch's events are not its run's, numbered on from its tail."""
    seq, run_id = batch.expected_seq, batch.lease.run_id
    for e in batch.events:
        seq += 1
        if e.seq != seq or e.run_id != run_id:
            return JournalConflict(run_id, seq - 1, e.seq - 1)
    return None


def refusal(batch: AppendBatch, rec: RunRecord | None) -> JournalError | None:
    """Why the run's row ``rec`` refuses ``batch`` (its seqs already checked), or ``None``.

    A stale lease gives ``LeaseLost``; a tail other than ``expected_seq``,
    ``JournalConflict``; ending the run while its inbox holds messages after
    the batch's ``inbox_seen`` (or the stored one), ``MessagesPending``.
    """
    run_id = batch.lease.run_id
    lost = lease_lost(rec, batch.lease)
    if lost is not None or rec is None:
        return lost
    if rec.last_seq != batch.expected_seq:
        return JournalConflict(run_id, batch.expected_seq, rec.last_seq)
    seen = rec.inbox_seen if batch.inbox_seen is None else batch.inbox_seen
    if batch.status in INBOX_CHECKED_STATUSES and rec.inbox_last > seen:
        return MessagesPending(run_id, seen)
    return None


def why_refused(batch: AppendBatch, rec: RunRecord | None) -> JournalError:
    """The error of a batch whose fenced write changed no row, from the row read after it."""
    why = refusal(batch, rec)
    if why is not None:
        return why
    # The row allows the batch now though the write found it refusing: only a
    # concurrent change between the two can do that; the tail is what moved.
    return JournalConflict(batch.lease.run_id, batch.expected_seq, rec.last_seq if rec else None)


def after(rec: RunRecord, batch: AppendBatch, now: float) -> RunRecord:
    """The run's row once ``batch`` has landed on ``rec`` at time ``now``."""
    if batch.status is None and batch.inbox_seen in (None, rec.inbox_seen):
        # Most appends: a step's events, nothing else about the run changes.
        return msgspec.structs.replace(
            rec, last_seq=batch.expected_seq + len(batch.events), updated_at=now
        )
    changes: dict[str, object] = {
        "last_seq": batch.expected_seq + len(batch.events),
        "updated_at": now,
    }
    if batch.inbox_seen is not None:
        changes["inbox_seen"] = batch.inbox_seen
    if batch.status is not None:
        changes.update(
            status=batch.status,
            outcome=batch.outcome,
            reason=batch.reason,
            lease_owner=None,
            lease_expires_at=None,
            wake_at=batch.wake_at if batch.status in WAITING_STATUSES else None,
        )
    return msgspec.structs.replace(rec, **changes)


def check_whole_runs(runs: Sequence[WholeRun]) -> None:
    """Refuse whole runs (``Journal.put_runs``) that break :class:`WholeRun`'s rules.

    Raises:
        RunIdTaken: a run id given twice.
        ValueError: events not numbered 1..n for their run, a running status.
    """
    seen: set[str] = set()
    for run in runs:
        if run.run_id in seen:
            raise RunIdTaken(run.run_id)
        seen.add(run.run_id)
        if run.status == RunStatus.RUNNING:
            raise ValueError(f"run {run.run_id!r}: a whole run cannot be written as running")
        if not run.events:
            raise ValueError(f"run {run.run_id!r}: a whole run needs its events")
        for i, e in enumerate(run.events, start=1):
            if e.seq != i or e.run_id != run.run_id:
                raise ValueError(
                    f"run {run.run_id!r}: event {i} is ({e.run_id!r}, seq {e.seq}); "
                    "events must be the run's own, numbered 1..n"
                )


def whole_record(run: WholeRun, now: float) -> RunRecord:
    """The row a whole run gets: nobody holds its lease, its inbox is empty."""
    return RunRecord(
        run_id=run.run_id,
        workflow=run.workflow,
        status=run.status,
        created_at=now if run.created_at is None else run.created_at,
        updated_at=now,
        last_seq=len(run.events),
        outcome=run.outcome if run.status.terminal else None,
        reason=run.reason,
        wake_at=run.wake_at if run.status in WAITING_STATUSES else None,
        parent_run_id=run.parent_run_id,
        inbox_last=run.inbox_seen,
        inbox_seen=run.inbox_seen,
        forked_from=run.forked_from,
    )


def duplicate_row(detail: object) -> JournalCorrupt:
    """A write of the journal's own met a row already stored that its run's row does not account for.

    Fencing orders every write of a run, so only tables that disagree with
    each other (edited by hand, or half restored) can do that.
    """
    return JournalCorrupt(None, None, f"a write found a row already stored ({detail})")


# ---- table layouts ----


class Migration(NamedTuple):
    """One step of a table layout; ``sql`` names the Postgres schema as ``{s}``."""

    version: int
    name: str
    sql: str


def pending_migrations(found: int, migrations: Sequence[Migration]) -> list[Migration]:
    """The steps that bring a layout at version ``found`` (0: none) up to date, in order.

    Raises:
        SchemaTooNew: ``found`` is newer than every migration.
    """
    refuse_newer(found, migrations[-1].version if migrations else 0)
    return [m for m in migrations if m.version > found]


def refuse_newer(found: int, latest: int) -> int:
    """``found``, a stored layout version, unless it is newer than ``latest``.

    Raises:
        SchemaTooNew: it is; the journal is left as it is.
    """
    if found > latest:
        raise SchemaTooNew(None, None, found, latest)
    return found


def readable_layout(found: int, latest: int, oldest: int, what: str) -> str | None:
    """Why a read-only open cannot read ``what``, a journal at layout ``found``, or ``None``.

    Args:
        found: the stored layout version (a journal is there).
        latest: the newest layout this library writes.
        oldest: the oldest layout the reads understand (a read-only open
            upgrades nothing).
        what: the journal as the message names it.

    Raises:
        SchemaTooNew: ``found`` is newer than ``latest``.
    """
    if refuse_newer(found, latest) < oldest:
        return (
            f"{what} has the older table layout {found}, which a read-only open cannot "
            "upgrade; open it read-write once (a worker does)"
        )
    return None


# ---- the shared methods ----


class RunFilter(msgspec.Struct, frozen=True, kw_only=True):
    """The filters of one ``list_runs`` call, as :meth:`Journal.list_runs` documents them."""

    status: RunStatus | None
    limit: int
    workflow: str | None
    run_id_prefix: str | None
    created_after: float | None
    created_before: float | None
    after: tuple[float, str] | None
    newest_first: bool

    def keeps(self, r: RunRecord) -> bool:
        """Whether ``r`` passes every filter (``limit`` aside)."""
        key = (r.created_at, r.run_id)
        after = self.after
        return (
            (self.status is None or r.status == self.status)
            and (self.workflow is None or r.workflow == self.workflow)
            and (not self.run_id_prefix or r.run_id.startswith(self.run_id_prefix))
            and (self.created_after is None or r.created_at >= self.created_after)
            and (self.created_before is None or r.created_at < self.created_before)
            and (after is None or (key < after if self.newest_first else key > after))
        )


class JournalBase:
    """What every adapter's journal does the same way; an adapter adds its storage.

    Subclasses implement ``_snapshot``, ``load``, ``_select_runs``, ``_claim``
    and ``aclose``; ``connect`` and ``_left_open`` when they hold connections.
    """

    async def connect(self) -> None:
        """Open the storage (nothing to open by default)."""

    async def aclose(self) -> None:
        """Close connections; the journal is unusable afterwards."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _left_open(self) -> bool:
        """Whether connections are still open (a journal dropped so warns)."""
        return False

    def __del__(self) -> None:
        if self._left_open():
            warnings.warn(
                f"{self!r} was never closed; use `async with` or aclose()",
                ResourceWarning,
                stacklevel=1,
            )

    async def _snapshot(self, run_id: str) -> Snapshot | None:
        raise NotImplementedError

    async def load(self, run_id: str, *, after_seq: int = 0) -> list[StoredEvent]:
        """The run's events with seq greater than ``after_seq``, in order."""
        raise NotImplementedError

    async def load_with_snapshot(self, run_id: str) -> tuple[Snapshot | None, list[StoredEvent]]:
        """The newest snapshot and the events after it (all events if none)."""
        snap = await self._snapshot(run_id)
        return snap, await self.load(run_id, after_seq=snap.seq if snap else 0)

    async def _select_runs(self, f: RunFilter) -> list[RunRecord]:
        raise NotImplementedError

    async def _claim(
        self, worker_id: str, ttl: float, limit: int, reclaim_own: bool, now: float | None
    ) -> list[Lease]:
        raise NotImplementedError

    async def claim(
        self,
        worker_id: str,
        *,
        ttl: float,
        limit: int,
        reclaim_own: bool = False,
        now: float | None = None,
    ) -> list[Lease]:
        """Lease up to ``limit`` runnable runs, oldest first; see :meth:`Journal.claim`."""
        if limit <= 0:
            return []
        return await self._claim(worker_id, ttl, limit, reclaim_own, now)

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        limit: int = 1000,
        workflow: str | None = None,
        run_id_prefix: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        after: tuple[float, str] | None = None,
        newest_first: bool = False,
    ) -> list[RunRecord]:
        """Up to ``limit`` runs matching every filter given; see :meth:`Journal.list_runs`."""
        return await self._select_runs(
            RunFilter(
                status=status,
                limit=limit,
                workflow=workflow,
                run_id_prefix=run_id_prefix,
                created_after=created_after,
                created_before=created_before,
                after=after,
                newest_first=newest_first,
            )
        )


# ---- queues ----


def queue_room(load: QueueLoad) -> int:
    """How many of ``load``'s waiting runs its limits let in now."""
    q = load.queue
    room = len(load.waiting)
    if q.concurrency is not None:
        room = min(room, q.concurrency - load.holding)
    if q.per_worker is not None:
        room = min(room, q.per_worker - load.mine)
    if q.rate is not None:
        room = min(room, q.rate[0] - load.recent)
    return max(room, 0)


def admit(loads: Sequence[QueueLoad], limit: int, turn: int) -> list[str]:
    """The waiting runs a claim with room for ``limit`` admits, one queue at a time.

    Round-robin: one run from each queue with room in turn, starting at queue
    ``turn % len(loads)`` (a worker moves its start on every claim), so a long
    queue cannot starve a short one. Within a queue, its ``waiting`` order.
    Every journal counts the loads and leases the result in one transaction.
    """
    if not loads or limit <= 0:
        return []
    start = turn % len(loads)
    order = list(loads[start:]) + list(loads[:start])
    room = [queue_room(ld) for ld in order]
    taken = [0] * len(order)
    out: list[str] = []
    while len(out) < limit and any(r > 0 for r in room):
        for i, ld in enumerate(order):
            if room[i] > 0 and len(out) < limit:
                out.append(ld.waiting[taken[i]])
                taken[i] += 1
                room[i] -= 1
    return out


def queue_from_row(row: Sequence[Any]) -> Queue:
    """A stored ``queues`` row ``(name, concurrency, per_worker, rate_n, rate_period)`` as a Queue."""
    name, concurrency, per_worker, rate_n, rate_period = row
    rate = (int(rate_n), float(rate_period)) if rate_n is not None else None
    return Queue(str(name), concurrency, per_worker, rate)


def rate_since(queue: Queue, now: float) -> float:
    """Admissions after this time count towards ``queue``'s rate (``inf``: no rate)."""
    return now - queue.rate[1] if queue.rate is not None else float("inf")
