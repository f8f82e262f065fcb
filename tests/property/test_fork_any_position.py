"""A fork at any recorded position, of runs whose steps ran concurrently, ends as the run did.

Hypothesis draws how long each gathered step takes (so they finish, and are
recorded, in varying orders) and where to fork. The fork must return what the
run returned, and the step bodies that run again are exactly those whose
outcome the kept events do not hold: nothing kept is recomputed, nothing
missing is skipped.
"""

from __future__ import annotations

import asyncio

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from continuum_py import Context, Engine, Registry, RetryPolicy, step, workflow
from continuum_py.events import StepCompleted, StepScheduled

reg = Registry()
ran: list[int] = []
delays: dict[int, float] = {}


@step(name="fap_work", retry=RetryPolicy(max_attempts=1))
async def work(k: int) -> int:
    ran.append(k)
    await asyncio.sleep(delays.get(k, 0.0))
    return k * k


@workflow(registry=reg, name="fap_flow")
async def flow(ctx: Context) -> list[int]:
    first = await work(0)
    middle = await asyncio.gather(work(1), work(2), work(3))
    last = await work(4)
    return [first, *middle, last]


@settings(max_examples=25, deadline=None)
@given(
    pause=st.lists(st.sampled_from([0.0, 0.001, 0.003]), min_size=5, max_size=5),
    pick=st.integers(min_value=0, max_value=100),
)
def test_a_fork_anywhere_returns_the_same_and_reruns_only_what_it_lacks(pause, pick):
    async def go() -> None:
        delays.clear()
        delays.update(enumerate(pause))
        ran.clear()
        async with Engine("memory://", registry=reg) as engine:
            result = await (await engine.start(flow, run_id="f")).result(timeout=10)
            history = await engine.history("f")
            positions = sorted({e.position for e in history if isinstance(e, StepScheduled)})
            at = positions[pick % len(positions)]
            arg_of = {
                e.position: msgspec_int(e.args) for e in history if isinstance(e, StepScheduled)
            }
            ran.clear()
            fork = await engine.fork("f", at=at)
            assert await fork.result(timeout=10) == result
            kept = await engine.history(fork.run_id)
            cut = next(i for i, e in enumerate(history) if getattr(e, "position", 0) >= at)
            assert kept[1:cut] == history[1:cut]
            held = {e.position for e in history[1:cut] if isinstance(e, StepCompleted)}
            assert sorted(ran) == sorted(arg_of[p] for p in positions if p not in held)

    asyncio.run(go())


def msgspec_int(raw) -> int:
    (value,) = msgspec.json.decode(raw)
    return int(value)
