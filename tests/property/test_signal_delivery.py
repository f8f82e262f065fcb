"""Every signal reaches exactly one wait that returns it, whatever races it loses.

Hypothesis sends a random sequence of signals of two names, some before the
run starts and some while it runs, to workflows that take them through
``ctx.wait_first`` over both names, ``ctx.as_completed`` left after its first
result, or two wait tasks of which any unfinished one is cancelled, with a
step after each. Each signal sent must come out of the workflow once,
in the order sent for its name, and the recorded run must replay to the same.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from continuum_py import Context, Engine, Registry, step, workflow
from continuum_py.testing import Replayer, VirtualClock

reg = Registry()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NAMES = ("a", "b")


@step
async def note(value: str) -> str:
    return value


@workflow(registry=reg)
async def collector(ctx: Context, n: int, modes: list[str]) -> list[str]:
    got: list[str] = []
    turn = 0
    while len(got) < n:
        mode = modes[turn % len(modes)]
        turn += 1
        waits = [ctx.wait_for_signal(name, type=str) for name in NAMES]
        if mode == "first":
            _, value = await ctx.wait_first(*waits)
            values = [value]
        elif mode == "completed":
            async for _, value in ctx.as_completed(waits):
                values = [value]
                break
        else:  # "tasks": every wait that finished counts; the others are cancelled
            tasks = [asyncio.ensure_future(w) for w in waits]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            values = [t.result() for t in tasks if t.done()]
            for t in tasks:
                t.cancel()
        # A step after each: signals arriving meanwhile wait in the buffer, so the
        # next turn's waits are both handed one at once and one of them loses.
        for value in values:
            got.append(await note(value))
    return got


signals = st.lists(st.tuples(st.sampled_from(NAMES), st.booleans()), min_size=1, max_size=8)
modes = st.lists(st.sampled_from(["first", "completed", "tasks"]), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None)
@given(signals=signals, modes=modes)
def test_each_signal_comes_out_once_in_the_order_sent(signals, modes):
    # (name, sent_before_start) pairs; payloads say which they were.
    sent = [(name, f"{name}{i}", early) for i, (name, early) in enumerate(signals)]

    async def main() -> tuple[list[str], list]:
        clock = VirtualClock(T0, auto_advance=False)
        async with Engine("memory://", registry=reg, clock=clock, worker_id="w") as eng:
            h = await eng.start(collector, len(sent), modes, run_id="c", delay=10)
            for name, payload, early in sent:
                if early:
                    await eng.signal("c", name, payload)
            await clock.advance(10)
            for name, payload, early in sent:
                if not early:
                    await eng.signal("c", name, payload)
                    await asyncio.sleep(0)
            result = await h.result(timeout=5)
            return result, await eng.history("c")

    result, history = asyncio.run(main())
    assert sorted(result) == sorted(p for _, p, _ in sent)  # each once: none lost, none twice
    in_send_order = [s for s in sent if s[2]] + [s for s in sent if not s[2]]
    for name in NAMES:
        assert [p for p in result if p[0] == name] == [p for n, p, _ in in_send_order if n == name]
    assert Replayer(reg).replay(history).result == result
