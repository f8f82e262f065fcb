"""The worker process bench_resume.py starts, kills and restarts (not a benchmark itself).

``--mode run``: start a long workflow on SQLite and work through it, writing
the position of each step to ``--progress`` so the parent knows when to kill it.
``--mode resume``: open an Engine on the same file (it takes the run back) and
report, as one JSON line on stdout, when each phase ended; the moment the first
step body starts in this process is the one that matters.

Times are ``time.monotonic()``, which on Linux is one clock for all processes.
"""

from __future__ import annotations

import time

T_MAIN = time.monotonic()  # first thing: interpreter start-up ends about here

import argparse  # noqa: E402 - imports are timed on purpose, after T_MAIN
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from continuum_py import Context, Engine, StepInfo, step, workflow  # noqa: E402
from continuum_py.adapters import sqlite as _sqlite  # noqa: E402, F401 - part of start-up

T_IMPORTED = time.monotonic()


class _State:
    progress_fd: int | None = None
    first: dict[str, float | int] | None = None
    seen: asyncio.Event | None = None
    forever: asyncio.Event | None = None


@step
async def tick(i: int) -> int:
    if _State.first is None:
        info = StepInfo.current()
        _State.first = {
            "t_first_step": time.monotonic(),
            "position": info.seq if info else -1,
            "attempt": info.attempt if info else -1,
        }
        if _State.seen is not None:
            _State.seen.set()
    if _State.progress_fd is not None:
        os.pwrite(_State.progress_fd, b"%12d\n" % (i + 1), 0)
    elif _State.forever is not None:
        # Resume mode: the first step is all we wanted; hold it until the engine closes.
        await _State.forever.wait()
    return i


@workflow(name="bench.resume")
async def long_workflow(ctx: Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await tick(i)
    return total


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["run", "resume"], required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--worker", required=True)
    p.add_argument("--ttl", type=float, default=30.0)
    p.add_argument("--poll", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--progress")
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    _State.seen = asyncio.Event()
    _State.forever = asyncio.Event()
    if args.mode == "run":
        _State.progress_fd = os.open(args.progress, os.O_WRONLY | os.O_CREAT, 0o644)
    t_open0 = time.monotonic()
    engine = Engine(
        f"sqlite:///{args.db}", worker_id=args.worker, lease_ttl=args.ttl, poll_interval=args.poll
    )
    await engine.open()
    t_opened = time.monotonic()
    if args.mode == "run":
        await engine.start(long_workflow, args.steps, run_id="resume-bench")
        await asyncio.sleep(3600)  # until the parent kills this process
        await engine.aclose()
        return
    try:
        await asyncio.wait_for(_State.seen.wait(), args.timeout)
    finally:
        t_closing = time.monotonic()
        await engine.aclose()
    assert _State.first is not None
    out = {
        "t_main": T_MAIN,
        "t_imported": T_IMPORTED,
        "t_engine_open_start": t_open0,
        "t_engine_opened": t_opened,
        "t_closing": t_closing,
        **_State.first,
    }
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
