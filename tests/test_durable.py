"""Durable time, signals, cancellation, child runs, continue-as-new, published values.

Each runs on every adapter (``journal_url``). Time is a VirtualClock: a test
that sleeps 30 days takes milliseconds, and a manual clock lets a test act
before a timeout is reached.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from helpers import journal_maker, wait_until

from continuum_py import (
    ChildRunFailed,
    Context,
    EncodingError,
    Engine,
    Registry,
    RunAlreadyFinished,
    RunCancelled,
    RunFailed,
    RunNotFound,
    RunStatus,
    RunTimedOut,
    SignalTimeout,
    step,
    workflow,
)
from continuum_py.events import (
    RunSuspended,
    SideEffectRecorded,
    TimerFired,
    TimerStarted,
)
from continuum_py.testing import Replayer, VirtualClock

reg = Registry()
DAY = 86400.0
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
calls: dict[str, int] = {}


def _count(name: str) -> None:
    calls[name] = calls.get(name, 0) + 1


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


@step
async def add(a: int, b: int) -> int:
    _count("add")
    return a + b


@step
async def cleanup(what: str) -> str:
    _count("cleanup")
    return f"cleaned {what}"


blocker = asyncio.Event()


@step
async def block_forever() -> str:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        _count("step_saw_cancel")
        raise
    return "never"


@workflow(registry=reg)
async def month_sleep(ctx: Context) -> dict:
    before = ctx.now()
    x = await add(1, 2)
    await ctx.sleep(dt.timedelta(days=30))
    after = ctx.now()
    return {"x": x, "slept_days": (after - before).days, "r": ctx.random(), "u": str(ctx.uuid4())}


@workflow(registry=reg)
async def approval(ctx: Context, timeout: float) -> str:
    try:
        ok = await ctx.wait_for_signal("approve", timeout=timeout)
    except SignalTimeout:
        return "timed out"
    return f"approved={ok}"


@workflow(registry=reg)
async def collect(ctx: Context, n: int) -> list[str]:
    return [await ctx.wait_for_signal("item", type=str) for _ in range(n)]


@workflow(registry=reg)
async def race(ctx: Context) -> str:
    index, value = await ctx.wait_first(
        ctx.wait_for_signal("approve"), ctx.sleep(dt.timedelta(hours=24))
    )
    return f"approved {value}" if index == 0 else "expired"


@workflow(registry=reg)
async def cancellable(ctx: Context) -> str:
    try:
        await ctx.wait_for_signal("never")
    except asyncio.CancelledError:
        await cleanup("after cancel")
        raise
    return "not cancelled"


@workflow(registry=reg)
async def cancel_in_step(ctx: Context) -> str:
    return await block_forever()


@workflow(registry=reg)
async def slow(ctx: Context) -> str:
    try:
        await ctx.sleep(DAY)
    except asyncio.CancelledError:
        await cleanup("deadline")
        raise
    return "done"


@workflow(registry=reg)
async def kid(ctx: Context, n: int) -> int:
    if n < 0:
        raise ValueError(f"negative: {n}")
    return await add(n, 100)


@workflow(registry=reg)
async def parent(ctx: Context, n: int) -> str:
    try:
        return f"child said {await kid(n)}"
    except ChildRunFailed as exc:
        return f"child failed: {exc.error_type}: {exc.message}"


@workflow(registry=reg)
async def parent_of_waiter(ctx: Context) -> str:
    return await collect(1)  # type: ignore[return-value]


@workflow(registry=reg)
async def counter(ctx: Context, i: int, until: int) -> int:
    await add(i, 0)
    if i < until:
        ctx.continue_as_new(i + 1, until)
    return i


@workflow(registry=reg)
async def publisher(ctx: Context) -> str:
    ctx.set_event("stage", "charged")
    await ctx.wait_for_signal("finish")
    ctx.set_event("stage", "finished")
    return "ok"


@workflow(registry=reg)
async def bad_sleep(ctx: Context) -> None:
    await ctx.sleep(-1)


@workflow(registry=reg)
async def asyncio_timeout(ctx: Context) -> None:
    task = asyncio.ensure_future(add(1, 1))
    await asyncio.wait([task], timeout=5)


@workflow(registry=reg)
async def plain_wait(ctx: Context) -> list[int]:
    tasks = [asyncio.ensure_future(add(i, i)) for i in range(4)]
    done, _ = await asyncio.wait(tasks)
    return sorted(t.result() for t in done)


def engine(url_or_journal, clock, **kw) -> Engine:
    kw.setdefault("registry", reg)
    kw.setdefault("worker_id", "w1")
    if isinstance(url_or_journal, str):
        return Engine(url_or_journal, clock=clock, **kw)
    return Engine(journal=url_or_journal, clock=clock, **kw)


async def _status(eng: Engine, run_id: str, status: RunStatus) -> bool:
    rec = await eng.journal.get_run(run_id)
    return rec is not None and rec.status == status


# ---- time ----


async def test_thirty_day_sleep_finishes_at_once_with_a_virtual_clock(journal_url):
    clock = VirtualClock(T0)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(month_sleep)
        out = await h.result(timeout=10)
        history = await eng.history(h.run_id)
    assert out["x"] == 3 and out["slept_days"] == 30
    assert clock.now() >= T0.timestamp() + 30 * DAY
    kinds = [type(e) for e in history]
    assert TimerStarted in kinds and RunSuspended in kinds and TimerFired in kinds
    # now/random/uuid4 are recorded, and a replay returns exactly the same values.
    assert sum(isinstance(e, SideEffectRecorded) for e in history) == 4
    assert Replayer(reg).replay(history).result == out
    assert calls["add"] == 1


async def test_a_sleeping_run_is_suspended_with_its_lease_released(journal_url):
    clock = VirtualClock(T0, auto_advance=False)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(month_sleep)
        await wait_until(lambda: _status(eng, h.run_id, RunStatus.SUSPENDED))
        rec = await h.record()
        assert rec.lease_owner is None
        assert rec.wake_at == pytest.approx(T0.timestamp() + 30 * DAY)
        assert [r.run_id for r in await eng.list_runs(status="suspended")] == [h.run_id]
        await clock.advance(29 * DAY)
        await asyncio.sleep(0.05)
        assert await h.status() == RunStatus.SUSPENDED
        await clock.advance(DAY)
        assert (await h.result(timeout=5))["slept_days"] == 30


async def test_sleep_resumes_after_a_restart_of_the_engine(journal_url):
    clock = VirtualClock(T0, auto_advance=False)
    make = journal_maker(journal_url)
    async with engine(make(), clock) as eng:
        await eng.start(month_sleep, run_id="sleeper")
        await wait_until(lambda: _status(eng, "sleeper", RunStatus.SUSPENDED))
    await clock.advance(31 * DAY)
    async with engine(make(), clock, worker_id="w2") as eng:
        out = await (await eng.get("sleeper")).result(timeout=5)
    # It woke when the restarted engine came up, a day after the timer was due.
    assert out["slept_days"] == 31
    assert calls["add"] == 1


async def test_scheduled_start_waits_for_its_time(journal_url):
    clock = VirtualClock(T0, auto_advance=False)
    async with engine(journal_url, clock) as eng:
        later = await eng.start(kid, 1, delay=3600)
        at = await eng.start(kid, 2, start_at=T0 + dt.timedelta(hours=2))
        await asyncio.sleep(0.05)
        assert await later.status() == RunStatus.PENDING
        assert await at.status() == RunStatus.PENDING
        assert "add" not in calls
        await clock.advance(3600)
        assert await later.result(timeout=5) == 101
        assert await at.status() == RunStatus.PENDING
        await clock.advance(3600)
        assert await at.result(timeout=5) == 102
        with pytest.raises(ValueError, match="timezone-aware"):
            await eng.start(kid, 3, start_at=dt.datetime(2026, 1, 1))
        with pytest.raises(ValueError, match="not both"):
            await eng.start(kid, 3, start_at=T0, delay=5)


# ---- signals ----


async def test_signal_sent_before_the_wait_is_delivered(journal_url):
    clock = VirtualClock(T0, auto_advance=False)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(approval, 60.0, delay=10)  # not running yet
        await eng.signal(h.run_id, "approve", True)
        await clock.advance(10)
        assert await h.result(timeout=5) == "approved=True"


async def test_signals_sent_while_no_worker_runs_are_kept_and_delivered_in_order(journal_url):
    clock = VirtualClock(T0)
    make = journal_maker(journal_url)
    async with engine(make(), clock, worker=False) as client:
        h = await client.start(collect, 3, run_id="collector")
        for item in ["a", "b", "c"]:
            await client.signal("collector", "item", item)
    async with engine(make(), clock) as eng:
        assert await (await eng.get(h.run_id)).result(timeout=5) == ["a", "b", "c"]


async def test_signal_to_a_suspended_run_wakes_it(journal_url):
    clock = VirtualClock(T0, auto_advance=False)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(approval, 3600.0)
        await wait_until(lambda: _status(eng, h.run_id, RunStatus.SUSPENDED))
        await eng.signal(h.run_id, "approve", {"by": "ann"})
        assert await h.result(timeout=5) == "approved={'by': 'ann'}"


async def test_signal_wait_times_out_with_a_typed_error(journal_url):
    clock = VirtualClock(T0)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(approval, 7 * DAY)
        assert await h.result(timeout=5) == "timed out"
    assert clock.now() >= T0.timestamp() + 7 * DAY


async def test_signal_errors_are_clear_and_record_nothing(journal_url):
    clock = VirtualClock(T0, auto_advance=False)
    async with engine(journal_url, clock) as eng:
        with pytest.raises(RunNotFound):
            await eng.signal("no-such-run", "approve", True)
        h = await eng.start(approval, 60.0)
        before = await eng.history(h.run_id)
        with pytest.raises(EncodingError, match="signal 'approve'"):
            await eng.signal(h.run_id, "approve", object())
        with pytest.raises(ValueError, match="signal name"):
            await eng.signal(h.run_id, "", 1)
        assert await eng.journal.inbox(h.run_id) == []
        assert (await eng.history(h.run_id))[: len(before)] == before
        await eng.signal(h.run_id, "approve", False)
        assert await h.result(timeout=5) == "approved=False"
        with pytest.raises(RunAlreadyFinished, match="already completed"):
            await eng.signal(h.run_id, "approve", True)


async def test_race_of_signal_and_timer_replays_both_ways(journal_url):
    clock = VirtualClock(T0, auto_advance=False)
    async with engine(journal_url, clock) as eng:
        signalled = await eng.start(race)
        expired = await eng.start(race)
        await wait_until(lambda: _status(eng, signalled.run_id, RunStatus.SUSPENDED))
        await eng.signal(signalled.run_id, "approve", "yes")
        assert await signalled.result(timeout=5) == "approved yes"
        await clock.advance(dt.timedelta(hours=24))
        assert await expired.result(timeout=5) == "expired"
        won = await eng.history(signalled.run_id)
        lost = await eng.history(expired.run_id)
    assert Replayer(reg).replay(won).result == "approved yes"
    assert Replayer(reg).replay(lost).result == "expired"


# ---- cancellation and deadlines ----


async def test_cancel_lets_the_workflow_clean_up_and_ends_cancelled(journal_url):
    clock = VirtualClock(T0, auto_advance=False)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(cancellable)
        await wait_until(lambda: _status(eng, h.run_id, RunStatus.SUSPENDED))
        await h.cancel()
        with pytest.raises(RunCancelled):
            await h.result(timeout=5)
        assert await h.status() == RunStatus.CANCELLED
        steps = await h.steps()
        assert [(s.step, s.status) for s in steps] == [("cleanup", "completed")]
        with pytest.raises(RunAlreadyFinished, match="already cancelled"):
            await eng.cancel(h.run_id)
        with pytest.raises(RunNotFound):
            await eng.cancel("no-such-run")
        history = await eng.history(h.run_id)
    assert isinstance(Replayer(reg).replay(history).error, asyncio.CancelledError)


async def test_cancel_interrupts_a_running_step(journal_url):
    clock = VirtualClock(T0, auto_advance=False)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(cancel_in_step)
        await wait_until(lambda: _running_step(h))
        await eng.cancel(h.run_id)
        with pytest.raises(RunCancelled):
            await h.result(timeout=5)
        [s] = await h.steps()
    assert calls["step_saw_cancel"] == 1
    assert s.status == "failed" and s.last_error is not None
    assert s.last_error.type == "asyncio.exceptions.CancelledError"


async def _running_step(h) -> bool:
    return [s.status for s in await h.steps()] == ["running"]


async def test_run_deadline_stops_an_over_long_run_with_a_typed_timeout(journal_url):
    clock = VirtualClock(T0)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(slow, timeout=3600)
        with pytest.raises(RunTimedOut) as info:
            await h.result(timeout=5)
        assert isinstance(info.value, RunFailed) and isinstance(info.value, TimeoutError)
        assert await h.status() == RunStatus.FAILED
        assert [s.step for s in await h.steps()] == ["cleanup"]
        with pytest.raises(ValueError, match="timeout"):
            await eng.start(slow, timeout=0)


# ---- child runs ----


async def test_child_run_has_its_own_history_and_returns_to_the_parent(journal_url):
    clock = VirtualClock(T0)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(parent, 5, run_id="p")
        assert await h.result(timeout=5) == "child said 105"
        child = await eng.get("p.1")
        assert child.workflow == "kid"
        assert await child.result(timeout=1) == 105
        child_history = await eng.history("p.1")
    assert child_history[0].parent_run_id == "p"
    assert [type(e).__name__ for e in child_history][-1] == "RunCompleted"


async def test_child_failure_reaches_the_parent_as_a_typed_error(journal_url):
    clock = VirtualClock(T0)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(parent, -1)
        assert await h.result(timeout=5) == "child failed: ValueError: negative: -1"


async def test_cancelling_a_parent_cancels_the_child_it_waits_for(journal_url):
    clock = VirtualClock(T0, auto_advance=False)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(parent_of_waiter, run_id="pw")
        await wait_until(lambda: _status(eng, "pw.1", RunStatus.SUSPENDED))
        await h.cancel()
        with pytest.raises(RunCancelled):
            await h.result(timeout=5)
        await wait_until(lambda: _status(eng, "pw.1", RunStatus.CANCELLED))


# ---- continue-as-new ----


async def test_continue_as_new_keeps_each_history_short_and_result_follows_the_chain(journal_url):
    clock = VirtualClock(T0)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(counter, 0, 4, run_id="loop")
        assert await h.result(timeout=5) == 4
        runs = {r.run_id: r.status for r in await eng.list_runs()}
        assert runs == {
            "loop": RunStatus.CONTINUED,
            "loop~2": RunStatus.CONTINUED,
            "loop~3": RunStatus.CONTINUED,
            "loop~4": RunStatus.CONTINUED,
            "loop~5": RunStatus.COMPLETED,
        }
        for run_id in runs:
            assert len(await eng.history(run_id)) <= 5
        nxt = await eng.history("loop~2")
    assert nxt[0].continued_from == "loop"


# ---- published values and statuses ----


async def test_get_event_reads_a_live_runs_published_value(journal_url):
    clock = VirtualClock(T0, auto_advance=False)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(publisher)
        assert await eng.get_event(h.run_id, "stage", timeout=5) == "charged"
        assert await h.status() != RunStatus.COMPLETED
        with pytest.raises(TimeoutError):
            await eng.get_event(h.run_id, "missing", timeout=0.05)
        await eng.signal(h.run_id, "finish", None)
        assert await h.result(timeout=5) == "ok"
        assert await eng.get_event(h.run_id, "stage") == "finished"
        with pytest.raises(KeyError, match="without setting 'missing'"):
            await eng.get_event(h.run_id, "missing")


# ---- bad input and refused constructs ----


async def test_negative_sleep_is_a_clear_error(journal_url):
    async with engine(journal_url, VirtualClock(T0)) as eng:
        h = await eng.start(bad_sleep)
        with pytest.raises(RunFailed) as info:
            await h.result(timeout=5)
    assert info.value.error_type == "ValueError"
    assert "non-negative" in info.value.message


async def test_asyncio_wait_with_a_timeout_is_refused_pointing_to_ctx(journal_url):
    async with engine(journal_url, VirtualClock(T0)) as eng:
        h = await eng.start(asyncio_timeout)
        with pytest.raises(RunFailed) as info:
            await h.result(timeout=5)
    assert info.value.error_type == "RuntimeError"
    assert "ctx.wait_first" in info.value.message and "ctx.sleep" in info.value.message


async def test_plain_asyncio_wait_over_steps_replays_deterministically(journal_url):
    async with engine(journal_url, VirtualClock(T0)) as eng:
        h = await eng.start(plain_wait)
        assert await h.result(timeout=5) == [0, 2, 4, 6]
        history = await eng.history(h.run_id)
    assert Replayer(reg).replay(history).result == [0, 2, 4, 6]


@workflow(registry=reg)
async def awaits_nothing_durable(ctx: Context) -> None:
    await asyncio.Queue().get()  # nothing recorded can ever resolve this


async def test_awaiting_something_not_durable_parks_the_run(journal_url):
    async with engine(journal_url, VirtualClock(T0)) as eng:
        h = await eng.start(awaits_nothing_durable)
        await wait_until(lambda: _status(eng, h.run_id, RunStatus.PARKED))
        rec = await h.record()
    assert rec.reason is not None and "not durable" in rec.reason


async def test_a_client_engine_on_the_same_virtual_clock_does_not_stop_time_skipping(journal_url):
    clock = VirtualClock(T0)
    make = journal_maker(journal_url)
    async with engine(make(), clock, worker=False) as client, engine(make(), clock):
        h = await client.start(month_sleep)
        assert (await h.result(timeout=5))["slept_days"] == 30


@workflow(registry=reg)
async def batcher(ctx: Context, seen: list[str]) -> list[str]:
    item = await ctx.wait_for_signal("item", type=str)
    seen = [*seen, item]
    if len(seen) < 4:
        ctx.continue_as_new(seen)
    return seen


async def test_signals_survive_continue_as_new(journal_url):
    # Signals sent in one burst reach a run that continues as new after each one:
    # those the old run held unconsumed are carried over, and those sent to an id
    # that has continued are delivered along the chain.
    clock = VirtualClock(T0, auto_advance=False)
    async with engine(journal_url, clock) as eng:
        h = await eng.start(batcher, [], run_id="b", delay=1)
        for item in ["a", "b"]:
            await eng.signal("b", "item", item)
        await clock.advance(1)
        await wait_until(lambda: _status(eng, "b", RunStatus.CONTINUED))
        for item in ["c", "d"]:
            await eng.signal("b", "item", item)  # "b" is over: follows the chain
        assert await h.result(timeout=5) == ["a", "b", "c", "d"]
        second = await eng.history("b~2")
    assert [bytes(s.payload) for s in second[0].carried_signals] == [b'"b"']
