"""An in-process journal: fast, for tests and experiments; forgets everything on exit."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from continuum_py.adapters._rules import (
    LIVE_STATUSES,
    WAITING_STATUSES,
    JournalBase,
    QueueLoad,
    RunFilter,
    admit,
    after,
    bad_seqs,
    check_whole_runs,
    lease_free,
    lease_held,
    lease_lost,
    rate_since,
    refusal,
    whole_record,
)
from continuum_py.adapters._schedules import MemorySchedules
from continuum_py.errors import JournalError, RunAlreadyFinished, RunIdTaken, RunNotFound
from continuum_py.journal import (
    NOTIFY_PARENT_STATUSES,
    AppendBatch,
    InboxKind,
    InboxMessage,
    Lease,
    NewRun,
    RunRecord,
    RunStatus,
    Snapshot,
    StoredEvent,
    WholeRun,
)
from continuum_py.queues import Queue, QueueEntry

__all__ = ["MemoryJournal", "MemoryTransaction"]


def _order(rec: RunRecord) -> tuple[float, str]:
    return (rec.created_at, rec.run_id)


class _Runs(dict[str, RunRecord]):
    """The runs by id, and which of them are unfinished (kept as rows are set).

    Claims and timer looks read only :attr:`unfinished`: scanning every run
    ever made made each claim slower the longer an engine had been running.
    """

    def __init__(self) -> None:
        super().__init__()
        self.unfinished: dict[str, RunRecord] = {}

    def __setitem__(self, run_id: str, rec: RunRecord) -> None:
        super().__setitem__(run_id, rec)
        if rec.status.terminal:
            self.unfinished.pop(run_id, None)
        else:
            self.unfinished[run_id] = rec

    def same_status(self, run_id: str, rec: RunRecord) -> None:
        """Set an unfinished run's row whose status did not change (most appends)."""
        dict.__setitem__(self, run_id, rec)
        self.unfinished[run_id] = rec


class MemoryTransaction:
    """A :class:`~continuum_py.journal.JournalTransaction` of the memory journal.

    There is no database, so ``connection`` is ``None``. Appended batches are
    checked at once and applied only when the transaction commits.
    """

    connection: Any = None

    def __init__(self, journal: MemoryJournal) -> None:
        self._journal = journal
        self._batches: list[AppendBatch] = []
        self._shadow: dict[str, RunRecord] = {}
        self.refused = False

    async def append(self, batch: AppendBatch) -> JournalError | None:
        """Check ``batch`` (fenced) and queue it for the commit."""
        err = self._journal._check_into(self._shadow, batch)
        if err is not None:
            self.refused = True
            return err
        self._batches.append(batch)
        return None


class _Entry(msgspec.Struct, kw_only=True):
    """A queued run's place: the memory journal's ``queue_runs`` row."""

    queue: str
    priority: int
    seq: int
    dedup_key: str | None
    admitted_at: float | None = None


class MemoryJournal(MemorySchedules, JournalBase):
    """A :class:`~continuum_py.journal.Journal` held in dictionaries.

    Args:
        clock: the journal clock for leases (seconds); defaults to ``time.time``.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._runs = _Runs()
        self._events: dict[str, list[StoredEvent]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._parent_position: dict[str, int] = {}
        self._inbox: dict[str, list[InboxMessage]] = {}
        # Liveness of the workers that registered it: in-process only, so a
        # worker's runs move at once only when an engine sharing this journal
        # lets go of its liveness (a test's stand-in for a process dying).
        self._live: dict[str, bool] = {}
        self._queues: dict[str, Queue] = {}
        self._entries: dict[str, _Entry] = {}
        self._entry_seq = 0
        self._turn = 0
        self.served_queues: frozenset[str] | None = None

    @classmethod
    def from_url(cls, url: str) -> MemoryJournal:
        """Open from a ``memory://`` URL."""
        return cls()

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
            wake_at=run.wake_at,
            parent_run_id=run.parent_run_id,
        )
        if claim_for is not None and (run.wake_at is None or run.wake_at <= now):
            lease = Lease(run_id=run.run_id, worker_id=claim_for, token=1, expires_at=now + ttl)
            rec = msgspec.structs.replace(
                rec,
                status=RunStatus.RUNNING,
                lease_owner=claim_for,
                lease_token=1,
                lease_expires_at=lease.expires_at,
                wake_at=None,
            )
        self._runs[run.run_id] = rec
        self._events[run.run_id] = [run.first_event]
        self._parent_position[run.run_id] = run.parent_position
        self._inbox[run.run_id] = []
        return rec, lease, True

    async def put_runs(self, runs: Sequence[WholeRun]) -> None:
        """Create whole runs at once; see :meth:`~continuum_py.journal.JournalImport.put_runs`."""
        check_whole_runs(runs)
        for run in runs:
            if run.run_id in self._runs:
                raise RunIdTaken(run.run_id)
        now = self._clock()
        for run in runs:
            self._runs[run.run_id] = whole_record(run, now)
            self._events[run.run_id] = list(run.events)
            self._parent_position[run.run_id] = run.parent_position
            self._inbox[run.run_id] = []

    async def forks(self, run_id: str) -> list[RunRecord]:
        """The runs forked from ``run_id``, oldest first."""
        return sorted((r for r in self._runs.values() if r.forked_from == run_id), key=_order)

    # ---- append ----
    @staticmethod
    def _check(rec: RunRecord | None, batch: AppendBatch) -> JournalError | None:
        return bad_seqs(batch) or refusal(batch, rec)

    def _check_into(self, shadow: dict[str, RunRecord], batch: AppendBatch) -> JournalError | None:
        """Check ``batch`` against ``shadow`` (rows changed by earlier batches) and record it there."""
        run_id = batch.lease.run_id
        rec = shadow.get(run_id, self._runs.get(run_id))
        err = self._check(rec, batch)
        if err is None:
            assert rec is not None
            shadow[run_id] = after(rec, batch, self._clock())
        return err

    def _write(self, batch: AppendBatch, now: float) -> JournalError | None:
        run_id = batch.lease.run_id
        rec = self._runs.get(run_id)
        err = bad_seqs(batch) or refusal(batch, rec)  # _check(), in line: once per step
        if err is not None:
            return err
        assert rec is not None
        self._events[run_id].extend(batch.events)
        if batch.snapshot is not None:
            self._snapshots[run_id] = batch.snapshot
        if batch.status is None:
            # A fenced append without a status is to a leased, hence unfinished, run:
            # it moves no message and tells no parent (most appends: a step's events).
            self._runs.same_status(run_id, after(rec, batch, now))
            return None
        self._runs[run_id] = after(rec, batch, now)
        if batch.status.terminal:
            self._leave_line(run_id)
        target = batch.continued_to
        if batch.status == RunStatus.CONTINUED and target is not None and target in self._runs:
            seen = self._runs[run_id].inbox_seen
            for m in [m for m in self._inbox[run_id] if m.id > seen]:
                self._deliver(target, m.kind, m.name, m.data, now)
        parent = rec.parent_run_id
        # A missing parent is skipped silently, as in the SQL adapters.
        if batch.status in NOTIFY_PARENT_STATUSES and parent is not None and parent in self._runs:
            position = str(self._parent_position.get(run_id, 0))
            self._deliver(parent, "child", position, batch.outcome or b"", now)
        return None

    def _leave_line(self, run_id: str) -> None:
        """A run that ended while waiting in a queue leaves the line (as the SQL triggers do)."""
        entry = self._entries.get(run_id)
        if entry is not None and entry.admitted_at is None:
            del self._entries[run_id]

    async def append(self, batches: Sequence[AppendBatch]) -> list[JournalError | None]:
        now = self._clock()
        if len(batches) == 1:  # a sequential step's append: no comprehension's frame
            return [self._write(batches[0], now)]
        return [self._write(batch, now) for batch in batches]

    def append_now(self, batch: AppendBatch) -> JournalError | None:
        """:meth:`append` of one batch, done before returning: nothing here waits.

        The engine's client calls it instead of awaiting :meth:`append` (a
        coroutine less per step), unless a subclass or the instance replaced
        :meth:`append` (see ``append_now_mirrors``).
        """
        return self._write(batch, self._clock())

    append_now_mirrors = append
    """The ``append`` that :meth:`append_now` does the work of."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTransaction]:
        """Open a transaction; see :class:`~continuum_py.journal.TransactionalJournal`.

        Its batches are applied together on a clean exit. Other tasks may write
        while it is open (nothing here holds a lock), so the batches are checked
        again at commit; if one no longer fits, nothing is applied and its
        ``LeaseLost`` or ``JournalConflict`` is raised.
        """
        tx = MemoryTransaction(self)
        yield tx
        if tx.refused or not tx._batches:
            return
        shadow: dict[str, RunRecord] = {}
        for batch in tx._batches:
            err = self._check_into(shadow, batch)
            if err is not None:
                raise err
        now = self._clock()
        for batch in tx._batches:
            self._write(batch, now)

    # ---- reads ----
    async def get_run(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)

    async def _select_runs(self, f: RunFilter) -> list[RunRecord]:
        runs = sorted(filter(f.keeps, self._runs.values()), key=_order, reverse=f.newest_first)
        return runs[: f.limit]

    async def load(self, run_id: str, *, after_seq: int = 0) -> list[StoredEvent]:
        events = self._events.get(run_id)
        if events is None:
            raise RunNotFound(run_id)
        return list(events[after_seq:])

    async def _snapshot(self, run_id: str) -> Snapshot | None:
        return self._snapshots.get(run_id)

    async def take_snapshot(self, lease: Lease, snapshot: Snapshot) -> JournalError | None:
        lost = lease_lost(self._runs.get(lease.run_id), lease)
        if lost is not None:
            return lost
        self._snapshots[lease.run_id] = snapshot
        return None

    # ---- liveness ----
    async def hold_liveness(self, worker_id: str) -> bool:
        """Hold ``worker_id``'s liveness; see :class:`~continuum_py.journal.LivenessJournal`."""
        if self._live.get(worker_id):
            return False
        self._live[worker_id] = True
        return True

    async def liveness_held(self, worker_id: str) -> bool:
        """Whether ``worker_id``'s liveness is held."""
        return self._live.get(worker_id, False)

    async def release_liveness(self, worker_id: str, *, forget: bool = False) -> None:
        """Let go of ``worker_id``'s liveness: its runs may be taken at once."""
        if forget:
            self._live.pop(worker_id, None)
        elif worker_id in self._live:
            self._live[worker_id] = False

    async def dead_workers(self) -> list[str]:
        """Workers that let go of liveness and still lease running runs."""
        dead = {w for w, held in self._live.items() if not held}
        leasing = {
            r.lease_owner
            for r in self._runs.unfinished.values()
            if r.status == RunStatus.RUNNING and r.lease_owner in dead
        }
        for w in dead - leasing:
            del self._live[w]
        return sorted(w for w in leasing if w is not None)

    def _dead(self, worker_id: str) -> bool:
        return self._live.get(worker_id) is False

    # ---- leases ----
    def _runnable(
        self, rec: RunRecord, now: float, journal_now: float, worker_id: str | None, own: bool
    ) -> bool:
        if rec.status == RunStatus.SUSPENDED:
            due = rec.wake_at is not None and rec.wake_at <= now
            return due or rec.inbox_last > rec.inbox_seen
        if rec.status == RunStatus.PENDING:
            if rec.wake_at is not None and rec.wake_at > now:
                return False
            entry = self._entries.get(rec.run_id)
            if entry is not None and entry.admitted_at is None:
                return False  # waits for its queue to admit it
        elif rec.status != RunStatus.RUNNING:
            return False
        return lease_free(rec, journal_now, worker_id, own, self._dead)

    async def _claim(
        self, worker_id: str, ttl: float, limit: int, reclaim_own: bool, now: float | None
    ) -> list[Lease]:
        journal_now = self._clock()
        wake_now = journal_now if now is None else now
        loads = self._loads(worker_id, wake_now, self.served_queues, waiting_only=True)
        self._turn += 1
        admitted = admit(loads, limit, self._turn)
        for run_id in admitted:
            self._entries[run_id].admitted_at = wake_now
        leases = [self._lease(self._runs[r], worker_id, ttl, journal_now) for r in admitted]
        for rec in sorted(self._runs.unfinished.values(), key=_order):
            if len(leases) >= limit:
                break
            if not self._runnable(rec, wake_now, journal_now, worker_id, reclaim_own):
                continue
            leases.append(self._lease(rec, worker_id, ttl, journal_now))
        return leases

    def _lease(self, rec: RunRecord, worker_id: str, ttl: float, journal_now: float) -> Lease:
        lease = Lease(
            run_id=rec.run_id,
            worker_id=worker_id,
            token=rec.lease_token + 1,
            expires_at=journal_now + ttl,
        )
        self._runs[rec.run_id] = msgspec.structs.replace(
            rec,
            status=RunStatus.RUNNING,
            lease_owner=worker_id,
            lease_token=lease.token,
            lease_expires_at=lease.expires_at,
            updated_at=journal_now,
            wake_at=None,
        )
        return lease

    # ---- queues ----
    async def declare_queue(self, queue: Queue) -> None:
        """Store ``queue``'s definition (replacing one of the same name)."""
        self._queues[queue.name] = queue

    async def stored_queues(self) -> list[Queue]:
        """Every stored queue definition, by name."""
        return [self._queues[n] for n in sorted(self._queues)]

    async def start_queued(
        self, run: NewRun, queue: str, *, priority: int = 0, dedup_key: str | None = None
    ) -> tuple[RunRecord, bool]:
        """Create ``run`` waiting in ``queue``; see :class:`~continuum_py.journal.QueueJournal`."""
        existing = self._runs.get(run.run_id)
        if existing is not None:
            return existing, False
        if dedup_key is not None:
            for run_id, e in self._entries.items():
                if (
                    e.queue == queue
                    and e.dedup_key == dedup_key
                    and not self._runs[run_id].status.terminal
                ):
                    return self._runs[run_id], False
        rec, _, _ = await self.start_run(run)
        self._entry_seq += 1
        self._entries[run.run_id] = _Entry(
            queue=queue, priority=priority, seq=self._entry_seq, dedup_key=dedup_key
        )
        return rec, True

    def _loads(
        self, worker_id: str | None, now: float, names: frozenset[str] | None, *, waiting_only: bool
    ) -> list[QueueLoad]:
        holding: dict[str, int] = {}
        mine: dict[str, int] = {}
        recent: dict[str, int] = {}
        waiting: dict[str, list[tuple[int, int, str]]] = {}
        for run_id, e in self._entries.items():
            rec = self._runs[run_id]
            if e.admitted_at is None:
                if rec.status == RunStatus.PENDING and (rec.wake_at is None or rec.wake_at <= now):
                    waiting.setdefault(e.queue, []).append((e.priority, e.seq, run_id))
                continue
            if e.admitted_at > rate_since(self._queues[e.queue], now):
                recent[e.queue] = recent.get(e.queue, 0) + 1
            if rec.status in LIVE_STATUSES:
                holding[e.queue] = holding.get(e.queue, 0) + 1
                if rec.status == RunStatus.RUNNING and rec.lease_owner == worker_id:
                    mine[e.queue] = mine.get(e.queue, 0) + 1
        return [
            QueueLoad(
                queue=q,
                holding=holding.get(name, 0),
                mine=mine.get(name, 0),
                recent=recent.get(name, 0),
                waiting=[r for _, _, r in sorted(waiting.get(name, []))],
            )
            for name, q in sorted(self._queues.items())
            if (names is None or name in names) and (waiting.get(name) or not waiting_only)
        ]

    async def queue_loads(self, *, now: float | None = None) -> list[QueueLoad]:
        """Every stored queue's load now (engine clock ``now``, default the journal's)."""
        return self._loads(None, self._clock() if now is None else now, None, waiting_only=False)

    async def queue_entry(self, run_id: str) -> QueueEntry | None:
        """``(queue, priority, dedup_key, admitted)`` of a queued run, or ``None``."""
        e = self._entries.get(run_id)
        if e is None:
            return None
        return QueueEntry(e.queue, e.priority, e.dedup_key, e.admitted_at)

    async def renew(self, leases: Sequence[Lease], *, ttl: float) -> list[Lease | None]:
        now = self._clock()
        out: list[Lease | None] = []
        for lease in leases:
            rec = self._runs.get(lease.run_id)
            if rec is None or not lease_held(rec, lease):
                out.append(None)
                continue
            new = msgspec.structs.replace(lease, expires_at=now + ttl)
            self._runs[lease.run_id] = msgspec.structs.replace(rec, lease_expires_at=new.expires_at)
            out.append(new)
        return out

    async def seize(self, run_id: str, worker_id: str, *, ttl: float) -> Lease | None:
        rec = self._runs.get(run_id)
        if rec is None:
            raise RunNotFound(run_id)
        if rec.status.terminal:
            return None
        now = self._clock()
        lease = Lease(
            run_id=run_id, worker_id=worker_id, token=rec.lease_token + 1, expires_at=now + ttl
        )
        self._runs[run_id] = msgspec.structs.replace(
            rec,
            lease_owner=worker_id,
            lease_token=lease.token,
            lease_expires_at=lease.expires_at,
            updated_at=now,
        )
        return lease

    async def release(self, lease: Lease) -> bool:
        rec = self._runs.get(lease.run_id)
        if rec is None or not lease_held(rec, lease):
            return False
        self._runs[lease.run_id] = msgspec.structs.replace(
            rec,
            status=RunStatus.PENDING if rec.status == RunStatus.RUNNING else rec.status,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=self._clock(),
        )
        return True

    async def find_runnable(self, *, limit: int = 100, now: float | None = None) -> list[str]:
        journal_now = self._clock()
        wake_now = journal_now if now is None else now
        runs = sorted(self._runs.unfinished.values(), key=_order)
        return [r.run_id for r in runs if self._runnable(r, wake_now, journal_now, None, False)][
            :limit
        ]

    async def set_status(
        self, run_id: str, status: RunStatus, *, reason: str | None = None
    ) -> bool:
        rec = self._runs.get(run_id)
        if rec is None or rec.status.terminal:
            return False
        self._runs[run_id] = msgspec.structs.replace(
            rec,
            status=status,
            reason=reason,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=self._clock(),
            wake_at=rec.wake_at if status == RunStatus.SUSPENDED else None,
        )
        if RunStatus(status).terminal:
            self._leave_line(run_id)
        return True

    # ---- inbox ----
    def _deliver(self, run_id: str, kind: InboxKind, name: str, data: bytes, now: float) -> int:
        rec = self._runs[run_id]
        msg_id = rec.inbox_last + 1
        self._inbox[run_id].append(
            InboxMessage(run_id=run_id, id=msg_id, kind=kind, name=name, data=data, at=now)
        )
        self._runs[run_id] = msgspec.structs.replace(rec, inbox_last=msg_id, updated_at=now)
        return msg_id

    async def send(self, run_id: str, kind: InboxKind, name: str, data: bytes) -> int:
        rec = self._runs.get(run_id)
        if rec is None:
            raise RunNotFound(run_id)
        if rec.status.terminal:
            raise RunAlreadyFinished(run_id, rec.status.value, what=kind)
        return self._deliver(run_id, kind, name, data, self._clock())

    async def inbox(self, run_id: str, *, after_id: int = 0) -> list[InboxMessage]:
        # Ids have no gaps, so id k sits at index k - first id (an imported or
        # forked run's first message follows the ids its history records).
        msgs = self._inbox.get(run_id, [])
        base = msgs[0].id - 1 if msgs else 0
        return list(msgs[max(after_id - base, 0) :])

    async def unseen_inbox(self, run_ids: Sequence[str]) -> list[str]:
        out = []
        for run_id in run_ids:
            rec = self._runs.get(run_id)
            if rec is not None and rec.inbox_last > rec.inbox_seen:
                out.append(run_id)
        return out

    async def next_wake_at(self) -> float | None:
        wakes = [
            r.wake_at
            for r in self._runs.unfinished.values()
            if r.status in WAITING_STATUSES and r.wake_at is not None
        ]
        return min(wakes, default=None)

    async def aclose(self) -> None:
        pass  # nothing to close: the dictionaries go with the object
