"""End-to-end behaviour of Engine on every journal."""

from __future__ import annotations

import asyncio

import pytest

from continuum_py import (
    Context,
    Engine,
    Registry,
    RetryPolicy,
    RunFailed,
    RunStatus,
    StepInfo,
    step,
    workflow,
)
from continuum_py.events import RunCompleted, RunStarted, StepCompleted, StepFailed, StepScheduled

reg = Registry()
calls: list[tuple[str, int]] = []


@step
async def add(a: int, b: int) -> int:
    calls.append(("add", a))
    return a + b


@step
async def slow_then_fast(i: int, delay: float) -> int:
    await asyncio.sleep(delay)
    return i


@workflow(registry=reg)
async def summing(ctx: Context, n: int) -> dict[str, int]:
    total = 0
    for i in range(n):
        total = await add(total, i)
    return {"total": total}


@workflow(registry=reg)
async def fanout(ctx: Context, n: int) -> list[int]:
    # Later steps finish first live; results still come back in call order.
    return list(await asyncio.gather(*(slow_then_fast(i, 0.01 * (n - i)) for i in range(n))))


@pytest.fixture
async def engine(journal_url):
    async with Engine(journal_url, registry=reg, worker_id="t1") as e:
        yield e


async def test_sequential_workflow_completes_and_records_each_step_once(engine):
    h = await engine.start(summing, 5, run_id="sum-5")
    assert await h.result(timeout=10) == {"total": 10}
    assert await h.status() == RunStatus.COMPLETED
    hist = await engine.history("sum-5")
    assert isinstance(hist[0], RunStarted) and isinstance(hist[-1], RunCompleted)
    done = [e for e in hist if isinstance(e, StepCompleted)]
    assert [e.position for e in done] == [1, 2, 3, 4, 5]
    assert [e.seq for e in hist] == list(range(1, len(hist) + 1))


async def test_starting_an_existing_run_id_returns_that_run(engine):
    h1 = await engine.start(summing, 3, run_id="same")
    h2 = await engine.start(summing, 99, run_id="same")
    assert h2.run_id == h1.run_id
    assert await h2.result(timeout=10) == {"total": 3}
    runs = await engine.list_runs()
    assert [r.run_id for r in runs].count("same") == 1


async def test_gather_returns_results_in_call_order(engine):
    h = await engine.start(fanout, 4)
    assert await h.result(timeout=10) == [0, 1, 2, 3]
    hist = await engine.history(h.run_id)
    scheduled = [e.position for e in hist if isinstance(e, StepScheduled)]
    assert scheduled == [1, 2, 3, 4]
    completed = [e.position for e in hist if isinstance(e, StepCompleted)]
    assert sorted(completed) == [1, 2, 3, 4]


async def test_step_outside_a_workflow_is_a_plain_coroutine():
    calls.clear()
    assert await add(2, 3) == 5
    assert calls == [("add", 2)]


flaky_state: dict[str, int] = {}


class Declined(Exception):
    pass


@step(retry=RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=0))
async def flaky(key: str, fail_times: int) -> str:
    n = flaky_state.get(key, 0) + 1
    flaky_state[key] = n
    info = StepInfo.current()
    assert info is not None and info.attempt == n
    if n <= fail_times:
        raise Declined(f"attempt {n} declined")
    return f"ok after {n}"


@workflow(registry=reg)
async def retrying(ctx: Context, key: str, fail_times: int) -> str:
    return await flaky(key, fail_times)


async def test_retries_stop_at_first_success(engine):
    flaky_state.clear()
    h = await engine.start(retrying, "k1", 2)
    assert await h.result(timeout=10) == "ok after 3"
    assert flaky_state["k1"] == 3
    failed = [e for e in await engine.history(h.run_id) if isinstance(e, StepFailed)]
    assert [(e.attempt, e.final) for e in failed] == [(1, False), (2, False)]


async def test_step_failing_for_good_fails_the_run_with_type_message_traceback(engine):
    flaky_state.clear()
    h = await engine.start(retrying, "k2", 10)
    with pytest.raises(RunFailed) as ei:
        await h.result(timeout=10)
    assert ei.value.error_type.endswith("Declined")
    assert "attempt 3 declined" in ei.value.message
    assert "raise Declined" in ei.value.traceback_text
    assert flaky_state["k2"] == 3
    assert await h.status() == RunStatus.FAILED


@step(retry=RetryPolicy(max_attempts=5, initial_interval=0.001, non_retryable=(ValueError,)))
async def bad_value() -> int:
    flaky_state["bad"] = flaky_state.get("bad", 0) + 1
    raise ValueError("never retry me")


@workflow(registry=reg)
async def non_retryable(ctx: Context) -> int:
    return await bad_value()


async def test_non_retryable_error_fails_at_once(engine):
    flaky_state.clear()
    h = await engine.start(non_retryable)
    with pytest.raises(RunFailed) as ei:
        await h.result(timeout=10)
    assert ei.value.error_type == "ValueError"
    assert flaky_state["bad"] == 1


@step(retry=RetryPolicy(max_attempts=2, initial_interval=0.001), timeout=0.05)
async def hangs() -> int:
    await asyncio.sleep(10)
    return 1


@workflow(registry=reg)
async def timing_out(ctx: Context) -> int:
    return await hangs()


async def test_step_timeout_counts_as_a_failed_attempt(engine):
    h = await engine.start(timing_out)
    with pytest.raises(RunFailed) as ei:
        await h.result(timeout=10)
    assert ei.value.error_type == "TimeoutError"
    assert "timeout of 0.05s" in ei.value.message
    failed = [e for e in await engine.history(h.run_id) if isinstance(e, StepFailed)]
    assert [e.attempt for e in failed] == [1, 2]


@workflow(registry=reg)
async def catches(ctx: Context) -> str:
    try:
        await bad_value()
    except Exception as exc:  # StepError
        return f"caught {type(exc).__name__}: {exc.error_type}"  # type: ignore[attr-defined]
    return "no"


async def test_workflow_can_catch_a_failed_step(engine):
    h = await engine.start(catches)
    assert await h.result(timeout=10) == "caught StepError: ValueError"


async def test_get_and_list_runs(engine):
    h = await engine.start(summing, 2, run_id="g1")
    await h.result(timeout=10)
    h2 = await engine.get("g1")
    assert await h2.result(timeout=1) == {"total": 1}
    assert [r.run_id for r in await engine.list_runs(status="completed")] == ["g1"]


@step(retry=RetryPolicy(max_attempts=1), timeout=30)
async def raises_its_own_timeout() -> int:
    raise TimeoutError("upstream API timed out")


@workflow(registry=reg)
async def own_timeout(ctx: Context) -> int:
    return await raises_its_own_timeout()


async def test_a_timeout_the_step_raises_itself_is_not_blamed_on_the_step_timeout(engine):
    h = await engine.start(own_timeout)
    with pytest.raises(RunFailed) as ei:
        await h.result(timeout=10)
    assert ei.value.error_type == "TimeoutError"
    assert "upstream API timed out" in ei.value.message
    assert "longer than its timeout" not in ei.value.message


@step
async def where_am_i() -> list[object]:
    info = StepInfo.current()
    assert info is not None
    return [info.position, info.seq, info.idempotency_key]


@workflow(registry=reg)
async def asks_then_steps(ctx: Context) -> list[object]:
    ctx.now()  # call-order position 1, history seq 2
    return await where_am_i()


async def test_step_info_position_is_the_call_order_position_and_seq_its_older_name(engine):
    h = await engine.start(asks_then_steps, run_id="where")
    position, seq, key = await h.result(timeout=10)
    scheduled = [e for e in await engine.history("where") if isinstance(e, StepScheduled)]
    assert [(e.position, e.seq) for e in scheduled] == [(2, 3)]
    assert (position, seq, key) == (2, 2, "where:2")
