"""Random durable workflow shapes: timers, signals, side effects, gathers and child runs.

A *scenario* is a shape and a signal plan. The shape is what the workflow does,
in order; each element adds one entry to the list the workflow returns:

* ``["step", label]``: a step; gives ``["step", label + "!"]``.
* ``["sleep", seconds]``: ``ctx.sleep``; gives ``["slept"]``.
* ``["wait", name, timeout]``: ``ctx.wait_for_signal``; gives ``["got", payload]``
  or ``["timeout"]``.
* ``["now"]``: gives ``["now", seconds since T0]`` from ``ctx.now()``.
* ``["random"]`` / ``["uuid"]``: ``ctx.random()`` / ``ctx.uuid4()``.
* ``["gather", labels]``: an ``asyncio.gather`` of steps.
* ``["child", shape]``: a child workflow running a shape of steps, sleeps and nows.

The plan says, for each wait (one signal name per wait), when the test sends
its signal: ``pre`` (before the run starts: always received), ``onwait``
(once the wait is durably recorded, while time stands still: always received)
or ``never`` (the wait has a timeout: it always times out). So the expected
result is a pure function of the scenario (:func:`expected`), virtual time
included: the clock only ever moves to the exact instant a timer is due, so
``ctx.now()`` is ``T0`` plus the sleeps and timeouts before it.

Time moves either by the VirtualClock's auto-advance (``Scenario.auto``; then an
``onwait`` wait has no timeout, since the clock would skip to it before the
test could send) or by the test itself, which advances the clock to the one
timer that is due next (a manual clock).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import HealthCheck
from hypothesis import strategies as st

from continuum_py import (
    Context,
    Engine,
    Registry,
    SignalTimeout,
    StepInfo,
    step,
    workflow,
)
from continuum_py.events import (
    AnyEvent,
    ChildCompleted,
    ChildStarted,
    RunCompleted,
    SideEffectRecorded,
    SignalReceived,
    SignalWaitStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
    TimerFired,
    TimerStarted,
)
from continuum_py.testing import VirtualClock

SETTINGS: dict[str, Any] = {
    # Each example runs real engines; a few take longer than hypothesis likes.
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow],
}

DAY = 86400
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
RUN_ID = "dur"
# Whole seconds, so virtual times are exact floats and ctx.now() is predictable.
SLEEPS = [0, 1, 90, 3600, 30 * DAY]
TIMEOUTS = [1, 600, 7 * DAY]
LIMIT = 30.0
"""Real seconds one scenario may take before the test fails as hung."""

reg = Registry()

executions: Counter[tuple[str, int, int]] = Counter()
"""(run_id, position, attempt) -> times a step body ran."""


@step(name="pd_step")
async def pd_step(label: str) -> str:
    info = StepInfo.current()
    assert info is not None
    executions[(info.run_id, info.seq, info.attempt)] += 1
    # A few turns of the loop, so a stop can land while the body runs.
    for _ in range(3):
        await asyncio.sleep(0)
    return f"{label}!"


async def _interpret(ctx: Context, shape: list[list[Any]]) -> list[Any]:
    out: list[Any] = []
    for el in shape:
        kind = el[0]
        if kind == "step":
            out.append(["step", await pd_step(el[1])])
        elif kind == "sleep":
            await ctx.sleep(el[1])
            out.append(["slept"])
        elif kind == "wait":
            try:
                out.append(["got", await ctx.wait_for_signal(el[1], timeout=el[2])])
            except SignalTimeout:
                out.append(["timeout"])
        elif kind == "now":
            now = ctx.now()
            assert now.tzinfo is not None
            out.append(["now", (now - T0).total_seconds()])
        elif kind == "random":
            out.append(["random", ctx.random()])
        elif kind == "uuid":
            out.append(["uuid", str(ctx.uuid4())])
        elif kind == "gather":
            out.append(["gather", list(await asyncio.gather(*(pd_step(x) for x in el[1])))])
        elif kind == "child":
            out.append(["child", await child_shape(el[1])])
        else:  # pragma: no cover - a new element kind needs a branch here
            raise AssertionError(f"unknown element {el!r}")
    return out


@workflow(registry=reg)
async def durable_shape(ctx: Context, shape: list[list[Any]]) -> list[Any]:
    """Runs the elements of ``shape`` in order; see the module docstring."""
    return await _interpret(ctx, shape)


@workflow(registry=reg)
async def child_shape(ctx: Context, shape: list[list[Any]]) -> list[Any]:
    """The same interpreter, as a child run (steps, sleeps and nows only)."""
    return await _interpret(ctx, shape)


# ---- scenarios ----


@dataclass(frozen=True)
class Signal:
    mode: str
    """``pre``, ``onwait`` or ``never``."""
    payload: Any = None


@dataclass
class Scenario:
    shape: list[list[Any]]
    plan: dict[str, Signal]
    auto: bool
    """Time moves by VirtualClock auto-advance (else the test advances it)."""


payloads = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.text(st.characters(codec="utf-8"), max_size=4),
    st.lists(st.integers(0, 9), max_size=3),
)

KINDS = ["step", "sleep", "wait", "wait", "now", "random", "uuid", "gather", "child"]


@st.composite
def scenarios(draw: Any, max_elements: int = 6) -> Scenario:
    auto = draw(st.booleans())
    shape: list[list[Any]] = []
    plan: dict[str, Signal] = {}
    for i in range(draw(st.integers(1, max_elements))):
        kind = draw(st.sampled_from(KINDS))
        label = f"e{i}"
        if kind == "step":
            shape.append(["step", label])
        elif kind == "sleep":
            shape.append(["sleep", draw(st.sampled_from(SLEEPS))])
        elif kind == "wait":
            name = f"sig{i}"
            mode = draw(st.sampled_from(["pre", "onwait", "never"]))
            if mode == "never":
                timeout = draw(st.sampled_from(TIMEOUTS))
            elif mode == "onwait" and auto:
                timeout = None
            else:
                timeout = draw(st.one_of(st.none(), st.sampled_from(TIMEOUTS)))
            shape.append(["wait", name, timeout])
            plan[name] = Signal(mode, None if mode == "never" else draw(payloads))
        elif kind in ("now", "random", "uuid"):
            shape.append([kind])
        elif kind == "gather":
            n = draw(st.integers(2, 4))
            shape.append(["gather", [f"{label}g{j}" for j in range(n)]])
        else:
            sub: list[list[Any]] = []
            for j in range(draw(st.integers(1, 3))):
                sub_kind = draw(st.sampled_from(["step", "step", "sleep", "now"]))
                if sub_kind == "step":
                    sub.append(["step", f"{label}c{j}"])
                elif sub_kind == "sleep":
                    sub.append(["sleep", draw(st.sampled_from(SLEEPS))])
                else:
                    sub.append(["now"])
            shape.append(["child", sub])
    return Scenario(shape, plan, auto)


def expected(sc: Scenario) -> list[Any]:
    """The result the workflow must return, with random values as ``["random"]``/``["uuid"]``."""
    elapsed = 0

    def run(shape: list[list[Any]]) -> list[Any]:
        nonlocal elapsed
        out: list[Any] = []
        for el in shape:
            kind = el[0]
            if kind == "step":
                out.append(["step", f"{el[1]}!"])
            elif kind == "sleep":
                elapsed += el[1]
                out.append(["slept"])
            elif kind == "wait":
                sig = sc.plan[el[1]]
                if sig.mode == "never":
                    elapsed += el[2]
                    out.append(["timeout"])
                else:
                    # JSON has no tuples: the payload comes back as it decodes.
                    out.append(["got", msgspec.json.decode(msgspec.json.encode(sig.payload))])
            elif kind == "now":
                out.append(["now", elapsed])
            elif kind in ("random", "uuid"):
                out.append([kind])
            elif kind == "gather":
                out.append(["gather", [f"{x}!" for x in el[1]]])
            else:
                out.append(["child", run(el[1])])
        return out

    return run(sc.shape)


def normalize(result: list[Any]) -> list[Any]:
    """``result`` with random values checked for form and taken out, to compare with :func:`expected`."""
    out: list[Any] = []
    for entry in result:
        if entry[0] == "random":
            assert isinstance(entry[1], float) and 0 <= entry[1] < 1, entry
            out.append(["random"])
        elif entry[0] == "uuid":
            assert uuid.UUID(entry[1]).version == 4, entry
            out.append(["uuid"])
        elif entry[0] == "child":
            out.append(["child", normalize(entry[1])])
        else:
            out.append(entry)
    return out


# ---- running a scenario ----

Histories = dict[str, list[AnyEvent]]


@dataclass
class Outcome:
    result: list[Any]
    histories: Histories
    """Every run's final history (the root and its children)."""
    prefixes: list[Histories] = field(default_factory=list)
    """Every run's history as it stood right after each stop."""
    stops: int = 0
    executions: Counter[tuple[str, int, int]] = field(default_factory=Counter)


async def histories(engine: Engine) -> Histories:
    return {r.run_id: await engine.history(r.run_id) for r in await engine.list_runs()}


def open_timer(history: list[AnyEvent], plan: dict[str, Signal]) -> float | None:
    """When the earliest timer the test must let fire comes due (sleeps, ``never`` waits)."""
    fired = {e.position for e in history if isinstance(e, TimerFired)}
    dues = [
        e.fire_at for e in history if isinstance(e, TimerStarted) and e.position not in fired
    ] + [
        e.timeout_at
        for e in history
        if isinstance(e, SignalWaitStarted)
        and e.timeout_at is not None
        and e.position not in fired
        and plan[e.name].mode == "never"
    ]
    return min(dues) if dues else None


async def run_scenario(
    make: Callable[[], Any],
    sc: Scenario,
    *,
    stop_at: Sequence[int] = (),
    worker_ids: Sequence[str] = ("w1",),
    hold: float = 0.0,
    snapshot_every: int = 0,
    via_worker: bool = False,
) -> Outcome:
    """Run ``sc`` to its end on the storage ``make`` opens, the test sending the signals.

    ``stop_at``: close the worker engine once the journal holds that many events
    (over every run), and open a fresh one, whose worker id is the next of
    ``worker_ids``; once per entry. ``via_worker``: send ``onwait`` signals
    through the worker engine (which pokes the run's driver) rather than a
    client-only engine (which leaves the worker to find them in the journal).
    """
    executions.clear()
    clock = VirtualClock(T0, auto_advance=sc.auto)

    def worker(n: int, worker_id: str | None = None) -> Engine:
        return Engine(
            journal=make(),
            registry=reg,
            clock=clock,
            worker_id=worker_id or worker_ids[n % len(worker_ids)],
            poll_interval=0.02,
            hold=hold,
            snapshot_every=snapshot_every,
        )

    out = Outcome(result=[], histories={})
    pending_stops = sorted(stop_at)
    async with Engine(journal=make(), registry=reg, clock=clock, worker=False) as client:
        handle = await client.start(durable_shape, sc.shape, run_id=RUN_ID)
        sent = set()
        for name, sig in sc.plan.items():
            if sig.mode == "pre":
                await client.signal(RUN_ID, name, sig.payload)
                sent.add(name)
        eng = worker(0)
        await eng.open()
        try:
            async with asyncio.timeout(LIMIT):
                seen = -1
                while True:
                    runs = await client.list_runs()
                    total = sum(r.last_seq for r in runs)
                    if pending_stops and total >= pending_stops[0]:
                        pending_stops.pop(0)
                        await eng.aclose()
                        out.stops += 1
                        out.prefixes.append(await histories(client))
                        owners = {r.lease_owner for r in await client.list_runs()} - {None}
                        # A closed engine holds no lease, even on a run it had only
                        # just claimed: any worker may take every run at once.
                        assert not owners, owners
                        eng = worker(out.stops)
                        await eng.open()
                        continue
                    if next(r for r in runs if r.run_id == RUN_ID).status.terminal:
                        break
                    if total == seen:  # what follows acts on new events only
                        await asyncio.sleep(0)
                        continue
                    seen = total
                    now = await histories(client)
                    # An onwait signal goes out once its wait is durable, while time
                    # stands still (manual clock), so it is received whatever the timeout.
                    for ev in now[RUN_ID]:
                        if (
                            isinstance(ev, SignalWaitStarted)
                            and sc.plan[ev.name].mode == "onwait"
                            and ev.name not in sent
                        ):
                            sender = eng if via_worker else client
                            await sender.signal(RUN_ID, ev.name, sc.plan[ev.name].payload)
                            sent.add(ev.name)
                    if not sc.auto:
                        # Time moves only here: to the exact instant the next sleep or
                        # `never` wait is due (the shapes never have two open at once).
                        dues = [d for h in now.values() if (d := open_timer(h, sc.plan))]
                        if dues and min(dues) > clock.now():
                            await clock.advance(min(dues) - clock.now())
                    await asyncio.sleep(0)
        finally:
            await eng.aclose()
        out.result = await handle.result(timeout=5)
        out.histories = await histories(client)
    out.executions = Counter(executions)
    return out


# ---- comparing runs ----


def commands(history: list[AnyEvent]) -> dict[int, tuple[Any, ...]]:
    """What the code asked for at each call-order position, and what each wait was answered with.

    Identical for any two runs of one scenario, however they were stopped and resumed.
    """
    out: dict[int, tuple[Any, ...]] = {}
    for ev in history:
        if isinstance(ev, StepScheduled):
            out.setdefault(ev.position, ("step", ev.step, bytes(ev.args)))
        elif isinstance(ev, TimerStarted):
            out[ev.position] = ("timer", ev.fire_at)
        elif isinstance(ev, SignalWaitStarted):
            out[ev.position] = ("wait", ev.name, ev.timeout_at)
        elif isinstance(ev, ChildStarted):
            out[ev.position] = ("child", ev.child_run_id, ev.workflow, bytes(ev.args))
        elif isinstance(ev, SideEffectRecorded):
            out[ev.position] = ("side", ev.what)
    for ev in history:
        if isinstance(ev, StepCompleted):
            out[ev.position] += ("completed", bytes(ev.result))
        elif isinstance(ev, TimerFired):
            out[ev.position] += ("fired",)
        elif isinstance(ev, ChildCompleted):
            out[ev.position] += ("child-completed", ev.ok, bytes(ev.result))
    return out


def received(history: list[AnyEvent]) -> list[tuple[str, bytes]]:
    return [(e.name, bytes(e.payload)) for e in history if isinstance(e, SignalReceived)]


def step_record(
    history: list[AnyEvent],
) -> tuple[dict[int, int], Counter[int], set[tuple[int, int]]]:
    """(completions per position, StepScheduled per position, scheduled (position, attempt))."""
    completed: Counter[int] = Counter()
    scheduled: Counter[int] = Counter()
    attempts: set[tuple[int, int]] = set()
    for ev in history:
        if isinstance(ev, StepScheduled):
            scheduled[ev.position] += 1
            attempts.add((ev.position, ev.attempt))
        elif isinstance(ev, StepCompleted):
            completed[ev.position] += 1
        assert not isinstance(ev, StepFailed), ev  # the steps here never fail
    return dict(completed), scheduled, attempts


def child_result(history: list[AnyEvent]) -> Any:
    end = history[-1]
    assert isinstance(end, RunCompleted), end
    return msgspec.json.decode(end.result)
