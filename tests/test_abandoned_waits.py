"""A wait that loses a race, or is left behind, consumes nothing.

Every signal is delivered to exactly one wait that returns it: a losing
``wait_first`` branch, an ``as_completed`` left early and a cancelled task
give back the signal they were handed but never returned. Runs on every
journal.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from helpers import journal_maker

from continuum_py import Context, Engine, Registry, step, workflow
from continuum_py.events import SignalReceived
from continuum_py.testing import Replayer, VirtualClock

reg = Registry()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@step
async def handle_item(item: str) -> str:
    return item.upper()


@workflow(registry=reg)
async def item_loop(ctx: Context) -> list[str]:
    done: list[str] = []
    while True:
        i, v = await ctx.wait_first(ctx.wait_for_signal("item"), ctx.wait_for_signal("exit"))
        if i == 1:
            done.append(f"exit:{v}")
            return done
        done.append(await handle_item(v))


@workflow(registry=reg)
async def first_of_completed(ctx: Context) -> list[str]:
    got = []
    async for _, v in ctx.as_completed([ctx.wait_for_signal("a"), ctx.wait_for_signal("b")]):
        got.append(v)
        break
    # The wait on "b" was left behind: the next "b" belongs to this wait.
    got.append(await ctx.wait_for_signal("b"))
    got.append(await ctx.wait_for_signal("a"))
    return got


@workflow(registry=reg)
async def cancelled_task(ctx: Context) -> str:
    t = asyncio.ensure_future(ctx.wait_for_signal("x"))
    t.cancel()
    return await ctx.wait_for_signal("x")


def _engine(journal, clock, **kw) -> Engine:
    return Engine(journal=journal, clock=clock, registry=reg, worker_id="w1", **kw)


async def _sent_while_no_worker_ran(journal_url, wf, signals, run_id):
    """Start ``wf``, send ``signals`` while no worker runs, then run it: its result."""
    clock = VirtualClock(T0)
    make = journal_maker(journal_url)
    async with _engine(make(), clock, worker=False) as client:
        await client.start(wf, run_id=run_id)
        for name, payload in signals:
            await client.signal(run_id, name, payload)
    async with _engine(make(), clock) as eng:
        result = await (await eng.get(run_id)).result(timeout=10)
        history = await eng.history(run_id)
    return result, history


async def test_a_losing_signal_wait_in_wait_first_consumes_nothing(journal_url):
    signals = [("item", "a"), ("item", "b"), ("item", "c"), ("exit", "bye")]
    result, history = await _sent_while_no_worker_ran(journal_url, item_loop, signals, "loop-1")
    assert result == ["A", "B", "C", "exit:bye"]
    received = [(e.name, e.payload) for e in history if isinstance(e, SignalReceived)]
    assert len(received) == 4
    # The recorded run replays to the same result.
    assert Replayer(reg).replay(history).result == result


async def test_signals_sent_one_by_one_to_a_live_loop_all_arrive(journal_url):
    clock = VirtualClock(T0)
    async with _engine(journal_maker(journal_url)(), clock) as eng:
        h = await eng.start(item_loop, run_id="loop-live")
        for item in ["a", "b"]:
            await eng.signal("loop-live", "item", item)
        await eng.signal("loop-live", "exit", "now")
        assert await h.result(timeout=10) == ["A", "B", "exit:now"]


async def test_as_completed_left_early_gives_back_the_other_wait(journal_url):
    signals = [("a", "a1"), ("b", "b1"), ("a", "a2")]
    result, history = await _sent_while_no_worker_ran(
        journal_url, first_of_completed, signals, "asc-1"
    )
    assert result == ["a1", "b1", "a2"]
    assert Replayer(reg).replay(history).result == result


async def test_a_cancelled_wait_task_gives_back_its_signal(journal_url):
    result, history = await _sent_while_no_worker_ran(
        journal_url, cancelled_task, [("x", "only")], "ct-1"
    )
    assert result == "only"
    assert Replayer(reg).replay(history).result == result
