"""Export a run (and its children) to one self-contained file, and import it into a journal.

The file is JSON, so people can read it: a header (the format's version, the
event schema it was written with, the run asked for) and the runs, each with its
row's facts, its events as they are stored (kind, schema, the event itself) and a
SHA-256 checksum over the run's part, so a truncated or altered file is refused
before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from continuum_py import _codec
from continuum_py._fork import recorded_inbox
from continuum_py.errors import (
    ConfigurationError,
    ContinuumError,
    ExportCorrupt,
    ExportTooNew,
    RunNotFound,
)
from continuum_py.events import SCHEMA_VERSION, AnyEvent, ChildStarted, RunStarted
from continuum_py.journal import (
    Journal,
    JournalImport,
    RunRecord,
    RunStatus,
    StoredEvent,
    WholeRun,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "export_runs", "import_runs", "needs_import"]

FORMAT = "continuum-export"
"""The ``format`` field every export carries."""

FORMAT_VERSION = 1
"""The version of the export layout this library writes and reads."""


class ExportedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One stored event: its seq, kind, event schema, and the event itself (JSON)."""

    seq: int
    kind: str
    schema: int
    event: msgspec.Raw


class ExportedRun(msgspec.Struct, frozen=True, kw_only=True):
    """One run of an export; ``sha256`` covers every other field (see :func:`_checksum`)."""

    run_id: str
    workflow: str
    status: str
    created_at: float
    reason: str | None
    wake_at: float | None
    parent_run_id: str | None
    parent_position: int
    inbox_seen: int
    forked_from: str | None
    events: list[ExportedEvent]
    sha256: str = ""


class _Header(msgspec.Struct, kw_only=True):
    # Read first and leniently, so a newer format is named as such, not as corrupt.
    format: str
    version: int
    event_schema: int = 0


class ExportFile(msgspec.Struct, frozen=True, kw_only=True):
    """A whole export: the run asked for first, then its children (parents before children)."""

    format: str
    version: int
    event_schema: int
    run_id: str
    runs: list[ExportedRun]


def needs_import(journal: Journal, what: str) -> JournalImport:
    """The journal as a :class:`JournalImport`, or a clear error naming ``what`` needs it."""
    if not isinstance(journal, JournalImport):
        raise ConfigurationError(
            f"{what} needs a journal that writes whole runs (continuum_py.journal.JournalImport); "
            f"{type(journal).__name__} does not"
        )
    return journal


def _checksum(run: ExportedRun) -> str:
    # msgspec writes a struct's fields in a fixed order and Raw values byte for
    # byte, so the same run always gives the same bytes.
    body = msgspec.json.encode(msgspec.structs.replace(run, sha256=""))
    return hashlib.sha256(body).hexdigest()


def _exported(rec: RunRecord, rows: Sequence[StoredEvent], first: AnyEvent) -> ExportedRun:
    run = ExportedRun(
        run_id=rec.run_id,
        workflow=rec.workflow,
        status=rec.status.value,
        created_at=rec.created_at,
        reason=rec.reason,
        wake_at=rec.wake_at,
        parent_run_id=rec.parent_run_id,
        parent_position=first.parent_position if isinstance(first, RunStarted) else 0,
        inbox_seen=rec.inbox_seen,
        forked_from=rec.forked_from,
        events=[
            ExportedEvent(seq=e.seq, kind=e.kind, schema=e.schema, event=msgspec.Raw(e.data))
            for e in rows
        ],
    )
    return msgspec.structs.replace(run, sha256=_checksum(run))


async def export_runs(journal: Journal, run_id: str, *, children: bool) -> bytes:
    """The export of ``run_id`` (and, with ``children``, every descendant run) as JSON bytes.

    A run's history and row are read apart, so export a run that is not
    running for a consistent picture; each run's events are read whole.
    """
    runs: list[ExportedRun] = []
    queue = [run_id]
    seen: set[str] = set()
    while queue:
        rid = queue.pop(0)
        if rid in seen:
            continue
        seen.add(rid)
        rec = await journal.get_run(rid)
        if rec is None:
            if rid == run_id:
                raise RunNotFound(rid)
            continue  # a child the parent started and the journal no longer holds
        rows = await journal.load(rid)
        events = [_codec.decode_event(rid, e.seq, e.schema, e.data) for e in rows]
        # Read after the row, the events may hold messages the row did not count yet:
        # the next message sent to the imported run must get an id after them all.
        inbox = max(rec.inbox_seen, recorded_inbox(events))
        runs.append(_exported(msgspec.structs.replace(rec, inbox_seen=inbox), rows, events[0]))
        if children:
            queue += [e.child_run_id for e in events if isinstance(e, ChildStarted)]
    doc = ExportFile(
        format=FORMAT,
        version=FORMAT_VERSION,
        event_schema=SCHEMA_VERSION,
        run_id=run_id,
        runs=runs,
    )
    return _layout(doc)


def _layout(doc: ExportFile) -> bytes:
    """``doc`` as JSON with one event per line, for people reading it.

    Only whitespace between values differs from the compact form, so the
    checksums (over the compact form of each run) hold.
    """
    head = msgspec.json.encode(msgspec.structs.replace(doc, runs=[]))
    parts = [head[: -len(b"[]}")], b"[\n"]
    for i, run in enumerate(doc.runs):
        fields = msgspec.json.encode(msgspec.structs.replace(run, events=[]))
        # A string's quotes are escaped inside it: this is the field itself.
        before, after = fields.split(b'"events":[]', 1)
        events = b",\n".join(b"  " + msgspec.json.encode(e) for e in run.events)
        parts += [b" ", before, b'"events":[\n', events, b"\n ]", after]
        parts.append(b",\n" if i + 1 < len(doc.runs) else b"\n")
    parts.append(b"]}\n")
    return b"".join(parts)


def read_export(data: bytes) -> ExportFile:
    """Decode and check an export: every refusal is raised before anything is written.

    Raises:
        ExportCorrupt: not an export, truncated, a checksum that does not match,
            or an event that does not decode.
        ExportTooNew: written by a newer continuum_py.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(
            f"import_run takes the bytes export_run returned, got {type(data).__name__}"
        )
    try:
        head = msgspec.json.decode(data, type=_Header)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ExportCorrupt(f"it is not a whole continuum export ({_short(exc)})") from None
    if head.format != FORMAT:
        raise ExportCorrupt(f"its format is {head.format!r}, not {FORMAT!r}")
    if head.version > FORMAT_VERSION:
        raise ExportTooNew("format", head.version, FORMAT_VERSION)
    try:
        doc = msgspec.json.decode(data, type=ExportFile)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ExportCorrupt(f"it does not hold what an export holds ({_short(exc)})") from None
    if not doc.runs or doc.runs[0].run_id != doc.run_id:
        raise ExportCorrupt(f"it does not start with the run it names, {doc.run_id!r}")
    ids = [run.run_id for run in doc.runs]
    if len(set(ids)) != len(ids):
        raise ExportCorrupt("it holds a run twice")
    for run in doc.runs:
        _check_run(run)
    return doc


def _check_run(run: ExportedRun) -> None:
    if _checksum(run) != run.sha256:
        raise ExportCorrupt(
            "its checksum does not match its content (altered or damaged)", run.run_id
        )
    try:
        RunStatus(run.status)
    except ValueError:
        raise ExportCorrupt(f"unknown status {run.status!r}", run.run_id) from None
    if not run.events:
        raise ExportCorrupt("it has no events", run.run_id)
    for i, e in enumerate(run.events, start=1):
        if e.schema > SCHEMA_VERSION:
            raise ExportTooNew("event schema", e.schema, SCHEMA_VERSION, run.run_id)
        try:
            ev = _codec.decode_event(run.run_id, i, e.schema, bytes(e.event))
        except ContinuumError as exc:
            raise ExportCorrupt(f"event {i} does not decode: {exc}", run.run_id) from None
        if type(ev).__name__ != e.kind:
            raise ExportCorrupt(f"event {i} is a {type(ev).__name__}, marked {e.kind}", run.run_id)
    if run.events[0].kind != "RunStarted":
        raise ExportCorrupt("its first event is not RunStarted", run.run_id)


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


IMPORTED = "imported"
"""The start of the park reason of a run imported unfinished."""


def whole_runs(doc: ExportFile) -> list[WholeRun]:
    """The runs to write: finished runs as they were, unfinished ones parked.

    An unfinished run arrives parked so nothing runs it by surprise;
    ``engine.resume`` (``continuum resume``) lets a worker take it on from its
    history.
    """
    out = []
    for run in doc.runs:
        status = RunStatus(run.status)
        events = [
            StoredEvent(
                run_id=run.run_id, seq=e.seq, kind=e.kind, schema=e.schema, data=bytes(e.event)
            )
            for e in run.events
        ]
        reason = run.reason
        if not status.terminal:
            reason = f"{IMPORTED} while {status.value}; resume it to run it"
            status = RunStatus.PARKED
        out.append(
            WholeRun(
                run_id=run.run_id,
                workflow=run.workflow,
                status=status,
                events=events,
                created_at=run.created_at,
                outcome=events[-1].data if status.terminal else None,
                reason=reason,
                parent_run_id=run.parent_run_id,
                parent_position=run.parent_position,
                inbox_seen=run.inbox_seen,
                forked_from=run.forked_from,
            )
        )
    return out


async def import_runs(journal: Journal, data: Any) -> list[str]:
    """Check an export whole, then write its runs in one transaction; their ids.

    Raises:
        ExportCorrupt: see :func:`read_export`.
        ExportTooNew: see there.
        RunIdTaken: a run of the export exists in the journal.
    """
    target = needs_import(journal, "import_run")
    doc = read_export(bytes(data) if isinstance(data, bytearray | memoryview) else data)
    runs = whole_runs(doc)
    await target.put_runs(runs)
    return [run.run_id for run in runs]
