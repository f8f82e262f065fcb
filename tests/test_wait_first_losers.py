"""What ``ctx.wait_first`` leaves behind: a loser decided at once never runs, and a
step the workflow stopped waiting for survives a snapshot (no park on restore).
"""

from __future__ import annotations

import asyncio

from helpers import wait_until

from continuum_py import (
    Context,
    Engine,
    Registry,
    RunStatus,
    step,
    workflow,
)
from continuum_py.adapters.memory import MemoryJournal
from continuum_py.testing import VirtualClock

reg = Registry()
ran: list[str] = []


@step
async def one() -> int:
    return 1


@step
async def charge() -> str:
    ran.append("charge")
    return "charged"


@workflow(registry=reg)
async def approve_or_charge(ctx: Context) -> int:
    # The step call is made first, so it exists when the already-sent signal wins.
    work = asyncio.ensure_future(charge())
    index, _ = await ctx.wait_first(ctx.wait_for_signal("approve"), work)
    return index + await one()


async def test_the_loser_of_wait_first_decided_at_once_never_runs():
    ran.clear()
    clock = VirtualClock(auto_advance=False)
    async with Engine("memory://", registry=reg, worker_id="a", clock=clock) as eng:
        h = await eng.start(approve_or_charge, delay=1)
        await eng.signal(h.run_id, "approve", True)  # already there when the race starts
        await clock.advance(1)
        assert await h.result(timeout=5) == 1
        steps = await h.steps()
    assert ran == []
    # Recorded, as cancelled, without its body running.
    assert [(s.step, s.status) for s in steps] == [("charge", "failed"), ("one", "completed")]
    assert steps[0].last_error is not None
    assert "CancelledError" in steps[0].last_error.type


gate = asyncio.Event()


@step
async def slow() -> int:
    ran.append("slow")
    await gate.wait()
    return 1


@workflow(registry=reg)
async def race_then_nap(ctx: Context) -> int:
    index, _ = await ctx.wait_first(slow(), ctx.sleep(1))
    await ctx.sleep(100)
    return index


async def test_a_snapshot_keeps_a_step_the_workflow_stopped_waiting_for():
    ran.clear()
    clock = VirtualClock(auto_advance=False)
    journal = MemoryJournal()
    opts = {"registry": reg, "clock": clock, "snapshot_every": 5, "worker_id": "a"}
    async with Engine(journal=journal, **opts) as eng:
        h = await eng.start(race_then_nap)
        await wait_until(lambda: _ran("slow"))
        await clock.advance(1)  # the timer wins; `slow` is abandoned, still running
        await wait_until(lambda: _status(h, RunStatus.SUSPENDED))
    # Reopened: the run restores from its snapshot, with the abandoned step in it.
    async with Engine(journal=journal, **opts) as eng:
        await clock.advance(100)
        assert await (await eng.get(h.run_id)).result(timeout=5) == 1
    assert ran == ["slow"]


async def _ran(name: str) -> bool:
    return name in ran


async def _status(h, status: RunStatus) -> bool:
    return await h.status() == status
