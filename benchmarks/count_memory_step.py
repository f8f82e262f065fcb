"""What one sequential ``memory://`` step costs, counted: repeatable on a loaded machine.

Times move with whatever else the machine runs; counts do not. Each count is the
difference between a chain of ``--long`` steps and one of ``--short`` steps (after a
warm-up chain), divided by the difference in steps, so start-up and the run's
start and end cancel out.

- ``calls``: Python function calls per step (cProfile; C functions included).
- ``instructions``: CPU instructions per step, by running this script under
  ``valgrind --tool=callgrind`` twice (``--chain`` mode) and reading its totals;
  needs valgrind on the PATH. Syscalls (``getpid()``) do not count as instructions.
  Also the instructions of one asyncio task round trip, the yardstick of
  ``head_to_head.py`` (its own loop, timing calls included), counted the same way,
  and the step over it: a ratio that holds on a loaded machine.
- ``cpu``: CPU seconds per step (``time.process_time``), the minimum over
  ``--rounds`` 1,000-step chains, and of a task round trip the same way.

Usage: python benchmarks/count_memory_step.py [--what calls instructions cpu]
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, meta, parser
from head_to_head import _task_round_trip

from continuum_py import Context, Engine, step, workflow


@step
async def noop(i: int) -> int:
    return i


@workflow(name="count.chain")
async def chain(ctx: Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
    return total


async def _chain(engine: Engine, n: int) -> None:
    handle = await engine.start(chain, n)
    assert await handle.result() == sum(range(n))


async def _calls(short: int, long: int) -> float:
    counts = []
    async with Engine("memory://", worker_id="count") as engine:
        await _chain(engine, 20)
        for n in (short, long):
            prof = cProfile.Profile()
            prof.enable()
            await _chain(engine, n)
            prof.disable()
            raw: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
            counts.append(sum(v[1] for v in raw.values()))
    return (counts[1] - counts[0]) / (long - short)


def _instructions(short: int, long: int, mode: str = "--chain") -> float:
    totals = []
    with tempfile.TemporaryDirectory() as d:
        for n in (short, long):
            out = Path(d) / f"callgrind.{n}"
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
            subprocess.run(
                [*cmd, __file__, mode, str(n)],
                check=True,
                capture_output=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
            found = re.search(r"^summary: (\d+)", out.read_text(), re.MULTILINE)
            assert found, "no summary line in callgrind's output"
            totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / (long - short)


async def _cpu(rounds: int) -> dict[str, float]:
    async def nothing() -> None:
        return None

    step_s = trip_s = float("inf")
    async with Engine("memory://", worker_id="count") as engine:
        await _chain(engine, 20)
        for _ in range(rounds):
            t0 = time.process_time()
            await _chain(engine, 1000)
            step_s = min(step_s, (time.process_time() - t0) / 1000)
            t0 = time.process_time()
            for _ in range(10_000):
                await asyncio.create_task(nothing())
            trip_s = min(trip_s, (time.process_time() - t0) / 10_000)
    return {
        "cpu_us_per_step": round(step_s * 1e6, 2),
        "cpu_us_per_task_round_trip": round(trip_s * 1e6, 2),
        "step_over_task_round_trip": round(step_s / trip_s, 3),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--what", nargs="+", choices=["calls", "instructions", "cpu"], default=["calls"])
    p.add_argument("--short", type=int, default=200)
    p.add_argument("--long", type=int, default=1200)
    p.add_argument("--rounds", type=int, default=15, help="1,000-step chains timed for cpu")
    p.add_argument("--chain", type=int, help=argparse.SUPPRESS)
    p.add_argument("--trips", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.chain is not None:  # one chain, for callgrind to count
        asyncio.run(_one(a.chain))
        return
    if a.trips is not None:  # task round trips, for callgrind to count
        asyncio.run(_task_round_trip(a.trips))
        return
    results: dict[str, Any] = {}
    if "calls" in a.what:
        results["calls_per_step"] = round(asyncio.run(_calls(a.short, a.long)), 2)
    if "instructions" in a.what:
        step = _instructions(a.short, a.long)
        # The yardstick as head_to_head.py times it, counted the same way.
        trip = _instructions(a.short * 10, a.long * 10, "--trips")
        results["instructions_per_step"] = round(step)
        results["instructions_per_task_round_trip"] = round(trip)
        results["step_over_task_round_trip_instructions"] = round(step / trip, 3)
    if "cpu" in a.what:
        results |= asyncio.run(_cpu(3 if a.quick else a.rounds))
    emit({"benchmark": "count_memory_step", "meta": meta(), "results": results})


async def _one(n: int) -> None:
    async with Engine("memory://", worker_id="count") as engine:
        await _chain(engine, 20)
        await _chain(engine, n)


if __name__ == "__main__":
    main()
