"""``engine.fork``: a new run that holds a prefix of another run's history and runs on live.

The new run's history is its own ``RunStarted`` followed by the old run's
events before the fork point, copied as they are (same seqs, same data). A
prefix of a history is a state the run really was in, so the workflow code
replays it like a run resumed after a crash, and what it asks for beyond the
prefix runs live: the steps at and after the fork point run again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from continuum_py import _codec
from continuum_py._client import decode_all, stored
from continuum_py.errors import (
    ContinuumError,
    ForkPointNotFound,
    RunIdTaken,
    RunInFlight,
    RunNotFound,
)
from continuum_py.events import (
    AnyEvent,
    CancelRequested,
    ChildCompleted,
    ChildStarted,
    CompensationStarted,
    ContinuedAsNew,
    RunCancelledEvent,
    RunCompleted,
    RunFailedEvent,
    RunStarted,
    SignalReceived,
    StepFailed,
    StepScheduled,
)
from continuum_py.journal import JournalImport, RunRecord, RunStatus, StoredEvent, WholeRun

__all__ = ["IN_FLIGHT", "fork", "fork_point", "forked_run", "recorded_inbox"]

IN_FLIGHT = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.SUSPENDED})
"""Statuses whose history may still grow: a fork of such a run needs ``force``."""

_ENDS = (RunCompleted, RunFailedEvent, RunCancelledEvent, ContinuedAsNew)


def _position(ev: AnyEvent) -> int | None:
    pos = getattr(ev, "position", None)
    return pos if isinstance(pos, int) else None


def fork_point(
    run_id: str,
    events: Sequence[AnyEvent],
    *,
    at: int | None,
    step: str | None,
    failed: bool,
) -> int:
    """How many events of ``events`` the fork keeps (``RunStarted`` included, then replaced).

    Raises:
        ForkPointNotFound: the point is not in the history.
        ValueError: not exactly one of ``at``, ``step``, ``failed`` given.
    """
    given = [at is not None, step is not None, bool(failed)]
    if sum(given) != 1:
        raise ValueError("fork needs exactly one of at=POSITION, step=NAME, failed=True")
    positions = [p for p in map(_position, events) if p is not None]
    if at is not None:
        point = f"position {at!r}"
        if isinstance(at, bool) or not isinstance(at, int):
            raise ValueError(f"fork at= takes a call-order position (an int), got {at!r}")
        if at not in positions:
            top = max(positions, default=0)
            where = "beyond" if at > top else "not in"
            raise ForkPointNotFound(
                run_id,
                point,
                f"it is {where} the history (which records positions "
                f"{_ranges(sorted(set(positions)))})",
            )
        return _cut_before(events, at)
    if step is not None:
        point = f"step {step!r}"
        first = next(
            (e.position for e in events if isinstance(e, StepScheduled) and e.step == step), None
        )
        if first is None:
            names = sorted({e.step for e in events if isinstance(e, StepScheduled)})
            raise ForkPointNotFound(
                run_id, point, f"no step of that name ran (steps: {', '.join(names) or 'none'})"
            )
        return _cut_before(events, first)
    # A step that failed for good, or a child run that failed: the last one, by seq.
    # A saga's compensations are not the failure: they ran because of it.
    undoing = {e.position for e in events if isinstance(e, StepScheduled) and e.compensates}
    failures = [
        e
        for e in events
        if (isinstance(e, StepFailed) and e.final and e.position not in undoing)
        or (isinstance(e, ChildCompleted) and not e.ok)
    ]
    if failures:
        return _cut_before(events, failures[-1].position)
    if events and isinstance(events[-1], RunFailedEvent):
        # The workflow itself raised: keep every outcome before it did (and before it
        # decided to compensate), and run its code on from there.
        decided = next(
            (
                i
                for i, e in enumerate(events)
                if isinstance(e, CompensationStarted) and e.reason == "failed"
            ),
            len(events) - 1,
        )
        return _children_kept(events, decided)
    raise ForkPointNotFound(
        run_id,
        "its last failure",
        "no step of it failed for good, no child run failed, and the run did not fail",
    )


def _cut_before(events: Sequence[AnyEvent], position: int) -> int:
    """Keep the events before the first one at ``position`` or later."""
    for i, ev in enumerate(events):
        p = _position(ev)
        if p is not None and p >= position:
            return _children_kept(events, i)
    return _children_kept(events, len(events))


def _children_kept(events: Sequence[AnyEvent], keep: int) -> int:
    """``keep``, moved back before any child run the prefix started but holds no outcome of.

    That child's outcome would go to the old run's inbox; the fork starts its
    own child there instead.
    """
    while keep > 1 and isinstance(events[keep - 1], _ENDS):
        keep -= 1
    done = {e.position for e in events[:keep] if isinstance(e, ChildCompleted)}
    for i, ev in enumerate(events[:keep]):
        if isinstance(ev, ChildStarted) and ev.position not in done:
            return i
    return keep


def recorded_inbox(events: Sequence[AnyEvent]) -> int:
    """The newest inbox message id ``events`` record (0: none)."""
    ids = [
        e.inbox_id
        for e in events
        if isinstance(e, SignalReceived | ChildCompleted | CancelRequested)
    ]
    return max(ids, default=0)


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    return (
        f"{values[0]}..{values[-1]}"
        if values == list(range(values[0], values[-1] + 1))
        else (", ".join(map(str, values)))
    )


def forked_run(
    rec: RunRecord,
    rows: Sequence[StoredEvent],
    events: Sequence[AnyEvent],
    keep: int,
    *,
    new_run_id: str,
    args: msgspec.Raw | None,
    now: float,
    force: bool,
) -> WholeRun:
    """The new run: its own ``RunStarted``, then ``rows[1:keep]`` as they are, pending.

    Raises:
        RunInFlight: the run's history may still grow and ``force`` is false.
    """
    if rec.status in IN_FLIGHT and not force:
        raise RunInFlight(rec.run_id, rec.status.value)
    first = events[0]
    if not isinstance(first, RunStarted):
        raise RunNotFound(rec.run_id)
    start = RunStarted(
        seq=1,
        at=now,
        run_id=new_run_id,
        workflow=first.workflow,
        args=first.args if args is None else args,
        carried_signals=first.carried_signals,
    )
    copied = [msgspec.structs.replace(e, run_id=new_run_id) for e in rows[1:keep]]
    return WholeRun(
        run_id=new_run_id,
        workflow=rec.workflow,
        status=RunStatus.PENDING,
        events=[stored(new_run_id, start), *copied],
        inbox_seen=recorded_inbox(events[1:keep]),
        forked_from=rec.run_id,
    )


async def fork(
    journal: JournalImport,
    rec: RunRecord,
    rows: Sequence[StoredEvent],
    *,
    at: int | None,
    step: str | None,
    failed: bool,
    args: Sequence[Any] | None,
    run_id: str | None,
    force: bool,
    now: float,
) -> str:
    """Write the fork of the run ``rec`` (history ``rows``) and return its id; see ``Engine.fork``."""
    events = decode_all(rows)
    keep = fork_point(rec.run_id, events, at=at, step=step, failed=failed)
    raw = None
    if args is not None:
        if isinstance(args, str | bytes) or not isinstance(args, Sequence):
            raise ValueError(f"fork args must be a list of the workflow's arguments, got {args!r}")
        raw = _codec.encode_args(tuple(args), what=rec.workflow, kind="workflow")
    if run_id is not None and (not isinstance(run_id, str) or not run_id):
        raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
    taken = len(await journal.forks(rec.run_id))
    for n in range(taken + 1, taken + 100):
        new_id = run_id or f"{rec.run_id}-fork-{n}"
        run = forked_run(rec, rows, events, keep, new_run_id=new_id, args=raw, now=now, force=force)
        try:
            await journal.put_runs([run])
        except RunIdTaken:
            if run_id is not None:
                raise
            continue  # a run of that name exists: try the next number
        return new_id
    raise ContinuumError(f"run {rec.run_id!r}: no free fork id; pass run_id=")
