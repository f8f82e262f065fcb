"""The replay core on its own: hand-built events in, step calls out; no journal, clock or I/O."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import msgspec
import pytest
from helpers import journal_maker, wait_until

from continuum_py import (
    Context,
    Engine,
    NonDeterminismError,
    Registry,
    RunFailed,
    RunStatus,
    StepError,
    step,
    workflow,
)
from continuum_py._replay import ReplayCore
from continuum_py.events import (
    ErrorInfo,
    RunCompleted,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
)

reg = Registry()


@step
async def charge(cents: int) -> str:
    return f"charged {cents}"


@step
async def refund(cents: int) -> str:
    return f"refunded {cents}"


@step
async def part(name: str) -> str:
    return name


@workflow(registry=reg)
async def pay(ctx: Context, cents: int) -> list[str]:
    first = await charge(cents)
    second = await part(first)
    return [first, second]


@workflow(registry=reg)
async def fan(ctx: Context, n: int) -> list[str]:
    got = await asyncio.gather(*(part(f"p{i}") for i in range(n)))
    tail = await part("after")
    return [*got, tail]


@workflow(registry=reg)
async def two_chains(ctx: Context) -> list[str]:
    async def x() -> str:
        return await part("C after " + await part("A"))

    async def y() -> str:
        return await part("D after " + await part("B"))

    return list(await asyncio.gather(x(), y()))


@workflow(registry=reg)
async def sleeper(ctx: Context) -> str:
    await asyncio.sleep(5)
    return "woke"


# ---- hand-built history ----


class History:
    """Numbers events as they are added, like a journal would."""

    def __init__(self, run_id: str = "r1") -> None:
        self.run_id = run_id
        self.events: list[Any] = []

    def _seq(self) -> int:
        return len(self.events) + 1

    def started(self, wf: str, *args: Any) -> RunStarted:
        return self._add(
            RunStarted(
                seq=self._seq(),
                run_id=self.run_id,
                workflow=wf,
                args=msgspec.Raw(msgspec.json.encode(list(args))),
            )
        )

    def raw_started(self, wf: str, raw_args: bytes) -> RunStarted:
        return self._add(
            RunStarted(seq=self._seq(), run_id=self.run_id, workflow=wf, args=msgspec.Raw(raw_args))
        )

    def scheduled(self, position: int, name: str, *args: Any, attempt: int = 1) -> StepScheduled:
        return self._add(
            StepScheduled(
                seq=self._seq(),
                position=position,
                step=name,
                attempt=attempt,
                args=msgspec.Raw(msgspec.json.encode(list(args))),
            )
        )

    def completed(self, position: int, name: str, result: Any, attempt: int = 1) -> StepCompleted:
        return self._add(
            StepCompleted(
                seq=self._seq(),
                position=position,
                step=name,
                attempt=attempt,
                result=msgspec.Raw(msgspec.json.encode(result)),
            )
        )

    def failed(self, position: int, name: str, *, attempt: int = 1, final: bool) -> StepFailed:
        return self._add(
            StepFailed(
                seq=self._seq(),
                position=position,
                step=name,
                attempt=attempt,
                error=ErrorInfo(type="Declined", message=f"attempt {attempt}"),
                final=final,
            )
        )

    def run_completed(self, result: Any) -> RunCompleted:
        return self._add(
            RunCompleted(seq=self._seq(), result=msgspec.Raw(msgspec.json.encode(result)))
        )

    def _add(self, ev: Any) -> Any:
        self.events.append(ev)
        return ev


_cores: list[ReplayCore] = []


def core_for(run_id: str = "r1") -> ReplayCore:
    core = ReplayCore(run_id, reg)
    _cores.append(core)
    return core


def calls(core: ReplayCore) -> list[tuple[int, str, tuple[Any, ...]]]:
    return [(c.position, c.step.name, c.args) for c in core.new_calls()]


def replay(events: list[Any]) -> ReplayCore:
    core = core_for(events[0].run_id)
    for ev in events:
        core.apply(ev)
    return core


@pytest.fixture(autouse=True)
def _close_cores():
    # Close every core a test made, dropping its suspended workflow coroutines.
    yield
    while _cores:
        _cores.pop().close()


# ---- positions ----


def test_each_step_call_takes_the_next_position():
    h = History()
    core = core_for()
    core.apply(h.started("pay", 500))
    assert calls(core) == [(1, "charge", (500,))]
    assert core.pending_steps() == []

    core.apply(h.scheduled(1, "charge", 500))
    assert calls(core) == []
    assert [c.position for c in core.pending_steps()] == [1]

    core.apply(h.completed(1, "charge", "charged 500"))
    assert calls(core) == [(2, "part", ("charged 500",))]
    assert core.pending_steps() == []
    assert not core.finished

    core.apply(h.scheduled(2, "part", "charged 500"))
    core.apply(h.completed(2, "part", "charged 500"))
    assert core.finished
    assert core.outcome() == (True, ["charged 500", "charged 500"])
    core.apply(h.run_completed(["charged 500", "charged 500"]))
    assert core.last_seq == 6


def test_gather_takes_positions_in_call_order():
    h = History()
    core = core_for()
    core.apply(h.started("fan", 4))
    assert calls(core) == [(i + 1, "part", (f"p{i}",)) for i in range(4)]


@pytest.mark.parametrize("order", list(itertools.permutations((1, 2, 3))))
def test_completion_order_of_a_gather_does_not_change_results_or_later_positions(order):
    h = History()
    h.started("fan", 3)
    for p in (1, 2, 3):
        h.scheduled(p, "part", f"p{p - 1}")
    for p in order:
        h.completed(p, "part", f"p{p - 1}")
    core = replay(h.events)
    # Whatever order the three finished in, the gather returns in call order and
    # the next call takes position 4.
    assert calls(core) == [(4, "part", ("after",))]
    core.apply(h.scheduled(4, "part", "after"))
    core.apply(h.completed(4, "part", "after"))
    assert core.outcome() == (True, ["p0", "p1", "p2", "after"])


def _chains_history(first: str) -> list[Any]:
    """Live: A and B in a gather; whichever finished first asked for its follower first."""
    h = History()
    h.started("two_chains")
    h.scheduled(1, "part", "A")
    h.scheduled(2, "part", "B")
    if first == "B":
        h.completed(2, "part", "B")
        h.scheduled(3, "part", "D after B")
        h.completed(1, "part", "A")
        h.scheduled(4, "part", "C after A")
        follow = {"D after B": 3, "C after A": 4}
    else:
        h.completed(1, "part", "A")
        h.scheduled(3, "part", "C after A")
        h.completed(2, "part", "B")
        h.scheduled(4, "part", "D after B")
        follow = {"C after A": 3, "D after B": 4}
    for name, position in sorted(follow.items(), key=lambda kv: kv[1]):
        h.completed(position, "part", name)
    h.run_completed(["C after A", "D after B"])
    return h.events


@pytest.mark.parametrize("first", ["A", "B"])
def test_positions_that_depend_on_which_step_finished_first_replay_as_recorded(first):
    events = _chains_history(first)
    core = replay(events)  # no NonDeterminismError: each follower is where history has it
    asked = {c.args[0]: c.position for c in core.calls.values()}
    recorded = {
        msgspec.json.decode(e.args)[0]: e.position for e in events if isinstance(e, StepScheduled)
    }
    assert asked == recorded
    assert asked["D after B" if first == "B" else "C after A"] == 3
    assert core.outcome() == (True, ["C after A", "D after B"])


def test_replaying_the_same_history_twice_asks_for_the_same_calls():
    events = _chains_history("B")[:-3]  # followers scheduled, not finished
    first, second = replay(events), replay(events)

    def asked(core: ReplayCore) -> list[tuple[Any, ...]]:
        return [(c.position, c.step.name, c.args, c.done) for c in core.calls.values()]

    assert asked(first) == asked(second)
    assert [c.position for c in first.pending_steps()] == [3, 4]


def test_a_final_step_failure_reaches_the_workflow_as_step_error():
    h = History()
    h.started("pay", 5)
    h.scheduled(1, "charge", 5)
    h.failed(1, "charge", attempt=1, final=False)
    h.scheduled(1, "charge", 5, attempt=2)
    h.failed(1, "charge", attempt=2, final=True)
    core = replay(h.events)
    ok, exc = core.outcome()
    assert not ok and isinstance(exc, StepError)
    assert (exc.step, exc.position, exc.attempts, exc.error_type) == ("charge", 1, 2, "Declined")


# ---- NonDeterminismError ----


def test_history_has_another_step_at_this_position():
    h = History("order-o-1")
    h.started("pay", 500)
    h.scheduled(1, "charge", 500)
    h.completed(1, "charge", "charged 500")
    h.scheduled(2, "charge", 500)  # the code asks for `part` at position 2
    with pytest.raises(NonDeterminismError) as ei:
        replay(h.events)
    err = ei.value
    assert (err.run_id, err.position) == ("order-o-1", 2)
    assert err.recorded == "StepScheduled(charge)"
    assert err.requested == "StepScheduled(part)"
    msg = str(err)
    assert "run order-o-1" in msg and "position 2" in msg
    assert "history has StepScheduled(charge)" in msg
    assert "code asked for StepScheduled(part)" in msg


def test_history_has_a_step_the_code_never_asks_for():
    h = History()
    h.started("pay", 1)
    h.scheduled(1, "charge", 1)
    h.completed(1, "charge", "c")
    h.scheduled(2, "part", "c")
    h.completed(2, "part", "c")
    h.scheduled(3, "refund", 1)  # the code returned after position 2
    with pytest.raises(NonDeterminismError) as ei:
        replay(h.events)
    assert ei.value.position == 3
    assert "history has StepScheduled(refund)" in str(ei.value)
    assert "the workflow has returned" in str(ei.value)


def test_history_has_an_outcome_for_a_step_never_scheduled():
    h = History()
    h.started("pay", 1)
    h.completed(1, "charge", "c")  # no StepScheduled(charge) before it
    with pytest.raises(NonDeterminismError) as ei:
        replay(h.events)
    assert ei.value.position == 1
    assert "StepCompleted(charge)" in str(ei.value)


def test_history_ends_the_run_while_the_code_still_waits():
    h = History()
    h.started("fan", 2)
    h.scheduled(1, "part", "p0")
    h.scheduled(2, "part", "p1")
    h.completed(1, "part", "p0")
    h.run_completed(["p0"])
    with pytest.raises(NonDeterminismError) as ei:
        replay(h.events)
    msg = str(ei.value)
    assert "history has RunCompleted" in msg
    assert "still waiting on StepScheduled(part)" in msg


def test_history_says_completed_where_the_code_failed():
    h = History()
    h.started("pay", 5)
    h.scheduled(1, "charge", 5)
    h.failed(1, "charge", final=True)
    h.run_completed("fine")
    with pytest.raises(NonDeterminismError) as ei:
        replay(h.events)
    assert "history has RunCompleted, code asked for RunFailed" in str(ei.value)


def test_arguments_of_the_wrong_type_for_the_workflow():
    h = History()
    h.raw_started("pay", b'["five hundred"]')  # pay takes an int
    with pytest.raises(NonDeterminismError) as ei:
        replay(h.events)
    err = ei.value
    assert err.position == 0
    assert "RunStarted(pay)" in err.recorded and "five hundred" in err.recorded
    assert "arguments that fit the workflow's signature" in err.requested
    assert "position 0" in str(err)


# ---- what workflow code must not do ----


def _says_what_to_use_instead(msg: str) -> bool:
    # ctx.sleep once durable timers exist; until then, waiting inside a step.
    return "ctx.sleep" in msg or "Wait inside a step" in msg


def test_asyncio_sleep_in_a_workflow_fails_it_saying_what_to_use_instead():
    h = History()
    core = core_for()
    core.apply(h.started("sleeper"))
    assert core.finished and core.new_calls() == []
    ok, exc = core.outcome()
    assert not ok and isinstance(exc, RuntimeError)
    assert "asyncio.sleep" in str(exc) and "not replayable" in str(exc)
    assert _says_what_to_use_instead(str(exc))


async def test_asyncio_sleep_in_a_workflow_fails_the_run_on_an_engine():
    async with Engine("memory://", registry=reg, worker_id="w") as engine:
        h = await engine.start(sleeper)
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
    assert ei.value.error_type == "RuntimeError"
    assert "asyncio.sleep" in ei.value.message
    assert _says_what_to_use_instead(ei.value.message)


# ---- a run that strays from its history is parked, then resumed by fixed code ----


def _checkout(registry: Registry, first: Any, blocker: asyncio.Event | None) -> None:
    @step(name="ship")
    async def ship(receipt: str) -> str:
        if blocker is not None:
            await blocker.wait()
        return f"shipped {receipt}"

    @workflow(name="checkout", registry=registry)
    async def checkout(ctx: Context, cents: int) -> list[str]:
        receipt = await first(cents)
        return [receipt, await ship(receipt)]


async def test_non_deterministic_run_is_parked_untouched_then_fixed_code_completes_it(
    journal_url,
):
    make = journal_maker(journal_url)
    original, live = Registry(), Registry()
    _checkout(original, charge, asyncio.Event())  # `ship` never finishes on this worker

    async with Engine(journal=make(), registry=original, worker_id="w1") as engine:
        await engine.start("checkout", 500, run_id="order-o-1")

        async def shipping():
            hist = await engine.history("order-o-1")
            return any(isinstance(e, StepScheduled) and e.step == "ship" for e in hist)

        await wait_until(shipping)
        before = await engine.history("order-o-1")

    # A deploy that calls refund where history has charge.
    _checkout(live, refund, None)
    async with Engine(journal=make(), registry=live, worker_id="w2", poll_interval=0.05) as engine:
        h = await engine.get("order-o-1")

        async def parked():
            rec = await h.record()
            return rec if rec.status == RunStatus.PARKED else None

        rec = await wait_until(parked)
        assert rec.reason.startswith("NonDeterminismError")
        assert "run order-o-1 position 1" in rec.reason
        assert "history has StepScheduled(charge)" in rec.reason
        assert "code asked for StepScheduled(refund)" in rec.reason
        assert rec.lease_owner is None
        assert await engine.history("order-o-1") == before
        await asyncio.sleep(0.15)  # a few polls: a parked run is not picked up again
        assert (await h.status()) == RunStatus.PARKED
        assert await engine.history("order-o-1") == before

        # Fixed code replaces the workflow under the same name; resume picks it up.
        _checkout(live, charge, None)
        await engine.resume("order-o-1")
        assert await h.result(timeout=10) == ["charged 500", "shipped charged 500"]
        after = await engine.history("order-o-1")
    assert after[: len(before)] == before
    assert isinstance(after[-1], RunCompleted)
    # The step in flight when the first worker stopped ran again as attempt 2.
    ships = [(e.step, e.attempt) for e in after if isinstance(e, StepScheduled)]
    assert ships == [("charge", 1), ("ship", 1), ("ship", 2)]
