"""Interceptors wrap every step attempt and see every run start and end, live only. Every journal."""

from __future__ import annotations

import datetime as dt

import pytest
from helpers import journal_maker, wait_until

from continuum_py import (
    ConfigurationError,
    Context,
    Engine,
    Interceptor,
    Registry,
    RetryPolicy,
    RunFailed,
    RunStatus,
    StepInfo,
    step,
    workflow,
)
from continuum_py.testing import VirtualClock

reg = Registry()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
flaky_failures: dict[str, int] = {}


@step(retry=RetryPolicy(max_attempts=3, initial_interval=0.0, jitter=0.0))
async def flaky(key: str) -> str:
    left = flaky_failures.get(key, 0)
    if left:
        flaky_failures[key] = left - 1
        raise ValueError(f"not yet ({left})")
    return f"ok {key}"


@step
async def plain(x: int) -> int:
    return x + 1


@workflow(registry=reg)
async def two_steps(ctx: Context) -> str:
    n = await plain(1)
    return await flaky(f"k{n}")


@workflow(registry=reg)
async def step_sleep_step(ctx: Context) -> int:
    a = await plain(1)
    await ctx.sleep(3600)
    return await plain(a)


class Recorder(Interceptor):
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    async def step(self, info: StepInfo, attempt):
        self.seen.append(f"{self.name}>{info.step}#{info.attempt}@{info.position}")
        try:
            value = await attempt()
        except Exception as exc:
            self.seen.append(f"{self.name}<{info.step} raised {type(exc).__name__}")
            raise
        self.seen.append(f"{self.name}<{info.step} returned {value!r}")
        return value

    async def run_started(self, run_id: str, workflow: str) -> None:
        self.seen.append(f"{self.name} started {run_id} {workflow}")

    async def run_ended(self, run_id: str, workflow: str, status: RunStatus) -> None:
        self.seen.append(f"{self.name} ended {run_id} {status.value}")


def _engine(journal, **kw) -> Engine:
    return Engine(journal=journal, registry=reg, worker_id="w1", clock=VirtualClock(T0), **kw)


@pytest.fixture(autouse=True)
def _reset():
    flaky_failures.clear()


async def test_every_attempt_is_seen_once_in_order_outermost_first(journal_url):
    seen: list[str] = []
    flaky_failures["k2"] = 2
    icpts = [Recorder("a", seen), Recorder("b", seen)]
    async with _engine(journal_maker(journal_url)(), interceptors=icpts) as eng:
        h = await eng.start(two_steps, run_id="r")
        assert await h.result(timeout=10) == "ok k2"
    assert seen == [
        "a started r two_steps",
        "b started r two_steps",
        "a>plain#1@1",
        "b>plain#1@1",
        "b<plain returned 2",
        "a<plain returned 2",
        *[
            line
            for n in (1, 2)
            for line in (
                f"a>flaky#{n}@2",
                f"b>flaky#{n}@2",
                "b<flaky raised ValueError",
                "a<flaky raised ValueError",
            )
        ],
        "a>flaky#3@2",
        "b>flaky#3@2",
        "b<flaky returned 'ok k2'",
        "a<flaky returned 'ok k2'",
        "a ended r completed",
        "b ended r completed",
    ]


async def test_a_resumed_run_replays_without_calling_interceptors(journal_url):
    make = journal_maker(journal_url)
    clock = VirtualClock(T0, auto_advance=False)
    first: list[str] = []
    async with Engine(
        journal=make(),
        registry=reg,
        worker_id="w1",
        clock=clock,
        interceptors=[Recorder("x", first)],
    ) as eng:
        await eng.start(step_sleep_step, run_id="s")

        async def suspended() -> bool:
            return (await eng.journal.get_run("s")).status == RunStatus.SUSPENDED

        await wait_until(suspended)
    assert first == ["x started s step_sleep_step", "x>plain#1@1", "x<plain returned 2"]
    second: list[str] = []
    async with Engine(
        journal=make(),
        registry=reg,
        worker_id="w2",
        clock=VirtualClock(T0 + dt.timedelta(days=1)),
        interceptors=[Recorder("y", second)],
    ) as eng:
        assert await (await eng.get("s")).result(timeout=10) == 3
    # The first step is replayed, not run: only the new attempt and the end are seen.
    assert second == ["y>plain#1@3", "y<plain returned 3", "y ended s completed"]


class Refuses(Interceptor):
    async def step(self, info, attempt):
        raise PermissionError(f"audit refused {info.step}")

    async def run_ended(self, run_id, workflow, status):
        raise RuntimeError("a broken hook is logged, not fatal")


async def test_an_interceptor_raising_fails_the_attempt_and_a_broken_hook_is_ignored(journal_url):
    async with _engine(journal_maker(journal_url)(), interceptors=[Refuses()]) as eng:
        h = await eng.start(two_steps, run_id="refused")
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
        assert ei.value.error_type == "PermissionError"
        assert "audit refused plain" in ei.value.message
        assert await h.status() == RunStatus.FAILED


@pytest.mark.parametrize("bad", [[object()], "not a list", 3, [Interceptor, Recorder]])
def test_interceptors_must_be_interceptor_instances(bad):
    with pytest.raises(ConfigurationError, match="interceptors"):
        Engine("memory://", registry=reg, interceptors=bad)
