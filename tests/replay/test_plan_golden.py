"""Golden plan histories: recorded plan runs that today's plan code must still replay.

A plan's history is its hook steps (named ``plan/branch/hook``), its retry and
pause timers, and the values it publishes (its shape, branch statuses, its
outcome). These goldens pin all of it: renaming a step, reordering the calls
of a phase or publishing under other keys makes them fail to replay.

Record them again (only for a deliberate change of the recorded shape) with::

    .venv/bin/python tests/replay/test_plan_golden.py
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest

from continuum_py import (
    Engine,
    Plan,
    PlanFailed,
    PlanState,
    Registry,
    Retry,
    RetryPolicy,
)
from continuum_py.events import RunCompleted, RunFailedEvent
from continuum_py.plan import branch_statuses
from continuum_py.testing import Replayer, VirtualClock, dump_history, load_history

HISTORIES = Path(__file__).resolve().parent / "plan_histories"
registry = Registry()
_left: dict[str, int] = {}


def _hook(name: str, kind: str, *, fails: int = 0):
    async def run(state: PlanState) -> str:
        key = f"{name}/{kind}"
        if _left.setdefault(key, fails):
            _left[key] -= 1
            raise RuntimeError(f"{key} broke")
        if kind == "apply":
            state[f"{name}.done"] = True
        return f"{name}:{kind}"

    return run


def _plan(name: str, *, fail_app: bool) -> Plan:
    plan = Plan(name, registry=registry)
    plan.add("net", _hook("net", "apply"), rollback=_hook("net", "rollback"))
    plan.add(
        "db",
        _hook("db", "apply", fails=1),
        after=["net"],
        pre=_hook("db", "pre"),
        rollback=_hook("db", "rollback"),
        cleanup=_hook("db", "cleanup"),
        retry=RetryPolicy(max_attempts=2, initial_interval=5, jitter=0),
    )
    plan.add(
        "cache",
        _hook("cache", "apply"),
        after=["net"],
        post=_hook("cache", "post", fails=1),
        rollback=_hook("cache", "rollback"),
        on_error=lambda state, exc, attempt: Retry(after=60) if attempt < 2 else None,
    )
    plan.add(
        "app",
        _hook("app", "apply", fails=9 if fail_app else 0),
        after=["db", "cache"],
        cleanup=_hook("app", "cleanup"),
    )
    plan.add("dns", _hook("dns", "apply"), after=["app"])
    plan.pause("db", 30)
    return plan


PLANS = {
    "plan_applied": _plan("golden-plan-ok", fail_app=False),
    "plan_rolled_back": _plan("golden-plan-failing", fail_app=True),
}
STATUSES = {
    "plan_applied": dict.fromkeys(["net", "db", "cache", "app", "dns"], "applied"),
    "plan_rolled_back": {
        "net": "rolled_back",
        "db": "rolled_back",
        "cache": "rolled_back",
        "app": "failed",
        "dns": "skipped",
    },
}


async def _record(stem: str) -> bytes:
    from make_golden import START, _portable

    _left.clear()
    async with Engine("memory://", registry=registry, clock=VirtualClock(START)) as engine:
        handle = await engine.start(PLANS[stem], "eu", run_id=stem)
        with contextlib.suppress(PlanFailed):
            await handle.result(timeout=30)
        events = await engine.history(handle.run_id)
    return dump_history([_portable(e) for e in events]) + b"\n"


@pytest.mark.parametrize("stem", sorted(PLANS))
def test_plan_golden_replays_to_its_recorded_outcome(stem):
    events = load_history((HISTORIES / f"{stem}.json").read_bytes())
    replayed = Replayer(registry).replay(events)  # NonDeterminismError fails the test
    assert replayed.finished and replayed.events == len(events)
    end = events[-1]
    if isinstance(end, RunCompleted):
        assert replayed.error is None
        assert replayed.result == {n: f"{n}:apply" for n in STATUSES[stem]}
    else:
        assert isinstance(end, RunFailedEvent) and isinstance(replayed.error, PlanFailed)
        assert (replayed.error.error_type, str(replayed.error)) == (
            end.error.type,
            end.error.message,
        )
    statuses = branch_statuses(events)
    assert statuses is not None
    assert {b.branch: b.status for b in statuses} == STATUSES[stem]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    HISTORIES.mkdir(exist_ok=True)
    for stem in PLANS:
        (HISTORIES / f"{stem}.json").write_bytes(asyncio.run(_record(stem)))
        print(f"recorded {stem}.json")
