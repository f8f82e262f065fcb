"""``continuum show``, ``steps``, ``history`` (as a timeline), ``signal`` and ``resume``.

Read commands open the journal read-only (nothing is created); ``signal`` and
``resume`` check the run through a read-only engine first, so a mistyped URL
never creates a journal.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from continuum_py import _cli_render as out
from continuum_py._schemes import journal_from_url
from continuum_py.engine import Engine, StepStatus, step_statuses
from continuum_py.events import (
    AnyEvent,
    ChildCompleted,
    ChildStarted,
    CompensationStarted,
    ContinuedAsNew,
    RunCancelledEvent,
    RunCompleted,
    RunFailedEvent,
    RunStarted,
    SignalReceived,
    SignalWaitStarted,
    StepScheduled,
    TimerFired,
    TimerStarted,
)
from continuum_py.journal import RunRecord, RunStatus
from continuum_py.plan import BranchStatus, branch_statuses
from continuum_py.queues import QueuePlace


class CommandError(Exception):
    """Bad input to the command itself; printed as one line."""


def reader(url: str) -> Engine:
    """An engine that only reads: the journal must exist and is never written or created."""
    return Engine(url, worker=False, journal=journal_from_url(url, read_only=True))


# ---- show ----


async def show(url: str, run_id: str, as_json: bool) -> int:
    async with reader(url) as engine:
        rec = await (await engine.get(run_id)).record()
        events = await engine.history(run_id)
        children = await _children(engine, run_id)
        forks = [{"run_id": r.run_id, "status": r.status.value} for r in await engine.forks(run_id)]
        place = await engine.queue_place(run_id)
    info = _describe(rec, events, children)
    info["forks"] = forks
    info["queue"] = None if place is None else msgspec.to_builtins(place)
    if as_json:
        out.write_json(info)
        return 0
    rows = [
        ("run", rec.run_id),
        ("workflow", rec.workflow),
        ("status", rec.status.value + (f" ({rec.reason})" if rec.reason else "")),
        ("created", out.iso(rec.created_at)),
        ("updated", out.iso(rec.updated_at)),
        ("input", json.dumps(info["input"])),
    ]
    if info["result"] is not None or rec.status == RunStatus.COMPLETED:
        rows.append(("result", json.dumps(info["result"])))
    if info["error"] is not None:
        rows.append(("error", f"{info['error']['type']}: {info['error']['message']}"))
    if info["cancelled"] is not None:
        how = "terminated" if info["cancelled"]["terminated"] else "cancelled"
        rows.append((how, info["cancelled"]["reason"]))
    if info["continued_as"] is not None:
        rows.append(("continued as", info["continued_as"]))
    rows.append(("parent", rec.parent_run_id or "-"))
    kids = [f"{c['run_id']} ({c['workflow']}, {c['status']})" for c in children]
    rows.append(("children", "\n".join(kids) or "-"))
    if rec.forked_from is not None:
        rows.append(("forked from", rec.forked_from))
    if forks:
        rows.append(("forks", "\n".join(f"{f['run_id']} ({f['status']})" for f in forks)))
    if rec.wake_at is not None and not rec.status.terminal:
        rows.append(("wakes at", out.iso(rec.wake_at)))
    if info["waiting_on"]:
        rows.append(("waits on", "\n".join(_wait_text(w) for w in info["waiting_on"])))
    if info["compensations"]:
        rows.append(("compensations", "\n".join(map(_compensation_text, info["compensations"]))))
    if info.get("branches") is not None:
        rows.append(
            ("branches", "\n".join(f"{b['branch']}: {b['status']}" for b in info["branches"]))
        )
    if place is not None:
        rows.append(("queue", _queue_text(place, rec.status)))
    if rec.lease_owner and rec.status == RunStatus.RUNNING:
        rows.append(("worker", f"{rec.lease_owner} (lease until {out.iso(rec.lease_expires_at)})"))
    out.fields(rows)
    if info["error"] is not None and info["error"]["traceback"]:
        out.text("\n" + info["error"]["traceback"])
    return 0


def _queue_text(place: QueuePlace, status: RunStatus) -> str:
    """A queued run's line: its queue and priority, and where it waits and why, or its start."""
    head = f"{place.queue} (priority {place.priority}"
    head += f", dedup key {place.dedup_key!r})" if place.dedup_key else ")"
    if place.admitted:
        return f"{head}, started {out.iso(place.admitted_at)}"
    if status.terminal:
        return f"{head}, ended before it was admitted"
    where = f"waiting, position {place.position}: " if place.position else "waiting: "
    return f"{head}, {where}{place.why}"


async def _children(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    """Runs whose parent is ``run_id`` (child ids start with ``"{run_id}."``), oldest first."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await engine.list_runs(
            run_id_prefix=f"{run_id}.", oldest_first=True, cursor=cursor, limit=1000
        )
        found += [
            {"run_id": r.run_id, "workflow": r.workflow, "status": r.status.value}
            for r in page
            if r.parent_run_id == run_id
        ]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def _describe(rec: RunRecord, events: list[AnyEvent], children: list[Any]) -> dict[str, Any]:
    """``continuum show --json``: the record's fields but ``outcome``, and what history tells."""
    info: dict[str, Any] = {k: v for k, v in msgspec.to_builtins(rec).items() if k != "outcome"}
    first = events[0] if events else None
    info["input"] = out.raw_value(first.args) if isinstance(first, RunStarted) else None
    info.update(result=None, error=None, cancelled=None, continued_as=None)
    last = events[-1] if events else None
    if isinstance(last, RunCompleted):
        info["result"] = out.raw_value(last.result)
    elif isinstance(last, RunFailedEvent):
        info["error"] = msgspec.to_builtins(last.error)
    elif isinstance(last, RunCancelledEvent):
        info["cancelled"] = {"reason": last.reason, "terminated": last.terminated}
    elif isinstance(last, ContinuedAsNew):
        info["continued_as"] = last.new_run_id
    info["children"] = children
    info["waiting_on"] = [] if rec.status.terminal else _open_waits(events)
    info["compensations"] = _compensations(events)
    branches = branch_statuses(events)
    if branches is not None:
        info["branches"] = msgspec.to_builtins(branches)
    return info


def _compensations(events: list[AnyEvent]) -> list[dict[str, Any]]:
    """Each compensation the run started: what it undoes, why, and where it stands."""
    names = {ev.position: ev.step for ev in events if isinstance(ev, StepScheduled)}
    reason = ""
    reasons: dict[int, str] = {}
    for ev in events:
        if isinstance(ev, CompensationStarted):
            reason = ev.reason
        elif isinstance(ev, StepScheduled) and ev.compensates is not None:
            reasons.setdefault(ev.position, reason)
    return [
        {
            "step": s.step,
            "position": s.position,
            "compensates": s.compensates,
            "compensated_step": names.get(s.compensates or 0, ""),
            "reason": reasons.get(s.position, ""),
            "status": s.status,
            "attempts": s.attempts,
            "error": msgspec.to_builtins(s.last_error) if s.last_error else None,
        }
        for s in step_statuses(events)
        if s.compensates is not None
    ]


_WHY = {
    "failed": "run failed",
    "cancelled": "run cancelled",
    "timed_out": "deadline passed",
    "requested": "ctx.compensate()",
}


def _compensation_text(c: dict[str, Any]) -> str:
    text = f"{c['step']}@{c['position']} undoes {c['compensated_step']}@{c['compensates']}: "
    text += c["status"]
    if c["status"] == "failed" and c["error"]:
        text += f" ({out.short(c['error']['type'] + ': ' + c['error']['message'])})"
    return f"{text} [{_WHY.get(c['reason'], c['reason'])}]"


def _open_waits(events: list[AnyEvent]) -> list[dict[str, Any]]:
    """Waits the history started and did not see end: timers, signals, child runs."""
    timers: dict[int, float] = {}
    children: dict[int, str] = {}
    waits: dict[str, list[SignalWaitStarted]] = {}
    received: dict[str, int] = {}
    for ev in events:
        if isinstance(ev, TimerStarted):
            timers[ev.position] = ev.fire_at
        elif isinstance(ev, TimerFired):
            timers.pop(ev.position, None)
        elif isinstance(ev, ChildStarted):
            children[ev.position] = ev.child_run_id
        elif isinstance(ev, ChildCompleted):
            children.pop(ev.position, None)
        elif isinstance(ev, SignalWaitStarted):
            waits.setdefault(ev.name, []).append(ev)
        elif isinstance(ev, SignalReceived):
            received[ev.name] = received.get(ev.name, 0) + 1
    found: list[dict[str, Any]] = []
    for name, started in waits.items():
        # Signals are consumed in order: waits beyond the signals received still wait.
        for ev in started[received.get(name, 0) :]:
            found.append({"kind": "signal", "name": name, "timeout_at": ev.timeout_at})
    signal_timers = {w["timeout_at"] for w in found}
    found += [{"kind": "timer", "fire_at": at} for at in timers.values() if at not in signal_timers]
    found += [{"kind": "child", "run_id": rid} for rid in children.values()]
    return found


def _wait_text(wait: dict[str, Any]) -> str:
    if wait["kind"] == "signal":
        until = f" (until {out.iso(wait['timeout_at'])})" if wait["timeout_at"] else ""
        return f"signal {wait['name']!r}{until}"
    if wait["kind"] == "timer":
        return f"timer, fires at {out.iso(wait['fire_at'])}"
    return f"child run {wait['run_id']}"


# ---- steps ----


async def steps(url: str, run_id: str, as_json: bool) -> int:
    async with reader(url) as engine:
        await engine.get(run_id)
        events = await engine.history(run_id)
    found = step_statuses(events)
    branches = branch_statuses(events)
    if as_json:
        doc: dict[str, Any] = {"steps": [_step_json(s) for s in found]}
        if branches is not None:
            doc["branches"] = msgspec.to_builtins(branches)
        out.write_json(doc)
        return 0
    rows = [
        [
            str(s.position),
            s.step,
            s.status,
            str(s.attempts),
            out.duration(s.started_at, s.finished_at),
            out.short(f"{s.last_error.type}: {s.last_error.message}") if s.last_error else "",
        ]
        for s in found
    ]
    header = ["position", "step", "status", "attempts", "duration", "last error"]
    if any(s.compensates is not None for s in found):
        # A saga's compensations: which step each one undoes.
        header.append("undoes")
        for row, s in zip(rows, found, strict=True):
            row.append("" if s.compensates is None else str(s.compensates))
    out.table(header, rows)
    if branches is not None:
        out.text("")
        _branch_table(branches)
    return 0


def _branch_table(branches: list[BranchStatus]) -> None:
    """A plan run's branches: status, attempts, dependencies, and what went wrong."""
    rows = []
    for b in branches:
        problems = [
            f"{what}: {text}"
            for what, text in (
                ("error", b.error),
                ("rollback", b.rollback_error),
                ("cleanup", b.cleanup_error),
            )
            if text
        ]
        rows.append(
            [
                b.branch,
                b.status,
                str(b.attempts),
                ", ".join(b.after),
                out.short("; ".join(problems)),
            ]
        )
    out.table(["branch", "status", "attempts", "after", "errors"], rows)


def _step_json(step: StepStatus) -> dict[str, Any]:
    item: dict[str, Any] = msgspec.to_builtins(step)
    item["duration"] = None if step.finished_at is None else step.finished_at - step.started_at
    return item


# ---- history as a timeline ----

_SKIP = {"seq", "at"}


def timeline(events: list[AnyEvent]) -> None:
    """One row per event: seq, time (ISO 8601, UTC), kind and its other fields."""
    rows = []
    for ev in events:
        kind = type(ev).__struct_config__.tag
        rows.append([str(ev.seq), out.iso(ev.at), str(kind), out.short(event_details(ev), 160)])
    out.table(["seq", "time", "event", "details"], rows)


def event_details(ev: AnyEvent) -> str:
    """An event's fields but ``seq`` and ``at`` as ``name=value`` pairs, defaults left out."""
    # Fields left at their defaults (no parent, no deadline, ...) say nothing.
    return " ".join(
        f"{f.name}={_cell(getattr(ev, f.name))}"
        for f in msgspec.structs.fields(ev)
        if f.name not in _SKIP and getattr(ev, f.name) != _default(f)
    )


def _default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return field.default


def _cell(value: Any) -> str:
    if isinstance(value, msgspec.Raw):
        return out.raw_text(value)
    if isinstance(value, msgspec.Struct):
        return msgspec.json.encode(value).decode()
    return str(value)


# ---- signal and resume ----


async def signal(url: str, run_id: str, name: str, payload_text: str | None) -> int:
    payload: Any = None
    if payload_text is not None:
        try:
            payload = json.loads(payload_text)
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"the signal payload is not JSON ({exc}): {out.short(payload_text, 60)!r}"
                " (quote a string: '\"text\"')"
            ) from None
    async with reader(url) as check:
        await check.get(run_id)  # a missing journal or run: an error, nothing created
    async with Engine(url, worker=False) as engine:
        await engine.signal(run_id, name, payload)
    out.text(f"signal {name!r} sent to run {run_id}")
    return 0


async def resume(url: str, run_id: str) -> int:
    async with reader(url) as check:
        await check.get(run_id)
    async with Engine(url, worker=False) as engine:
        await engine.resume(run_id)
    out.text(f"run {run_id} resumed: pending, for the next worker")
    return 0
