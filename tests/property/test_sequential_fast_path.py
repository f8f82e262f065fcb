"""The sequential fast path writes what the general path writes.

Random workflow shapes (lone and gathered steps, failures, retries, steps that
fail for good, caught or not) run twice on a fresh memory journal: with the
fast path (``continuum_py._sequential``) and without it. Both runs must give
the same result, the same history (timestamps aside), the same appends (the
seq at the end of every accepted batch) and the same last snapshot, written
every few events so that snapshots fall inside runs of lone steps.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import prop_shapes as ps
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from continuum_py import Engine, _sequential
from continuum_py._client import decode_snapshot
from continuum_py._recording import Recorder
from continuum_py.adapters.memory import MemoryJournal


@contextmanager
def fast_path(on: bool) -> Iterator[list[int]]:
    """Turn the fast path on or off; yields a list that counts the steps it scheduled."""
    taken: list[int] = []
    real = Recorder.step_scheduled_alone

    def counted(self: Recorder, call: Any, attempt: int) -> None:
        taken.append(call.position)
        real(self, call, attempt)

    before = _sequential.ENABLED
    _sequential.ENABLED = on
    Recorder.step_scheduled_alone = counted  # type: ignore[method-assign]
    try:
        yield taken
    finally:
        _sequential.ENABLED = before
        Recorder.step_scheduled_alone = real  # type: ignore[method-assign]


async def run_shape(shape: Any, catch: bool, *, fast: bool, snapshot_every: int) -> Any:
    ps.reset()
    journal = ps.BatchRecorder(MemoryJournal())
    with fast_path(fast) as taken:
        async with Engine(
            journal=journal, registry=ps.reg, worker_id="w", snapshot_every=snapshot_every
        ) as engine:
            await engine.start(ps.shaped, shape, catch, run_id=ps.RUN_ID)
            result = await ps.outcome(engine)
            history = await engine.history(ps.RUN_ID)
            snap, _ = await journal.inner.load_with_snapshot(ps.RUN_ID)
    state = None
    if snap is not None:
        decoded = decode_snapshot(snap)
        state = (snap.seq, snap.schema, ps.timeless(decoded.events), decoded.failures)
    return (result, ps.timeless(history), journal.boundaries, state), taken


@settings(max_examples=60, **ps.SETTINGS)
@given(shape=ps.shapes, catch=st.booleans(), snapshot_every=st.sampled_from([0, 3, 4, 7]))
@example(shape=[[(1, 0)]] * 5, catch=False, snapshot_every=3)
@example(
    shape=[[(1, 0)], [(1, 0), (2, 1)], [(1, 0)], [(3, 2)], [(1, 0)]], catch=False, snapshot_every=4
)
@example(shape=[[(1, 0)], [(2, 2)], [(1, 0)]], catch=True, snapshot_every=0)
async def test_fast_path_writes_what_the_general_path_writes(
    shape: Any, catch: bool, snapshot_every: int
) -> None:
    fast, taken = await run_shape(shape, catch, fast=True, snapshot_every=snapshot_every)
    general, untaken = await run_shape(shape, catch, fast=False, snapshot_every=snapshot_every)
    assert untaken == []
    assert fast == general
    # The fast path ran whenever a lone step that succeeded at once came after another.
    reached = []
    for block in shape:
        reached.append(block)
        if not catch and any(k >= m for m, k in block):
            break  # the run fails here
    lone_after_lone = any(
        len(a) == 1 and len(b) == 1 and a[0][1] == 0 for a, b in itertools.pairwise(reached)
    )
    if lone_after_lone:
        assert taken


@pytest.mark.parametrize("fast", [True, False])
async def test_a_chain_of_lone_steps_takes_the_fast_path(fast: bool) -> None:
    """A chain of 12 lone steps: 11 of them scheduled by the fast path (the first by the general one)."""
    (result, history, _, _), taken = await run_shape(
        [[(1, 0)]] * 12, False, fast=fast, snapshot_every=5
    )
    assert result[0] == "ok"
    assert len(history) == 1 + 2 * 12 + 1
    assert len(taken) == (11 if fast else 0)
