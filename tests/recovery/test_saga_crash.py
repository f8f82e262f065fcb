"""Kill -9 a worker while a saga compensates; the restarted worker finishes the compensations.

The saga books a flight, then a hotel and a car in a gather, then fails to pay.
Its compensations run newest completion first; the one chosen by the test waits
at a gate, where the worker process is SIGKILLed. A fresh process (same worker
id, so it takes the run back at once) finishes the run. Then, besides the
guarantees every crash test checks (check_recovery: nothing recorded lost, no
completed step or compensation ran again, the one in flight ran once more with
the next attempt number):

- the run ends failed (or cancelled) with every compensation recorded once, ok;
- the side-effect log shows each compensation's body ran once, except the one
  in flight at the kill, which ran twice;
- the decision to compensate was durable at the kill, in the same history as
  the failure, and was not made a second time.
"""

from __future__ import annotations

import collections

import pytest
import test_durable_crash
from test_durable_crash import Env, check_recovery, kinds

from continuum_py import RunStatus
from continuum_py.events import CompensationStarted, StepScheduled

pytestmark = pytest.mark.slow

# The crash tests' fixture: a SQLite journal, a side-effect log, a gate, worker processes.
env = test_durable_crash.env


def undo_runs(env: Env) -> collections.Counter[str]:
    return collections.Counter(name for *_, name in env.read_log() if name.startswith("undo-"))


@pytest.mark.parametrize("gated", [0, 1, 2], ids=["flight", "hotel", "car"])
async def test_kill_during_a_compensation_finishes_the_rest_once(env: Env, gated: int):
    which = ["flight", "hotel", "car"][gated]
    proc = env.spawn("saga", gated)
    await env.until(proc, f"undo-{which} running", env.logged(f"undo-{which}"))
    before = {"durable-run": await env.history()}
    log_at_kill = env.read_log()
    await env.kill(proc)
    # The failure and the decision were durable before any compensation started.
    assert kinds(before["durable-run"]).count("CompensationStarted") == 1

    env.gate.touch()
    outcome = await env.finish(env.spawn("saga", gated))
    after = await check_recovery(env, before, log_at_kill)
    history = after["durable-run"]

    assert outcome["failed"] == "RuntimeError"
    undone = [position for position, ok in outcome["compensations"]]
    assert all(ok for _, ok in outcome["compensations"])
    # Newest completion first: whichever of hotel and car finished last is undone first.
    completed = [e.position for e in history if type(e).__name__ == "StepCompleted"][:3]
    assert undone == list(reversed(completed))
    assert sum(isinstance(e, CompensationStarted) for e in history) == 1
    compensations = [e for e in history if isinstance(e, StepScheduled) and e.compensates]
    assert sorted({e.compensates for e in compensations}) == sorted(undone)
    runs = undo_runs(env)
    assert runs[f"undo-{which}"] == 2  # in flight at the kill: ran again
    assert all(n == 1 for name, n in runs.items() if name != f"undo-{which}")
    assert await env.status() == RunStatus.FAILED


@pytest.mark.parametrize("gated", [0, 1], ids=["flight", "hotel"])
async def test_kill_during_a_compensation_after_cancel_ends_cancelled(env: Env, gated: int):
    which = ["flight", "hotel"][gated]
    proc = env.spawn("held_saga", gated)
    await env.until(proc, "the run suspended", env.in_status(RunStatus.SUSPENDED))
    await env.client.cancel("durable-run")
    await env.until(proc, f"undo-{which} running", env.logged(f"undo-{which}"))
    before = {"durable-run": await env.history()}
    log_at_kill = env.read_log()
    await env.kill(proc)

    env.gate.touch()
    outcome = await env.finish(env.spawn("held_saga", gated))
    after = await check_recovery(env, before, log_at_kill)
    history = after["durable-run"]

    assert outcome["cancelled"] == "cancel"
    assert outcome["compensations"] == [[2, True], [1, True]]
    decisions = [e for e in history if isinstance(e, CompensationStarted)]
    assert [d.reason for d in decisions] == ["cancelled"]
    runs = undo_runs(env)
    assert runs[f"undo-{which}"] == 2
    assert sum(runs.values()) == 3
