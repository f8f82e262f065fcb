"""Cancelling a run reaches all of it: its cleanup, and its children however they went on.

- a repeated cancel does not interrupt the workflow's cleanup step;
- cancelling a parent reaches a child that has continued as new.
"""

from __future__ import annotations

import asyncio

import pytest
from helpers import wait_until

from continuum_py import (
    Context,
    Engine,
    Registry,
    RunCancelled,
    RunStatus,
    step,
    workflow,
)
from continuum_py.testing import VirtualClock

reg = Registry()
ran: list[str] = []
in_work = asyncio.Event()
in_cleanup = asyncio.Event()


@step
async def work() -> int:
    in_work.set()
    await asyncio.sleep(30)
    return 1


@step
async def cleanup() -> str:
    in_cleanup.set()
    await asyncio.sleep(0.2)
    ran.append("cleanup")
    return "cleaned"


@workflow(registry=reg)
async def cleans_up(ctx: Context) -> int:
    try:
        return await work()
    except asyncio.CancelledError:
        await cleanup()
        raise


async def test_a_second_cancel_does_not_cut_the_cleanup_short():
    ran.clear()
    in_work.clear()
    in_cleanup.clear()
    async with Engine("memory://", registry=reg, worker_id="a") as eng:
        h = await eng.start(cleans_up)
        await in_work.wait()
        await eng.cancel(h.run_id)
        await in_cleanup.wait()
        await eng.cancel(h.run_id)  # a user retrying, or a parent re-sending after a crash
        with pytest.raises(RunCancelled):
            await h.result(timeout=5)
        assert await h.status() == RunStatus.CANCELLED
        statuses = {s.step: s.status for s in await h.steps()}
    assert ran == ["cleanup"] and statuses["cleanup"] == "completed"


@workflow(registry=reg)
async def looping_child(ctx: Context, i: int) -> int:
    await ctx.sleep(10)
    ctx.continue_as_new(i + 1)


@workflow(registry=reg)
async def parent_of_loop(ctx: Context) -> int:
    return await looping_child(0)  # type: ignore[no-any-return]


async def test_cancelling_a_parent_reaches_a_child_that_continued_as_new():
    clock = VirtualClock(auto_advance=False)
    async with Engine("memory://", registry=reg, worker_id="a", clock=clock, hold=0) as eng:
        h = await eng.start(parent_of_loop, run_id="p")
        await wait_until(lambda: _record_status(eng, "p.1", RunStatus.SUSPENDED))
        await clock.advance(10)
        await wait_until(lambda: _record_status(eng, "p.1~2", RunStatus.SUSPENDED))
        await h.cancel()
        with pytest.raises(RunCancelled):
            await h.result(timeout=5)
        await wait_until(lambda: _record_status(eng, "p.1~2", RunStatus.CANCELLED))


async def _record_status(eng: Engine, run_id: str, status: RunStatus) -> bool:
    rec = await eng.journal.get_run(run_id)
    return rec is not None and rec.status == status
