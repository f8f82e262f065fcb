"""The facade every engine part talks to.

It wraps any Journal and adds group commit, event decoding with schema checks,
and error translation, in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec

from continuum_py import _codec
from continuum_py.errors import (
    ContinuumError,
    JournalError,
    JournalUnavailable,
    RunAlreadyFinished,
)
from continuum_py.events import (
    SCHEMA_VERSION,
    AnyEvent,
    ContinuedAsNew,
    Event,
    schema_of,
    schema_of_kind,
)
from continuum_py.journal import (
    AppendBatch,
    InboxKind,
    InboxMessage,
    Journal,
    Lease,
    NewRun,
    RunRecord,
    RunStatus,
    Snapshot,
    StoredEvent,
)


def stored(run_id: str, event: Event) -> StoredEvent:
    kind = _KINDS.get(type(event)) or kind_of(type(event))
    return StoredEvent(
        run_id=run_id, seq=event.seq, kind=kind[0], schema=kind[1], data=_codec.encode_event(event)
    )


def kind_of(cls: type[Event]) -> tuple[str, int]:
    """The stored kind and schema of the events of class ``cls`` (fixed per class)."""
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _KINDS[cls] = (cls.__name__, schema_of_kind(cls))
    return kind


_KINDS: dict[type[Event], tuple[str, int]] = {}
"""Each event class's stored kind and schema (both fixed per class), looked up once."""


def _append_now(journal: Journal) -> Callable[[AppendBatch], JournalError | None] | None:
    """The journal's ``append_now(batch)`` if it has one doing what its ``append`` does.

    A journal offers it by naming the ``append`` it mirrors (``append_now_mirrors``);
    a subclass or an instance that replaced ``append`` (to count or to fail writes)
    gets its own ``append`` called.
    """
    now = getattr(journal, "append_now", None)
    cls = type(journal)
    mirrors = getattr(cls, "append_now_mirrors", None)
    if now is None or mirrors is None or getattr(cls, "append", None) is not mirrors:
        return None
    if "append" in getattr(journal, "__dict__", {}):
        return None
    return now  # type: ignore[no-any-return]


def decode_all(events: Sequence[StoredEvent]) -> list[AnyEvent]:
    return [_codec.decode_event(e.run_id, e.seq, e.schema, e.data) for e in events]


class JournalClient:
    """Wraps a :class:`Journal` for the engine.

    ``append`` group-commits: while one write is in flight, batches from other
    runs queue up and go out together in the next write, one transaction and one
    fsync for all of them; each caller learns its own batch's fate.
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._queue: list[tuple[AppendBatch, asyncio.Future[JournalError | None]]] = []
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None
        self._append_now = _append_now(journal)
        self._journal_attrs: dict[str, Any] = getattr(journal, "__dict__", {})
        """The journal's own attributes, live: an ``append`` set on it later is called too."""

    async def append(self, batch: AppendBatch) -> None:
        """Write one run's batch durably; raises its ``LeaseLost``/``JournalConflict``."""
        if self._busy:
            fut: asyncio.Future[JournalError | None] = asyncio.get_running_loop().create_future()
            self._queue.append((batch, fut))
            err = await fut
        elif self._append_now is not None and "append" not in self._journal_attrs:
            # A journal that writes without waiting (memory://): nothing to group,
            # and no coroutine of the journal's to await.
            err = self._append_now(batch)
        else:
            self._busy = True
            try:
                try:  # _write(), in line: once per step
                    err = (await self.journal.append([batch]))[0]
                except ContinuumError:
                    raise
                except (OSError, ConnectionError) as exc:
                    raise JournalUnavailable(f"journal write failed: {exc}") from exc
            finally:
                if self._queue:
                    # Keep a reference: the loop holds tasks only weakly.
                    self._drainer = asyncio.get_running_loop().create_task(self._drain())
                else:
                    self._busy = False
        if err is not None:
            raise err

    def append_at_once(self, batch: AppendBatch) -> bool:
        """:meth:`append`, done before returning, if the journal writes without waiting.

        Returns False, having written nothing, when the batch must be awaited
        with :meth:`append` instead (a journal that waits, or writes queued).
        """
        if self._busy or self._append_now is None or "append" in self._journal_attrs:
            return False
        err = self._append_now(batch)
        if err is not None:
            raise err
        return True

    async def _drain(self) -> None:
        try:
            while self._queue:
                items, self._queue = self._queue, []
                try:
                    results = await self._write([b for b, _ in items])
                except BaseException as exc:
                    for _, fut in items:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut), res in zip(items, results, strict=True):
                    if not fut.done():
                        fut.set_result(res)
        finally:
            self._busy = False

    async def _write(self, batches: list[AppendBatch]) -> list[JournalError | None]:
        try:
            return await self.journal.append(batches)
        except ContinuumError:
            raise
        except (OSError, ConnectionError) as exc:
            raise JournalUnavailable(f"journal write failed: {exc}") from exc

    async def send_along_chain(self, run_id: str, kind: InboxKind, name: str, data: bytes) -> str:
        """Send to the run, or along its continue-as-new chain to the run that carries on.

        Returns the run the message went to.
        """
        while True:
            try:
                await self.journal.send(run_id, kind, name, data)
                return run_id
            except RunAlreadyFinished as exc:
                if exc.status != RunStatus.CONTINUED.value:
                    raise
                rec = await self.journal.get_run(run_id)
                end = (
                    _codec.decode_event(run_id, None, SCHEMA_VERSION, rec.outcome)
                    if rec is not None and rec.outcome
                    else None
                )
                if not isinstance(end, ContinuedAsNew):
                    raise
                run_id = end.new_run_id

    # The rest passes straight through to the journal: each returns the
    # journal's own coroutine, so the pass-through adds no await of its own.
    def load_with_snapshot(
        self, run_id: str
    ) -> Coroutine[Any, Any, tuple[Snapshot | None, list[StoredEvent]]]:
        """See :meth:`Journal.load_with_snapshot`."""
        return self.journal.load_with_snapshot(run_id)

    def start_run(
        self, run: NewRun, *, claim_for: str | None = None, ttl: float = 30.0
    ) -> Coroutine[Any, Any, tuple[RunRecord, Lease | None, bool]]:
        """See :meth:`Journal.start_run`."""
        return self.journal.start_run(run, claim_for=claim_for, ttl=ttl)

    def get_run(self, run_id: str) -> Coroutine[Any, Any, RunRecord | None]:
        """See :meth:`Journal.get_run`."""
        return self.journal.get_run(run_id)

    def list_runs(
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
    ) -> Coroutine[Any, Any, list[RunRecord]]:
        """See :meth:`Journal.list_runs`."""
        return self.journal.list_runs(
            status=status,
            limit=limit,
            workflow=workflow,
            run_id_prefix=run_id_prefix,
            created_after=created_after,
            created_before=created_before,
            after=after,
            newest_first=newest_first,
        )

    def load(self, run_id: str, *, after_seq: int = 0) -> Coroutine[Any, Any, list[StoredEvent]]:
        """See :meth:`Journal.load`."""
        return self.journal.load(run_id, after_seq=after_seq)

    def claim(
        self,
        worker_id: str,
        *,
        ttl: float,
        limit: int,
        reclaim_own: bool = False,
        now: float | None = None,
    ) -> Coroutine[Any, Any, list[Lease]]:
        """See :meth:`Journal.claim`."""
        return self.journal.claim(worker_id, ttl=ttl, limit=limit, reclaim_own=reclaim_own, now=now)

    def renew(
        self, leases: Sequence[Lease], *, ttl: float
    ) -> Coroutine[Any, Any, list[Lease | None]]:
        """See :meth:`Journal.renew`."""
        return self.journal.renew(leases, ttl=ttl)

    def release(self, lease: Lease) -> Coroutine[Any, Any, bool]:
        """See :meth:`Journal.release`."""
        return self.journal.release(lease)

    def seize(
        self, run_id: str, worker_id: str, *, ttl: float
    ) -> Coroutine[Any, Any, Lease | None]:
        """See :meth:`Journal.seize`."""
        return self.journal.seize(run_id, worker_id, ttl=ttl)

    def inbox(self, run_id: str, *, after_id: int = 0) -> Coroutine[Any, Any, list[InboxMessage]]:
        """See :meth:`Journal.inbox`."""
        return self.journal.inbox(run_id, after_id=after_id)

    def unseen_inbox(self, run_ids: Sequence[str]) -> Coroutine[Any, Any, list[str]]:
        """See :meth:`Journal.unseen_inbox`."""
        return self.journal.unseen_inbox(run_ids)

    def next_wake_at(self) -> Coroutine[Any, Any, float | None]:
        """See :meth:`Journal.next_wake_at`."""
        return self.journal.next_wake_at()

    def set_status(
        self, run_id: str, status: RunStatus, *, reason: str | None = None
    ) -> Coroutine[Any, Any, bool]:
        """See :meth:`Journal.set_status`."""
        return self.journal.set_status(run_id, status, reason=reason)


class SnapshotState(msgspec.Struct, frozen=True, kw_only=True):
    """What a snapshot holds: a compact event list that rebuilds the replay state."""

    events: list[AnyEvent]
    failures: dict[int, int] = {}


class _EncodedSnapshotState(msgspec.Struct, frozen=True, kw_only=True):
    """:class:`SnapshotState` with its events already encoded (the same JSON)."""

    events: list[msgspec.Raw]
    failures: dict[int, int] = {}


_snap_encoder = msgspec.json.Encoder()
_snap_decoder = msgspec.json.Decoder(SnapshotState)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])


class SnapshotEncoder:
    """Encodes the snapshots of one pass over a run, each fed event only once.

    A snapshot holds every event fed so far (``ReplayCore.fed``, which only
    grows), so encoding it whole made each snapshot cost the whole history;
    here the events encoded for earlier snapshots are reused as they are.
    """

    def __init__(self) -> None:
        self._raw: list[msgspec.Raw] = []
        self._schema = 0

    def encode(
        self, fed: list[AnyEvent], in_flight: list[AnyEvent], failures: dict[int, int]
    ) -> tuple[int, bytes]:
        """``(schema, data)`` of the snapshot of ``fed`` then ``in_flight``.

        ``fed`` must be the list given before, grown at its end; the schema is
        that of the newest kind of event the snapshot holds.
        """
        raw = self._raw
        new = fed[len(raw) :]
        if new:
            # The new events in one call, cut into each one's own bytes (a list's
            # JSON is its items' JSON joined by commas): no Python call per event.
            raw += _raw_list_decoder.decode(_snap_encoder.encode(new))
            kinds = {type(e): e for e in new}.values()  # one event of each kind
            self._schema = max(self._schema, *map(schema_of, kinds))
        schema = max([self._schema, *map(schema_of, in_flight)])
        events = raw + [msgspec.Raw(_snap_encoder.encode(e)) for e in in_flight]
        return schema, _snap_encoder.encode(_EncodedSnapshotState(events=events, failures=failures))


def decode_snapshot(snap: Snapshot) -> SnapshotState:
    from continuum_py.errors import JournalCorrupt, SchemaTooNew

    if snap.schema > SCHEMA_VERSION:
        raise SchemaTooNew(snap.run_id, None, snap.schema, SCHEMA_VERSION)
    try:
        return _snap_decoder.decode(snap.data)
    except msgspec.DecodeError as exc:
        raise JournalCorrupt(snap.run_id, None, str(exc)) from exc
