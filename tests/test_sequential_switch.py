"""The sequential fast path hands over to the general path, and back, at the same points.

Each workflow here runs runs of lone steps broken by what the fast path leaves
to the general path: a signal or a cancel arriving while a step runs, gathered
steps, a timer, a retry, a step with a compensation, a signal wait. Each is run
with the fast path and without it (``continuum_py._sequential.ENABLED``) on
every journal; the histories (timestamps aside) must be the same, and with the
fast path on, the steps after a hand-over must be taken by it again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

import msgspec
import pytest
from helpers import journal_maker

from continuum_py import Context, Engine, Registry, RetryPolicy, RunCancelled, _sequential, step
from continuum_py import workflow as workflow_
from continuum_py._recording import Recorder
from continuum_py.events import CancelRequested, SignalReceived, StepCompleted
from continuum_py.testing import VirtualClock

reg = Registry()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
RUN = "switch"
ENGINE: list[Engine] = []
tries: dict[str, int] = {}
_files = itertools.count()


@step
async def add(x: int) -> int:
    return x + 1


@step
async def signal_self(x: int) -> int:
    await ENGINE[0].signal(RUN, "go", x)
    return x


@step
async def cancel_self(x: int) -> int:
    await ENGINE[0].cancel(RUN)
    await asyncio.Event().wait()  # interrupted by the cancel
    return x


@step(retry=RetryPolicy(max_attempts=3, initial_interval=0, jitter=0))
async def flaky(x: int) -> int:
    tries[f"flaky{x}"] = tries.get(f"flaky{x}", 0) + 1
    if tries[f"flaky{x}"] == 1:
        raise ValueError("first try")
    return x


@step
async def undo(result: int, x: int) -> None:
    return None


@step(compensate=undo)
async def undoable(x: int) -> int:
    return x


async def lone(n: int, start: int) -> int:
    total = start
    for _ in range(n):
        total = await add(total)
    return total


@workflow_(registry=reg)
async def signal_mid_chain(ctx: Context) -> list[int]:
    total = await lone(3, 0)
    sent = await signal_self(total)
    total = await lone(3, total)
    got = await ctx.wait_for_signal("go", type=int)
    return [sent, got, await lone(3, total)]


@workflow_(registry=reg)
async def cancel_mid_chain(ctx: Context) -> int:
    total = await lone(3, 0)
    await cancel_self(total)
    return await lone(3, total)


@workflow_(registry=reg)
async def everything_between(ctx: Context) -> int:
    total = await lone(4, 0)
    pair = await asyncio.gather(add(total), add(total + 10))
    total = await lone(3, sum(pair))
    await ctx.sleep(60)
    total = await lone(3, total)
    total = await flaky(total)
    total = await lone(3, total)
    total = await undoable(total)
    total = await lone(3, total)
    total += await ctx.wait_for_signal("ext", type=int)
    return await lone(3, total)


async def run(url: str, wf: Any, *, fast: bool, signal: int | None = None) -> Any:
    tries.clear()
    taken: list[int] = []
    real = Recorder.step_scheduled_alone

    def counted(self: Recorder, call: Any, attempt: int) -> None:
        taken.append(call.position)
        real(self, call, attempt)

    before, _sequential.ENABLED = _sequential.ENABLED, fast
    Recorder.step_scheduled_alone = counted  # type: ignore[method-assign]
    try:
        async with Engine(
            journal=journal_maker(url.replace("{n}", str(next(_files))))(),
            registry=reg,
            worker_id="w",
            clock=VirtualClock(T0),
            snapshot_every=5,
        ) as engine:
            ENGINE[:] = [engine]
            handle = await engine.start(wf, run_id=RUN)
            if signal is not None:
                await engine.signal(RUN, "ext", signal)
            try:
                result: Any = await handle.result(timeout=20)
            except RunCancelled:
                result = "cancelled"
            history = await engine.history(RUN)
    finally:
        _sequential.ENABLED = before
        Recorder.step_scheduled_alone = real  # type: ignore[method-assign]
    timeless = [msgspec.structs.replace(e, at=0.0) for e in history]
    return result, timeless, taken


@pytest.fixture(params=["memory://", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    # One fresh file per run (``{n}``): each run starts the same run id.
    return request.param if request.param == "memory://" else f"sqlite:///{tmp_path}/j{{n}}.db"


async def test_a_signal_sent_while_a_lone_step_runs(url: str) -> None:
    result, history, taken = await run(url, signal_mid_chain, fast=True)
    assert result == [3, 3, 9]
    # The message is recorded as the step that sent it ends, before its completion.
    kinds = [type(e) for e in history]
    i = kinds.index(SignalReceived)
    assert isinstance(history[i + 1], StepCompleted) and history[i + 1].step == "signal_self"
    # Lone steps after the hand-over took the fast path again.
    assert max(taken) > history[i + 1].position
    assert (result, history) == (await run(url, signal_mid_chain, fast=False))[:2]


async def test_a_cancel_sent_while_a_lone_step_runs(url: str) -> None:
    result, history, taken = await run(url, cancel_mid_chain, fast=True)
    assert result == "cancelled"
    assert any(isinstance(e, CancelRequested) for e in history)
    assert taken  # the steps before the cancel took the fast path
    assert (result, history) == (await run(url, cancel_mid_chain, fast=False))[:2]


async def test_gathers_timers_retries_compensations_and_waits_between_lone_steps(url: str) -> None:
    result, history, taken = await run(url, everything_between, fast=True, signal=100)
    general = await run(url, everything_between, fast=False, signal=100)
    assert (result, history) == general[:2]
    assert general[2] == []
    # After each hand-over, the lone steps that follow are scheduled by the fast path.
    positions = [e.position for e in history if isinstance(e, StepCompleted)]
    assert len(taken) >= 12
    assert max(taken) == max(positions)


# ---- a journal that never waits still shares the loop ----

order: list[str] = []


@step
async def mark(name: str, i: int) -> int:
    order.append(name)  # no await: the step itself never gives the loop up
    return i


@workflow_(registry=reg, name="marks")
async def marks(ctx: Context, name: str, n: int) -> int:
    for i in range(n):
        await mark(name, i)
    return n


async def test_lone_steps_on_memory_let_other_runs_in():
    """Two long chains on memory:// started together interleave: neither waits for the other's end."""
    order.clear()
    async with Engine("memory://", registry=reg) as engine:
        a = await engine.start(marks, "a", 20 * _sequential.YIELD_EVERY, run_id="marks-a")
        b = await engine.start(marks, "b", 20 * _sequential.YIELD_EVERY, run_id="marks-b")
        assert await a.result(timeout=60) == await b.result(timeout=60)
    last_a = max(i for i, name in enumerate(order) if name == "a")
    first_b = order.index("b")
    assert first_b < last_a, "run b only started once run a had finished"
