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
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from continuum_py._schedule_store import SCHEDULE_DEFINITION as SCHEDULE_DEFINITION
from continuum_py._schedule_store import ScheduleProgress as ScheduleProgress
from continuum_py._schedule_store import ScheduleRecord as ScheduleRecord
from continuum_py._schedule_store import ScheduleStore as ScheduleStore
from continuum_py.errors import JournalError
from continuum_py.queues import Queue, QueueEntry, QueueLoad

__all__ = [
    "INBOX_CHECKED_STATUSES",
    "NOTIFY_PARENT_STATUSES",
    "RUN_COLUMNS",
    "SCHEDULE_DEFINITION",
    "TERMINAL_STATUSES",
    "AppendBatch",
    "Connectable",
    "InboxKind",
    "InboxMessage",
    "Journal",
    "JournalAdmin",
    "JournalImport",
    "JournalTransaction",
    "Lease",
    "LivenessJournal",
    "NewRun",
    "NotifyingJournal",
    "QueueJournal",
    "RunRecord",
    "RunStatus",
    "ScheduleProgress",
    "ScheduleRecord",
    "ScheduleStore",
    "Snapshot",
    "StoredEvent",
    "TransactionalJournal",
    "WatchingJournal",
    "WholeRun",
    "list_runs_sql",
    "prefix_end",
    "record_from_row",
]


class RunStatus(enum.StrEnum):
    """Where a run stands."""

    PENDING = "pending"
    """Waiting for a worker."""
    RUNNING = "running"
    """Held by a worker's lease."""
    SUSPENDED = "suspended"
    """Waiting for a timer, a signal or a child run, with no lease held."""
    PARKED = "parked"
    """Stopped by a ``NonDeterminismError``; resumes with ``engine.resume``."""
    COMPLETED = "completed"
    """The workflow returned."""
    FAILED = "failed"
    """The workflow raised."""
    CANCELLED = "cancelled"
    """The run was cancelled."""
    CONTINUED = "continued"
    """The run ended with ``ctx.continue_as_new``; its outcome names the next run."""

    @property
    def terminal(self) -> bool:
        """Whether the run is over for good."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.CONTINUED}
)

TERMINAL_STATUSES: frozenset[RunStatus] = _TERMINAL
"""Statuses a run never leaves."""

NOTIFY_PARENT_STATUSES: frozenset[RunStatus] = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
)
"""Terminal statuses that send a child's outcome to its parent's inbox."""

INBOX_CHECKED_STATUSES: frozenset[RunStatus] = NOTIFY_PARENT_STATUSES
"""Final statuses a batch may set only once the run has recorded every message.

A batch ending the run this way is refused with ``MessagesPending`` when the
run's inbox holds a message after the batch's ``inbox_seen`` (or the stored
one), checked atomically with the write, so a cancel or signal accepted by
``send`` is never dropped by a run finishing at the same moment.
"""


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
    """A run to create, with its first event (``RunStarted``, seq 1).

    Attributes:
        run_id: the run's id.
        workflow: its workflow name.
        first_event: the encoded ``RunStarted``.
        wake_at: not runnable before this time (engine clock), for a scheduled start.
        parent_run_id: for a child run, the parent; the child's final outcome is
            sent to the parent's inbox (kind ``"child"``) in the same transaction
            that ends the child.
        parent_position: the parent's call-order position awaiting the child; the
            inbox message's ``name``.
    """

    run_id: str
    workflow: str
    first_event: StoredEvent
    wake_at: float | None = None
    parent_run_id: str | None = None
    parent_position: int = 0


InboxKind = Literal["signal", "cancel", "child"]
"""What an inbox message is: a signal, a cancel request, or a child run's outcome.

Stored as this text in every journal.
"""


class InboxMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Something sent to a run from outside its runner, kept until the run records it.

    Attributes:
        run_id: the receiving run.
        id: 1..n per run, in the order messages were sent.
        kind: ``"signal"``, ``"cancel"`` or ``"child"`` (a child run's outcome).
        name: the signal name; for ``"child"``, the parent's position as text.
        data: encoded payload (for ``"child"``: the child's encoded final event).
        at: journal-clock time it was sent.
    """

    run_id: str
    id: int
    kind: InboxKind
    name: str
    data: bytes
    at: float = 0.0


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
        wake_at: for a pending or suspended run, when it becomes runnable.
        parent_run_id: the parent of a child run.
        inbox_last: id of the newest inbox message.
        inbox_seen: id of the newest inbox message recorded in history.
        forked_from: for a run made by ``engine.fork``, the run it was forked from.
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
    wake_at: float | None = None
    parent_run_id: str | None = None
    inbox_last: int = 0
    inbox_seen: int = 0
    forked_from: str | None = None


RUN_COLUMNS: tuple[str, ...] = tuple(RunRecord.__struct_fields__)
"""The fields of :class:`RunRecord` in order: SQL adapters select these columns."""


def record_from_row(row: Sequence[Any]) -> RunRecord:
    """A :class:`RunRecord` from a row starting with :data:`RUN_COLUMNS` in order.

    Columns after those (a query's extras) are ignored.
    """
    fields = dict(zip(RUN_COLUMNS, row[: len(RUN_COLUMNS)], strict=True))
    fields["status"] = RunStatus(fields["status"])
    return RunRecord(**fields)


def prefix_end(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix``, by code point.

    ``s.startswith(prefix)`` is ``prefix <= s < prefix_end(prefix)``, a range an
    index on ``run_id`` answers; ``None`` when nothing is above (no upper bound).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000  # surrogates are not text a database stores
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


def list_runs_sql(
    *,
    status: RunStatus | None,
    limit: int,
    workflow: str | None,
    run_id_prefix: str | None,
    created_after: float | None,
    created_before: float | None,
    after: tuple[float, str] | None,
    newest_first: bool,
    param: Callable[[int], str],
    id_bytewise: str = "run_id",
) -> tuple[str, list[Any]]:
    """The ``WHERE ... ORDER BY ... LIMIT ...`` of :meth:`Journal.list_runs` for a SQL adapter.

    Only the filters given appear, so each combination gets its own plan.

    Args:
        status: as in :meth:`Journal.list_runs`.
        limit: as there.
        workflow: as there.
        run_id_prefix: as there; answered as a range on ``id_bytewise``.
        created_after: as there.
        created_before: as there.
        after: as there.
        newest_first: as there.
        param: the placeholder for the n-th parameter (1-based): ``?`` or ``$n``.
        id_bytewise: ``run_id`` compared by code point (e.g. ``run_id COLLATE "C"``
            where the column's collation is a language's).

    Returns:
        The SQL after ``FROM runs``, and its parameters in order.
    """
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return param(len(args))

    if status is not None:
        where.append(f"status = {arg(RunStatus(status).value)}")
    if workflow is not None:
        where.append(f"workflow = {arg(workflow)}")
    if run_id_prefix:
        where.append(f"{id_bytewise} >= {arg(run_id_prefix)}")
        end = prefix_end(run_id_prefix)
        if end is not None:
            where.append(f"{id_bytewise} < {arg(end)}")
    if created_after is not None:
        where.append(f"created_at >= {arg(created_after)}")
    if created_before is not None:
        where.append(f"created_at < {arg(created_before)}")
    if after is not None:
        op = "<" if newest_first else ">"
        where.append(f"(created_at, run_id) {op} ({arg(after[0])}, {arg(after[1])})")
    way = "DESC" if newest_first else "ASC"
    sql = " WHERE " + " AND ".join(where) if where else ""
    sql += f" ORDER BY created_at {way}, run_id {way} LIMIT {arg(limit)}"
    return sql, args


class AppendBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Events for one run, written all or nothing.

    Attributes:
        lease: the writer's lease; a stale token refuses the batch.
        expected_seq: the run's last seq as the writer knows it.
        events: the new events, seq ``expected_seq + 1`` onwards.
        status: a new status to set with the events: terminal, parked, or
            suspended. Any of them releases the lease.
        outcome: for a terminal status, the encoded final event.
        reason: for parked, why.
        snapshot: a snapshot to store with the events.
        wake_at: for suspended, when the run becomes runnable again (engine
            clock; ``None``: only a new inbox message wakes it).
        inbox_seen: the newest inbox message id these events (or earlier ones)
            record; stored on the run so unseen messages make it runnable.
        continued_to: with status continued, the run that carries on: in the
            same transaction, every inbox message this run has not recorded
            (id above its ``inbox_seen``) is moved to that run's inbox, in order,
            so nothing sent to the old run is lost.
    """

    lease: Lease
    expected_seq: int
    events: Sequence[StoredEvent]
    status: RunStatus | None = None
    outcome: bytes | None = None
    reason: str | None = None
    snapshot: Snapshot | None = None
    wake_at: float | None = None
    inbox_seen: int | None = None
    continued_to: str | None = None


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

        Each batch is checked on its own: a stale token gives ``LeaseLost``, a
        wrong tail ``JournalConflict``, and a batch ending the run (a status in
        :data:`INBOX_CHECKED_STATUSES`) while messages after its ``inbox_seen``
        are waiting gives ``MessagesPending``, in its slot of the result; none of
        its events are written then. Returns once every accepted batch is durable.
        """
        ...

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run's row, or ``None``."""
        ...

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
        """Up to ``limit`` runs matching every filter given, oldest first.

        The order is by ``(created_at, run_id)``; ``newest_first`` reverses it.

        Args:
            status: only runs in this status.
            limit: at most this many (at least 1).
            workflow: only runs of this workflow name.
            run_id_prefix: only runs whose id starts with this (case-sensitive,
                by code point; ``%`` and ``_`` are plain characters).
            created_after: only runs with ``created_at >= created_after``.
            created_before: only runs with ``created_at < created_before``.
            after: a ``(created_at, run_id)`` key: only runs past it in the
                listing's order (a keyset page: stable while runs are added).
            newest_first: newest first instead.

        .. versionchanged:: 0.1
           Every option but ``status`` and ``limit``.
        """
        ...

    async def load(self, run_id: str, *, after_seq: int = 0) -> list[StoredEvent]:
        """The run's events with seq greater than ``after_seq``, in order."""
        ...

    async def load_with_snapshot(self, run_id: str) -> tuple[Snapshot | None, list[StoredEvent]]:
        """The newest snapshot and the events after it (all events if none)."""
        ...

    async def claim(
        self,
        worker_id: str,
        *,
        ttl: float,
        limit: int,
        reclaim_own: bool = False,
        now: float | None = None,
    ) -> list[Lease]:
        """Lease up to ``limit`` runnable runs, oldest first.

        Runnable: pending with no ``wake_at`` or one that is due; suspended with
        a due ``wake_at`` or an unseen inbox message; running with an expired
        lease. With ``reclaim_own``, runs whose lease ``worker_id`` still holds
        are taken at once too (a restarted worker resuming its own runs). Each
        claim bumps the run's fencing token, sets status running and clears
        ``wake_at``. ``now`` is the engine clock's time, compared with
        ``wake_at`` (default: the journal clock); lease expiry always uses the
        journal clock.
        """
        ...

    async def renew(self, leases: Sequence[Lease], *, ttl: float) -> list[Lease | None]:
        """Extend leases; ``None`` in a slot means that lease was lost."""
        ...

    async def release(self, lease: Lease) -> bool:
        """Give a lease back so any worker may claim the run; ``False`` if it was lost."""
        ...

    async def seize(self, run_id: str, worker_id: str, *, ttl: float) -> Lease | None:
        """Take the lease of an unfinished run whoever holds it, with a new token.

        For ending a run from outside (``engine.terminate``): the runner holding
        it is fenced out (its next write gets ``LeaseLost``). The run's status is
        unchanged. ``None`` if the run is finished; raises ``RunNotFound``.
        """
        ...

    async def send(self, run_id: str, kind: InboxKind, name: str, data: bytes) -> int:
        """Add a message to a run's inbox; returns its id.

        A suspended run with an unseen message is runnable. Not fenced: anyone
        may send.

        Raises:
            RunNotFound: no such run.
            RunAlreadyFinished: the run is over (terminal status).
        """
        ...

    async def inbox(self, run_id: str, *, after_id: int = 0) -> list[InboxMessage]:
        """The run's inbox messages with id greater than ``after_id``, in order."""
        ...

    async def unseen_inbox(self, run_ids: Sequence[str]) -> list[str]:
        """Those of ``run_ids`` with inbox messages not yet recorded in history."""
        ...

    async def next_wake_at(self) -> float | None:
        """The earliest ``wake_at`` of a pending or suspended run, if any."""
        ...

    async def set_status(
        self, run_id: str, status: RunStatus, *, reason: str | None = None
    ) -> bool:
        """Move a non-terminal run to ``status`` (used to resume a parked run)."""
        ...

    async def aclose(self) -> None:
        """Close connections; the journal is unusable afterwards."""
        ...


@runtime_checkable
class JournalAdmin(Protocol):
    """Optional: what tools and tests use and the engine never calls.

    The bundled journals implement it; an adapter of your own need not.
    """

    async def take_snapshot(self, lease: Lease, snapshot: Snapshot) -> JournalError | None:
        """Store a snapshot (fenced); replaces the previous one."""
        ...

    async def find_runnable(self, *, limit: int = 100, now: float | None = None) -> list[str]:
        """Run ids a worker could claim now."""
        ...


class WholeRun(msgspec.Struct, frozen=True, kw_only=True):
    """A run to create with its whole history at once (``engine.import_run``, ``engine.fork``).

    Attributes:
        run_id: the run's id; it must not exist yet.
        workflow: its workflow name.
        status: where it stands: pending, suspended, parked or terminal (never
            running: nobody holds its lease).
        events: its whole history, seq 1..n with no gaps, ``RunStarted`` first.
        created_at: when it was created (``None``: now, by the journal clock).
        outcome: for a terminal status, the encoded final event.
        reason: for parked, why.
        wake_at: for pending or suspended, when it becomes runnable.
        parent_run_id: the parent of a child run.
        parent_position: the parent's position waiting for it.
        inbox_seen: the newest inbox message id its history records; its inbox
            starts empty, and the next message sent to it gets the id after.
        forked_from: the run it was forked from, if any.
    """

    run_id: str
    workflow: str
    status: RunStatus
    events: Sequence[StoredEvent]
    created_at: float | None = None
    outcome: bytes | None = None
    reason: str | None = None
    wake_at: float | None = None
    parent_run_id: str | None = None
    parent_position: int = 0
    inbox_seen: int = 0
    forked_from: str | None = None


@runtime_checkable
class JournalImport(Protocol):
    """Optional: write whole runs at once, and find a run's forks.

    ``engine.import_run`` and ``engine.fork`` need it; the bundled journals
    implement it.
    """

    async def put_runs(self, runs: Sequence[WholeRun]) -> None:
        """Create every run with its whole history in one transaction: all or nothing.

        Raises:
            RunIdTaken: a run id exists already (or twice in ``runs``); nothing
                was written.
            ValueError: a run that breaks the rules of :class:`WholeRun` (its
                events not numbered 1..n, a running status); nothing was written.
        """
        ...

    async def forks(self, run_id: str) -> list[RunRecord]:
        """The runs whose ``forked_from`` is ``run_id``, oldest first."""
        ...


@runtime_checkable
class Connectable(Protocol):
    """Optional: a journal that opens its connections before first use.

    ``Engine.open`` calls :meth:`connect` once; a journal without it is used as
    it is (the memory journal).
    """

    async def connect(self) -> None:
        """Open connections and create or upgrade the schema (unless read-only)."""
        ...


@runtime_checkable
class NotifyingJournal(Protocol):
    """Optional: a journal that tells workers at once when a run may need them."""

    async def listen(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(run_id)`` when another process makes a run need a worker.

        That is: starts a run, sends a message to one, releases or resumes one.
        Keep listening across reconnects until ``aclose``. A lost notification
        only delays work: workers also poll.
        """
        ...


@runtime_checkable
class WatchingJournal(Protocol):
    """Optional: a journal that notices writes by other processes, but not what they were.

    For a journal that cannot notify (:class:`NotifyingJournal`), such as one
    SQLite file shared by several processes: a worker looks for work when the
    callback comes instead of at its next poll. Messages to runs held here are
    still found by the worker's inbox watch.

    .. versionadded:: 0.1
    """

    async def watch_changes(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` soon after another process commits a write, until ``aclose``."""
        ...


@runtime_checkable
class LivenessJournal(Protocol):
    """Optional: a journal that learns at once when a worker's process has died.

    A worker holds its *liveness* while it lives: on Postgres a session advisory
    lock on a connection of its own, on SQLite a file lock beside the database
    file. The database server or the operating system lets go of it the moment
    the process dies, however it dies. A claim treats a run leased by a worker
    that registered its liveness and no longer holds it as if the lease had
    expired: the run moves at once, fenced as always (its token grows, so the
    dead worker's writes would be refused). A worker that never held liveness
    (an older version, a tool that seized a run) and a worker that hangs but
    lives (its lock is still held) keep the lease rule: their runs move only
    once their leases expire.

    .. versionadded:: 0.1
    """

    async def hold_liveness(self, worker_id: str) -> bool:
        """Hold ``worker_id``'s liveness (and register it) until released or the process ends.

        Returns ``False`` when it is held elsewhere (the same id given to two
        live workers); the caller may try again later.
        """
        ...

    async def liveness_held(self, worker_id: str) -> bool:
        """Whether this journal still holds ``worker_id``'s liveness.

        One that was lost (its connection dropped) is taken again first, if it
        can be; meanwhile other workers may have taken its runs (fenced).
        """
        ...

    async def release_liveness(self, worker_id: str, *, forget: bool = False) -> None:
        """Let go of ``worker_id``'s liveness, as its process ending would.

        Runs it still leases may be taken at once afterwards. With ``forget``
        (a clean stop that gave every lease back) it is also unregistered: a
        lease later found in its name keeps the lease rule.
        """
        ...

    async def dead_workers(self) -> list[str]:
        """Registered workers whose liveness is gone and who still lease running runs.

        A dead worker leasing nothing is forgotten (unregistered) on the way.
        """
        ...


@runtime_checkable
class JournalTransaction(Protocol):
    """One open database transaction of a :class:`TransactionalJournal`.

    Attributes:
        connection: the driver's connection inside the transaction: an
            ``asyncpg.Connection`` for Postgres, an async wrapper with
            ``execute``/``fetch`` for SQLite. A step's own SQL on it commits
            or rolls back together with the step's completion.
    """

    connection: Any

    async def append(self, batch: AppendBatch) -> JournalError | None:
        """Write ``batch`` (fenced) inside this transaction; nothing is durable before commit."""
        ...


@runtime_checkable
class TransactionalJournal(Protocol):
    """Optional: transactional steps, whose own SQL commits with their completion."""

    def transaction(self) -> AbstractAsyncContextManager[JournalTransaction]:
        """Open a transaction.

        It commits on a clean exit unless an ``append`` in it was refused, and
        rolls back on an exception or a refused append.
        """
        ...


@runtime_checkable
class QueueJournal(Protocol):
    """Optional: queues (:class:`~continuum_py.Queue`); every bundled journal has them.

    A queued run is created pending and waits until a claim admits it: the
    claim counts the queue's slots, rate window and the claiming worker's own
    runs, and leases the runs its limits let in, in one transaction
    (:func:`~continuum_py.adapters._rules.admit`). An ordinary claim never
    takes a waiting queued run. ``served_queues`` (``None``: all) are the
    queues this journal object's claims admit from.
    """

    served_queues: frozenset[str] | None

    async def declare_queue(self, queue: Queue) -> None:
        """Store ``queue``'s definition, replacing a stored one of the same name."""
        ...

    async def stored_queues(self) -> list[Queue]:
        """Every stored queue definition, by name."""
        ...

    async def start_queued(
        self, run: NewRun, queue: str, *, priority: int = 0, dedup_key: str | None = None
    ) -> tuple[RunRecord, bool]:
        """Create ``run`` waiting in ``queue``, or return the run that makes it unneeded.

        That is the run of the same ``run_id``, or the unfinished run of
        ``queue`` holding ``dedup_key`` (a unique constraint decides between
        racing starts). Returns ``(record, created)``.
        """
        ...

    async def queue_loads(self, *, now: float | None = None) -> list[QueueLoad]:
        """Every stored queue's load at ``now`` (engine clock; default the journal's)."""
        ...

    async def queue_entry(self, run_id: str) -> QueueEntry | None:
        """A queued run's place (its admission time once admitted), or ``None``."""
        ...
