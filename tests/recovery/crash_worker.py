"""Workflows and a process entry point for the recovery tests.

Run as a script it is one worker process of a crash test::

    python crash_worker.py crash  DB LOG RUN_ID ROUNDS FAN   # SIGKILL test
    python crash_worker.py lone   DB LOG RUN_ID STEPS        # SIGKILL test, lone steps
    python crash_worker.py zombie DB GATE_DIR RUN_ID         # SIGSTOP zombie test

It starts (or finds) the run, drives it, prints the result as JSON on stdout and
exits 0. Engine logs (warnings and up) go to stderr. Imported by a test module
(tests/recovery is on sys.path), it provides the same workflows by name.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import structlog

from continuum_py import Context, Engine, Registry, RetryPolicy, StepInfo, step, workflow

REG = Registry()
MOD = 1_000_003
ONCE = RetryPolicy(max_attempts=1)  # a failing step fails the run loudly; no retry muddies the log


def _append_line(path: str, text: str) -> None:
    # One write and one fsync per line: a line in the file is a side effect that happened.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _side_effect(log: str) -> None:
    info = StepInfo.current()
    assert info is not None
    _append_line(log, f"{info.seq} {info.attempt}\n")


# ---- the SIGKILL workflow: rounds of one sequential step and a gather of `fan` steps ----


@step(retry=ONCE)
async def fold(log: str, acc: int, r: int) -> int:
    _side_effect(log)  # the side effect first, then more work: a crash there repeats the step
    await asyncio.sleep(0.002)
    return (acc * 31 + r + 7) % MOD


@step(retry=ONCE)
async def fan_out(log: str, r: int, k: int, fan: int) -> int:
    # Different lengths, rotating by round, so gathered steps finish in varying orders.
    await asyncio.sleep(0.004 * ((r + k) % fan))
    _side_effect(log)
    await asyncio.sleep(0.001)
    return r * 100 + k * k


@workflow(registry=REG)
async def crash_chain(ctx: Context, log: str, rounds: int, fan: int) -> dict[str, int]:
    acc = 1
    for r in range(rounds):
        acc = await fold(log, acc, r)
        vals = await asyncio.gather(*(fan_out(log, r, k, fan) for k in range(fan)))
        acc = (acc + sum(vals) * (r + 1)) % MOD
    return {"acc": acc, "steps": rounds * (fan + 1)}


@workflow(registry=REG)
async def lone_chain(ctx: Context, log: str, steps: int) -> dict[str, int]:
    """One step at a time: after the first, the runner's sequential fast path runs them."""
    acc = 1
    for r in range(steps):
        acc = await fold(log, acc, r)
    return {"acc": acc, "steps": steps}


# ---- the zombie workflow: its middle step waits for a gate file ----


def _tag(name: str) -> str:
    info = StepInfo.current()
    assert info is not None
    return f"{name}:{os.getpid()}:{info.attempt}"


@step(retry=ONCE)
async def quick(name: str) -> str:
    return _tag(name)


@step(retry=ONCE)
async def gated(gate_dir: str, name: str) -> str:
    info = StepInfo.current()
    assert info is not None
    _append_line(os.path.join(gate_dir, f"started-{os.getpid()}-{info.attempt}"), "")
    # The gate is a file because the test opens it from another process.
    while True:
        if _gate_open(gate_dir):
            return _tag(name)
        await asyncio.sleep(0.005)


def _gate_open(gate_dir: str) -> bool:
    return os.path.exists(os.path.join(gate_dir, "open"))


@workflow(registry=REG)
async def gated_chain(ctx: Context, gate_dir: str) -> list[str]:
    first = await quick("first")
    middle = await gated(gate_dir, "gate")
    last = await quick("last")
    return [first, middle, last]


# ---- process entry point ----


async def _main(argv: list[str]) -> None:
    mode, db, *rest = argv
    url = f"sqlite:///{db}"
    if mode == "crash":
        log, run_id, rounds, fan = rest
        # snapshot_every is small so resumes also go through snapshot + tail.
        engine = Engine(url, worker_id="crash-w", registry=REG, snapshot_every=16)
        args: tuple[object, ...] = (log, int(rounds), int(fan))
        wf = crash_chain
    elif mode == "lone":
        log, run_id, steps = rest
        engine = Engine(url, worker_id="lone-w", registry=REG, snapshot_every=16)
        args = (log, int(steps))
        wf = lone_chain  # type: ignore[assignment]
    elif mode == "zombie":
        gate_dir, run_id = rest
        engine = Engine(url, worker_id="a", registry=REG, lease_ttl=0.6)
        args = (gate_dir,)
        wf = gated_chain  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    async with engine:
        handle = await engine.start(wf, *args, run_id=run_id)
        result = await handle.result(timeout=60)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        wrapper_class=structlog.make_filtering_bound_logger(30),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    asyncio.run(_main(sys.argv[1:]))
