"""Regressions found in review: each failed before its fix.

- a repeated cancel interrupted the workflow's cleanup step;
- the loser of ``ctx.wait_first`` ran although it was cancelled before it started;
- a snapshot dropped a step abandoned by ``wait_first``, parking the run on restore;
- cancelling a parent did not reach a child that had continued as new;
- an unexpected journal error ended the worker loop for good;
- transactional steps in a gather, together or with a plain step, hung or lost their SQL.
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
    step_connection,
    workflow,
)
from continuum_py.adapters.memory import MemoryJournal
from continuum_py.events import StepCompleted
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


@step
async def one() -> int:
    return 1


@workflow(registry=reg)
async def just_one(ctx: Context) -> int:
    return await one()


class FlakyClaims(MemoryJournal):
    fail = 0

    async def claim(self, *args, **kwargs):
        if self.fail:
            self.fail -= 1
            raise RuntimeError("canceling statement due to statement timeout")
        return await super().claim(*args, **kwargs)


async def test_the_worker_loop_survives_an_unexpected_journal_error():
    journal = FlakyClaims()
    async with Engine(journal=journal, registry=reg, worker_id="a", poll_interval=0.02) as eng:
        journal.fail = 2
        async with Engine(journal=journal, registry=reg, worker=False) as client:
            h = await client.start(just_one)
            assert await h.result(timeout=5) == 1
        assert not eng._bg[0].done()


@step(transactional=True)
async def book(amount: int) -> int:
    await step_connection().execute("INSERT INTO ledger (amount) VALUES (?)", (amount,))
    return amount


@step
async def plain(x: int) -> int:
    await asyncio.sleep(0.01)
    return x


@workflow(registry=reg)
async def mixed(ctx: Context) -> list[int]:
    a = list(await asyncio.gather(book(1), plain(2)))
    b = list(await asyncio.gather(book(3), book(4)))
    return a + b


async def test_transactional_steps_in_a_gather_run_one_at_a_time_and_commit(tmp_path):
    import sqlite3

    db = tmp_path / "j.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE ledger (amount INTEGER)")
    async with Engine(f"sqlite:///{db}", registry=reg, worker_id="a") as eng:
        h = await eng.start(mixed)
        assert await h.result(timeout=10) == [1, 2, 3, 4]
        completed = [e for e in await eng.history(h.run_id) if isinstance(e, StepCompleted)]
    assert len(completed) == 4
    with sqlite3.connect(db) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT amount FROM ledger")) == [1, 3, 4]


@workflow(registry=reg)
async def one_book(ctx: Context) -> int:
    return await book(7)


async def test_graceful_shutdown_during_a_transactional_step_commits_it(tmp_path):
    import sqlite3

    db = tmp_path / "j.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE ledger (amount INTEGER)")
    eng = Engine(f"sqlite:///{db}", registry=reg, worker_id="a")
    await eng.open()
    h = await eng.start(one_book)
    await eng.aclose(grace=5)
    async with Engine(f"sqlite:///{db}", registry=reg, worker_id="a") as again:
        assert await (await again.get(h.run_id)).result(timeout=5) == 7
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT amount FROM ledger")] == [7]
