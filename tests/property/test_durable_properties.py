"""Durable shapes (timers, signals, side effects, child runs) x stops x replay.

A. A random shape run under a VirtualClock returns exactly what
   :func:`prop_durable.expected` says, virtual time included.
B. The same shape with the worker engine closed after any number of recorded
   events, any number of times, and reopened (often with another worker id)
   ends with the same result and the same commands as an uninterrupted run;
   each step position completes once, each attempt's body runs at most once,
   and what was recorded before a stop is never changed.
C. A finished history replays to the same result, also after
   ``dump_history``/``load_history``, and every prefix of it replays.

Plus: N signals of one name sent at random moments reach N sequential waits
in the order sent; and regression tests for two engine bugs these found (a
closed engine keeping the lease of a run it had just claimed; a signal from
another process missing a wait held in process).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from typing import Any

import msgspec
import prop_durable as pd
import pytest
from helpers import journal_maker, wait_until
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from continuum_py import Context, Engine, Registry, RunStatus, SignalTimeout, step, workflow
from continuum_py.adapters.memory import MemoryJournal
from continuum_py.events import SignalReceived, SignalWaitStarted
from continuum_py.testing import Replayer, VirtualClock, dump_history, load_history

# A shape with one of everything, run first by every property.
EVERYTHING = pd.Scenario(
    shape=[
        ["step", "e0"],
        ["sleep", 3600],
        ["wait", "sig2", 600],
        ["now"],
        ["random"],
        ["gather", ["e5g0", "e5g1"]],
        ["wait", "sig6", None],
        ["child", [["step", "e7c0"], ["sleep", 90], ["now"]]],
        ["wait", "sig8", 7 * pd.DAY],
        ["uuid"],
        ["now"],
    ],
    plan={
        "sig2": pd.Signal("onwait", {"a": 1}),
        "sig6": pd.Signal("pre", [1, 2]),
        "sig8": pd.Signal("never"),
    },
    auto=False,
)


def memory() -> Any:
    return journal_maker("memory://")


def check_steps(out: pd.Outcome) -> None:
    """Each step position completed once; each attempt's body ran at most once, and only
    once its StepScheduled was durable; a body ran again only for an attempt lost to a stop."""
    for run_id, history in out.histories.items():
        completed, scheduled, attempts = pd.step_record(history)
        assert set(completed) == set(scheduled), (run_id, completed, scheduled)
        assert set(completed.values()) <= {1}, (run_id, completed)
        ran: Counter[int] = Counter()
        for (rid, position, attempt), n in out.executions.items():
            if rid == run_id:
                assert n == 1, (rid, position, attempt, n)
                assert (position, attempt) in attempts, (rid, position, attempt)
                ran[position] += 1
        for position in completed:
            assert 1 <= ran[position] <= 1 + out.stops, (run_id, position, out)
            if out.stops == 0:
                assert scheduled[position] == 1


def check_replay(out: pd.Outcome) -> None:
    """The root's history replays to the run's result; each child's to its own."""
    replayer = Replayer(pd.reg)
    for run_id, history in out.histories.items():
        want = out.result if run_id == pd.RUN_ID else pd.child_result(history)
        replayed = replayer.replay(history)
        assert replayed.finished and replayed.error is None
        assert replayed.result == want


# ---- A: the result is the reference interpretation ----


def check_reference(
    make: Any, sc: pd.Scenario, hold: float, every: int, via_worker: bool
) -> pd.Outcome:
    out = asyncio.run(
        pd.run_scenario(make, sc, hold=hold, snapshot_every=every, via_worker=via_worker)
    )
    assert pd.normalize(out.result) == pd.expected(sc)
    check_steps(out)
    # Signals sent before the run or to a recorded wait are all received, once each.
    got = [e.name for e in out.histories[pd.RUN_ID] if isinstance(e, SignalReceived)]
    assert sorted(got) == sorted(n for n, s in sc.plan.items() if s.mode != "never")
    return out


@settings(max_examples=100, **pd.SETTINGS)
@given(
    sc=pd.scenarios(),
    hold=st.sampled_from([0.0, 2.0]),
    every=st.sampled_from([0, 1, 4]),
    via_worker=st.booleans(),
)
@example(sc=EVERYTHING, hold=0.0, every=0, via_worker=False)
def test_memory_shape_gives_the_reference_result(sc, hold, every, via_worker):
    check_reference(memory(), sc, hold, every, via_worker)


@settings(max_examples=25, **pd.SETTINGS)
@given(
    sc=pd.scenarios(max_elements=5),
    hold=st.sampled_from([0.0, 2.0]),
    every=st.sampled_from([0, 3]),
    via_worker=st.booleans(),
)
@example(sc=EVERYTHING, hold=0.0, every=0, via_worker=False)
def test_sqlite_shape_gives_the_reference_result(sc, hold, every, via_worker):
    with tempfile.TemporaryDirectory() as folder:
        check_reference(journal_maker(f"sqlite:///{folder}/j.db"), sc, hold, every, via_worker)


# ---- B: stops anywhere change nothing ----

WORKER_IDS = st.sampled_from([("w1",), ("w1", "w2"), ("w1", "w2", "w3")])


CUTS = st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=4)
"""Where to stop, as fractions of the uninterrupted run's event count.

(Its count varies a little with timing, e.g. whether a run suspends before a
signal arrives, so stop points cannot be drawn from it directly.)"""


def check_stops(
    fresh: Any,
    sc: pd.Scenario,
    cuts: list[float],
    worker_ids: tuple[str, ...],
    every: int,
    hold: float = 0.0,
) -> None:
    ref = asyncio.run(pd.run_scenario(fresh(), sc, worker_ids=worker_ids))
    total = sum(map(len, ref.histories.values()))
    stop_at = [1 + int(c * (total - 1)) for c in cuts]
    out = compare_stopped(fresh, sc, ref, stop_at, worker_ids, every, hold)
    event(f"stops made: {out.stops} of {len(stop_at)}")


def compare_stopped(
    fresh: Any,
    sc: pd.Scenario,
    ref: pd.Outcome,
    stop_at: list[int],
    worker_ids: tuple[str, ...],
    every: int,
    hold: float = 0.0,
) -> pd.Outcome:
    out = asyncio.run(
        pd.run_scenario(
            fresh(),
            sc,
            stop_at=stop_at,
            worker_ids=worker_ids,
            snapshot_every=every,
            hold=hold,
            via_worker=hold > 0,  # see check_reference
        )
    )
    # A stop lands at the first poll that sees enough events; a run may end first.
    assert out.stops <= len(stop_at)
    assert pd.normalize(out.result) == pd.normalize(ref.result) == pd.expected(sc)
    check_steps(out)
    # Whatever was recorded before a stop is still there, unchanged.
    for prefix in out.prefixes:
        for run_id, events in prefix.items():
            assert out.histories[run_id][: len(events)] == events
    # Same runs; at each position the same command, answered the same way.
    assert set(out.histories) == set(ref.histories)
    for run_id, history in out.histories.items():
        assert pd.commands(history) == pd.commands(ref.histories[run_id]), run_id
        assert pd.received(history) == pd.received(ref.histories[run_id]), run_id
    check_replay(out)
    return out


@settings(max_examples=150, **pd.SETTINGS)
@given(
    sc=pd.scenarios(),
    cuts=CUTS,
    worker_ids=WORKER_IDS,
    every=st.sampled_from([0, 1, 3]),
    hold=st.sampled_from([0.0, 2.0]),
)
def test_memory_stops_anywhere_end_like_the_uninterrupted_run(sc, cuts, worker_ids, every, hold):
    check_stops(memory, sc, cuts, worker_ids, every, hold)


def test_everything_stopped_after_each_event_ends_like_the_uninterrupted_run():
    ref = asyncio.run(pd.run_scenario(memory(), EVERYTHING))
    total = sum(map(len, ref.histories.values()))
    for k in range(1, total):
        assert compare_stopped(memory, EVERYTHING, ref, [k], ("w1", "w2"), 0).stops == 1
        compare_stopped(memory, EVERYTHING, ref, [k, k, k + 2], ("w1",), 2)


@settings(max_examples=25, **pd.SETTINGS)
@given(sc=pd.scenarios(max_elements=4), cuts=CUTS, every=st.sampled_from([0, 2]))
def test_sqlite_stops_anywhere_end_like_the_uninterrupted_run(sc, cuts, every):
    with tempfile.TemporaryDirectory() as folder:
        names = iter(range(100))

        def fresh() -> Any:
            return journal_maker(f"sqlite:///{folder}/j{next(names)}.db")

        check_stops(fresh, sc, cuts, ("w1", "w2"), every)


# ---- C: a finished history replays ----


@settings(max_examples=60, **pd.SETTINGS)
@given(sc=pd.scenarios())
@example(sc=EVERYTHING)
def test_finished_history_replays_to_the_same_result(sc):
    out = asyncio.run(pd.run_scenario(memory(), sc))
    check_replay(out)
    replayer = Replayer(pd.reg)
    for run_id, history in out.histories.items():
        loaded = load_history(dump_history(history))
        # dump_history indents embedded values too, so compare them decoded.
        assert plain(loaded) == plain(history)
        assert replayer.replay(loaded).result == replayer.replay(history).result
        # Every prefix replays with no NonDeterminismError; once the code has
        # finished it stays finished, and it has finished by the end.
        finished = [replayer.replay(history[:n]).finished for n in range(1, len(history) + 1)]
        assert finished[-1] and finished == sorted(finished), (run_id, finished)


def plain(events: list[Any]) -> Any:
    return msgspec.json.decode(msgspec.json.encode(events))


# ---- signals of one name arrive in the order sent ----

order_reg = Registry()
held: dict[int, tuple[asyncio.Event, asyncio.Event]] = {}
"""Step j -> (entered, release): the step body waits for release while the test sends."""


@step(name="pd_gate")
async def gate(j: int) -> int:
    if j in held:
        entered, release = held[j]
        entered.set()
        await release.wait()
    return j


@workflow(registry=order_reg)
async def ordered_waits(ctx: Context, n: int) -> list[Any]:
    got = []
    for j in range(n):
        await gate(j)
        got.append(await ctx.wait_for_signal("x"))
    return got


@st.composite
def signal_moments(draw: Any) -> tuple[int, int, list[int], list[int], list[bool]]:
    """(n, sent before start, sent while step j runs, sent while wait j is suspended, noise).

    Wait j is suspended only if fewer than j + 1 signals were sent before it, and
    then at least enough are sent there to let it go on.
    """
    n = draw(st.integers(1, 5))
    pre = draw(st.integers(0, n))
    sent = pre
    at_step, at_wait = [], []
    for j in range(n):
        at_step.append(draw(st.integers(0, n - sent)))
        sent += at_step[-1]
        at_wait.append(draw(st.integers(j + 1 - sent, n - sent)) if sent <= j else 0)
        sent += at_wait[-1]
    assert sent == n
    noise = draw(st.lists(st.booleans(), min_size=2 * n + 1, max_size=2 * n + 1))
    return n, pre, at_step, at_wait, noise


async def check_order(make: Any, moments: Any, payloads: list[int], via_client: bool) -> None:
    n, pre, at_step, at_wait, noise = moments
    held.clear()
    for j in range(n):
        if at_step[j]:
            held[j] = (asyncio.Event(), asyncio.Event())
    queue = list(payloads)
    clock = VirtualClock(pd.T0)
    async with Engine(journal=make(), registry=order_reg, clock=clock, worker=False) as client:
        h = await client.start(ordered_waits, n, run_id="ord")

        async def send(sender: Engine, count: int, k: int) -> None:
            if noise[k]:
                await sender.signal("ord", "y", "noise")  # another name: never consumed
            for _ in range(count):
                await sender.signal("ord", "x", queue.pop(0))

        await send(client, pre, 0)
        async with Engine(
            journal=make(), registry=order_reg, clock=clock, worker_id="w1", poll_interval=0.02
        ) as worker:
            sender = client if via_client else worker
            async with asyncio.timeout(pd.LIMIT):
                for j in range(n):
                    if at_step[j]:
                        entered, release = held[j]
                        await entered.wait()
                        await send(sender, at_step[j], 2 * j + 1)
                        release.set()
                    if at_wait[j]:

                        async def suspended_at(j: int = j) -> bool:
                            waits = [
                                e
                                for e in await client.history("ord")
                                if isinstance(e, SignalWaitStarted)
                            ]
                            return len(waits) == j + 1 and await h.status() == RunStatus.SUSPENDED

                        await wait_until(suspended_at, timeout=pd.LIMIT)
                        await send(sender, at_wait[j], 2 * j + 2)
                result = await (await worker.get("ord")).result()
            history = await client.history("ord")
    assert not queue
    assert result == payloads
    xs = [e for e in history if isinstance(e, SignalReceived) and e.name == "x"]
    # Recorded in the order sent, whichever path brought each one in.
    assert [msgspec.json.decode(e.payload) for e in xs] == payloads
    assert [e.inbox_id for e in xs] == sorted(e.inbox_id for e in xs)
    assert Replayer(order_reg).replay(history).result == payloads


ORDER_ARGS = {
    "moments": signal_moments(),
    "data": st.data(),
    "via_client": st.booleans(),
}


def payloads_for(data: Any, n: int) -> list[int]:
    return data.draw(st.lists(st.integers(), min_size=n, max_size=n, unique=True))


@settings(max_examples=60, **pd.SETTINGS)
@given(**ORDER_ARGS)
def test_memory_signals_of_one_name_arrive_in_the_order_sent(moments, data, via_client):
    asyncio.run(check_order(memory(), moments, payloads_for(data, moments[0]), via_client))


@settings(max_examples=20, **pd.SETTINGS)
@given(**ORDER_ARGS)
def test_sqlite_signals_of_one_name_arrive_in_the_order_sent(moments, data, via_client):
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/j.db"
        asyncio.run(
            check_order(journal_maker(url), moments, payloads_for(data, moments[0]), via_client)
        )


# ---- regressions: engine bugs the properties found ----

bug_reg = Registry()


@workflow(registry=bug_reg)
async def trivial(ctx: Context) -> int:
    return 1


async def test_close_right_after_a_claim_releases_the_lease():
    journal = MemoryJournal()
    eng = Engine(journal=journal, registry=bug_reg, worker_id="w1")
    await eng.open()
    await eng.start(trivial, run_id="r")  # claimed at start; its driver task not yet run
    await eng.aclose()
    rec = await journal.get_run("r")
    assert (rec.status, rec.lease_owner) == (RunStatus.PENDING, None)


@workflow(registry=bug_reg)
async def short_wait(ctx: Context, timeout: float) -> str:
    try:
        return f"got {await ctx.wait_for_signal('go', timeout=timeout)}"
    except SignalTimeout:
        return "timed out"


@pytest.mark.parametrize(
    ("timeout", "status"),
    [
        pytest.param(1, RunStatus.RUNNING, id="in-process"),
        pytest.param(3600, RunStatus.SUSPENDED, id="suspended"),
    ],
)
async def test_signal_from_another_engine_reaches_a_waiting_run(tmp_path, timeout, status):
    url = f"sqlite:///{tmp_path}/j.db"
    clock = VirtualClock(pd.T0, auto_advance=False)
    async with (
        Engine(url, registry=bug_reg, clock=clock, worker_id="w1", poll_interval=0.01) as worker,
        Engine(url, registry=bug_reg, clock=clock, worker=False) as client,
    ):
        h = await worker.start(short_wait, timeout, run_id="sw")

        async def kinds() -> list[type]:
            return [type(e) for e in await client.history("sw")]

        await wait_until(lambda: _has(kinds, SignalWaitStarted))
        await wait_until(lambda: _is(h, status))
        await client.signal("sw", "go", 1)  # virtual time has not moved: all of it is left
        # 100 polls' worth of real time; the heartbeat comes only after 10 s.
        await wait_until(lambda: _has(kinds, SignalReceived), timeout=1.0)
        await clock.advance(timeout)
        assert await h.result(timeout=5) == "got 1"


async def _has(kinds: Any, kind: type) -> bool:
    return kind in await kinds()


async def _is(h: Any, status: RunStatus) -> bool:
    return await h.status() == status
