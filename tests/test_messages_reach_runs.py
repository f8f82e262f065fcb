"""A message accepted is acted on or refused, never dropped; and it reaches a busy run at once.

A cancel (or signal) that lands in a run's inbox while the run is ending makes
the journal refuse the final write (``MessagesPending``): the runner records
the message, lets the workflow see it, and only then ends the run. Runs on
every journal.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import msgspec
import pytest
from helpers import journal_maker, wait_until

from continuum_py import (
    Context,
    Engine,
    MessagesPending,
    Registry,
    RunAlreadyFinished,
    RunCancelled,
    RunStatus,
    step,
    workflow,
)
from continuum_py.events import CancelRequested, RunCancelledEvent, StepCompleted
from continuum_py.journal import AppendBatch
from continuum_py.journal import RunStatus as JStatus
from continuum_py.testing import Replayer, VirtualClock

reg = Registry()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ran: list[str] = []
gate = asyncio.Event()


@step
async def quick(x: int) -> int:
    ran.append(f"quick {x}")
    return x * 2


@step
async def gated(name: str) -> str:
    ran.append(f"gated {name}")
    await gate.wait()
    return name


@step
async def undo(what: str) -> str:
    ran.append(f"undo {what}")
    return what


@workflow(registry=reg)
async def one_step(ctx: Context) -> int:
    try:
        return await quick(21)
    except asyncio.CancelledError:
        await undo("one_step")
        raise


@workflow(registry=reg)
async def slow_kid(ctx: Context, name: str) -> str:
    return await gated(name)


@workflow(registry=reg)
async def fast_kid(ctx: Context) -> int:
    return await quick(1)


@workflow(registry=reg)
async def race_kids(ctx: Context) -> int:
    _, value = await ctx.wait_first(fast_kid(), slow_kid("loser"))
    return value


@pytest.fixture(autouse=True)
def _reset():
    global gate
    ran.clear()
    gate = asyncio.Event()


class CancelAtTheEnd:
    """A journal that lets a cancel land just before the run's final write, as a race would."""

    def __init__(self, inner, run_id: str) -> None:
        self._inner = inner
        self._run_id = run_id
        self.sent = False

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def append(self, batches: list[AppendBatch]):
        for b in batches:
            ending = b.status in (JStatus.COMPLETED, JStatus.FAILED)
            if b.lease.run_id == self._run_id and ending and not self.sent:
                self.sent = True
                await self._inner.send(self._run_id, "cancel", "", b"")
        return await self._inner.append(batches)


def _engine(journal, clock=None, **kw) -> Engine:
    return Engine(
        journal=journal, clock=clock or VirtualClock(T0), registry=reg, worker_id="w1", **kw
    )


async def test_a_cancel_accepted_as_the_run_ends_is_recorded_and_acted_on(journal_url):
    journal = CancelAtTheEnd(journal_maker(journal_url)(), "ends")
    async with _engine(journal) as eng:
        h = await eng.start(one_step, run_id="ends")
        with pytest.raises(RunCancelled):
            await h.result(timeout=10)
        assert journal.sent
        history = await eng.history("ends")
        assert await h.status() == RunStatus.CANCELLED
    kinds = [type(e) for e in history]
    # The cancel reached the workflow before the step's outcome did; the step ran
    # once and its completion was kept; the cleanup ran.
    assert kinds.index(CancelRequested) < kinds.index(StepCompleted)
    assert isinstance(history[-1], RunCancelledEvent)
    assert ran == ["quick 21", "undo one_step"]
    assert isinstance(Replayer(reg).replay(history).error, asyncio.CancelledError)


async def test_a_cancel_after_the_end_is_refused(journal_url):
    async with _engine(journal_maker(journal_url)()) as eng:
        h = await eng.start(one_step, run_id="done")
        assert await h.result(timeout=10) == 42
        with pytest.raises(RunAlreadyFinished):
            await eng.cancel("done")
        assert not any(isinstance(e, CancelRequested) for e in await eng.history("done"))


async def test_the_journal_refuses_to_end_a_run_with_unrecorded_messages(journal_url):
    from helpers import claim_run, new_run

    from continuum_py._schemes import journal_from_url

    journal = journal_from_url(journal_url)
    async with journal:
        await journal.start_run(new_run("r1"))
        lease = await claim_run(journal, "r1")
        await journal.send("r1", "cancel", "", b"")
        end = AppendBatch(
            lease=lease, expected_seq=1, events=[], status=JStatus.COMPLETED, inbox_seen=0
        )
        [err] = await journal.append([end])
        assert isinstance(err, MessagesPending)
        rec = await journal.get_run("r1")
        assert rec.status == JStatus.RUNNING and rec.last_seq == 1
        # Once the message is recorded (inbox_seen), the run may end.
        [ok] = await journal.append([msgspec.structs.replace(end, inbox_seen=1)])
        assert ok is None
        assert (await journal.get_run("r1")).status == JStatus.COMPLETED


async def test_the_losing_child_of_wait_first_is_cancelled_not_completed(journal_url):
    async with _engine(journal_maker(journal_url)()) as eng:
        h = await eng.start(race_kids, run_id="rk")
        assert await h.result(timeout=10) == 2
        loser = await eng.get("rk.2")

        async def ended():
            return (await loser.status()).terminal

        gate.set()  # if the loser's step was not interrupted, let it finish
        await wait_until(ended, timeout=10)
        assert await loser.status() == RunStatus.CANCELLED


# ---- messages reach a run while it is inside a step ----

release = asyncio.Event()


@step
async def long_step() -> str:
    ran.append("long_step started")
    try:
        await release.wait()
    except asyncio.CancelledError:
        ran.append("long_step cancelled")
        raise
    return "finished"


@workflow(registry=reg)
async def give_up_race(ctx: Context) -> str:
    i, v = await ctx.wait_first(long_step(), ctx.wait_for_signal("give_up"))
    return f"step: {v}" if i == 0 else f"gave up: {v}"


@workflow(registry=reg)
async def in_a_long_step(ctx: Context) -> str:
    return await long_step()


@pytest.fixture(autouse=True)
def _reset_release():
    global release
    release = asyncio.Event()  # one per test: an Event binds to the loop that awaits it


async def _step_running() -> bool:
    return "long_step started" in ran


async def test_a_signal_reaches_a_run_while_its_step_runs(journal_url):
    async with _engine(journal_maker(journal_url)()) as eng:
        h = await eng.start(give_up_race, run_id="gu")
        await wait_until(_step_running)
        await eng.signal("gu", "give_up", "too slow")
        assert await h.result(timeout=5) == "gave up: too slow"
    assert "long_step cancelled" in ran


async def _two_engines(journal_url):
    """A worker engine and a client engine that cannot poke it (as another process)."""
    make = journal_maker(journal_url)
    # A heartbeat far beyond the test's timeouts: only prompt delivery passes.
    worker = _engine(make(), lease_ttl=600.0)
    client = _engine(make(), worker=False)
    return worker, client


async def test_a_signal_from_another_process_reaches_a_busy_run_at_once(journal_url):
    worker, client = await _two_engines(journal_url)
    async with worker, client:
        h = await worker.start(give_up_race, run_id="gu2")
        await wait_until(_step_running)
        await client.signal("gu2", "give_up", "from afar")
        assert await h.result(timeout=5) == "gave up: from afar"


async def test_a_cancel_from_another_process_reaches_a_busy_run_at_once(journal_url):
    worker, client = await _two_engines(journal_url)
    async with worker, client:
        h = await worker.start(in_a_long_step, run_id="busy")
        await wait_until(_step_running)
        await client.cancel("busy")
        with pytest.raises(RunCancelled):
            await h.result(timeout=5)
    assert "long_step cancelled" in ran
