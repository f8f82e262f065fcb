"""A run started and claimed here starts from memory, and still gets every message.

``engine.start`` creates the run and claims it in one write, so the worker's
driver is given the run's first event: its first pass reads neither the history
(it is that event) nor the inbox (empty at the commit). A message sent from then
on, before the first pass, must still reach the run at once: from this process
(a poke, even one that lands before the driver exists) or from another one (a
notification or the inbox watch). Later passes read as before. Runs on every journal.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
from typing import Any

import pytest
from helpers import journal_maker, wait_until

from continuum_py import Context, Engine, Interceptor, Registry, RunCancelled, step, workflow
from continuum_py.errors import LeaseLost
from continuum_py.events import CancelRequested, RunCancelledEvent, SignalReceived
from continuum_py.journal import AppendBatch, RunStatus
from continuum_py.testing import VirtualClock

reg = Registry()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ran: list[str] = []
release = asyncio.Event()


@step
async def add(x: int) -> int:
    ran.append(f"add {x}")
    return x + 1


@step
async def long_step() -> str:
    ran.append("long_step started")
    await release.wait()
    return "finished"


@workflow(registry=reg)
async def three(ctx: Context, x: int) -> int:
    return await add(await add(await add(x)))


@workflow(registry=reg)
async def give_up_race(ctx: Context) -> str:
    i, v = await ctx.wait_first(long_step(), ctx.wait_for_signal("give_up"))
    return f"step: {v}" if i == 0 else f"gave up: {v}"


@pytest.fixture(autouse=True)
def _reset():
    global release
    ran.clear()
    release = asyncio.Event()  # one per test: an Event binds to the loop that awaits it


def _count_calls(journal: Any, names: tuple[str, ...]) -> collections.Counter[str]:
    """Count calls of the journal's ``names`` (wrapped on the object, so it stays what it is)."""
    counts: collections.Counter[str] = collections.Counter()
    for name in names:
        method = getattr(journal, name)

        def counted(*args: Any, _m: Any = method, _n: str = name, **kw: Any) -> Any:
            counts[_n] += 1
            return _m(*args, **kw)

        setattr(journal, name, counted)
    return counts


def _after_start_commit(journal: Any, then: Any) -> None:
    """Run ``then()`` once a start has committed, before ``engine.start`` sees its reply."""
    inner = journal.start_run

    async def start_run(*args: Any, **kw: Any) -> Any:
        got = await inner(*args, **kw)
        await then()
        return got

    journal.start_run = start_run


class Pause(Interceptor):
    """Holds a run's first pass at its start (``run_started``) until released."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    async def run_started(self, run_id: str, workflow: str) -> None:
        self.reached.set()
        await self.go.wait()


def _engine(journal: Any, **kw: Any) -> Engine:
    # A heartbeat far beyond the test's timeouts: only prompt delivery passes.
    kw.setdefault("lease_ttl", 600.0)
    return Engine(journal=journal, clock=VirtualClock(T0), registry=reg, worker_id="w1", **kw)


async def test_a_run_started_here_reads_neither_history_nor_inbox(journal_url):
    journal = journal_maker(journal_url)()
    counts = _count_calls(journal, ("load", "load_with_snapshot", "inbox", "get_run"))
    async with _engine(journal) as eng:
        h = await eng.start(three, 1, run_id="r3")
        assert await h.result(timeout=10) == 4
        assert counts == {}  # a run driven here: its result is not read back either
        assert [type(e).__name__ for e in await eng.history("r3")][-1] == "RunCompleted"
    assert ran == ["add 1", "add 2", "add 3"]


async def test_a_signal_sent_here_before_the_driver_exists_is_seen_by_its_first_pass(
    journal_url,
):
    journal = journal_maker(journal_url)()
    async with _engine(journal) as eng:
        # The signal lands between the start's commit and the driver's creation: its
        # poke finds no driver. The first pass must still read it, before any step.
        _after_start_commit(journal, lambda: eng.signal("early", "give_up", "at once"))
        h = await eng.start(give_up_race, run_id="early")
        assert await h.result(timeout=5) == "gave up: at once"
    assert ran == []  # the signal won before the step could start


async def test_a_signal_sent_here_before_the_first_pass_is_seen_by_it(journal_url):
    pause = Pause()
    async with _engine(journal_maker(journal_url)(), interceptors=[pause]) as eng:
        h = await eng.start(give_up_race, run_id="held")
        await pause.reached.wait()
        await eng.signal("held", "give_up", "before the first step")
        pause.go.set()
        assert await h.result(timeout=5) == "gave up: before the first step"
    assert ran == []


async def test_a_cancel_sent_here_before_the_first_pass_is_seen_by_it(journal_url):
    pause = Pause()
    async with _engine(journal_maker(journal_url)(), interceptors=[pause]) as eng:
        h = await eng.start(give_up_race, run_id="held")
        await pause.reached.wait()
        await eng.cancel("held")
        pause.go.set()
        with pytest.raises(RunCancelled):
            await h.result(timeout=5)
        history = await eng.history("held")
    assert ran == []
    assert any(isinstance(e, CancelRequested) for e in history)
    assert isinstance(history[-1], RunCancelledEvent)


async def _two_engines(journal_url, **kw: Any) -> tuple[Engine, Engine, Any]:
    """A worker engine (its journal returned too) and a client on the same storage."""
    make = journal_maker(journal_url)
    journal = make()
    return _engine(journal, **kw), _engine(make(), worker=False), journal


async def test_a_signal_from_another_process_right_after_the_start_reaches_the_run(
    journal_url,
):
    worker, client, journal = await _two_engines(journal_url)
    async with worker, client:
        # Sent between the start's commit and the driver's first pass, by an engine
        # that cannot poke this worker: a notification or the inbox watch must bring it.
        _after_start_commit(journal, lambda: client.signal("far", "give_up", "from afar"))
        h = await worker.start(give_up_race, run_id="far")
        assert await h.result(timeout=5) == "gave up: from afar"
        history = await worker.history("far")
    assert sum(isinstance(e, SignalReceived) for e in history) == 1


async def test_a_signal_from_another_process_before_the_first_pass_reaches_the_run(
    journal_url,
):
    pause = Pause()
    worker, client, _ = await _two_engines(journal_url, interceptors=[pause])
    async with worker, client:
        h = await worker.start(give_up_race, run_id="far")
        await pause.reached.wait()
        await client.signal("far", "give_up", "from afar")
        pause.go.set()
        assert await h.result(timeout=5) == "gave up: from afar"


class CancelAtTheEnd:
    """Sends a cancel just before the run's final write, as a racing client would."""

    def __init__(self, journal: Any) -> None:
        self.inner = journal.append
        self.sent = False
        self.journal = journal
        journal.append = self.append

    async def append(self, batches: list[AppendBatch]) -> Any:
        for b in batches:
            if b.status == RunStatus.COMPLETED and not self.sent:
                self.sent = True
                await self.journal.send(b.lease.run_id, "cancel", "", b"")
        return await self.inner(batches)


async def test_a_pass_after_messages_pending_reads_the_journal(journal_url):
    journal = journal_maker(journal_url)()
    racer = CancelAtTheEnd(journal)
    counts = _count_calls(journal, ("load_with_snapshot", "inbox"))
    async with _engine(journal) as eng:
        h = await eng.start(three, 1, run_id="late")
        with pytest.raises(RunCancelled):
            await h.result(timeout=10)
        assert racer.sent
        history = await eng.history("late")
    # The first pass read nothing; the refused end made the driver load the run
    # and read its inbox, and the cancel was recorded before the end.
    assert counts == {"load_with_snapshot": 1, "inbox": 1}
    assert isinstance(history[-1], RunCancelledEvent)
    assert any(isinstance(e, CancelRequested) for e in history)
    assert ran == ["add 1", "add 2", "add 3"]


async def test_a_run_taken_away_before_its_first_pass_is_not_written_by_it(journal_url):
    pause = Pause()
    journal = journal_maker(journal_url)()
    lost = asyncio.Event()
    inner = journal.append

    async def append(batches: list[AppendBatch]) -> Any:
        results = await inner(batches)
        if any(isinstance(r, LeaseLost) for r in results):
            lost.set()
        return results

    journal.append = append
    async with _engine(journal, interceptors=[pause]) as eng:
        await eng.start(three, 1, run_id="taken")
        await pause.reached.wait()
        # Another worker takes the run (a new fencing token) before the first pass goes on.
        assert await journal.seize("taken", "w2", ttl=600.0) is not None
        pause.go.set()
        await asyncio.wait_for(lost.wait(), timeout=5)
        history = await eng.history("taken")
        rec = await journal.get_run("taken")
    assert [type(e).__name__ for e in history] == ["RunStarted"]
    assert rec.lease_owner == "w2"
    assert ran == []  # its step was refused before it could start


# ---- the claim loop: a run started here and ended here leaves it asleep ----


@workflow(registry=reg)
async def in_a_long_step(ctx: Context) -> str:
    return await long_step()


async def test_runs_started_and_ended_here_make_no_claim(journal_url):
    journal = journal_maker(journal_url)()
    counts = _count_calls(journal, ("claim", "next_wake_at"))
    # Polling far beyond the test: only a wake-up makes the worker claim.
    async with _engine(journal, poll_interval=600.0) as eng:
        await (await eng.start(three, 0)).result(timeout=10)
        await _claim_loop_asleep(eng)
        counts.clear()
        for i in range(3):
            assert await (await eng.start(three, i)).result(timeout=10) == i + 3
        assert counts == {}


async def test_runs_left_for_want_of_room_are_claimed_when_a_run_started_here_ends(journal_url):
    async with _engine(journal_maker(journal_url)(), concurrency=1, poll_interval=600.0) as eng:
        first = await eng.start(in_a_long_step, run_id="first")
        # No room: these two are left to the worker's claim, after "first" ends.
        waiting = [await eng.start(three, i, run_id=f"waits-{i}") for i in range(2)]
        await _claim_loop_asleep(eng)
        release.set()
        assert await first.result(timeout=5) == "finished"
        assert [await h.result(timeout=5) for h in waiting] == [3, 4]


async def _claim_loop_asleep(eng: Engine) -> None:
    """Wait until the worker's claim loop has done what it was woken for and sleeps."""
    worker: Any = eng._worker

    async def asleep() -> bool:
        return not worker._wake.is_set() and worker._idle_loop

    await wait_until(asleep)
