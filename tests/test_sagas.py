"""Sagas: @step(compensate=...) undoes completed steps when a run fails or is cancelled. Every journal."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from helpers import journal_maker, wait_until

from continuum_py import (
    ChildRunFailed,
    ConfigurationError,
    Context,
    Engine,
    Interceptor,
    Registry,
    RetryPolicy,
    RunCancelled,
    RunFailed,
    RunTimedOut,
    StepError,
    StepInfo,
    step,
    workflow,
)
from continuum_py.events import (
    CompensationStarted,
    RunFailedEvent,
    StepCompleted,
    StepFailed,
    StepScheduled,
)
from continuum_py.testing import VirtualClock

reg = Registry()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NO_RETRY = RetryPolicy(max_attempts=1)
log: list[str] = []
gates: dict[str, asyncio.Event] = {}
undo_failures: dict[str, int] = {}


def gate(name: str) -> asyncio.Event:
    return gates.setdefault(name, asyncio.Event())


@pytest.fixture(autouse=True)
def _fresh():
    fixed.clear()
    log.clear()
    gates.clear()
    undo_failures.clear()


# ---- steps and their compensations ----


@step(retry=RetryPolicy(max_attempts=3, initial_interval=0.0, jitter=0.0))
async def undo(result: str, name: str) -> None:
    left = undo_failures.get(name, 0)
    if left:
        undo_failures[name] = left - 1
        log.append(f"undo {name} fails")
        raise RuntimeError(f"cannot undo {name}")
    if name in gates:
        log.append(f"undo {name} waits")
        await gate(name).wait()
    log.append(f"undo {name} got {result}")


@step(compensate=undo)
async def do(name: str) -> str:
    if f"{name}-after" in gates:
        await gate(f"{name}-after").wait()
    log.append(f"do {name}")
    return f"{name}-result"


@step
async def plain(name: str) -> str:
    log.append(f"plain {name}")
    return name


fixed: set[str] = set()


@step(retry=NO_RETRY)
async def boom(name: str) -> str:
    log.append(f"boom {name}")
    if name in fixed:
        return f"{name} fixed"
    raise ValueError(f"{name} went wrong")


@step
async def hold(name: str) -> None:
    log.append(f"hold {name}")
    await gate(name).wait()


# ---- workflows ----


@workflow(registry=reg)
async def three_then_fail(ctx: Context) -> str:
    await do("a")
    await plain("p")
    await do("b")
    await do("c")
    await boom("x")
    return "unreachable"


@workflow(registry=reg)
async def gathered_then_fail(ctx: Context) -> str:
    # b completes before a (a waits for b's gate): reverse completion order undoes a first.
    await asyncio.gather(do("a"), do("b"))
    await boom("x")
    return "unreachable"


@workflow(registry=reg)
async def sibling_in_flight(ctx: Context) -> str:
    await do("a")
    await asyncio.gather(boom("x"), do("slow"))
    return "unreachable"


@workflow(registry=reg)
async def waits_after_steps(ctx: Context) -> str:
    await do("a")
    await do("b")
    await hold("h")
    return "done"


@workflow(registry=reg)
async def sleeps_after_steps(ctx: Context) -> str:
    await do("a")
    await ctx.sleep(3600)
    return "done"


@workflow(registry=reg)
async def catches_and_goes_on(ctx: Context) -> list[str]:
    await do("a")
    await do("b")
    seen = []
    try:
        await boom("x")
    except Exception:
        outcomes = await ctx.compensate()
        seen = [f"{o.compensated_step}@{o.compensates}:{o.ok}" for o in outcomes]
    await do("c")
    again = await ctx.compensate()
    return [*seen, f"again {len(again)}"]


@workflow(registry=reg)
async def compensates_then_fails(ctx: Context) -> str:
    await do("a")
    await ctx.compensate()
    await do("b")
    await boom("x")
    return "unreachable"


@workflow(registry=reg)
async def child_saga(ctx: Context) -> str:
    await do("child")
    await boom("in child")
    return "unreachable"


@workflow(registry=reg)
async def parent_of_saga(ctx: Context) -> str:
    await do("parent")
    try:
        await child_saga()
    except ChildRunFailed:
        return "child failed"
    return "unreachable"


@workflow(registry=reg)
async def no_compensation(ctx: Context) -> str:
    await plain("p")
    await boom("x")
    return "unreachable"


def engine(url: str, **kw) -> Engine:
    kw.setdefault("clock", VirtualClock(start=T0))
    return Engine(url, registry=reg, **kw)


def kinds(history) -> list[str]:
    return [type(e).__name__ for e in history]


# ---- failure ----


async def test_a_failure_undoes_completed_steps_newest_first(journal_url):
    async with engine(journal_url) as e:
        h = await e.start(three_then_fail)
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
        history = await e.history(h.run_id)
    # The original error, the failed step never compensated, the others newest first,
    # each receiving its step's result and arguments.
    assert ei.value.error_type == "ValueError"
    assert "x went wrong" in ei.value.message
    assert log[-3:] == ["undo c got c-result", "undo b got b-result", "undo a got a-result"]
    assert [(o.compensated_step, o.compensates, o.step, o.ok) for o in ei.value.compensations] == [
        ("do", 4, "undo", True),
        ("do", 3, "undo", True),
        ("do", 1, "undo", True),
    ]
    # The decision follows the failure at once, then the compensations are steps.
    failed = next(i for i, ev in enumerate(history) if isinstance(ev, StepFailed))
    decision = history[failed + 1]
    assert isinstance(decision, CompensationStarted)
    assert decision.reason == "failed"
    assert decision.error is not None
    assert decision.error.type == "ValueError"
    undone = [ev.compensates for ev in history if isinstance(ev, StepScheduled) and ev.compensates]
    assert undone == [4, 3, 1]
    end = history[-1]
    assert isinstance(end, RunFailedEvent)
    assert end.compensations == ei.value.compensations


async def test_a_run_with_nothing_to_undo_records_no_decision(journal_url):
    async with engine(journal_url) as e:
        h = await e.start(no_compensation)
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
        assert ei.value.compensations == []
        assert "CompensationStarted" not in kinds(await e.history(h.run_id))


async def test_gathered_steps_are_undone_in_reverse_completion_order(journal_url):
    gate("a-after")  # a waits until b has completed

    async def let_a_finish() -> None:
        await wait_until(lambda: _async("do b" in log))
        gate("a-after").set()

    async with engine(journal_url) as e:
        opener = asyncio.create_task(let_a_finish())
        h = await e.start(gathered_then_fail)
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
        await opener
        history = await e.history(h.run_id)
    completed = [ev.position for ev in history if isinstance(ev, StepCompleted)]
    assert completed[:2] == [2, 1]  # b (position 2) completed first
    assert [o.compensates for o in ei.value.compensations] == [1, 2]
    assert log[-2:] == ["undo a got a-result", "undo b got b-result"]


async def test_a_gathered_sibling_still_running_is_waited_for_and_undone(journal_url):
    gate("slow-after")

    async def finish_slow_after_failure() -> None:
        await wait_until(lambda: _async("boom x" in log))
        await asyncio.sleep(0.05)
        gate("slow-after").set()

    async with engine(journal_url) as e:
        opener = asyncio.create_task(finish_slow_after_failure())
        h = await e.start(sibling_in_flight)
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
        await opener
    assert [(o.compensates, o.ok) for o in ei.value.compensations] == [(3, True), (1, True)]
    assert log[-2:] == ["undo slow got slow-result", "undo a got a-result"]


async def test_a_compensation_that_fails_for_good_is_reported_and_the_rest_still_run(journal_url):
    undo_failures["b"] = 99  # more than its 3 attempts
    async with engine(journal_url) as e:
        h = await e.start(three_then_fail)
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
        steps = await h.steps()
    assert ei.value.error_type == "ValueError"  # still the original error
    outcomes = {o.compensates: o for o in ei.value.compensations}
    assert [o.compensates for o in ei.value.compensations] == [4, 3, 1]
    assert outcomes[4].ok and outcomes[1].ok
    assert not outcomes[3].ok
    assert outcomes[3].error is not None
    assert "cannot undo b" in outcomes[3].error.message
    assert log.count("undo b fails") == 3
    assert "undo a got a-result" in log
    failed_undo = next(s for s in steps if s.compensates == 3)
    assert (failed_undo.step, failed_undo.status, failed_undo.attempts) == ("undo", "failed", 3)


async def test_a_compensation_is_retried_under_its_own_policy(journal_url):
    undo_failures["c"] = 2
    async with engine(journal_url) as e:
        h = await e.start(three_then_fail)
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
        steps = await h.steps()
    assert all(o.ok for o in ei.value.compensations)
    assert next(s for s in steps if s.compensates == 4).attempts == 3


# ---- cancel and deadline ----


async def test_a_cancel_undoes_completed_steps_and_the_run_ends_cancelled(journal_url):
    gate("h")
    async with engine(journal_url) as e:
        h = await e.start(waits_after_steps)
        await wait_until(lambda: _async("hold h" in log))
        await e.cancel(h.run_id)
        with pytest.raises(RunCancelled) as ei:
            await h.result(timeout=10)
        history = await e.history(h.run_id)
    assert [o.compensates for o in ei.value.compensations] == [2, 1]
    assert all(o.ok for o in ei.value.compensations)
    # After the cancel (and the step it interrupted, recorded as cancelled): the decision.
    assert kinds(history)[6:9] == ["CancelRequested", "StepFailed", "CompensationStarted"]
    decision = history[8]
    assert isinstance(decision, CompensationStarted)
    assert decision.reason == "cancelled"


async def test_a_cancel_during_compensation_does_not_interrupt_it(journal_url):
    gate("c")  # undoing c waits
    async with engine(journal_url) as e:
        h = await e.start(three_then_fail)
        await wait_until(lambda: _async("undo c waits" in log))
        await e.cancel(h.run_id)
        await e.cancel(h.run_id)
        await asyncio.sleep(0.3)  # the cancels have been seen by now (inbox watch: 0.2 s)
        assert "undo c got c-result" not in log
        gate("c").set()
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
        history = await e.history(h.run_id)
    # Every compensation ran to its end; the run keeps its original failure.
    assert ei.value.error_type == "ValueError"
    assert [(o.compensates, o.ok) for o in ei.value.compensations] == [
        (4, True),
        (3, True),
        (1, True),
    ]
    assert "CancelRequested" in kinds(history)


async def test_a_deadline_undoes_completed_steps(journal_url):
    async with engine(journal_url) as e:
        h = await e.start(sleeps_after_steps, timeout=60)
        with pytest.raises(RunTimedOut) as ei:
            await h.result(timeout=10)
        history = await e.history(h.run_id)
    assert [(o.compensates, o.ok) for o in ei.value.compensations] == [(1, True)]
    decision = next(ev for ev in history if isinstance(ev, CompensationStarted))
    assert decision.reason == "timed_out"


# ---- ctx.compensate() ----


async def test_ctx_compensate_undoes_now_and_forgets(journal_url):
    async with engine(journal_url) as e:
        h = await e.start(catches_and_goes_on)
        assert await h.result(timeout=10) == ["do@2:True", "do@1:True", "again 1"]
        history = await e.history(h.run_id)
    assert log == [
        "do a",
        "do b",
        "boom x",
        "undo b got b-result",
        "undo a got a-result",
        "do c",
        "undo c got c-result",
    ]
    reasons = [ev.reason for ev in history if isinstance(ev, CompensationStarted)]
    assert reasons == ["requested", "requested"]


async def test_after_ctx_compensate_a_failure_undoes_only_later_steps(journal_url):
    async with engine(journal_url) as e:
        h = await e.start(compensates_then_fails)
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
    assert log.count("undo a got a-result") == 1
    assert [o.compensates for o in ei.value.compensations] == [1, 4]  # a (earlier call), then b


@workflow(registry=reg)
async def returns_what_cannot_be_recorded(ctx: Context) -> object:
    await do("a")
    return object()


async def test_a_result_that_cannot_be_recorded_fails_the_run_and_undoes_its_steps(journal_url):
    async with engine(journal_url) as e:
        h = await e.start(returns_what_cannot_be_recorded)
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
    assert ei.value.error_type == "continuum_py.errors.EncodingError"
    assert [(o.compensates, o.ok) for o in ei.value.compensations] == [(1, True)]


# ---- children ----


async def test_a_child_runs_its_own_compensations_not_the_parents(journal_url):
    async with engine(journal_url) as e:
        h = await e.start(parent_of_saga)
        assert await h.result(timeout=10) == "child failed"
        child = await e.get(f"{h.run_id}.2")
        with pytest.raises(RunFailed) as ei:
            await child.result(timeout=10)
    assert [o.compensates for o in ei.value.compensations] == [1]
    assert "undo child got child-result" in log
    assert "undo parent got parent-result" not in log


# ---- forking a failed saga ----


@workflow(registry=reg)
async def raises_after_steps(ctx: Context) -> str:
    await do("a")
    if "raise" not in fixed:
        raise RuntimeError("the workflow itself gave up")
    return "went on"


async def test_a_fork_from_the_failure_starts_before_it_not_at_a_failed_compensation(journal_url):
    undo_failures["b"] = 99  # a compensation fails for good too: it is not "the failure"
    async with engine(journal_url) as e:
        h = await e.start(three_then_fail)
        with pytest.raises(RunFailed):
            await h.result(timeout=10)
        fixed.add("x")
        log.clear()
        fork = await e.fork(h.run_id, failed=True)
        assert await fork.result(timeout=10) == "unreachable"
        history = await e.history(fork.run_id)
    # Outcomes before the failed step are reused; the failed step runs again, live.
    assert log == ["boom x"]
    assert "CompensationStarted" not in kinds(history)
    scheduled = [(ev.position, ev.step) for ev in history if isinstance(ev, StepScheduled)]
    assert scheduled == [(1, "do"), (2, "plain"), (3, "do"), (4, "do"), (5, "boom")]


async def test_a_fork_of_a_run_that_raised_starts_before_its_compensations(journal_url):
    async with engine(journal_url) as e:
        h = await e.start(raises_after_steps)
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
        assert [o.compensates for o in ei.value.compensations] == [1]
        fixed.add("raise")
        fork = await e.fork(h.run_id, failed=True)
        assert await fork.result(timeout=10) == "went on"
        history = await e.history(fork.run_id)
    assert "CompensationStarted" not in kinds(history)
    assert log.count("do a") == 1  # reused, not run again
    assert log.count("undo a got a-result") == 1  # only the original run's


# ---- resuming ----


async def test_a_restart_mid_compensation_reruns_only_the_one_in_flight(journal_url, tmp_path):
    gate("b")
    make = journal_maker(journal_url)
    first = Engine(journal=make(), registry=reg, clock=VirtualClock(start=T0), worker_id="w1")
    async with first:
        h = await first.start(three_then_fail)
        await wait_until(lambda: _async("undo b waits" in log))
    assert log.count("undo c got c-result") == 1
    gates.clear()
    async with Engine(
        journal=make(), registry=reg, clock=VirtualClock(start=T0), worker_id="w1"
    ) as again:
        with pytest.raises(RunFailed) as ei:
            await (await again.get(h.run_id)).result(timeout=10)
        steps = await (await again.get(h.run_id)).steps()
    assert log.count("undo c got c-result") == 1  # recorded: not run again
    assert log.count("undo b got b-result") == 1
    assert log.count("undo a got a-result") == 1
    assert [o.compensates for o in ei.value.compensations] == [4, 3, 1]
    assert next(s for s in steps if s.compensates == 3).attempts == 2


async def test_compensations_replay_from_a_snapshot(journal_url):
    async with engine(journal_url, snapshot_every=3) as e:
        h = await e.start(three_then_fail)
        with pytest.raises(RunFailed):
            await h.result(timeout=10)
        # A replay of the finished run (from its history) makes the same calls.
        from continuum_py.testing import Replayer

        history = await e.history(h.run_id)
        result = Replayer(registry=reg).replay(history)
    assert result.finished
    assert isinstance(result.error, StepError)
    assert sum(isinstance(ev, CompensationStarted) for ev in history) == 1


# ---- the decision rides in the same append as its cause ----


class Batches:
    """Wraps a journal and keeps the kinds of every appended batch."""

    def __init__(self, journal) -> None:
        self._journal = journal
        self.batches: list[list[str]] = []

    def __getattr__(self, name):
        return getattr(self._journal, name)

    async def append(self, batches):
        self.batches += [[ev.kind for ev in b.events] for b in batches]
        return await self._journal.append(batches)


async def test_the_decision_is_appended_with_the_failure(journal_url):
    j = Batches(journal_maker(journal_url)())
    async with Engine(journal=j, registry=reg, clock=VirtualClock(start=T0)) as e:
        h = await e.start(three_then_fail)
        with pytest.raises(RunFailed):
            await h.result(timeout=10)
    together = [b for b in j.batches if "CompensationStarted" in b]
    assert len(together) == 1
    assert "StepFailed" in together[0]


async def test_the_decision_is_appended_with_the_cancel(journal_url):
    gate("h")
    j = Batches(journal_maker(journal_url)())
    async with Engine(journal=j, registry=reg, clock=VirtualClock(start=T0)) as e:
        h = await e.start(waits_after_steps)
        await wait_until(lambda: _async("hold h" in log))
        await e.cancel(h.run_id)
        with pytest.raises(RunCancelled):
            await h.result(timeout=10)
    together = [b for b in j.batches if "CompensationStarted" in b]
    assert len(together) == 1
    assert "CancelRequested" in together[0]


# ---- interceptors and bad input ----


class Seen(Interceptor):
    def __init__(self) -> None:
        self.attempts: list[tuple[str, int, int]] = []

    async def step(self, info: StepInfo, attempt):
        self.attempts.append((info.step, info.position, info.attempt))
        return await attempt()


async def test_interceptors_see_every_compensation_attempt_once(journal_url):
    undo_failures["b"] = 1
    seen = Seen()
    async with engine(journal_url, interceptors=[seen]) as e:
        h = await e.start(three_then_fail)
        with pytest.raises(RunFailed):
            await h.result(timeout=10)
    assert seen.attempts == [
        ("do", 1, 1),
        ("plain", 2, 1),
        ("do", 3, 1),
        ("do", 4, 1),
        ("boom", 5, 1),
        ("undo", 7, 1),
        ("undo", 8, 1),
        ("undo", 8, 2),
        ("undo", 9, 1),
    ]


def test_a_compensation_must_be_a_step():
    async def not_a_step(result: str) -> None: ...

    with pytest.raises(ConfigurationError, match="compensate must be a step"):

        @step(compensate=not_a_step)  # type: ignore[arg-type]
        async def s() -> str:
            return ""


async def _async(value):
    return value
