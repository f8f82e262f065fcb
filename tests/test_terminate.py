"""Ending runs from outside: ``engine.terminate`` and cancelling a parked run. Every journal."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from helpers import journal_maker, journal_state, wait_until

from continuum_py import (
    Context,
    Engine,
    Registry,
    RunAlreadyFinished,
    RunCancelled,
    RunNotFound,
    RunStatus,
    step,
    workflow,
)
from continuum_py.events import RunCancelledEvent
from continuum_py.testing import Replayer, VirtualClock

reg = Registry()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
seen: list[str] = []


@pytest.fixture(autouse=True)
def _reset():
    seen.clear()


@step
async def long_step() -> str:
    seen.append("step started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        seen.append("step interrupted")
        raise
    return "done"


@step
async def cleanup() -> str:
    seen.append("cleanup ran")
    return "cleaned"


@workflow(registry=reg)
async def busy(ctx: Context) -> str:
    try:
        return await long_step()
    except asyncio.CancelledError:
        await cleanup()
        raise


@workflow(registry=reg)
async def sleeper(ctx: Context) -> str:
    try:
        await ctx.sleep(86400)
    except asyncio.CancelledError:
        await cleanup()
        raise
    return "woke"


def _engine(journal, **kw) -> Engine:
    kw.setdefault("registry", reg)
    return Engine(journal=journal, clock=VirtualClock(T0, auto_advance=False), worker_id="w1", **kw)


async def _ended_terminated(eng: Engine, run_id: str, reason: str) -> list:
    h = await eng.get(run_id)
    with pytest.raises(RunCancelled) as ei:
        await h.result(timeout=5)
    assert ei.value.reason == reason
    assert await h.status() == RunStatus.CANCELLED
    history = await eng.history(run_id)
    end = history[-1]
    assert isinstance(end, RunCancelledEvent) and end.terminated and end.reason == reason
    # A terminated history replays without a NonDeterminismError, stopped where it was.
    assert not Replayer(reg).replay(history).finished
    return history


async def test_terminate_a_run_inside_a_step_runs_nothing_more(journal_url):
    async with _engine(journal_maker(journal_url)()) as eng:
        await eng.start(busy, run_id="t-busy")
        await wait_until(lambda: asyncio.sleep(0, "step started" in seen))
        await eng.terminate("t-busy", "operator: stuck")
        await _ended_terminated(eng, "t-busy", "operator: stuck")
        await wait_until(lambda: asyncio.sleep(0, "step interrupted" in seen))
    assert "cleanup ran" not in seen


async def _suspended(eng: Engine, run_id: str) -> bool:
    rec = await eng.journal.get_run(run_id)
    return rec is not None and rec.status == RunStatus.SUSPENDED


async def test_terminate_a_suspended_or_pending_run(journal_url):
    async with _engine(journal_maker(journal_url)()) as eng:
        await eng.start(sleeper, run_id="t-sleep")
        await wait_until(lambda: _suspended(eng, "t-sleep"))
        await eng.start(sleeper, run_id="t-later", delay=3600)
        await eng.terminate("t-sleep", "no longer needed")
        await eng.terminate("t-later", "never mind")
        await _ended_terminated(eng, "t-sleep", "no longer needed")
        await _ended_terminated(eng, "t-later", "never mind")
    assert "cleanup ran" not in seen


async def test_cancel_ends_a_parked_run_and_terminate_does_too(journal_url):
    make = journal_maker(journal_url)
    # A worker whose registry lacks the workflow parks its runs.
    async with _engine(make(), registry=Registry(), worker=False) as client:
        await client.start("not_deployed", 1, run_id="parked-1")
        await client.start("not_deployed", 2, run_id="parked-2")
    async with _engine(make(), registry=Registry()) as eng:
        for rid in ("parked-1", "parked-2"):

            async def parked(rid=rid) -> bool:
                rec = await eng.journal.get_run(rid)
                return rec.status == RunStatus.PARKED

            await wait_until(parked)
        await eng.cancel("parked-1")
        await eng.terminate("parked-2", "obsolete")
        for rid, reason in (("parked-1", "cancel"), ("parked-2", "obsolete")):
            with pytest.raises(RunCancelled):
                await (await eng.get(rid)).result(timeout=5)
            end = (await eng.history(rid))[-1]
            assert isinstance(end, RunCancelledEvent) and end.terminated and end.reason == reason


async def test_terminate_refuses_finished_and_unknown_runs_and_changes_nothing(journal_url):
    async with _engine(journal_maker(journal_url)()) as eng:
        await eng.start(busy, run_id="t-done")
        await eng.terminate("t-done", "first")
        before = await journal_state(eng)
        with pytest.raises(RunAlreadyFinished):
            await eng.terminate("t-done", "again")
        with pytest.raises(RunNotFound):
            await eng.terminate("no-such-run", "x")
        with pytest.raises(ValueError, match="reason"):
            await eng.terminate("t-done", "")
        assert await journal_state(eng) == before
