"""``continuum replay``: re-run workflow code against recorded histories, touching nothing.

One run (a history file or a run id): OK with what it returned or waits on, or
the first divergence with the source line that asked; ``--until SEQ`` stops and
shows the workflow function's locals; ``--step`` walks event by event, reading
stdin; ``--what-if POSITION=JSON`` changes one recorded result to see where the
code would have gone. ``--workflow NAME --all`` replays every run of a workflow
in the journal, the check to run before deploying changed workflow code.

Exit status: 0 when the code replays, 1 on a divergence, 2 on bad input.
"""

from __future__ import annotations

import argparse
import bdb
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from continuum_py import _cli_render as out
from continuum_py._cli_inspect import CommandError, event_details, reader
from continuum_py.errors import ContinuumError
from continuum_py.events import AnyEvent
from continuum_py.testing import (
    Divergence,
    Replayer,
    ReplayResult,
    ReplayView,
    SourceLine,
    load_history,
)
from continuum_py.testing._frames import short_repr as _short
from continuum_py.workflow import default_registry

DIVERGED = 1

AddOption = Callable[..., None]


def add_parsers(sub: Any, add_url: AddOption, add_imports: AddOption) -> None:
    """The ``replay`` and ``diff`` subcommands."""
    rep = sub.add_parser(
        "replay",
        help="replay a history against workflow code, running no step; exit 1 where they part",
    )
    what = rep.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "source",
        nargs="?",
        help="an existing file written by `continuum history` (any name), or else a run_id",
    )
    what.add_argument("--run", metavar="RUN_ID", help="a run_id, even one that names a file")
    what.add_argument(
        "--all",
        action="store_true",
        help="every run of --workflow NAME in the journal (a check before deploying new code)",
    )
    rep.add_argument("--workflow", metavar="NAME", help="with --all: the workflow whose runs")
    add_url(rep, "journal to read runs from")
    add_imports(rep, "module defining the workflows (repeatable)")
    rep.add_argument(
        "--until",
        metavar="SEQ",
        help="stop after event SEQ and show the workflow's local variables and what it waits on",
    )
    rep.add_argument(
        "--step",
        action="store_true",
        help="walk event by event: Enter for the next, c to run on, q to stop (reads stdin)",
    )
    rep.add_argument(
        "--what-if",
        dest="what_if",
        action="append",
        default=[],
        metavar="POSITION=JSON",
        help="replay as if the step (child run, ctx.now/random/uuid4) at POSITION had given "
        "JSON, and show where the code would have gone (repeatable)",
    )
    rep.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    diff = sub.add_parser(
        "diff", help="where two runs of one workflow parted: first differing event; exit 1 if any"
    )
    diff.add_argument("run_a", metavar="RUN_A", help="a run_id, or a history file")
    diff.add_argument("run_b", metavar="RUN_B", help="a run_id, or a history file")
    add_url(diff, "journal to read runs from")
    diff.add_argument("--json", action="store_true", help="print the comparison as one JSON object")


# ---- reading histories ----


def history_file(source: str | None) -> list[AnyEvent] | None:
    """The events of ``source`` if it names a file; ``None`` if it is a run id."""
    if source is None:
        return None
    if os.path.isfile(source):
        return _load_file(source)
    if os.sep in source or "/" in source or source.endswith(".json"):
        raise CommandError(
            f"no history file {source!r} (to replay a run by its id, use --run {source})"
        )
    return None


def _load_file(path: str) -> list[AnyEvent]:
    try:
        return load_history(Path(path).read_bytes())
    except OSError as exc:
        raise CommandError(f"cannot read history file {path!r}: {exc.strerror}") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CommandError(
            f"{path!r} is not a history written by `continuum history`: {exc}"
        ) from None


async def load(url: str, source: str | None, run_id: str | None = None) -> list[AnyEvent]:
    """A history from a file (``source``) or from the journal at ``url`` (a run id)."""
    events = None if run_id is not None else history_file(source)
    if events is None:
        async with reader(url) as engine:
            events = await engine.history(run_id or source or "")
    return events


# ---- one run ----


async def replay(args: argparse.Namespace) -> int:
    """``continuum replay``: one run, or ``--all`` runs of a workflow."""
    if args.all:
        return await replay_all(args)
    if args.workflow is not None:
        raise CommandError("--workflow NAME goes with --all; give one run as SOURCE or --run")
    what_if = parse_what_if(args.what_if)
    until = _seq("--until", args.until)
    if args.step and args.json:
        raise CommandError("--step is interactive; it does not go with --json")
    events = await load(args.url, args.source, args.run)
    if until is not None and until > events[-1].seq:
        raise CommandError(
            f"--until {until} is beyond the history of run {getattr(events[0], 'run_id', '?')}, "
            f"which ends at seq {events[-1].seq}"
        )
    default_registry.get(getattr(events[0], "workflow", ""))  # WorkflowNotRegistered, one line
    walker = _Walker() if args.step else None
    result = Replayer(log=not args.json).replay(
        events,
        until=until,
        on_event=walker,
        what_if=what_if or None,
        raise_on_divergence=False,
    )
    diverged = result.divergence is not None and not what_if
    if args.json:
        doc = result_json(result)
        doc["what_if"] = {str(k): v for k, v in what_if.items()} or None
        out.write_json(doc)
    elif what_if:
        _print_what_if(result, what_if, events)
    else:
        _print_result(result)
    return DIVERGED if diverged else 0


def parse_what_if(items: list[str]) -> dict[int, Any]:
    """``3="declined"`` as ``{3: "declined"}``, for each item; a bad item is a one-line error."""
    found: dict[int, Any] = {}
    for item in items:
        position, sep, text = item.partition("=")
        if not sep or not position.strip().isdigit():
            raise CommandError(
                f"--what-if takes POSITION=JSON, such as 3='\"declined\"' or 2=1500; got {item!r}"
            )
        try:
            found[int(position)] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"--what-if {item!r}: the value is not JSON ({exc}); quote a string: "
                f"{position}='\"text\"'"
            ) from None
    return found


def _seq(flag: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise CommandError(f"{flag} takes an event's seq, a whole number >= 1; got {text!r}")
    return int(text)


def _print_result(result: ReplayResult) -> None:
    head = f"run {result.run_id} ({result.workflow}): {result.events} events"
    div = result.divergence
    if div is not None:
        out.text(f"{head}, then DIVERGED at position {div.position} (seq {div.seq})")
        _print_divergence(div)
        out.text(
            "this replay changed nothing (a worker running this code would park the run): "
            "make the code ask for what history holds (or use ctx.patched) and replay again"
        )
        return
    if result.stopped_at is not None:
        state = f"stopped after seq {result.stopped_at}"
        if isinstance(result.error, bdb.BdbQuit):
            state += ": the debugger quit"
    elif result.finished:
        state = "finished"
    else:
        state = f"waiting on {', '.join(result.waiting_on) or '-'}"
    out.text(f"{head}, {state}")
    if result.finished and result.stopped_at is None:
        if result.error is not None:
            out.text(f"raised {type(result.error).__name__}: {result.error}")
        else:
            out.text(f"returned {result.result!r}")
    beyond = (
        "" if result.stopped_at is not None else " (beyond the history: a live run does it next)"
    )
    _print_state(
        result.where, result.locals, result.waiting_on, result.asks, result.stopped_at, beyond
    )
    out.text("OK")


def _print_state(
    where: list[SourceLine],
    local_vars: dict[str, Any],
    waiting_on: list[str],
    asks: list[Any],
    stopped_at: int | None,
    note: str = "",
) -> None:
    if stopped_at is not None and waiting_on:
        out.text(f"waiting on {', '.join(waiting_on)}")
    for line in where:
        out.text(f"at {line}")
    for ask in asks:
        out.text(f"asks for {ask}{note}")
    if local_vars:
        out.text("locals:")
        for name, value in local_vars.items():
            out.text(f"  {name} = {_short(value)}")


def _print_divergence(div: Divergence) -> None:
    event = f"  {event_details(div.event)}" if div.event is not None else ""
    out.text(f"  history has  {div.recorded}{event}")
    out.text(f"  code asked   {div.requested}")
    if div.source is not None:
        out.text(f"  asked at     {div.source}")


def _print_what_if(result: ReplayResult, what_if: dict[int, Any], events: list[AnyEvent]) -> None:
    for position, value in what_if.items():
        held = next((ev for ev in events if getattr(ev, "position", None) == position), None)
        label = getattr(held, "step", None) or getattr(held, "workflow", None)
        label = label or getattr(held, "what", None)
        name = f" ({label})" if label else ""
        out.text(f"what if position {position}{name} had given {json.dumps(value)}:")
    div = result.divergence
    if div is not None:
        out.text(
            f"the code leaves the recorded path at position {div.position} (seq {div.seq}): "
            f"history has {div.recorded}, the code asks for {div.requested}"
        )
    elif result.finished:
        out.text("the code follows the recorded path to the end of the history")
    else:
        out.text("the code follows the recorded path as far as the history goes")
    if result.finished:
        if result.error is not None:
            out.text(f"and raises {type(result.error).__name__}: {result.error}")
        else:
            out.text(f"and returns {result.result!r}")
    _print_state(result.where, result.locals, [], result.asks, None)


def result_json(result: ReplayResult) -> dict[str, Any]:
    """``continuum replay --json``: one run's replay as builtins."""
    error = None
    if result.error is not None:
        error = {"type": type(result.error).__name__, "message": str(result.error)}
    return {
        "run_id": result.run_id,
        "workflow": result.workflow,
        "ok": result.divergence is None,
        "events": result.events,
        "finished": result.finished,
        "stopped_at": result.stopped_at,
        "result": _builtins(result.result),
        "error": error,
        "waiting_on": result.waiting_on,
        "where": [_source(s) for s in result.where],
        "locals": {k: _short(v) for k, v in result.locals.items()},
        "asks": [
            {"position": a.position, "what": a.what, "args": a.args, "source": _source(a.source)}
            for a in result.asks
        ],
        "divergence": divergence_json(result.divergence),
    }


def divergence_json(div: Divergence | None) -> dict[str, Any] | None:
    """A :class:`Divergence` as builtins (``None`` stays ``None``)."""
    if div is None:
        return None
    return {
        "position": div.position,
        "seq": div.seq,
        "recorded": div.recorded,
        "requested": div.requested,
        "event": None if div.event is None else msgspec.json.decode(msgspec.json.encode(div.event)),
        "source": _source(div.source),
    }


def _source(line: SourceLine | None) -> dict[str, Any] | None:
    if line is None:
        return None
    return {"file": line.file, "line": line.line, "function": line.function, "text": line.text}


def _builtins(value: Any) -> Any:
    try:
        return msgspec.to_builtins(value)
    except (TypeError, msgspec.EncodeError):
        return _short(value)


class _Walker:
    """``--step``: after each event, show it and where the code is; wait for a line on stdin."""

    def __init__(self) -> None:
        self.pausing = True

    def __call__(self, view: ReplayView) -> bool:
        ev = view.event
        kind = type(ev).__struct_config__.tag
        out.text(f"seq {ev.seq}  {kind}  {out.short(event_details(ev), 160)}")
        if view.finished:
            out.text("  the workflow has finished")
        for line in view.where[-1:]:
            out.text(f"  at {line}")
        local_vars = view.locals
        if local_vars:
            shown = ", ".join(f"{k}={_short(v)}" for k, v in local_vars.items())
            out.text(f"  locals: {out.short(shown, 400)}")
        sys.stdout.flush()
        if not self.pausing:
            return True
        sys.stderr.write("[Enter] next  c run on  q stop > ")
        sys.stderr.flush()
        answer = sys.stdin.readline()
        if answer == "":  # stdin closed: run on without pausing
            self.pausing = False
            return True
        answer = answer.strip().lower()
        if answer in ("q", "quit"):
            return False
        if answer in ("c", "continue"):
            self.pausing = False
        return True


# ---- every run of a workflow ----


async def replay_all(args: argparse.Namespace) -> int:
    """``continuum replay --workflow NAME --all``: replay each of its runs; a summary."""
    if not args.workflow:
        raise CommandError("--all needs --workflow NAME: the workflow whose runs to replay")
    if args.until or args.step or args.what_if:
        raise CommandError("--until, --step and --what-if take one run, not --all")
    default_registry.get(args.workflow)  # WorkflowNotRegistered before reading anything
    replayer = Replayer()
    ok: list[str] = []
    diverged: list[tuple[str, Divergence]] = []
    failed: list[tuple[str, str]] = []
    started = time.perf_counter()
    async with reader(args.url) as engine:
        run_ids = await _run_ids(engine, args.workflow)
        with _Progress(len(run_ids), args.workflow) as progress:
            for run_id in run_ids:
                events = await engine.history(run_id)
                try:
                    result = replayer.replay(events, raise_on_divergence=False)
                except (ContinuumError, ValueError) as exc:
                    failed.append((run_id, f"{type(exc).__name__}: {exc}"))
                else:
                    if result.divergence is None:
                        ok.append(run_id)
                    else:
                        diverged.append((run_id, result.divergence))
                progress.advance()
    elapsed = time.perf_counter() - started
    if args.json:
        out.write_json(
            {
                "workflow": args.workflow,
                "runs": len(run_ids),
                "ok": len(ok),
                "diverged": [{"run_id": r, "divergence": divergence_json(d)} for r, d in diverged],
                "failed": [{"run_id": r, "problem": p} for r, p in failed],
                "seconds": round(elapsed, 3),
            }
        )
    else:
        head = f"{len(run_ids)} runs of {args.workflow}: {len(ok)} ok, {len(diverged)} diverged"
        out.text(head + (f", {len(failed)} failed to replay" if failed else ""))
        for run_id, div in diverged:
            out.text(f"  {run_id}: {div}")
        for run_id, problem in failed:
            out.text(f"  {run_id}: {problem}")
    return DIVERGED if diverged or failed else 0


async def _run_ids(engine: Any, workflow: str) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await engine.list_runs(
            workflow=workflow, oldest_first=True, cursor=cursor, limit=1000
        )
        ids += [r.run_id for r in page]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


class _Progress:
    """A bar on stderr when it is a terminal; otherwise a line at each tenth of the runs."""

    def __init__(self, total: int, workflow: str) -> None:
        self.total = total
        self.done = 0
        self.workflow = workflow
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if sys.stderr.isatty() and self.total:
            from rich.console import Console
            from rich.progress import Progress

            console = Console(file=sys.stderr, no_color=bool(os.environ.get("NO_COLOR")))
            self._bar = Progress(console=console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(f"replaying {self.workflow}", total=self.total)
        return self

    def advance(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._task)
        elif self.done == self.total or self.done % max(1, self.total // 10) == 0:
            sys.stderr.write(f"replayed {self.done}/{self.total} runs of {self.workflow}\n")

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
