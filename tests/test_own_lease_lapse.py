"""A worker whose own lease lapsed (a stalled loop) and that claims the run anew
hands it to a driver holding the new token, instead of leaving it idle."""

from __future__ import annotations

import asyncio

from continuum_py import Context, Engine, Registry, StepInfo, step, workflow
from continuum_py.adapters.memory import MemoryJournal
from continuum_py.events import StepScheduled

reg = Registry()
gate = asyncio.Event()
started = asyncio.Event()
attempts: list[int] = []


@step
async def blocked() -> int:
    info = StepInfo.current()
    assert info is not None
    attempts.append(info.attempt)
    started.set()
    if info.attempt == 1:
        await gate.wait()
    return info.attempt


@workflow(registry=reg)
async def one_step(ctx: Context) -> int:
    return await blocked()


async def test_reclaimed_own_run_gets_a_fresh_driver():
    now = [1000.0]
    journal = MemoryJournal(clock=lambda: now[0])
    async with Engine(journal=journal, registry=reg, worker_id="w", lease_ttl=30) as engine:
        h = await engine.start(one_step, run_id="lapse")
        await asyncio.wait_for(started.wait(), 5)
        first_task = engine._worker.drivers["lapse"].task
        now[0] += 60  # our lease lapses while the loop is "stalled"
        await engine._worker.claim()
        assert await h.result(timeout=5) == 2
        await asyncio.gather(first_task, return_exceptions=True)
        assert first_task.cancelled()
        assert attempts == [1, 2]
        sched = [e.attempt for e in await engine.history("lapse") if isinstance(e, StepScheduled)]
        assert sched == [1, 2]
        assert engine._worker.drivers == {}
