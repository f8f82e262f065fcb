"""Plans: a DAG of branches applied, rolled back and cleaned up, on every journal.

Each hook appends to ``log``, so the tests check what ran and in what order,
not only what ``handle.result()`` says.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from helpers import wait_until

from continuum_py import (
    ChildRunFailed,
    Context,
    Engine,
    Plan,
    PlanFailed,
    PlanState,
    Registry,
    Retry,
    RetryPolicy,
    RunCancelled,
    RunStatus,
    RunTimedOut,
    workflow,
)
from continuum_py._replay import ReplayCore
from continuum_py.testing import VirtualClock

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
log: list[str] = []


@pytest.fixture(autouse=True)
def _clear_log():
    log.clear()


def applies(name: str, *, fails: int = 0, result: object = None):
    """An apply hook that logs ``apply:name`` and fails its first ``fails`` attempts."""
    left = [fails]

    async def apply(state: PlanState) -> object:
        log.append(f"apply:{name}")
        if left[0]:
            left[0] -= 1
            raise RuntimeError(f"{name} broke")
        return result if result is not None else f"{name}-ok"

    return apply


def logs(what: str, name: str, *, fails: bool = False):
    async def hook(state: PlanState) -> None:
        log.append(f"{what}:{name}")
        if fails:
            raise RuntimeError(f"{what} of {name} broke")

    return hook


def diamond(reg: Registry, *, fail: str | None = None, **opts) -> Plan:
    """net -> (db, cache) -> app, each with a rollback and a cleanup."""
    plan = Plan("diamond", registry=reg, **opts)
    for name, after in [("net", []), ("db", ["net"]), ("cache", ["net"]), ("app", ["db", "cache"])]:
        plan.add(
            name,
            applies(name, fails=99 if name == fail else 0),
            after=after,
            rollback=logs("rollback", name),
            cleanup=logs("cleanup", name),
        )
    return plan


def engine(url: str, reg: Registry, clock: VirtualClock | None = None) -> Engine:
    return Engine(url, registry=reg, clock=clock or VirtualClock(T0))


async def tasks_left(eng: Engine, reg: Registry, run_id: str) -> list[object]:
    """The plan's tasks still unfinished once its whole history is replayed: none, or a leak."""
    history = await eng.history(run_id)
    core = ReplayCore(run_id, reg)
    try:
        core.index(history)
        for ev in history:
            core.apply(ev)
        assert core.finished
        return [t for t in core.loop.tasks if not t.done()]
    finally:
        core.close()


async def test_a_plan_applies_every_branch_after_its_dependencies(journal_url):
    reg = Registry()
    plan = diamond(reg)
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        out = await h.result(timeout=10)
        statuses = {b.branch: (b.status, b.attempts) for b in await h.branches()}
    assert out == {"net": "net-ok", "db": "db-ok", "cache": "cache-ok", "app": "app-ok"}
    applied = [e for e in log if e.startswith("apply:")]
    assert applied[0] == "apply:net" and applied[-1] == "apply:app"
    # Cleanup runs once the plan is over, last applied first; nothing is rolled back.
    cleanups = [e for e in log if e.startswith("cleanup:")]
    assert cleanups == [f"cleanup:{e[6:]}" for e in reversed(applied)]
    assert not [e for e in log if e.startswith("rollback")]
    assert statuses == {n: ("applied", 1) for n in ("net", "db", "cache", "app")}


async def test_state_writes_reach_later_hooks_and_results_carry_typed_values(journal_url):
    reg = Registry()
    seen: list[object] = []

    async def network(state: PlanState) -> dict[str, str]:
        state["cidr"] = "10.0.0.0/16"
        return {"id": "net-1"}

    async def db(state: PlanState) -> int:
        seen.append((state.input, state["cidr"], state.results["network"], state.get("nope", 7)))
        return 5432

    plan = Plan("stateful", registry=reg)
    plan.add("network", network)
    plan.add("db", db, after=["network"])
    async with engine(journal_url, reg) as eng:
        out = await (await eng.start(plan, "eu-1", 3)).result(timeout=10)
    assert out == {"network": {"id": "net-1"}, "db": 5432}
    assert seen == [(("eu-1", 3), "10.0.0.0/16", {"id": "net-1"}, 7)]


async def test_a_failure_rolls_back_applied_branches_in_reverse_dependency_order(journal_url):
    reg = Registry()
    plan = diamond(reg, fail="app")
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        with pytest.raises(PlanFailed) as info:
            await h.result(timeout=10)
        statuses = {b.branch: b.status for b in await h.branches()}
    err = info.value
    assert list(err.failures) == ["app"] and err.failures["app"].message == "app broke"
    assert err.failures["app"].type == "RuntimeError"
    assert set(err.rolled_back) == {"net", "db", "cache"} and err.rolled_back[-1] == "net"
    assert err.rollback_errors == {} and err.skipped == []
    rollbacks = [e for e in log if e.startswith("rollback:")]
    assert rollbacks[-1] == "rollback:net" and len(rollbacks) == 3
    # The failed branch is not rolled back; cleanup still runs for the applied ones.
    assert sorted(e for e in log if e.startswith("cleanup:")) == [
        "cleanup:cache",
        "cleanup:db",
        "cleanup:net",
    ]
    assert statuses == {
        "net": "rolled_back",
        "db": "rolled_back",
        "cache": "rolled_back",
        "app": "failed",
    }
    assert "branch 'app' failed (RuntimeError: app broke)" in str(err)


async def test_a_failure_starts_nothing_new_and_skips_the_rest(journal_url):
    reg = Registry()
    plan = diamond(reg, fail="net")
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        with pytest.raises(PlanFailed) as info:
            await h.result(timeout=10)
        statuses = {b.branch: b.status for b in await h.branches()}
    assert info.value.skipped == ["db", "cache", "app"] and info.value.rolled_back == []
    assert log == ["apply:net"]
    assert statuses == {"net": "failed", "db": "skipped", "cache": "skipped", "app": "skipped"}


async def test_a_retry_reruns_only_the_hook_that_failed_and_stops_on_success(journal_url):
    reg = Registry()
    plan = Plan("retrying", registry=reg)
    plan.add(
        "db",
        applies("db", fails=2),
        pre=logs("pre", "db"),
        post=logs("post", "db"),
        retry=RetryPolicy(max_attempts=5, initial_interval=1, jitter=0),
    )
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        assert await h.result(timeout=10) == {"db": "db-ok"}
        [status] = await h.branches()
    assert log == ["pre:db", "apply:db", "apply:db", "apply:db", "post:db"]
    assert status.status == "applied" and status.attempts == 5  # 1 pre + 3 apply + 1 post


async def test_on_error_retries_after_a_durable_timer_then_gives_up(journal_url):
    reg = Registry()
    calls: list[tuple[str, int]] = []

    def on_error(state: PlanState, exc: Exception, attempt: int) -> Retry | None:
        calls.append((type(exc).__name__, attempt))
        return Retry(after=3600) if attempt < 3 else None

    clock = VirtualClock(T0)
    plan = Plan("patient", registry=reg)
    plan.add("db", applies("db", fails=99), on_error=on_error)
    async with engine(journal_url, reg, clock) as eng:
        h = await eng.start(plan)
        with pytest.raises(PlanFailed):
            await h.result(timeout=10)
    assert log == ["apply:db"] * 3
    # on_error is workflow code: a replay after each durable wait calls it again.
    assert sorted(set(calls)) == [("StepError", 1), ("StepError", 2), ("StepError", 3)]
    assert clock.now() >= T0.timestamp() + 2 * 3600  # two durable waits, no real sleeping


async def test_on_error_retry_can_succeed(journal_url):
    reg = Registry()
    plan = Plan("second-try", registry=reg)
    plan.add("db", applies("db", fails=1), on_error=lambda s, e, a: Retry(after=10))
    async with engine(journal_url, reg) as eng:
        assert await (await eng.start(plan)).result(timeout=10) == {"db": "db-ok"}
    assert log == ["apply:db", "apply:db"]


async def test_continue_on_error_runs_every_branch_not_downstream_of_a_failure(journal_url):
    reg = Registry()
    plan = Plan("best-effort", continue_on_error=True, registry=reg)
    plan.add("a", applies("a", fails=99), rollback=logs("rollback", "a"))
    plan.add("b", applies("b"), after=["a"], rollback=logs("rollback", "b"))
    plan.add("c", applies("c"), rollback=logs("rollback", "c"), cleanup=logs("cleanup", "c"))
    plan.add("d", applies("d"), after=["c"], rollback=logs("rollback", "d"))
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        with pytest.raises(PlanFailed) as info:
            await h.result(timeout=10)
    assert sorted(log) == ["apply:a", "apply:c", "apply:d", "cleanup:c"]
    assert list(info.value.failures) == ["a"] and info.value.skipped == ["b"]
    assert info.value.rolled_back == []  # the branches applied stay applied


async def test_a_rollback_error_is_reported_and_the_other_rollbacks_still_run(journal_url):
    reg = Registry()
    plan = Plan("stubborn", registry=reg)
    plan.add("net", applies("net"), rollback=logs("rollback", "net"))
    plan.add("db", applies("db"), after=["net"], rollback=logs("rollback", "db", fails=True))
    plan.add("app", applies("app", fails=99), after=["db"])
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        with pytest.raises(PlanFailed) as info:
            await h.result(timeout=10)
        statuses = {b.branch: (b.status, b.rollback_error) for b in await h.branches()}
    assert log == ["apply:net", "apply:db", "apply:app", "rollback:db", "rollback:net"]
    assert info.value.rolled_back == ["net"]
    assert info.value.rollback_errors["db"].message == "rollback of db broke"
    assert statuses["db"] == ("applied", "RuntimeError: rollback of db broke")
    assert statuses["net"] == ("rolled_back", None)


async def test_a_cleanup_error_is_reported(journal_url):
    reg = Registry()
    plan = Plan("messy", registry=reg)
    plan.add("a", applies("a"), cleanup=logs("cleanup", "a", fails=True))
    plan.add("b", applies("b"), after=["a"], cleanup=logs("cleanup", "b"))
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        with pytest.raises(PlanFailed) as info:
            await h.result(timeout=10)
    assert log == ["apply:a", "apply:b", "cleanup:b", "cleanup:a"]
    assert info.value.failures == {} and list(info.value.cleanup_errors) == ["a"]


async def test_a_branch_whose_post_failed_is_rolled_back_but_not_cleaned_up(journal_url):
    reg = Registry()
    plan = Plan("smoke", registry=reg)
    plan.add(
        "app",
        applies("app"),
        post=logs("post", "app", fails=True),
        rollback=logs("rollback", "app"),
        cleanup=logs("cleanup", "app"),
    )
    async with engine(journal_url, reg) as eng:
        with pytest.raises(PlanFailed) as info:
            await (await eng.start(plan)).result(timeout=10)
    assert log == ["apply:app", "post:app", "rollback:app"]
    assert info.value.rolled_back == ["app"]


async def test_a_pause_holds_the_dependents_on_a_durable_timer(journal_url):
    reg = Registry()
    clock = VirtualClock(T0)
    seen: dict[str, float] = {}

    def stamp(name: str):
        async def apply(state: PlanState) -> str:
            seen[name] = clock.now()
            return name

        return apply

    plan = Plan("paused", registry=reg)
    plan.add("db", stamp("db"))
    plan.add("app", stamp("app"), after=["db"])
    plan.add("other", stamp("other"))
    plan.pause("db", 600)
    async with engine(journal_url, reg, clock) as eng:
        await (await eng.start(plan)).result(timeout=10)
    assert seen["app"] - seen["db"] >= 600
    assert seen["other"] - seen["db"] < 600


async def test_a_plan_awaited_as_a_child_run(journal_url):
    reg = Registry()
    plan = diamond(reg)
    failing = diamond(Registry(), fail="db")
    failing.name = "diamond-failing"
    reg.add(failing)

    @workflow(registry=reg)
    async def parent(ctx: Context) -> object:
        out = await plan()
        try:
            await failing()
        except ChildRunFailed as exc:
            return [sorted(out), exc.error_type]
        return "no failure"

    async with engine(journal_url, reg) as eng:
        out = await (await eng.start(parent)).result(timeout=10)
    assert out == [["app", "cache", "db", "net"], "continuum_py.errors.PlanFailed"]


async def test_a_plan_cancelled_mid_apply_rolls_back_and_cleans_up(journal_url):
    reg = Registry()
    started = asyncio.Event()

    async def slow(state: PlanState) -> str:
        log.append("apply:slow")
        started.set()
        await asyncio.sleep(30)
        return "never"

    plan = Plan("cancellable", registry=reg)
    plan.add(
        "net", applies("net"), rollback=logs("rollback", "net"), cleanup=logs("cleanup", "net")
    )
    plan.add("slow", slow, after=["net"], rollback=logs("rollback", "slow"))
    plan.add("after", applies("after"), after=["slow"])
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        await started.wait()
        await h.cancel()
        with pytest.raises(RunCancelled):
            await h.result(timeout=10)
        statuses = {b.branch: b.status for b in await h.branches()}
        assert await h.status() == RunStatus.CANCELLED
        assert await tasks_left(eng, reg, h.run_id) == []
    assert log == ["apply:net", "apply:slow", "rollback:net", "cleanup:net"]
    assert statuses == {"net": "rolled_back", "slow": "failed", "after": "skipped"}


async def test_a_plan_timing_out_mid_rollback_finishes_its_rollback_and_cleanup(journal_url):
    reg = Registry()
    clock = VirtualClock(T0)

    def slow_rollback(name: str):
        async def rollback(state: PlanState) -> None:
            log.append(f"rollback:{name}")
            await clock.advance(120)  # 2 virtual minutes each: the timeout passes here

        return rollback

    plan = Plan("slow-undo", timeout=100, registry=reg)
    plan.add("a", applies("a"), rollback=slow_rollback("a"), cleanup=logs("cleanup", "a"))
    plan.add("b", applies("b"), after=["a"], rollback=slow_rollback("b"))
    plan.add("c", applies("c", fails=99), after=["b"])
    async with engine(journal_url, reg, clock) as eng:
        h = await eng.start(plan)
        with pytest.raises(PlanFailed) as info:
            await h.result(timeout=10)
        assert await tasks_left(eng, reg, h.run_id) == []
    err = info.value
    assert isinstance(err, TimeoutError) and type(err).__name__ == "PlanTimedOut"
    assert err.rolled_back == ["b", "a"] and list(err.failures) == ["c"]
    assert log == ["apply:a", "apply:b", "apply:c", "rollback:b", "rollback:a", "cleanup:a"]
    assert "passed its timeout of 100s" in str(err)


async def test_a_timeout_mid_apply_stops_the_plan_with_plan_timed_out(journal_url):
    reg = Registry()
    plan = Plan("slowpoke", timeout=60, registry=reg)
    plan.add("a", applies("a"), rollback=logs("rollback", "a"))
    plan.add("b", applies("b", fails=99), after=["a"], on_error=lambda s, e, n: Retry(after=3600))
    plan.add("c", applies("c"), after=["b"])
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        with pytest.raises(PlanFailed) as info:
            await h.result(timeout=10)
        statuses = {b.branch: b.status for b in await h.branches()}
        assert await tasks_left(eng, reg, h.run_id) == []
    assert type(info.value).__name__ == "PlanTimedOut"
    assert log == ["apply:a", "apply:b", "rollback:a"]
    assert info.value.skipped == ["c"]
    assert statuses == {"a": "rolled_back", "b": "failed", "c": "skipped"}


async def test_branches_shows_progress_while_the_plan_runs(journal_url):
    reg = Registry()
    gate = asyncio.Event()
    running = asyncio.Event()

    async def held(state: PlanState) -> str:
        running.set()
        await gate.wait()
        return "done"

    plan = Plan("watched", registry=reg)
    plan.add("a", applies("a"))
    plan.add("b", held, after=["a"])
    plan.add("c", applies("c"), after=["b"])
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        await running.wait()
        during = {b.branch: b.status for b in await h.branches()}
        gate.set()
        await h.result(timeout=10)
        after = {b.branch: b.status for b in await h.branches()}
    assert during == {"a": "applied", "b": "applying", "c": "pending"}
    assert after == {"a": "applied", "b": "applied", "c": "applied"}


async def test_a_plan_resumes_after_a_restart_with_the_same_state(tmp_path):
    url = f"sqlite:///{tmp_path}/plans.db"
    reg = Registry()
    seen: list[object] = []

    async def first(state: PlanState) -> int:
        state["token"] = "t-1"
        return 1

    async def second(state: PlanState) -> int:
        seen.append(state["token"])
        return 2

    plan = Plan("restartable", registry=reg)
    plan.add("first", first)
    plan.add("second", second, after=["first"])
    plan.pause("first", 3600)
    clock = VirtualClock(T0, auto_advance=False)
    async with engine(url, reg, clock) as eng:
        h = await eng.start(plan, run_id="p-1")
        await wait_until(lambda: _suspended(h))
    await clock.advance(3600)
    async with engine(url, reg, clock) as eng:
        out = await (await eng.get("p-1")).result(timeout=10)
    assert out == {"first": 1, "second": 2} and seen == ["t-1"]


async def _suspended(h) -> bool:
    return await h.status() == RunStatus.SUSPENDED


def interrupted_once(what: str, reached: asyncio.Event):
    """A hook that hangs on its first run (until the run's cancel interrupts it)."""

    async def hook(state: PlanState) -> None:
        log.append(what)
        reached.set()
        if log.count(what) == 1:
            await asyncio.sleep(30)

    return hook


async def test_a_cancel_during_rollback_neither_cuts_it_short_nor_changes_the_outcome(journal_url):
    reg = Registry()
    reached = asyncio.Event()
    plan = Plan("undoing", registry=reg)
    plan.add("a", applies("a"), rollback=interrupted_once("rollback:a", reached))
    plan.add("b", applies("b", fails=99), after=["a"])
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        await reached.wait()
        await h.cancel()
        with pytest.raises(PlanFailed) as info:
            await h.result(timeout=10)
    # The cancel interrupted the rollback running alone; it ran again, to its end.
    assert log == ["apply:a", "apply:b", "rollback:a", "rollback:a"]
    assert info.value.rolled_back == ["a"] and list(info.value.failures) == ["b"]


async def test_a_cancel_during_cleanup_after_success_keeps_the_result(journal_url):
    reg = Registry()
    reached = asyncio.Event()
    plan = Plan("tidying", registry=reg)
    plan.add("a", applies("a"), cleanup=interrupted_once("cleanup:a", reached))
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        await reached.wait()
        await h.cancel()
        assert await h.result(timeout=10) == {"a": "a-ok"}
        assert await h.status() == RunStatus.COMPLETED
    assert log == ["apply:a", "cleanup:a", "cleanup:a"]


async def test_a_run_deadline_interrupts_the_plan_which_still_rolls_back_and_cleans_up(journal_url):
    reg = Registry()
    plan = Plan("hard-limit", registry=reg)
    plan.add("a", applies("a"), rollback=logs("rollback", "a"), cleanup=logs("cleanup", "a"))
    plan.add("b", applies("b", fails=99), after=["a"], on_error=lambda s, e, n: Retry(after=3600))
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan, timeout=60)
        with pytest.raises(RunTimedOut):
            await h.result(timeout=10)
        statuses = {b.branch: b.status for b in await h.branches()}
        assert await tasks_left(eng, reg, h.run_id) == []
    assert log == ["apply:a", "apply:b", "rollback:a", "cleanup:a"]
    assert statuses == {"a": "rolled_back", "b": "failed"}


async def test_a_plan_done_before_its_timeout_leaves_no_timer_or_task_behind(journal_url):
    reg = Registry()
    plan = Plan("prompt", timeout=3600, registry=reg)
    plan.add("a", applies("a"), cleanup=logs("cleanup", "a"))
    async with engine(journal_url, reg) as eng:
        h = await eng.start(plan)
        assert await h.result(timeout=10) == {"a": "a-ok"}
        assert await tasks_left(eng, reg, h.run_id) == []
    assert log == ["apply:a", "cleanup:a"]
