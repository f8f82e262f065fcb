"""A list of events replays exactly as the same events fed one by one.

A worker resuming a run feeds its snapshot and tail as lists
(``ReplayCore.restore``, ``ReplayCore.apply_all``): a step whose schedule and
completion come next is handed to the code at its await. These tests hold
that shortcut to the one-by-one replay (what the debugging ``Replayer`` does)
on every golden history, cut at every event, resumed from a snapshot at every
event, and damaged in the ways a changed workflow or a bad journal damages it:
the same state, or the same error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import golden_workflows as golden
import msgspec
import pytest

from continuum_py import Context, Engine, Registry, step, workflow
from continuum_py import _replay as replay_module
from continuum_py._replay import ReplayCore
from continuum_py.events import AnyEvent, StepCompleted, StepFailed, StepScheduled
from continuum_py.testing import load_history

HISTORIES = Path(__file__).parent / "histories"
STEMS = sorted(p.stem for p in HISTORIES.glob("*.json"))


def _load(stem: str) -> list[AnyEvent]:
    return load_history((HISTORIES / f"{stem}.json").read_bytes())


@contextlib.contextmanager
def _one_by_one() -> Iterator[None]:
    """Feed lists the plain way: each event on its own, no step handed over at an await."""
    batched = replay_module.feed_all

    def plain(core: ReplayCore, events: list[AnyEvent], feed: Callable[[AnyEvent], None]) -> None:
        for ev in events:
            feed(ev)

    replay_module.feed_all = plain  # type: ignore[assignment]
    try:
        yield
    finally:
        replay_module.feed_all = batched


def _future(fut: asyncio.Future[Any]) -> Any:
    if not fut.done():
        return "pending"
    if fut.cancelled():
        return "cancelled"
    exc = fut.exception()
    return ("raised", repr(exc)) if exc is not None else ("value", fut.result())


def _state(core: ReplayCore, error: BaseException | None) -> Any:
    if error is not None:
        return (type(error).__name__, str(error), getattr(error, "position", None))
    outcome = None
    if core.finished:
        ok, value = core.outcome()
        outcome = (ok, value if ok else repr(value))
    return {
        "last_seq": core.last_seq,
        "calls": [
            (p, c.describe, c.recorded, c.done, _future(c.future)) for p, c in core.calls.items()
        ],
        "new_calls": [c.describe for c in core.new_calls()],
        "fed": core.fed,
        "end": core.history_end,
        "outcome": outcome,
        "signals": core.unconsumed_signals(),
        "inbox_seen": core.inbox_seen,
        "cancel_reason": core.cancel_reason,
        "owed": [c.position for c in core.saga.owed],
        "compensations": core.saga.outcomes,
        "snapshot": core.snapshot_events(),
        "failures": core.failure_counts(),
    }


def _replay(
    registry: Registry,
    events: list[AnyEvent],
    snapshot: tuple[list[AnyEvent], dict[int, int], int] | None = None,
) -> Any:
    """Replay (a snapshot, then) ``events`` as a worker does; the resulting state or error."""
    core = ReplayCore("r", registry)
    core.clock = lambda: 0.0
    error: BaseException | None = None
    try:
        if snapshot is not None:
            held, failures, seq = snapshot
            core.index(held)
            core.index(events)
            core.restore(held, failures, seq)
        else:
            core.index(events)
        core.apply_all(events)
    except Exception as exc:
        error = exc
    try:
        return _state(core, error)
    finally:
        core.close()


def _both(registry: Registry, events: list[AnyEvent], snapshot: Any = None) -> tuple[Any, Any]:
    batched = _replay(registry, events, snapshot)
    with _one_by_one():
        plain = _replay(registry, events, snapshot)
    return batched, plain


def _snapshot_after(registry: Registry, events: list[AnyEvent]) -> Any:
    """What a worker that replayed ``events`` one by one would store as a snapshot."""
    core = ReplayCore("r", registry)
    core.clock = lambda: 0.0
    try:
        core.index(events)
        for ev in events:
            core.apply(ev)
        return core.snapshot_events(), core.failure_counts(), core.last_seq
    except Exception:
        return None
    finally:
        core.close()


@pytest.mark.parametrize("stem", STEMS)
def test_every_cut_of_a_golden_history_replays_as_one_by_one(stem):
    events = _load(stem)
    for cut in range(1, len(events) + 1):
        batched, plain = _both(golden.registry, events[:cut])
        assert batched == plain, f"cut after event {cut}"


@pytest.mark.parametrize("stem", STEMS)
def test_resuming_from_a_snapshot_at_every_event_replays_as_one_by_one(stem):
    events = _load(stem)
    for cut in range(1, len(events)):
        snapshot = _snapshot_after(golden.registry, events[:cut])
        if snapshot is None:
            continue
        batched, plain = _both(golden.registry, events[cut:], snapshot)
        assert batched == plain, f"snapshot after event {cut}"


def _damaged(events: list[AnyEvent]) -> Iterator[tuple[str, list[AnyEvent]]]:
    """Each way one step event can stray: renamed, moved, unfit, dropped, repeated, reversed."""
    for i, ev in enumerate(events):
        rest = events[:i], events[i + 1 :]
        if isinstance(ev, StepFailed):
            # The step completed after all (the code had stopped waiting, or caught it).
            done = StepCompleted(
                seq=ev.seq,
                position=ev.position,
                step=ev.step,
                attempt=ev.attempt,
                result=msgspec.Raw(b"0"),
            )
            yield f"{i} completed", [*rest[0], done, *rest[1]]
        if not isinstance(ev, StepScheduled | StepCompleted):
            continue
        yield f"{i} renamed", [*rest[0], msgspec.structs.replace(ev, step="other"), *rest[1]]
        yield (
            f"{i} moved",
            [*rest[0], msgspec.structs.replace(ev, position=ev.position + 1), *rest[1]],
        )
        yield f"{i} dropped", [*rest[0], *rest[1]]
        yield f"{i} repeated", [*rest[0], ev, ev, *rest[1]]
        if isinstance(ev, StepCompleted):
            for raw in (b'"text"', b"[1, 2]", b"{"):
                unfit = msgspec.structs.replace(ev, result=msgspec.Raw(raw))
                yield f"{i} result {raw!r}", [*rest[0], unfit, *rest[1]]


@pytest.mark.parametrize("stem", STEMS)
def test_a_damaged_history_fails_as_one_by_one(stem):
    for what, events in _damaged(_load(stem)):
        batched, plain = _both(golden.registry, events)
        assert batched == plain, what


# ---- workflows that make the shortcut hold back ----

reg = Registry()


@step
async def double(x: int) -> int:
    return 2 * x


@workflow(registry=reg)
async def cancels_itself(ctx: Context) -> list[str]:
    seen = [str(await double(1))]
    asyncio.current_task().cancel()  # type: ignore[union-attr]
    try:
        seen.append(str(await double(2)))
    except asyncio.CancelledError:
        seen.append("cancelled")
    seen.append(str(await double(3)))
    return seen


@workflow(registry=reg)
async def starts_a_task_before_awaiting(ctx: Context) -> list[int]:
    first = double(1)
    other = asyncio.ensure_future(double(10))
    got = [await first, await double(2)]
    got.append(await other)
    return got


@workflow(registry=reg)
async def reads_what_a_task_did(ctx: Context) -> int:
    done: list[int] = []

    async def note() -> None:
        done.append(1)

    noting = asyncio.ensure_future(note())  # runs while the code waits for its first step
    first = await double(1)
    # Live, the task ran before the step's result came back.
    second = await double(first) if done else await triple(first)
    await noting
    return second


@step
async def triple(x: int) -> int:
    return 3 * x


@workflow(registry=reg)
async def gathers_chains(ctx: Context) -> list[int]:
    async def chain(start: int) -> int:
        x = start
        for _ in range(3):
            x = await double(x)
        return x

    return list(await asyncio.gather(chain(1), chain(5), chain(7)))


@pytest.mark.parametrize(
    "wf", [cancels_itself, starts_a_task_before_awaiting, reads_what_a_task_did, gathers_chains]
)
async def test_workflows_the_shortcut_must_not_reorder_replay_as_one_by_one(wf):
    async with Engine("memory://", registry=reg, worker_id="t") as engine:
        handle = await engine.start(wf)
        expected = await handle.result(timeout=10)
        events = await engine.history(handle.run_id)
    batched, _ = _both(reg, events)
    assert batched["outcome"] == (True, expected)
    for cut in range(1, len(events) + 1):
        batched, plain = _both(reg, events[:cut])
        assert batched == plain, f"cut after event {cut}"
    for what, damaged in _damaged(events):
        batched, plain = _both(reg, damaged)
        assert batched == plain, what
