"""Random plans: DAGs of up to 12 branches, random failure points and retry counts.

Every hook appends ``(what, branch, hook)`` to a side-effect log when its body
starts and ends, so the properties check what really ran and in what order:

A. every branch starts only after each branch it depends on is applied;
B. with ``continue_on_error``, exactly the branches not downstream of a
   failure run (and nothing is rolled back);
C. otherwise, after a failure, every branch whose apply function succeeded is
   rolled back exactly once, in a reverse topological order (a rollback
   starts only once the rollbacks of its dependents ended);
D. cleanup runs exactly once for each fully applied branch, in the reverse of
   the order in which history recorded them applied;
E. retries re-run only the failing hook, and stop at the first success.

Runs on ``memory://`` with a VirtualClock (retry waits are durable timers).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continuum_py import Engine, Plan, PlanFailed, PlanState, Registry, Retry, RetryPolicy
from continuum_py.events import StepCompleted
from continuum_py.testing import VirtualClock

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
HOOKS = ("pre", "apply", "post")


@dataclass
class Spec:
    after: list[str]
    hooks: tuple[str, ...]  # the apply-phase hooks it has, "apply" always among them
    failing_hook: str  # the hook that fails its first `failures` attempts
    failures: int
    attempts: int  # attempts allowed in all (retry policy or on_error)
    via_on_error: bool

    @property
    def fails_for_good(self) -> bool:
        return self.failures >= self.attempts


@st.composite
def plans(draw: Any) -> tuple[dict[str, Spec], list[str], bool]:
    n = draw(st.integers(1, 12))
    names = [f"b{i}" for i in range(n)]
    specs: dict[str, Spec] = {}
    for i, name in enumerate(names):
        after = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3)) if i else []
        hooks = tuple(h for h in HOOKS if h == "apply" or draw(st.booleans()))
        specs[name] = Spec(
            after=after,
            hooks=hooks,
            failing_hook=draw(st.sampled_from(hooks)),
            failures=draw(st.sampled_from([0, 0, 0, 1, 2, 9])),
            attempts=draw(st.integers(1, 3)),
            via_on_error=draw(st.booleans()),
        )
    # Branches are added in any order: a dependency may be added after its dependent.
    order = draw(st.permutations(names))
    return specs, list(order), draw(st.booleans())


def build(specs: dict[str, Spec], order: list[str], coe: bool, log: list[tuple[str, ...]]) -> Plan:
    plan = Plan("prop", continue_on_error=coe, registry=Registry())
    left = {name: spec.failures for name, spec in specs.items()}

    def hook(name: str, kind: str):
        async def run(state: PlanState) -> str:
            log.append(("start", name, kind))
            await asyncio.sleep(0)  # let concurrent branches interleave
            if kind == specs[name].failing_hook and left[name] > 0:
                left[name] -= 1
                log.append(("fail", name, kind))
                raise RuntimeError(f"{name}/{kind} broke")
            log.append(("end", name, kind))
            return f"{name}:{kind}"

        return run

    for name in order:
        spec = specs[name]
        on_error = None
        retry = RetryPolicy(max_attempts=spec.attempts, initial_interval=0, jitter=0)
        if spec.via_on_error:
            retry = None
            allowed = spec.attempts

            def on_error(state: PlanState, exc: Exception, n: int, allowed: int = allowed) -> Any:
                return Retry(after=5) if n < allowed else None

        plan.add(
            name,
            hook(name, "apply"),
            after=spec.after,
            pre=hook(name, "pre") if "pre" in spec.hooks else None,
            post=hook(name, "post") if "post" in spec.hooks else None,
            rollback=hook(name, "rollback"),
            cleanup=hook(name, "cleanup"),
            retry=retry,
            on_error=on_error,
        )
    return plan


def downstream(specs: dict[str, Spec], roots: set[str]) -> set[str]:
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, spec in specs.items():
            if name not in out and any(d in roots or d in out for d in spec.after):
                out.add(name)
                changed = True
    return out


async def run_plan(plan: Plan) -> tuple[Any, list[Any]]:
    async with Engine("memory://", registry=Registry(), clock=VirtualClock(T0)) as eng:
        h = await eng.start(plan)
        try:
            outcome: Any = await h.result(timeout=30)
        except PlanFailed as exc:
            outcome = exc
        return outcome, await eng.history(h.run_id)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_random_plans_apply_roll_back_and_clean_up_in_order(drawn):
    specs, order, coe = drawn
    log: list[tuple[str, ...]] = []
    plan = build(specs, order, coe, log)
    outcome, history = asyncio.run(run_plan(plan))

    def first(what: str, name: str, kinds: tuple[str, ...]) -> int | None:
        hits = [i for i, e in enumerate(log) if e[0] == what and e[1] == name and e[2] in kinds]
        return hits[0] if hits else None

    def last(what: str, name: str, kinds: tuple[str, ...]) -> int | None:
        hits = [i for i, e in enumerate(log) if e[0] == what and e[1] == name and e[2] in kinds]
        return hits[-1] if hits else None

    started = {n for n in specs if first("start", n, HOOKS) is not None}
    doomed = {n for n in started if specs[n].fails_for_good}
    failed = set(outcome.failures) if isinstance(outcome, PlanFailed) else set()
    # Once a plan stops, on_error retries are not taken: a branch in flight then
    # may fail although a retry would have saved it. Nothing else fails.
    assert doomed <= failed
    for name in failed - doomed:
        assert not coe and doomed and specs[name].via_on_error, name
    applied = started - failed
    apply_ok = {n for n in started if last("end", n, ("apply",)) is not None}

    # A. dependencies first.
    for name in started:
        begin = first("start", name, HOOKS)
        for dep in specs[name].after:
            assert dep in applied, (name, dep)
            done = last("end", dep, specs[dep].hooks)
            assert done is not None and done < begin, (name, dep)

    # E. retries: the failing hook ran failures+1 times (or `attempts` if it never
    # succeeded); every other hook that ran, once.
    for name in started:
        spec = specs[name]
        for kind in spec.hooks:
            runs = sum(1 for e in log if e == ("start", name, kind))
            cut_short = not coe and failed and spec.via_on_error  # see above
            if kind == spec.failing_hook and cut_short:
                assert runs <= min(spec.failures + 1, spec.attempts), (name, kind, runs)
            elif kind == spec.failing_hook:
                assert runs in (0, min(spec.failures + 1, spec.attempts)), (name, kind, runs)
            else:
                assert runs <= 1, (name, kind, runs)

    rollbacks = [e[1] for e in log if e[0] == "start" and e[2] == "rollback"]
    cleanups = [e[1] for e in log if e[0] == "start" and e[2] == "cleanup"]

    if not failed:
        assert started == set(specs)
        assert outcome == {n: f"{n}:apply" for n in specs}
        assert rollbacks == []
    else:
        assert isinstance(outcome, PlanFailed)
        assert set(outcome.skipped) == set(specs) - started
        if coe:
            # B. exactly the branches not downstream of a failure ran; nothing undone.
            assert started == set(specs) - downstream(specs, failed)
            assert rollbacks == [] and outcome.rolled_back == []
        else:
            # C. each branch whose apply function succeeded is rolled back once ...
            assert sorted(rollbacks) == sorted(apply_ok)
            assert set(outcome.rolled_back) == apply_ok
            # ... after the rollbacks of every branch depending on it.
            for name in apply_ok:
                for dep in specs[name].after:
                    assert last("end", name, ("rollback",)) < first("start", dep, ("rollback",))

    # D. cleanup: once per fully applied branch, last applied (as recorded) first.
    last_hook = {n: f"prop/{n}/{specs[n].hooks[-1]}" for n in specs}
    recorded = [
        n
        for ev in history
        if isinstance(ev, StepCompleted)
        for n in specs
        if ev.step == last_hook[n]
    ]
    assert cleanups == list(reversed(recorded))
    assert set(recorded) == applied
