"""Random workflow shapes for the property tests, and the tools to run and compare them.

A *shape* is a list of blocks; a block is one step awaited alone, or 2-4 steps
in an ``asyncio.gather``. Each step is ``(max_attempts, fail_first)``: its body
fails its first ``fail_first`` attempts and then succeeds, so
``fail_first >= max_attempts`` is a step that fails for good.

Step bodies are pure functions of their arguments and their *logical* attempt:
the attempt number minus the attempts of that position lost to a stop
(``control.orphans``). An attempt whose ``StepScheduled`` is durable but whose outcome
is not (the worker stopped while it ran) is run again with the next attempt
number; the engine counts only recorded failures against ``max_attempts``. So
a run stopped and resumed makes the same logical attempts as an uninterrupted
one, and :func:`normalize` maps its history onto the uninterrupted history.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import HealthCheck
from hypothesis import strategies as st

from continuum_py import (
    Context,
    Engine,
    Registry,
    RetryPolicy,
    RunFailed,
    StepError,
    StepInfo,
    step,
    workflow,
)
from continuum_py.adapters.memory import MemoryJournal
from continuum_py.adapters.sqlite import SQLiteJournal
from continuum_py.events import (
    CompensationStarted,
    RunCompleted,
    RunFailedEvent,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
)
from continuum_py.journal import StoredEvent

SETTINGS: dict[str, Any] = {
    # Each example runs real engines; a few take longer than hypothesis likes.
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow],
}

RUN_ID = "prop-run"
MAX_ATTEMPTS = 4

reg = Registry()


class Flaky(Exception):
    """What a failing step body raises."""


@dataclass
class Control:
    """Per-run knobs the step bodies read (reset by :func:`reset`)."""

    orphans: dict[int, int] = field(default_factory=dict)
    """Attempts of a position lost to a stop, before the current run resumed it."""
    hold: set[tuple[int, int]] = field(default_factory=set)
    """(position, attempt) pairs whose body blocks until cancelled: a stop mid-step."""
    entered: set[tuple[int, int]] = field(default_factory=set)
    all_held: asyncio.Event | None = None
    release: asyncio.Event | None = None


control = Control()


def reset(
    *, orphans: dict[int, int] | None = None, hold: set[tuple[int, int]] | None = None
) -> None:
    """Fresh knobs; call inside the event loop that will run the steps."""
    control.orphans = dict(orphans or {})
    control.hold = set(hold or ())
    control.entered = set()
    control.all_held = asyncio.Event()
    control.release = asyncio.Event()


async def _act(label: str, fail_first: int) -> str:
    info = StepInfo.current()
    assert info is not None and info.run_id == RUN_ID
    key = (info.seq, info.attempt)
    if key in control.hold:
        control.entered.add(key)
        if control.entered >= control.hold:
            control.all_held.set()
        await control.release.wait()  # cancelled when the engine stops
    logical = info.attempt - control.orphans.get(info.seq, 0)
    assert logical >= 1, (info, control.orphans)
    if logical <= fail_first:
        raise Flaky(f"{label} attempt {logical}")
    return f"{label}@{logical}"


ACTS = {
    m: step(name=f"act{m}", retry=RetryPolicy(max_attempts=m, initial_interval=0, jitter=0))(_act)
    for m in range(1, MAX_ATTEMPTS + 1)
}

Shape = list[list[tuple[int, int]]]


@workflow(registry=reg)
async def shaped(ctx: Context, shape: Shape, catch: bool) -> list[str]:
    """Runs the blocks of ``shape`` in order; later labels depend on earlier results."""
    out: list[str] = []

    async def one(label: str, max_attempts: int, fail_first: int) -> str:
        try:
            return await ACTS[max_attempts](label, fail_first)
        except StepError as exc:
            if not catch:
                raise
            return f"{label} gave up: {exc.error_type}: {exc.message}"

    for i, block in enumerate(shape):
        salt = sum(len(x) for x in out) % 97
        labels = [f"b{i}s{j}~{salt}" for j in range(len(block))]
        if len(block) == 1:
            (m, k) = block[0]
            out.append(await one(labels[0], m, k))
        else:
            got = await asyncio.gather(
                *(one(lb, m, k) for lb, (m, k) in zip(labels, block, strict=True))
            )
            out.extend(got)
    return out


@st.composite
def step_specs(draw: Any) -> tuple[int, int]:
    m = draw(st.integers(1, MAX_ATTEMPTS))
    # 0: succeeds at once; 1..m-1: fails that many times, then succeeds; m: fails for good.
    k = draw(st.integers(0, m))
    return (m, k)


blocks = st.one_of(
    st.lists(step_specs(), min_size=1, max_size=1),
    st.lists(step_specs(), min_size=2, max_size=4),
)
shapes = st.lists(blocks, min_size=1, max_size=5)


# ---- comparing histories ----

_ATTEMPTS_IN_MESSAGE = re.compile(r"\(position (\d+)\) failed after (\d+) attempt")


def normalize(history: list[Any]) -> list[tuple[Any, ...]]:
    """A history with attempts lost to stops taken out, comparable to an uninterrupted one.

    A ``StepScheduled`` followed by another for the same position with no
    outcome in between is an attempt lost to a stop: it is dropped, and later
    attempt numbers of that position are counted without it. ``at`` and
    ``seq`` are left out (``seq`` is implied by the order).
    """
    lost: dict[int, int] = {}
    open_at: dict[int, int] = {}
    out: list[tuple[Any, ...] | None] = []
    for ev in history:
        if isinstance(ev, StepScheduled):
            if ev.position in open_at:
                out[open_at[ev.position]] = None
                lost[ev.position] = lost.get(ev.position, 0) + 1
            open_at[ev.position] = len(out)
            out.append(
                (
                    "StepScheduled",
                    ev.position,
                    ev.step,
                    ev.attempt - lost.get(ev.position, 0),
                    bytes(ev.args),
                    ev.compensates,
                )
            )
        elif isinstance(ev, StepCompleted):
            open_at.pop(ev.position, None)
            out.append(
                (
                    "StepCompleted",
                    ev.position,
                    ev.step,
                    ev.attempt - lost.get(ev.position, 0),
                    bytes(ev.result),
                )
            )
        elif isinstance(ev, StepFailed):
            open_at.pop(ev.position, None)
            out.append(
                (
                    "StepFailed",
                    ev.position,
                    ev.step,
                    ev.attempt - lost.get(ev.position, 0),
                    ev.error,
                    ev.final,
                    ev.retry_delay,
                )
            )
        elif isinstance(ev, RunStarted):
            out.append(("RunStarted", ev.run_id, ev.workflow, bytes(ev.args)))
        elif isinstance(ev, RunCompleted):
            out.append(("RunCompleted", bytes(ev.result)))
        elif isinstance(ev, RunFailedEvent):
            message = normalize_message(ev.error.message, lost)
            compensations = [
                (c.step, c.position, c.compensates, c.ok)
                + ((c.error.type, normalize_message(c.error.message, lost)) if c.error else ())
                for c in ev.compensations
            ]
            out.append(("RunFailed", ev.error.type, message, ev.error.traceback, compensations))
        elif isinstance(ev, CompensationStarted):
            error = ev.error and (ev.error.type, normalize_message(ev.error.message, lost))
            out.append(("CompensationStarted", ev.position, ev.reason, error))
        else:  # pragma: no cover - a new event kind needs a line here
            raise AssertionError(f"unexpected event {ev!r}")
    return [x for x in out if x is not None]


def normalize_message(message: str, lost: dict[int, int]) -> str:
    """A ``StepError`` message with attempts lost to a stop not counted."""

    def fix(m: re.Match[str]) -> str:
        position, attempts = int(m.group(1)), int(m.group(2))
        return f"(position {position}) failed after {attempts - lost.get(position, 0)} attempt"

    return _ATTEMPTS_IN_MESSAGE.sub(fix, message)


def in_flight(history: list[Any]) -> dict[int, int]:
    """Positions whose newest ``StepScheduled`` has no outcome: position -> that attempt."""
    open_: dict[int, int] = {}
    for ev in history:
        if isinstance(ev, StepScheduled):
            open_[ev.position] = ev.attempt
        elif isinstance(ev, StepCompleted | StepFailed):
            open_.pop(ev.position, None)
    return open_


def lost_attempts(prefix: list[Any]) -> dict[int, int]:
    """Attempts a resume from ``prefix`` will find lost, per position (for ``control.orphans``).

    Those lost to earlier stops, plus the attempt in flight where ``prefix`` ends.
    """
    lost = lost_in(prefix)
    for position in in_flight(prefix):
        lost[position] = lost.get(position, 0) + 1
    return lost


def lost_in(history: list[Any]) -> dict[int, int]:
    """Attempts lost to stops in a whole history: superseded ``StepScheduled`` per position."""
    lost: dict[int, int] = {}
    open_: set[int] = set()
    for ev in history:
        if isinstance(ev, StepScheduled):
            if ev.position in open_:
                lost[ev.position] = lost.get(ev.position, 0) + 1
            open_.add(ev.position)
        elif isinstance(ev, StepCompleted | StepFailed):
            open_.discard(ev.position)
    return lost


def normalize_outcome(result: tuple[Any, ...], history: list[Any]) -> tuple[Any, ...]:
    """:func:`outcome`'s result with attempts lost to stops not counted in a failure message."""
    if result[0] == "failed":
        return (result[0], result[1], normalize_message(result[2], lost_in(history)))
    return result


def timeless(history: list[Any]) -> list[Any]:
    return [msgspec.structs.replace(e, at=0.0) for e in history]


async def outcome(engine: Engine) -> tuple[str, Any]:
    """The run's result as ``("ok", value)`` or ``("failed", type, message)``."""
    handle = await engine.get(RUN_ID)
    try:
        return ("ok", await handle.result(timeout=20))
    except RunFailed as exc:
        return ("failed", exc.error_type, exc.message)


class BatchRecorder:
    """Wraps a journal and records the seq after every accepted append batch."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.boundaries: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, batches: Any) -> Any:
        results = await self.inner.append(batches)
        for batch, err in zip(batches, results, strict=True):
            if err is None and batch.events:
                self.boundaries.append(batch.expected_seq + len(batch.events))
        return results


# ---- storage and the uninterrupted run ----

Opener = Callable[[], Awaitable[Any]]
"""Opens a journal on one storage; a second call opens the same storage again."""


def memory_storage() -> Opener:
    journal = MemoryJournal()

    async def open_() -> Any:
        return journal

    return open_


_names = itertools.count()


def sqlite_storage(folder: str) -> Opener:
    path = os.path.join(folder, f"j{next(_names)}.db")

    async def open_() -> Any:
        journal = SQLiteJournal(path)
        await journal.connect()
        return journal

    return open_


async def run_reference(
    open_: Opener, shape: Any, catch: Any, wf: Any = None
) -> tuple[tuple[Any, ...], list[StoredEvent], list[int]]:
    """Run ``wf`` (default :func:`shaped`) uninterrupted; its outcome, stored events and batch ends."""
    reset()
    journal = BatchRecorder(await open_())
    async with Engine(journal=journal, registry=reg, worker_id="ref") as engine:
        await engine.start(wf or shaped, shape, catch, run_id=RUN_ID)
        result = await outcome(engine)
        rows = await journal.load(RUN_ID)
    boundaries = [1, *journal.boundaries]  # start_run writes RunStarted alone
    assert boundaries == sorted(set(boundaries)) and boundaries[-1] == len(rows)
    return result, rows, boundaries
