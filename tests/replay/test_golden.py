"""Golden histories: recorded runs that today's code must still replay.

Each ``histories/*.json`` is a committed history (``make_golden.py`` recorded
most; one is hand-written to be non-deterministic). Replaying runs no step
body: it feeds the recorded outcomes (and signals, timers, child outcomes,
recorded values) to the workflow code in ``golden_workflows.py`` and checks
every call against history.
"""

from __future__ import annotations

import asyncio
import typing
from pathlib import Path

import golden_workflows as golden
import msgspec
import pytest

from continuum_py import Context, Engine, NonDeterminismError, Registry, StepError, workflow
from continuum_py._replay import ContinueAsNew, ReplayCore
from continuum_py.events import (
    AnyEvent,
    ContinuedAsNew,
    MarkerRecorded,
    RunCancelledEvent,
    RunCompleted,
    RunFailedEvent,
    StepScheduled,
)
from continuum_py.testing import Replayer, load_history

HISTORIES = Path(__file__).parent / "histories"
NON_DETERMINISTIC = {
    # file stem: (position, what history holds, what the code asks for)
    "nondeterministic_renamed_step": (2, "StepScheduled(take_payment)", "StepScheduled(charge)"),
}
GOOD = sorted(golden.GOLDEN_RUNS)


def _load(stem: str) -> list[AnyEvent]:
    return load_history((HISTORIES / f"{stem}.json").read_bytes())


def test_every_golden_is_committed_and_every_file_is_checked():
    on_disk = {p.stem for p in HISTORIES.glob("*.json")}
    assert on_disk == set(GOOD) | set(NON_DETERMINISTIC)


@pytest.mark.parametrize("stem", GOOD)
def test_golden_replays_to_its_recorded_outcome(stem):
    events = _load(stem)
    replayed = Replayer(golden.registry).replay(events)  # NonDeterminismError fails the test

    workflow, args = golden.GOLDEN_RUNS[stem]
    assert replayed.workflow == workflow == events[0].workflow
    assert msgspec.json.decode(events[0].args) == msgspec.to_builtins(list(args))
    end = events[-1]
    if isinstance(end, RunCancelledEvent) and end.terminated:
        # Ended from outside, running nothing: the code stopped where it was.
        assert not replayed.finished and replayed.events == len(events)
        assert replayed.waiting_on
        return
    assert replayed.finished and replayed.events == len(events)
    if isinstance(end, RunCompleted):
        assert replayed.error is None
        assert msgspec.to_builtins(replayed.result) == msgspec.json.decode(end.result)
    elif isinstance(end, RunCancelledEvent):
        assert isinstance(replayed.error, asyncio.CancelledError)
    elif isinstance(end, ContinuedAsNew):
        assert isinstance(replayed.error, ContinueAsNew)
        assert msgspec.json.decode(replayed.error.encoded_args) == msgspec.json.decode(end.args)
    else:
        assert isinstance(end, RunFailedEvent)
        assert isinstance(replayed.error, StepError)
        assert (replayed.error.error_type, str(replayed.error)) == (
            end.error.type,
            end.error.message,
        )


def test_goldens_cover_every_event_kind():
    # A new event kind needs a golden that records it.
    kinds = {type(e).__name__ for stem in GOOD for e in _load(stem)}
    assert kinds == {t.__name__ for t in typing.get_args(AnyEvent)}


def test_golden_with_completion_order_different_from_call_order():
    # Live, the second chain finished first and its follower took position 3.
    events = _load("completion_order")
    followers = [(e.position, e.args) for e in events if isinstance(e, StepScheduled)][2:]
    assert [(p, msgspec.json.decode(a)) for p, a in followers] == [(3, ["b"]), (4, ["a"])]
    assert Replayer(golden.registry).replay(events).result == ["A", "B"]


@pytest.mark.parametrize("stem", sorted(NON_DETERMINISTIC))
def test_non_deterministic_golden_is_refused_where_it_strays(stem):
    position, recorded, requested = NON_DETERMINISTIC[stem]
    events = _load(stem)
    with pytest.raises(NonDeterminismError) as ei:
        Replayer(golden.registry).replay(events)
    err = ei.value
    assert (err.run_id, err.position) == (events[0].run_id, position)
    assert (err.recorded, err.requested) == (recorded, requested)
    assert f"position {position}: history has {recorded}, code asked for {requested}" in str(err)


def test_non_deterministic_golden_differs_only_by_the_renamed_step():
    # With the step's current name it replays cleanly: the name is the only stray.
    events = [
        msgspec.structs.replace(e, step="charge")
        if getattr(e, "step", None) == "take_payment"
        else e
        for e in _load("nondeterministic_renamed_step")
    ]
    replayed = Replayer(golden.registry).replay(events)
    assert not replayed.finished and replayed.waiting_on == ["ship"]


# ---- issue 3: time, signals, races, child runs, cancellation, versioning ----


def test_race_goldens_replay_to_the_winner_history_recorded():
    # Same code, same arguments: only the history says whether the signal or the timer won.
    signal = Replayer(golden.registry).replay(_load("race_signal_wins"))
    timer = Replayer(golden.registry).replay(_load("race_timer_wins"))
    assert (signal.result, timer.result) == ("signal:now", "timer")


def test_signal_wait_replays_the_recorded_payload_or_timeout():
    results = {
        stem: Replayer(golden.registry).replay(_load(stem)).result["approved"]
        for stem in ("signal_received", "signal_timeout", "signal_before_wait")
    }
    assert results == {
        "signal_received": "yes",
        "signal_timeout": None,
        "signal_before_wait": "early",
    }


def test_side_effect_golden_replays_recorded_values_not_fresh_ones():
    events = _load("side_effects")
    first = Replayer(golden.registry).replay(events).result
    again = Replayer(golden.registry).replay(events).result
    assert first == again == msgspec.json.decode(events[-1].result)
    assert first["started"] == "2024-01-01T00:00:00+00:00"  # the recording clock's start


def test_cancelled_golden_ran_its_cleanup_step_before_ending():
    events = _load("cancelled_with_cleanup")
    steps = [e.step for e in events if isinstance(e, StepScheduled)]
    assert steps == ["reserve", "release_hold"]
    assert isinstance(events[-1], RunCancelledEvent)


# ---- versioning with ctx.patched ----

unguarded = Registry()


@workflow(name="invoice", registry=unguarded)
async def invoice_without_guard(ctx: Context, cents: int) -> dict[str, object]:
    # v2 written carelessly: the new step with no ctx.patched guard.
    cents = await golden.add_fee(cents)
    return {"receipt": await golden.charge("inv", cents), "cents": cents}


def test_v1_history_replays_with_v2_code_down_the_old_branch():
    events = _load("patch_v1_history")
    assert golden.registry.get("invoice").fn is golden.invoice.fn  # v2, with the guard
    replayed = Replayer(golden.registry).replay(events)
    assert replayed.result == {"receipt": "rcpt-inv-500", "cents": 500}  # no fee: old branch


def test_v2_code_without_the_guard_cannot_replay_v1_history():
    with pytest.raises(NonDeterminismError) as ei:
        Replayer(unguarded).replay(_load("patch_v1_history"))
    assert (ei.value.position, ei.value.recorded, ei.value.requested) == (
        1,
        "StepScheduled(charge)",
        "StepScheduled(add_fee)",
    )


def test_v2_history_holds_the_marker_and_v1_code_cannot_replay_it():
    events = _load("patch_v2_history")
    assert Replayer(golden.registry).replay(events).result["cents"] == 530
    with pytest.raises(NonDeterminismError) as ei:
        Replayer(golden.legacy).replay(events)
    assert ei.value.position == 1
    assert ei.value.recorded == "MarkerRecorded(add-fee)"


def test_v1_run_that_has_not_reached_the_change_takes_the_new_branch():
    # A v1 run stopped before the patch point: v2 code goes down the new branch from there.
    started = _load("patch_v1_history")[0]
    core = ReplayCore(started.run_id, golden.registry)
    try:
        core.index([started])
        core.apply(started)
        asked = [call.describe for call in core.new_calls()]
    finally:
        core.close()
    assert asked == ["MarkerRecorded(add-fee)", "StepScheduled(add_fee)"]


async def test_fresh_v2_run_records_a_marker_and_takes_the_new_branch():
    async with Engine("memory://", registry=golden.registry, worker_id="t") as engine:
        handle = await engine.start("invoice", 500, run_id="fresh-v2")
        assert await handle.result(timeout=10) == {"receipt": "rcpt-inv-530", "cents": 530}
        events = await engine.history(handle.run_id)
    assert isinstance(events[1], MarkerRecorded)
    assert (events[1].position, events[1].name) == (1, "add-fee")
    assert [e.step for e in events if isinstance(e, StepScheduled)] == ["add_fee", "charge"]
    # And the fresh history replays with the same code.
    assert Replayer(golden.registry).replay(events).result["cents"] == 530


def test_the_golden_folder_checked_in_one_call_reports_only_the_deliberate_divergence():
    # What a project's own test suite does before deploying: the whole folder at once.
    report = Replayer(golden.registry).check_histories(HISTORIES)
    assert len(report.checks) == len(GOOD) + len(NON_DETERMINISTIC)
    assert [c.path.stem for c in report.failures] == sorted(NON_DETERMINISTIC)
    [bad] = report.failures
    position, recorded, requested = NON_DETERMINISTIC[bad.path.stem]
    div = bad.divergence
    assert div is not None and (div.position, div.recorded, div.requested) == (
        position,
        recorded,
        requested,
    )
    assert div.source is not None and div.source.file == golden.__file__
    with pytest.raises(AssertionError, match=f"{bad.path.stem}.json"):
        Replayer(golden.registry).assert_histories_replay(HISTORIES)
