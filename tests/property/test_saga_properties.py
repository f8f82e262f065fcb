"""Random saga shapes x stops == the uninterrupted run, and the saga rules hold in every history.

Compensations are steps like any other, so the stop/resume machinery of
test_stop_resume applies unchanged: cut the history after any batch (a crash
leaves nothing else), or close the engine while one batch's steps, a
compensation among them, are running; the resumed run must match the
uninterrupted one event for event, and no compensation runs twice beyond the
attempt in flight at the stop.
"""

from __future__ import annotations

import asyncio
import tempfile

import prop_sagas as sagas
import prop_shapes as ps
from hypothesis import given, settings
from hypothesis import strategies as st
from test_stop_resume import check_boundaries, crash_and_resume


@settings(max_examples=60, **ps.SETTINGS)
@given(shape=sagas.saga_shapes, on_error=sagas.on_errors)
def test_memory_saga_resumed_after_every_batch_matches_the_uninterrupted_run(shape, on_error):
    reference = asyncio.run(
        check_boundaries(ps.memory_storage, shape, on_error, wf=sagas.saga_shaped)
    )
    sagas.check_saga_rules(reference)


@settings(max_examples=60, **ps.SETTINGS)
@given(
    shape=sagas.saga_shapes,
    on_error=sagas.on_errors,
    data=st.data(),
    every=st.sampled_from([0, 1, 3]),
)
def test_memory_saga_engine_closed_mid_batch_then_resumed(shape, on_error, data, every):
    def choose(stops: list[int]) -> int:
        return data.draw(st.sampled_from(stops))

    reference = asyncio.run(
        crash_and_resume(ps.memory_storage, shape, on_error, choose, every, wf=sagas.saga_shaped)
    )
    sagas.check_saga_rules(reference)


@settings(max_examples=10, **ps.SETTINGS)
@given(shape=sagas.saga_shapes, on_error=sagas.on_errors, data=st.data())
def test_sqlite_saga_resumed_after_some_batches(shape, on_error, data):
    def pick(stops: list[int]) -> list[int]:
        return data.draw(st.lists(st.sampled_from(stops), min_size=1, max_size=3, unique=True))

    with tempfile.TemporaryDirectory() as folder:
        reference = asyncio.run(
            check_boundaries(
                lambda: ps.sqlite_storage(folder), shape, on_error, pick, wf=sagas.saga_shaped
            )
        )
    sagas.check_saga_rules(reference)
