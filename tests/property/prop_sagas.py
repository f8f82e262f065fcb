"""Random saga shapes for the property tests: prop_shapes' blocks with compensations.

A step is ``(max_attempts, fail_first, comp)``: as in :mod:`prop_shapes`, plus
``comp`` 0 (no compensation), 1 (a compensation that succeeds) or 2 (one that
fails for good). The workflow either lets a failure end the run (the engine
compensates) or, with ``on_error="compensate"``, catches each failure, calls
``ctx.compensate()`` and goes on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import prop_shapes as ps
from hypothesis import strategies as st

from continuum_py import Context, RetryPolicy, StepError, StepInfo, step, workflow
from continuum_py.events import CompensationStarted, RunFailedEvent, StepCompleted, StepScheduled


async def _undo(result: str, label: str, fail_first: int) -> str:
    info = StepInfo.current()
    assert info is not None
    key = (info.position, info.attempt)
    control = ps.control
    if key in control.hold:
        control.entered.add(key)
        if control.entered >= control.hold:
            assert control.all_held is not None
            control.all_held.set()
        assert control.release is not None
        await control.release.wait()  # cancelled when the engine stops
    if label.endswith("!"):
        raise ps.Flaky(f"cannot undo {result}")
    return f"undone {result}"


_UNDO_POLICY = RetryPolicy(max_attempts=2, initial_interval=0, jitter=0)
UNDO = step(name="undo_act", retry=_UNDO_POLICY)(_undo)

SACTS = {
    (m, comp): step(
        name=f"sact{m}c{comp}",
        retry=RetryPolicy(max_attempts=m, initial_interval=0, jitter=0),
        compensate=UNDO if comp else None,
    )(ps._act)
    for m in range(1, ps.MAX_ATTEMPTS + 1)
    for comp in (0, 1, 2)
}

SagaShape = list[list[tuple[int, int, int]]]


@workflow(registry=ps.reg)
async def saga_shaped(ctx: Context, shape: SagaShape, on_error: str) -> list[str]:
    """Runs the blocks of ``shape``; a failure ends the run or is compensated on the spot."""
    out: list[str] = []
    for i, block in enumerate(shape):
        labels = [f"b{i}s{j}" + ("!" if comp == 2 else "") for j, (_, _, comp) in enumerate(block)]
        calls = [
            SACTS[(m, comp)](label, k) for label, (m, k, comp) in zip(labels, block, strict=True)
        ]
        try:
            out.extend(await asyncio.gather(*calls) if len(calls) > 1 else [await calls[0]])
        except StepError as exc:
            if on_error != "compensate":
                raise
            undone = await ctx.compensate()
            out.append(f"{exc.step} failed; undid {[(o.compensates, o.ok) for o in undone]}")
    return out


@st.composite
def saga_specs(draw: Any) -> tuple[int, int, int]:
    m, k = draw(ps.step_specs())
    return (m, k, draw(st.integers(0, 2)))


saga_blocks = st.one_of(
    st.lists(saga_specs(), min_size=1, max_size=1),
    st.lists(saga_specs(), min_size=2, max_size=3),
)
saga_shapes = st.lists(saga_blocks, min_size=1, max_size=4)
on_errors = st.sampled_from(["raise", "compensate"])


def check_saga_rules(history: list[Any]) -> None:
    """What every saga history must show, whatever its shape and wherever it was stopped.

    Only completed steps with a compensation are undone, each at most once and
    after it completed; the compensations of one decision undo newest
    completion first; a run that failed undid every such step; a compensation's
    first argument is the result it undoes.
    """
    names = {ev.position: ev.step for ev in history if isinstance(ev, StepScheduled)}
    completed_at: dict[int, int] = {}
    results: dict[int, bytes] = {}
    undone: list[int] = []
    segment: list[int] = []
    for ev in history:
        if isinstance(ev, StepCompleted):
            completed_at[ev.position] = ev.seq
            results[ev.position] = bytes(ev.result)
        elif isinstance(ev, CompensationStarted):
            segment = []
        elif isinstance(ev, StepScheduled) and ev.compensates is not None and ev.attempt == 1:
            target = ev.compensates
            assert not names[target].endswith("c0"), "a step without compensation was undone"
            assert target in completed_at, "undone before it completed"
            assert target not in undone, "undone twice"
            assert bytes(ev.args).startswith(b"[" + results[target] + b",")
            if segment:
                assert completed_at[target] < completed_at[segment[-1]], "not newest first"
            segment.append(target)
            undone.append(target)
    if isinstance(history[-1], RunFailedEvent):
        owed = {
            p for p in completed_at if names[p].startswith("sact") and not names[p].endswith("c0")
        }
        assert owed == set(undone)
