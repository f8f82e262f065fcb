"""What does a saga cost, on SQLite? Doing N compensable steps, and undoing them.

Three workflows of N steps whose bodies do nothing, run through a real
``Engine`` on a fresh SQLite file each (the journal's own settings: WAL,
``synchronous=FULL``), alternating (each kind first in turn), ROUNDS times:

- ``plain``: N steps without compensations, then it returns;
- ``saga_apply``: the same N steps, each with ``compensate=``, then it returns
  (what declaring compensations costs when nothing fails);
- ``saga_rollback``: the same, then a step that fails for good, so the engine
  undoes all N, newest first (each compensation a durable step).

Reports microseconds per step for each, and for the rollback the time of the
compensation phase alone (from the failure's record to the run's end) per
compensation. The headline ratios, measured in the same run: saga apply per
step over plain per step (declaring compensations should cost nothing), and
one compensation over one plain step (a compensation is a step, so ~1).

Usage: python benchmarks/bench_saga.py [--quick] [--dir DIR] [--steps N] [--rounds R]
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from _common import emit, meta, note, parser, workdir

from continuum_py import Context, Engine, Registry, RetryPolicy, RunFailed, step, workflow
from continuum_py.events import CompensationStarted

reg = Registry()


@step(name="bench.undo")
async def undo(result: int, i: int) -> None:
    return None


@step(name="bench.plain")
async def plain(i: int) -> int:
    return i


@step(name="bench.compensable", compensate=undo)
async def compensable(i: int) -> int:
    return i


@step(name="bench.fail", retry=RetryPolicy(max_attempts=1))
async def fail() -> None:
    raise RuntimeError("the last step fails")


@workflow(registry=reg, name="bench.plain_run")
async def plain_run(ctx: Context, n: int) -> int:
    return sum([await plain(i) for i in range(n)])


@workflow(registry=reg, name="bench.saga_run")
async def saga_run(ctx: Context, n: int, then_fail: bool) -> int:
    total = sum([await compensable(i) for i in range(n)])
    if then_fail:
        await fail()
    return total


async def _one(db: Path, kind: str, n: int) -> dict[str, float]:
    async with Engine(f"sqlite:///{db}", registry=reg) as engine:
        started = time.perf_counter()
        if kind == "plain":
            handle: Any = await engine.start(plain_run, n)
        else:
            handle = await engine.start(saga_run, n, kind == "saga_rollback")
        try:
            await handle.result(timeout=600)
        except RunFailed as exc:
            if len(exc.compensations) != n or not all(c.ok for c in exc.compensations):
                raise SystemExit(f"the rollback did not undo all {n} steps") from exc
        total = time.perf_counter() - started
        history = await engine.history(handle.run_id)
    out = {"us_per_step": total / n * 1e6}
    if kind == "saga_rollback":
        decision = next(e for e in history if isinstance(e, CompensationStarted))
        # Engine-clock stamps (wall time): the compensation phase, decision to end.
        out["us_per_compensation"] = (history[-1].at - decision.at) / n * 1e6
        out["us_per_forward_step"] = (decision.at - history[0].at) / n * 1e6
    return out


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--steps", type=int, default=100, help="steps per run (default 100)")
    p.add_argument("--rounds", type=int, default=5, help="runs of each kind (default 5)")
    args = p.parse_args()
    n = 20 if args.quick else args.steps
    rounds = 2 if args.quick else args.rounds
    kinds = ["plain", "saga_apply", "saga_rollback"]
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    with workdir(args.dir, keep=args.keep) as folder:
        for r in range(rounds):
            # Each kind takes each place in the order in turn: no kind always goes first.
            for k in kinds[r % 3 :] + kinds[: r % 3]:
                samples[k].append(await _one(folder / f"{k}-{r}.db", k, n))
                note(f"round {r + 1}/{rounds} {k}: {samples[k][-1]['us_per_step']:.0f} us/step")
        doc = meta(folder)

    def median(kind: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[kind])

    plain_us = median("plain", "us_per_step")
    results = {
        "plain_us_per_step": plain_us,
        "saga_apply_us_per_step": median("saga_apply", "us_per_step"),
        "saga_rollback_forward_us_per_step": median("saga_rollback", "us_per_forward_step"),
        "saga_rollback_us_per_compensation": median("saga_rollback", "us_per_compensation"),
    }
    doc.update(
        benchmark="saga",
        params={"steps": n, "rounds": rounds, "journal": "sqlite (WAL, synchronous=FULL)"},
        results=results,
        ratios={
            "saga_apply_over_plain": results["saga_apply_us_per_step"] / plain_us,
            "compensation_over_plain_step": results["saga_rollback_us_per_compensation"] / plain_us,
        },
        samples=samples,
    )
    emit(doc)


if __name__ == "__main__":
    asyncio.run(main())
