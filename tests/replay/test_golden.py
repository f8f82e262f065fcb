"""Golden histories: recorded runs that today's code must still replay.

Each ``histories/*.json`` is a committed history (``make_golden.py`` recorded
most; one is hand-written to be non-deterministic). Replaying runs no step
body: it feeds the recorded outcomes to the workflow code in
``golden_workflows.py`` and checks every call against history.
"""

from __future__ import annotations

import typing
from pathlib import Path

import golden_workflows as golden
import msgspec
import pytest

from continuum_py import NonDeterminismError, StepError
from continuum_py.events import AnyEvent, RunCompleted, RunFailed, StepScheduled
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
    assert replayed.finished and replayed.events == len(events)
    end = events[-1]
    if isinstance(end, RunCompleted):
        assert replayed.error is None
        assert msgspec.to_builtins(replayed.result) == msgspec.json.decode(end.result)
    else:
        assert isinstance(end, RunFailed)
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
