"""``continuum diff RUN_A RUN_B``: where two runs of one workflow parted.

Histories are compared by call-order position, not by ``seq``: concurrent steps
finish in any order, so two runs that took the same path can hold their events
in different orders. At each position the command (which step, timer, wait or
child run, with which arguments) and its outcome (result, error, signal
payload) are compared; attempts and times are not. The first position that
differs is where the runs parted. Exit status: 0 when they took the same path
to the same end, 1 when they parted, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

import msgspec

from continuum_py import _cli_render as out
from continuum_py._cli_inspect import CommandError
from continuum_py._cli_replay import DIVERGED, load
from continuum_py.events import (
    AnyEvent,
    ChildCompleted,
    ChildStarted,
    CompensationStarted,
    ContinuedAsNew,
    EventPublished,
    MarkerRecorded,
    RunCancelledEvent,
    RunCompleted,
    RunFailedEvent,
    RunStarted,
    SideEffectRecorded,
    SignalReceived,
    SignalWaitStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
    TimerFired,
    TimerStarted,
)


@dataclass
class _Point:
    """What one run did at one position: the command, its input and its outcome."""

    position: int
    command: str
    input: Any = None
    outcome: str = ""
    value: Any = None

    def key(self) -> tuple[str, str, str, str]:
        # Times are not compared: two runs read different clocks on the same path.
        value = None if self.command == "ctx.now()" else self.value
        return (self.command, _text(self.input), self.outcome, _text(value))

    def as_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "command": self.command,
            "input": self.input,
            "outcome": self.outcome or None,
            "value": self.value,
        }

    def __str__(self) -> str:
        text = self.command
        if self.input is not None:
            text += f" with {_text(self.input)}"
        if self.outcome:
            text += f" -> {self.outcome}"
            if self.value is not None:
                text += f" {_text(self.value)}"
        else:
            text += " -> no outcome yet"
        return text


@dataclass
class _Run:
    run_id: str
    workflow: str
    input: Any
    points: dict[int, _Point] = field(default_factory=dict)
    end: str = "still running"
    end_value: Any = None


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _raw(raw: msgspec.Raw) -> Any:
    return out.raw_value(raw)


def _read(events: list[AnyEvent]) -> _Run:
    first = events[0] if events else None
    if not isinstance(first, RunStarted):
        raise CommandError("a history must start with a RunStarted event")
    run = _Run(first.run_id, first.workflow, _raw(first.args))
    points = run.points
    # Signal waits get signals in the order they arrive, by name.
    open_waits: dict[str, list[_Point]] = {}
    buffered: dict[str, list[SignalReceived]] = {}
    for ev in events:
        if isinstance(ev, StepScheduled):
            undoes = f" (undoes position {ev.compensates})" if ev.compensates is not None else ""
            command = f"step {ev.step}{undoes}"
            points.setdefault(ev.position, _Point(ev.position, command, _raw(ev.args)))
        elif isinstance(ev, CompensationStarted):
            points[ev.position] = _Point(ev.position, "compensate", None, "started", ev.reason)
        elif isinstance(ev, StepCompleted):
            _end(points, ev.position, "returned", _raw(ev.result))
        elif isinstance(ev, StepFailed) and ev.final:
            _end(points, ev.position, "failed", f"{ev.error.type}: {ev.error.message}")
        elif isinstance(ev, TimerStarted):
            points[ev.position] = _Point(ev.position, "timer", round(ev.fire_at - ev.at, 3))
        elif isinstance(ev, TimerFired):
            timed_out = ev.position in points and points[ev.position].command.startswith("wait")
            _end(points, ev.position, "timed out" if timed_out else "fired")
            for waits in open_waits.values():
                waits[:] = [w for w in waits if w.position != ev.position]
        elif isinstance(ev, SignalWaitStarted):
            point = _Point(ev.position, f"wait for signal {ev.name!r}")
            points[ev.position] = point
            queue = buffered.get(ev.name)
            if queue:
                _end(points, ev.position, "received", _raw(queue.pop(0).payload))
            else:
                open_waits.setdefault(ev.name, []).append(point)
        elif isinstance(ev, SignalReceived):
            waiting = open_waits.get(ev.name)
            if waiting:
                _end(points, waiting.pop(0).position, "received", _raw(ev.payload))
            else:
                buffered.setdefault(ev.name, []).append(ev)
        elif isinstance(ev, ChildStarted):
            points[ev.position] = _Point(ev.position, f"child {ev.workflow}", _raw(ev.args))
        elif isinstance(ev, ChildCompleted):
            if ev.ok:
                _end(points, ev.position, "returned", _raw(ev.result))
            else:
                err = ev.error
                _end(points, ev.position, "failed", err and f"{err.type}: {err.message}")
        elif isinstance(ev, SideEffectRecorded):
            points[ev.position] = _Point(
                ev.position, f"ctx.{ev.what}()", None, "gave", _raw(ev.value)
            )
        elif isinstance(ev, MarkerRecorded):
            points[ev.position] = _Point(ev.position, f"ctx.patched({ev.name!r})", None, "recorded")
        elif isinstance(ev, EventPublished):
            points[ev.position] = _Point(
                ev.position, f"ctx.set_event({ev.key!r})", _raw(ev.value), "recorded"
            )
        elif isinstance(ev, RunCompleted):
            run.end, run.end_value = "completed", _raw(ev.result)
        elif isinstance(ev, RunFailedEvent):
            run.end, run.end_value = "failed", f"{ev.error.type}: {ev.error.message}"
        elif isinstance(ev, RunCancelledEvent):
            run.end = "terminated" if ev.terminated else "cancelled"
            run.end_value = ev.reason
        elif isinstance(ev, ContinuedAsNew):
            run.end = "continued as new"
    return run


def _end(points: dict[int, _Point], position: int, outcome: str, value: Any = None) -> None:
    point = points.get(position)
    if point is not None:
        point.outcome, point.value = outcome, value


def compare(a: list[AnyEvent], b: list[AnyEvent]) -> tuple[dict[str, Any], _Run, _Run]:
    """The comparison ``continuum diff --json`` prints, and the two runs as read."""
    ra, rb = _read(a), _read(b)
    if ra.workflow != rb.workflow:
        raise CommandError(
            f"runs {ra.run_id} ({ra.workflow}) and {rb.run_id} ({rb.workflow}) are of different "
            "workflows; diff compares two runs of one workflow"
        )
    doc: dict[str, Any] = {
        "a": ra.run_id,
        "b": rb.run_id,
        "workflow": ra.workflow,
        "input": {"a": ra.input, "b": rb.input},
        "same_input": _text(ra.input) == _text(rb.input),
        "same": True,
        "common": 0,
        "first_difference": None,
        "paths_part": None,
        "end": {
            "a": {"status": ra.end, "value": ra.end_value},
            "b": {"status": rb.end, "value": rb.end_value},
        },
    }
    for position in sorted(set(ra.points) | set(rb.points)):
        pa, pb = ra.points.get(position), rb.points.get(position)
        if pa is not None and pb is not None and pa.key() == pb.key():
            if doc["first_difference"] is None:
                doc["common"] += 1
            continue
        what = "command"
        if pa is not None and pb is not None and pa.command == pb.command:
            what = "input" if _text(pa.input) != _text(pb.input) else "outcome"
        point = {
            "position": position,
            "what": what,
            "a": None if pa is None else pa.as_json(),
            "b": None if pb is None else pb.as_json(),
        }
        if doc["first_difference"] is None:
            doc["first_difference"] = point
        if what == "command":
            doc["paths_part"] = point
            break
    if doc["first_difference"] is None and (ra.end, _text(ra.end_value)) != (
        rb.end,
        _text(rb.end_value),
    ):
        doc["first_difference"] = {"position": None, "what": "end", "a": None, "b": None}
    doc["same"] = doc["first_difference"] is None
    return doc, ra, rb


async def diff(args: argparse.Namespace) -> int:
    """``continuum diff``."""
    a = await load(args.url, args.run_a)
    b = await load(args.url, args.run_b)
    doc, ra, rb = compare(a, b)
    if args.json:
        out.write_json(doc)
        return 0 if doc["same"] else DIVERGED
    out.text(f"runs {ra.run_id} and {rb.run_id} ({ra.workflow})")
    if doc["same_input"]:
        out.text(f"  input      same: {_text(ra.input)}")
    else:
        out.text(f"  input      a: {_text(ra.input)}")
        out.text(f"             b: {_text(rb.input)}")
    first = doc["first_difference"]
    if first is None:
        out.text(f"took the same path ({_positions(doc['common'])}) to the same end: {ra.end}")
        return 0
    if first["what"] == "end":
        out.text(f"took the same path ({_positions(doc['common'])}), then ended differently:")
    else:
        out.text(
            f"first difference at position {first['position']} ({first['what']} differs), "
            f"after {_positions(doc['common'])} alike:"
        )
        _sides(ra, rb, first["position"])
        parted = doc["paths_part"]
        if parted is None:
            out.text("the paths do not part: both asked for the same calls in the same order")
        elif parted is not first:
            out.text(f"the paths part at position {parted['position']}:")
            _sides(ra, rb, parted["position"])
    for side, run in (("a", ra), ("b", rb)):
        value = "" if run.end_value is None else f" {_text(run.end_value)}"
        out.text(f"  {side} ended  {run.end}{value}")
    return DIVERGED


def _positions(n: int) -> str:
    return f"{n} position{'' if n == 1 else 's'}"


def _sides(ra: _Run, rb: _Run, position: int) -> None:
    for side, run in (("a", ra), ("b", rb)):
        point = run.points.get(position)
        out.text(f"  {side}  {point if point is not None else 'nothing at this position'}")
