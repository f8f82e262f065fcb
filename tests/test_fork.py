"""``engine.fork``: a new run reusing the outcomes before a point and running live after it.

Every journal. The steps append to ``calls`` when their body runs, so what a
fork recomputes and what it reuses is seen, not inferred.
"""

from __future__ import annotations

import pytest
from helpers import journal_state

from continuum_py import (
    Context,
    Engine,
    ForkPointNotFound,
    Registry,
    RetryPolicy,
    RunFailed,
    RunIdTaken,
    RunInFlight,
    RunNotFound,
    RunStatus,
    step,
    workflow,
)
from continuum_py.events import ChildCompleted, ChildStarted, RunStarted, StepScheduled

reg = Registry()
calls: list[str] = []
broken = {"flaky": False}


@pytest.fixture(autouse=True)
def _reset():
    calls.clear()
    broken["flaky"] = False


@step(name="fork_add")
async def add(label: str, n: int) -> int:
    calls.append(label)
    return n + 1


@step(name="fork_flaky", retry=RetryPolicy(max_attempts=1))
async def flaky(n: int) -> int:
    calls.append("flaky")
    if broken["flaky"]:
        raise ValueError("flaky is broken")
    return n * 10


@workflow(registry=reg, name="fork_pipeline")
async def pipeline(ctx: Context, start: int) -> int:
    a = await add("one", start)
    b = await add("two", a)
    c = await flaky(b)
    return await add("four", c)


@workflow(registry=reg, name="fork_child")
async def child(ctx: Context, n: int) -> int:
    return await add("child", n)


@workflow(registry=reg, name="fork_parent")
async def parent(ctx: Context) -> int:
    got = await child(1)
    return await add("after child", got)


@workflow(registry=reg, name="fork_flaky_child")
async def flaky_child(ctx: Context, n: int) -> int:
    return await flaky(n)


@workflow(registry=reg, name="fork_parent_of_flaky")
async def parent_of_flaky(ctx: Context) -> int:
    first = await add("first", 0)
    return await flaky_child(first)


@workflow(registry=reg, name="fork_waits")
async def waits(ctx: Context) -> int:
    n = await add("before wait", 0)
    got: int = await ctx.wait_for_signal("go")
    return await add("after wait", n + got)


def positions(history, name):
    return [e.position for e in history if isinstance(e, StepScheduled) and e.step == name]


async def finished(engine: Engine, run_id: str = "p") -> None:
    await (await engine.get(run_id)).result(timeout=10)


async def test_fork_at_a_position_reuses_what_came_before_and_runs_the_rest_live(journal_url):
    async with Engine(journal_url, registry=reg) as engine:
        handle = await engine.start(pipeline, 1, run_id="p")
        assert await handle.result(timeout=10) == 31  # ((1+1)+1)*10+1
        at = positions(await engine.history("p"), "fork_flaky")[0]
        calls.clear()
        fork = await engine.fork("p", at=at)
        assert fork.run_id == "p-fork-1"
        assert await fork.result(timeout=10) == 31
        assert calls == ["flaky", "four"]  # "one" and "two" came from history
        old, new = await engine.history("p"), await engine.history("p-fork-1")
        assert isinstance(new[0], RunStarted) and new[0].run_id == "p-fork-1"
        cut = next(i for i, e in enumerate(old) if getattr(e, "position", 0) >= at)
        assert new[1:cut] == old[1:cut]  # the events before the point, as recorded
        assert new[cut].at > old[-1].at  # from there on, recorded anew
        assert (await fork.record()).forked_from == "p"
        assert [r.run_id for r in await engine.forks("p")] == ["p-fork-1"]
        assert (await handle.record()).forked_from is None


async def test_fork_at_a_step_name_and_with_new_args(journal_url):
    async with Engine(journal_url, registry=reg) as engine:
        await finished_start(engine)
        calls.clear()
        fork = await engine.fork("p", step="fork_flaky", run_id="by-name")
        assert await fork.result(timeout=10) == 31
        assert calls == ["flaky", "four"]
        # New arguments: the first step's recorded outcome (for 1) is still what the
        # code gets, since it is before the point; the rest runs live.
        calls.clear()
        other = await engine.fork("p", at=positions(await engine.history("p"), "fork_add")[1],
                                  args=[5])  # fmt: skip
        assert await other.result(timeout=10) == 31
        assert calls == ["two", "flaky", "four"]
        assert [r.run_id for r in await engine.forks("p")] == ["by-name", "p-fork-2"]


async def finished_start(engine: Engine) -> None:
    handle = await engine.start(pipeline, 1, run_id="p")
    await handle.result(timeout=10)


async def test_fork_from_the_last_failure_after_a_fix(journal_url):
    async with Engine(journal_url, registry=reg) as engine:
        broken["flaky"] = True
        handle = await engine.start(pipeline, 1, run_id="p")
        with pytest.raises(RunFailed):
            await handle.result(timeout=10)
        assert calls == ["one", "two", "flaky"]
        broken["flaky"] = False  # the fix is deployed
        calls.clear()
        fork = await engine.fork("p", failed=True)
        assert await fork.result(timeout=10) == 31
        assert calls == ["flaky", "four"]
        assert await handle.status() == RunStatus.FAILED  # the old run stays as it was


async def test_fork_from_a_failed_child_starts_that_child_anew(journal_url):
    async with Engine(journal_url, registry=reg) as engine:
        broken["flaky"] = True
        handle = await engine.start(parent_of_flaky, run_id="p")
        with pytest.raises(RunFailed):
            await handle.result(timeout=10)
        broken["flaky"] = False
        calls.clear()
        fork = await engine.fork("p", failed=True)
        assert await fork.result(timeout=10) == 10
        assert calls == ["flaky"]  # "first" came from history; the child ran again, as the fork's
        (child_id,) = [e.child_run_id for e in await engine.history(fork.run_id)
                       if isinstance(e, ChildStarted)]  # fmt: skip
        assert child_id.startswith(f"{fork.run_id}.")
        assert await (await engine.get("p.2")).status() == RunStatus.FAILED


async def test_child_runs_before_the_point_are_reused_not_run_again(journal_url):
    async with Engine(journal_url, registry=reg) as engine:
        handle = await engine.start(parent, run_id="p")
        assert await handle.result(timeout=10) == 3
        history = await engine.history("p")
        at = positions(history, "fork_add")[0]
        calls.clear()
        fork = await engine.fork("p", at=at)
        assert await fork.result(timeout=10) == 3
        assert calls == ["after child"]  # the child's step did not run again
        new = await engine.history(fork.run_id)
        started = [e.child_run_id for e in new if isinstance(e, ChildStarted)]
        ended = [e.child_run_id for e in new if isinstance(e, ChildCompleted)]
        assert started == ended == ["p.1"]  # the same child run, not a new one
        assert len(await engine.list_runs(run_id_prefix=f"{fork.run_id}.")) == 0


async def test_points_not_in_the_history_are_refused_and_nothing_is_recorded(journal_url):
    async with Engine(journal_url, registry=reg) as engine:
        await finished_start(engine)
        before = await journal_state(engine)
        top = max(getattr(e, "position", 0) for e in await engine.history("p"))
        with pytest.raises(
            ForkPointNotFound, match=f"at position {top + 1}: it is beyond the history"
        ):
            await engine.fork("p", at=top + 1)
        with pytest.raises(ForkPointNotFound, match="no step of that name ran") as ei:
            await engine.fork("p", step="nope")
        assert "fork_add, fork_flaky" in str(ei.value) and ei.value.run_id == "p"
        with pytest.raises(
            ForkPointNotFound,
            match="its last failure: no step of it failed for good, no child run failed",
        ):
            await engine.fork("p", failed=True)
        with pytest.raises(ValueError, match="exactly one of"):
            await engine.fork("p", at=1, step="fork_add")
        with pytest.raises(ValueError, match="exactly one of"):
            await engine.fork("p")
        with pytest.raises(RunNotFound):
            await engine.fork("missing", at=1)
        with pytest.raises(RunIdTaken):
            await engine.fork("p", at=1, run_id="p")
        assert await journal_state(engine) == before


async def test_a_run_in_flight_is_forked_only_with_force(journal_url):
    async with Engine(journal_url, registry=reg) as engine:
        handle = await engine.start(waits, run_id="w")
        await _until_suspended(engine, "w")
        before = await journal_state(engine)
        with pytest.raises(RunInFlight, match="force=True"):
            await engine.fork("w", step="fork_add")
        assert await journal_state(engine) == before
        calls.clear()
        fork = await engine.fork("w", at=positions(await engine.history("w"), "fork_add")[0] + 1,
                                 force=True)  # fmt: skip
        await _until_suspended(engine, fork.run_id)
        assert calls == []  # "before wait" came from history
        await engine.signal(fork.run_id, "go", 2)
        assert await fork.result(timeout=10) == 4  # (0 + 1) + 2, + 1
        assert calls == ["after wait"]
        assert await handle.status() == RunStatus.SUSPENDED  # the old one still waits


async def _until_suspended(engine: Engine, run_id: str) -> None:
    from helpers import wait_until

    async def suspended() -> bool:
        return (await (await engine.get(run_id)).status()) == RunStatus.SUSPENDED

    await wait_until(suspended, timeout=10)
