"""A run started here, driven from memory or read back: both ways in one process, in turn.

Usage: python benchmarks/ab_fresh_start.py [--quick] [--rounds N] [--configs memory sqlite postgres]

``engine.start`` creates and claims a run in one write; its driver then either starts
from the ``RunStarted`` it was given ("new", this tree) or, as before the change, loads
the run and reads its inbox, and its end wakes the claim loop ("old": the worker's
``start_run`` swapped for one that spawns a plain driver). Batches of 3-step workflows
(one after another, then 50 at a time) alternate between the two in one process on one
journal, so the load of the machine hits both alike; figures are medians of the
per-round new/old ratios, for CPU time (``time.process_time``, all threads) and wall time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from _common import emit, meta, note, parser, workdir
from count_journal_calls import three
from head_to_head import on_each_journal

from continuum_py import Engine, _worker
from continuum_py.journal import Lease, NewRun, RunRecord

NEW = _worker.Worker.start_run


async def _old(
    self: _worker.Worker, run: NewRun, *, ttl: float
) -> tuple[RunRecord, Lease | None, bool]:
    rec, lease, created = await self._client.start_run(run, claim_for=self.worker_id, ttl=ttl)
    if lease is not None:
        self.spawn(lease)  # a plain driver: loads the run, reads its inbox, wakes the claim loop
    return rec, lease, created


async def _batch(engine: Engine, n: int, at_a_time: int) -> tuple[float, float]:
    sem = asyncio.Semaphore(at_a_time)

    async def one(i: int) -> None:
        async with sem:
            await (await engine.start(three, i)).result()

    c0, w0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return (time.process_time() - c0) / n * 1e6, (time.perf_counter() - w0) / n * 1e6


async def _measure(url: str, batch: int, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with Engine(url, worker_id="ab-worker", concurrency=100) as engine:
        await _batch(engine, 20, 1)  # warm-up
        for at_a_time in (1, 50):
            got: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
            for r in range(rounds):
                for mode in ("old", "new") if r % 2 == 0 else ("new", "old"):
                    _worker.Worker.start_run = _old if mode == "old" else NEW  # type: ignore[method-assign]
                    got[mode].append(await _batch(engine, batch, at_a_time))
            _worker.Worker.start_run = NEW  # type: ignore[method-assign]
            fig: dict[str, Any] = {}
            for i, key in enumerate(("cpu_us_per_workflow", "wall_us_per_workflow")):
                ratios = [n[i] / o[i] for n, o in zip(got["new"], got["old"], strict=True)]
                fig[key] = {
                    "old_median": round(statistics.median(o[i] for o in got["old"]), 1),
                    "new_median": round(statistics.median(n[i] for n in got["new"]), 1),
                    "new_over_old_median": round(statistics.median(ratios), 3),
                    "new_over_old_range": [round(min(ratios), 3), round(max(ratios), 3)],
                }
            out["sequential" if at_a_time == 1 else "50_at_a_time"] = fig
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["memory", "sqlite", "postgres"])
    p.add_argument("--rounds", type=int, default=None, help="rounds per mode (12; --quick 2)")
    p.add_argument("--pg-dsn", default=None)
    a = p.parse_args()
    rounds = a.rounds or (2 if a.quick else 12)
    batch = 50 if a.quick else 200
    with workdir(a.dir, keep=a.keep) as folder:

        def measure(config: str, url: str) -> Any:
            note(f"{config}: {rounds} rounds of {batch} workflows per mode")
            return asyncio.run(_measure(url, batch, rounds))

        results = on_each_journal(a.configs, Path(folder), a.pg_dsn, measure)
        info = meta(folder)
    emit(
        {
            "benchmark": "ab_fresh_start",
            "meta": info,
            "params": {"rounds": rounds, "batch": batch},
            "results": results,
        }
    )


if __name__ == "__main__":
    main()
