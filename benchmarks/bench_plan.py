"""What does a plan add per branch, next to a plain workflow of the same steps?

A 100-branch plan, each branch depending on the one before, whose last branch
fails: 99 branches apply, then 99 roll back in reverse. Beside it, a plain
``@workflow`` running the same work as ``@step`` calls: 100 sequential steps
(the last failing, caught), then 99 undo steps in reverse. Both on SQLite
(the journal's own settings: WAL, ``synchronous=FULL``).

The same pair also runs on ``memory://`` (no fsync), to show the engine's
own work per branch; the target applies to SQLite.

Reports, per branch (per step for the plain workflow), the time to apply (run
start to the first rollback body) and the time to roll back (first rollback
body to ``handle.result()`` raising or returning), as medians over repeats.
Target from the issue: a plan's overhead per branch within 1.5x of a plain
step's.

Usage: python benchmarks/bench_plan.py [--quick] [--dir DIR] [--branches N] [--repeats R]
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from pathlib import Path
from typing import Any

from _common import emit, meta, note, parser, workdir

from continuum_py import (
    Context,
    Engine,
    Plan,
    PlanFailed,
    PlanState,
    Registry,
    RetryPolicy,
    StepError,
    step,
    workflow,
)

TARGET_RATIO = 1.5
ONCE = RetryPolicy(max_attempts=1)

reg = Registry()
_marks: dict[str, float] = {}


def _first_undo() -> None:
    _marks.setdefault("undo", time.perf_counter())


# ---- the plain workflow ----


@step(retry=ONCE)
async def do(i: int, last: int) -> int:
    if i == last:
        raise RuntimeError("the last one fails")
    return i


@step(retry=ONCE)
async def undo(i: int) -> int:
    _first_undo()
    return i


@workflow(registry=reg, name="bench.plain")
async def plain(ctx: Context, n: int) -> int:
    done = []
    try:
        for i in range(n):
            done.append(await do(i, n - 1))
    except StepError:
        for i in reversed(done):
            await undo(i)
    return len(done)


# ---- the plan ----


def build_plan(n: int) -> Plan:
    plan = Plan(f"bench.plan{n}", registry=reg)

    def apply(i: int):
        async def run(state: PlanState) -> int:
            if i == n - 1:
                raise RuntimeError("the last one fails")
            return i

        return run

    async def rollback(state: PlanState) -> None:
        _first_undo()

    for i in range(n):
        plan.add(f"b{i}", apply(i), after=[f"b{i - 1}"] if i else [], rollback=rollback)
    return plan


async def _one(engine: Engine, wf: Any, n: int) -> dict[str, float]:
    _marks.clear()
    gc.collect()
    t0 = time.perf_counter()
    handle = await engine.start(wf, n)
    try:
        await handle.result(timeout=600)
    except PlanFailed as exc:
        if len(exc.rolled_back) != n - 1:
            raise SystemExit(f"expected {n - 1} rollbacks, got {exc.rolled_back}") from exc
    t2 = time.perf_counter()
    t1 = _marks["undo"]
    return {
        "apply_us_per_branch": round((t1 - t0) / n * 1e6, 1),
        "rollback_us_per_branch": round((t2 - t1) / (n - 1) * 1e6, 1),
    }


async def _compare(url_of: Any, n: int, repeats: int) -> dict[str, Any]:
    plan = build_plan(n)
    out: dict[str, Any] = {}
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "plan": []}
    for name, wf in (("plain", plain), ("plan", plan)):
        # A warm-up pair, not counted: first-run costs (imports, type hints) are not per branch.
        async with Engine(url_of(f"warm-{name}", 0), registry=reg) as engine:
            await _one(engine, wf, n)
    for r in range(repeats):
        # Alternate, each in a fresh journal, so drift in the machine's speed hits both alike.
        for name, wf in (("plain", plain), ("plan", plan)):
            async with Engine(url_of(name, r), registry=reg) as engine:
                runs[name].append(await _one(engine, wf, n))
            note(f"{name} #{r + 1}: {runs[name][-1]}")
    for name, rs in runs.items():
        out[name] = {
            key: round(statistics.median(x[key] for x in rs), 1)
            for key in ("apply_us_per_branch", "rollback_us_per_branch")
        } | {"runs": rs}
    out["plan_over_plain"] = {
        phase: round(
            out["plan"][f"{phase}_us_per_branch"] / out["plain"][f"{phase}_us_per_branch"], 3
        )
        for phase in ("apply", "rollback")
    }
    return out


async def _bench(folder: Path, n: int, repeats: int) -> dict[str, Any]:
    sqlite = await _compare(lambda name, r: f"sqlite:///{folder}/{name}-{r}.db", n, repeats)
    # memory:// shows the engine's own work per branch, with no fsync to hide it (no target).
    memory = await _compare(lambda name, r: "memory://", n, repeats)
    ratios = sqlite["plan_over_plain"]
    return {
        "sqlite": sqlite,
        "memory": memory,
        "targets": {
            "sqlite_plan_over_plain": ratios,
            "target": TARGET_RATIO,
            "met": all(v <= TARGET_RATIO for v in ratios.values()),
        },
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--branches", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    n, repeats = (args.branches, args.repeats) if not args.quick else (10, 1)
    with workdir(args.dir, keep=args.keep) as folder:
        results = asyncio.run(_bench(folder, n, repeats))
        emit(
            {"benchmark": "plan", "branches": n, "repeats": repeats, "results": results}
            | {"meta": meta(folder)}
        )


if __name__ == "__main__":
    main()
