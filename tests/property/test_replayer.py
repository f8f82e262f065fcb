"""Replaying a finished run's history gives its result again, for any workflow shape."""

from __future__ import annotations

import asyncio

import msgspec
import prop_shapes as ps
from hypothesis import example, given, settings
from hypothesis import strategies as st

from continuum_py._client import decode_all
from continuum_py.events import RunCompleted, StepCompleted, StepFailed
from continuum_py.testing import Replayer, dump_history, load_history


def check(shape: ps.Shape, catch: bool) -> None:
    result, rows, _ = asyncio.run(ps.run_reference(ps.memory_storage(), shape, catch))
    history = decode_all(rows)
    # Steps here finish at once, so an uninterrupted run records an outcome for
    # every attempt it schedules: none is left behind when the workflow ends.
    assert ps.in_flight(history) == {}
    replayer = Replayer(ps.reg)

    for events in (history, rows, load_history(dump_history(history))):
        replayed = replayer.replay(events)  # raises NonDeterminismError if code and history part
        assert (replayed.run_id, replayed.workflow) == (ps.RUN_ID, "shaped")
        assert replayed.events == len(history) and replayed.finished
        if result[0] == "ok":
            assert isinstance(history[-1], RunCompleted)
            assert replayed.error is None and replayed.result == result[1]
        else:
            assert (replayed.error.error_type, str(replayed.error)) == result[1:]

    # A what_if that gives each step the result it recorded changes nothing.
    for ev in history:
        if isinstance(ev, StepCompleted):
            same = replayer.replay(history, what_if={ev.position: msgspec.json.decode(ev.result)})
            assert same.divergence is None and same.finished
            assert (same.result, type(same.error)) == (replayed.result, type(replayed.error))

    # Every prefix replays too, and the code has finished exactly once the
    # history holds the outcome it finished on. Stopping with until= at the
    # prefix's last seq finds the code in the same state, and the hook sees
    # each event once, in order.
    outcomes = [i for i, e in enumerate(history) if isinstance(e, StepCompleted | StepFailed)]
    finished_at = None
    for n in range(1, len(history) + 1):
        replayed = replayer.replay(history[:n])
        if replayed.finished and finished_at is None:
            finished_at = n
        assert replayed.finished == (finished_at is not None)
        seen: list[int] = []
        stopped = replayer.replay(
            history,
            until=history[n - 1].seq,
            on_event=lambda v, seen=seen: seen.append(v.event.seq),
        )
        assert seen == [e.seq for e in history[:n]]
        assert (stopped.stopped_at, stopped.events) == (history[n - 1].seq, n)
        assert (stopped.finished, stopped.waiting_on) == (replayed.finished, replayed.waiting_on)
        assert [a.what for a in stopped.asks] == [a.what for a in replayed.asks]
    assert finished_at is not None and finished_at - 1 in outcomes


@settings(max_examples=150, **ps.SETTINGS)
@given(shape=ps.shapes, catch=st.booleans())
# A gather whose first step fails for good while the second awaits a retry: the
# run fails and the retry is never scheduled.
@example(shape=[[(1, 1), (2, 1)]], catch=False)
def test_replaying_a_finished_run_gives_its_result_without_non_determinism(shape, catch):
    check(shape, catch)
