"""How steps and runs end when things go wrong at the edges. Every journal.

- A step that loses a race, or is left running when the run ends, is recorded as cancelled.
- A timed-out attempt is a failed attempt, even if the body swallowed the cancellation.
- A workflow started by name with arguments that do not fit fails once, saying so.
- Steps and child runs started with ``asyncio.create_task`` and never awaited are reported.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from helpers import journal_maker

from continuum_py import (
    Context,
    Engine,
    Registry,
    RetryPolicy,
    RunFailed,
    RunStatus,
    step,
    workflow,
)
from continuum_py.events import RunFailedEvent, StepCompleted, StepFailed
from continuum_py.testing import Replayer

reg = Registry()
bodies: list[str] = []


@pytest.fixture(autouse=True)
def _reset():
    bodies.clear()


@step
async def quick(x: int) -> int:
    return x


@step
async def slow(tag: str) -> str:
    bodies.append(f"slow {tag} started")
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        bodies.append(f"slow {tag} cancelled")
        raise
    return tag


@step(timeout=0.05, retry=RetryPolicy(max_attempts=2, initial_interval=0.001))
async def swallows_its_timeout() -> str:
    bodies.append("attempt")
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        return "pretended to finish"
    return "finished"


@workflow(registry=reg)
async def race_a_slow_step(ctx: Context) -> int:
    _, v = await ctx.wait_first(quick(7), slow("loser"))
    return v


@workflow(registry=reg)
async def leave_it_running(ctx: Context) -> int:
    _, v = await ctx.wait_first(quick(1), slow("kept"), cancel_rest=False)
    return v


@workflow(registry=reg)
async def timed_out(ctx: Context) -> str:
    return await swallows_its_timeout()


@workflow(registry=reg)
async def two_args(ctx: Context, a: int, b: int) -> int:
    return a + b


@workflow(registry=reg)
async def kid(ctx: Context) -> int:
    return await quick(5)


@workflow(registry=reg)
async def forgets_its_tasks(ctx: Context) -> str:
    forgotten = [asyncio.ensure_future(slow("forgotten")), asyncio.ensure_future(kid())]
    assert len(forgotten) == 2  # started, never awaited
    return "returned"


def _engine(journal, **kw) -> Engine:
    return Engine(journal=journal, registry=reg, worker_id="w1", **kw)


async def _steps_after(journal_url, wf, *args):
    async with _engine(journal_maker(journal_url)()) as eng:
        h = await eng.start(wf, *args)
        try:
            result = await h.result(timeout=10)
        except RunFailed as exc:
            result = exc
        return result, await h.steps(), await eng.history(h.run_id)


@pytest.mark.parametrize("wf", [race_a_slow_step, leave_it_running])
async def test_a_step_the_run_no_longer_waits_for_is_recorded_as_cancelled(journal_url, wf):
    result, steps, history = await _steps_after(journal_url, wf)
    assert result in (7, 1)
    by_name = {s.step: s for s in steps}
    loser = by_name["slow"]
    assert loser.status == "failed" and loser.finished_at is not None
    assert loser.last_error.type == "asyncio.exceptions.CancelledError"
    assert by_name["quick"].status == "completed"
    assert Replayer(reg).replay(history).result == result


async def test_a_timed_out_attempt_fails_even_if_the_body_swallows_the_cancel(journal_url):
    result, [s], history = await _steps_after(journal_url, timed_out)
    assert isinstance(result, RunFailed) and result.error_type == "TimeoutError"
    assert "timeout of 0.05s" in result.message
    assert s.status == "failed" and s.attempts == 2
    assert not any(isinstance(e, StepCompleted) for e in history)
    assert [e.final for e in history if isinstance(e, StepFailed)] == [False, True]
    assert bodies == ["attempt", "attempt"]


async def test_a_start_by_name_with_arguments_that_do_not_fit_fails_once(journal_url, caplog):
    make = journal_maker(journal_url)
    # A client without the workflow's code cannot check the arguments.
    async with Engine(journal=make(), registry=Registry(), worker=False) as client:
        await client.start("two_args", 1, 2, 3, run_id="bad-args")
    with caplog.at_level(logging.ERROR, logger="continuum_py"):
        async with _engine(make()) as eng:
            h = await eng.get("bad-args")
            with pytest.raises(RunFailed) as ei:
                await h.result(timeout=10)
            assert await h.status() == RunStatus.FAILED
            history = await eng.history("bad-args")
    assert ei.value.error_type == "TypeError"
    assert "cannot start with the arguments it was given ([1,2,3])" in ei.value.message
    assert "positional argument" in ei.value.message
    assert "determinis" not in ei.value.message.lower()
    assert not [r for r in caplog.records if "driver_crashed" in r.getMessage()]
    assert sum(isinstance(e, RunFailedEvent) for e in history) == 1


async def test_work_never_awaited_is_reported_and_its_step_recorded_cancelled(journal_url, caplog):
    with caplog.at_level(logging.WARNING, logger="continuum_py"):
        result, _, history = await _steps_after(journal_url, forgets_its_tasks)
    assert result == "returned"
    [warning] = [r for r in caplog.records if "run.unawaited_work" in r.getMessage()]
    text = warning.getMessage()
    assert "StepScheduled(slow)" in text and "ChildStarted(kid)" in text
    assert Replayer(reg).replay(history).result == "returned"
