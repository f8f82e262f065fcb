"""Random workflow shapes x stop after any batch == the uninterrupted run.

The runner appends a run's events in atomic batches, so a crash leaves the
history cut at a batch boundary. Every boundary but the first and the last has
steps in flight: the resumed run runs them again with the next attempt number,
which :func:`prop_shapes.normalize` accounts for. Everything else (positions,
steps, arguments, logical attempts, results, errors, the final event, and the
order of events) must match the uninterrupted run.

Two ways to stop: copy the first ``i`` stored events of the uninterrupted run
into a fresh journal (what a crash right after that batch leaves), and a real
stop, closing the engine while the steps of one batch are running.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from typing import Any

import prop_shapes as ps
from hypothesis import given, settings
from hypothesis import strategies as st

from continuum_py import Engine, RunStatus
from continuum_py._client import decode_all
from continuum_py.journal import AppendBatch, NewRun, StoredEvent
from continuum_py.testing import Replayer


async def resume_from_prefix(
    open_: ps.Opener, rows: list[StoredEvent], i: int
) -> tuple[tuple[Any, ...], list[Any]]:
    """Write the first ``i`` events to fresh storage, then let a new engine finish the run."""
    journal = await open_()
    first = decode_all(rows[:1])[0]
    _, lease, created = await journal.start_run(
        NewRun(run_id=ps.RUN_ID, workflow=first.workflow, first_event=rows[0])
    )
    assert created and lease is None
    if i > 1:
        [lease] = await journal.claim("copier", ttl=60, limit=1)
        batch = AppendBatch(lease=lease, expected_seq=1, events=rows[1:i])
        assert await journal.append([batch]) == [None]
        assert await journal.release(lease)
    ps.reset(orphans=ps.lost_attempts(decode_all(rows[:i])))
    async with Engine(journal=journal, registry=ps.reg, worker_id="resumer") as engine:
        result = await ps.outcome(engine)
        history = await engine.history(ps.RUN_ID)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert decode_all(rows[:i]) == history[:i]  # nothing recorded was changed
    return result, history


def assert_same_run(ref_result, ref_rows, result, history) -> None:
    reference = decode_all(ref_rows)
    assert ps.lost_in(reference) == {}
    assert ps.normalize_outcome(result, history) == ref_result
    assert ps.normalize(history) == ps.normalize(reference)


async def check_boundaries(
    fresh: Callable[[], ps.Opener], shape: Any, catch: Any, pick: Any = None, wf: Any = ps.shaped
) -> list[Any]:
    """Resume from the history cut after each (or each picked) batch; returns the reference."""
    ref_result, rows, boundaries = await ps.run_reference(fresh(), shape, catch, wf)
    stops = [b for b in boundaries if b < len(rows)]
    if pick is not None:
        stops = pick(stops)
    for i in stops:
        result, history = await resume_from_prefix(fresh(), rows, i)
        assert_same_run(ref_result, rows, result, history)
    return decode_all(rows)


@settings(max_examples=200, **ps.SETTINGS)
@given(shape=ps.shapes, catch=st.booleans())
def test_memory_resume_after_every_batch_matches_the_uninterrupted_run(shape, catch):
    asyncio.run(check_boundaries(ps.memory_storage, shape, catch))


@settings(max_examples=20, **ps.SETTINGS)
@given(shape=ps.shapes, catch=st.booleans(), data=st.data())
def test_sqlite_resume_after_some_batches_matches_the_uninterrupted_run(shape, catch, data):
    def pick(stops: list[int]) -> list[int]:
        return data.draw(st.lists(st.sampled_from(stops), min_size=1, max_size=3, unique=True))

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(check_boundaries(lambda: ps.sqlite_storage(folder), shape, catch, pick))


async def check_every_prefix(shape: ps.Shape, catch: bool) -> None:
    ref_result, rows, _ = await ps.run_reference(ps.memory_storage(), shape, catch)
    for i in range(1, len(rows)):
        result, history = await resume_from_prefix(ps.memory_storage(), rows, i)
        # The engine's result is what its history says, whatever the cut.
        replayed = Replayer(ps.reg).replay(history)
        assert replayed.finished
        if result[0] == "ok":
            assert replayed.result == result[1]
        else:
            assert (replayed.error.error_type, str(replayed.error)) == result[1:]
        if catch:
            # Each step's outcome depends only on its arguments and logical
            # attempt, and the workflow gathers results by position: a cut in
            # the middle of a batch may reorder events, never change the result.
            assert ps.normalize_outcome(result, history) == ref_result


@settings(max_examples=50, **ps.SETTINGS)
@given(shape=ps.shapes, catch=st.booleans())
def test_memory_resume_after_any_event_completes_consistently(shape, catch):
    # Batches are atomic, so a cut inside one never happens for real; the engine
    # must still pick up any prefix of a valid history.
    asyncio.run(check_every_prefix(shape, catch))


# ---- a real stop: the engine closes while one batch's steps run ----


async def crash_and_resume(
    fresh: Callable[[], ps.Opener],
    shape: Any,
    catch: Any,
    choose: Any,
    every: int,
    wf: Any = ps.shaped,
) -> list[Any]:
    """Stop the engine while one batch's steps run, resume, compare; returns the reference."""
    ref_result, rows, boundaries = await ps.run_reference(fresh(), shape, catch, wf)
    reference = decode_all(rows)
    stop = choose([b for b in boundaries if 1 < b < len(rows)])
    hold = set(ps.in_flight(reference[:stop]).items())
    assert hold  # every boundary between the first and the last has steps in flight

    open_ = fresh()
    ps.reset(hold=hold)
    async with Engine(
        journal=await open_(), registry=ps.reg, worker_id="w1", snapshot_every=every
    ) as engine:
        await engine.start(wf, shape, catch, run_id=ps.RUN_ID)
        async with asyncio.timeout(20):
            await ps.control.all_held.wait()
    # Closing the engine cancelled the held steps and released the lease; the
    # history ends exactly at the batch that scheduled them.
    journal = await open_()
    stopped = decode_all(await journal.load(ps.RUN_ID))
    rec = await journal.get_run(ps.RUN_ID)
    assert rec.status == RunStatus.PENDING and rec.lease_owner is None
    assert ps.timeless(stopped) == ps.timeless(reference[:stop])

    ps.reset(orphans=ps.lost_attempts(stopped))
    async with Engine(
        journal=journal, registry=ps.reg, worker_id="w2", snapshot_every=every
    ) as engine:
        result = await ps.outcome(engine)
        history = await engine.history(ps.RUN_ID)
    assert history[:stop] == stopped
    assert_same_run(ref_result, rows, result, history)
    return reference


@settings(max_examples=150, **ps.SETTINGS)
@given(shape=ps.shapes, catch=st.booleans(), data=st.data(), every=st.sampled_from([0, 1, 3]))
def test_memory_engine_closed_mid_batch_then_resumed(shape, catch, data, every):
    def choose(stops: list[int]) -> int:
        return data.draw(st.sampled_from(stops))

    asyncio.run(crash_and_resume(ps.memory_storage, shape, catch, choose, every))


@settings(max_examples=20, **ps.SETTINGS)
@given(shape=ps.shapes, catch=st.booleans(), data=st.data(), every=st.sampled_from([0, 2]))
def test_sqlite_engine_closed_mid_batch_then_resumed(shape, catch, data, every):
    def choose(stops: list[int]) -> int:
        return data.draw(st.sampled_from(stops))

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(
            crash_and_resume(lambda: ps.sqlite_storage(folder), shape, catch, choose, every)
        )
