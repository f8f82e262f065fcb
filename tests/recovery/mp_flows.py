"""The workflow of the multi-process tests, run by ``continuum worker --import mp_flows``.

Each worker process gets ``MP_WORKER_ID`` (the same as its ``--worker-id``) in
its environment. Every step body appends ``run_id position attempt worker_id``
to the side-effect log named by the run's first argument, one write and one
fsync per line with ``O_APPEND``, so lines from several processes never tear
and their order in the file is the order the bodies ran. The line is written
before the step sleeps and returns: a kill in between repeats the step.

It registers in the default registry (the one the worker command uses); the
test process itself never imports it.
"""

from __future__ import annotations

import asyncio
import os
import time

from continuum_py import Context, RetryPolicy, StepInfo, step, workflow

MOD = 1_000_003
ONCE = RetryPolicy(max_attempts=1)  # a failing step fails the run loudly; no retry muddies the log


def mix(x: int, k: int) -> int:
    """One step's arithmetic, so the test can compute each run's result on its own."""
    return (x * 31 + k * 7) % MOD


def _append_line(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@step(retry=ONCE)
async def mp_mix(log: str, x: int, k: int) -> int:
    info = StepInfo.current()
    assert info is not None
    worker = os.environ.get("MP_WORKER_ID", "?")
    _append_line(log, f"{info.run_id} {info.seq} {info.attempt} {worker}\n")
    await asyncio.sleep(0.01)
    return mix(x, k)


@workflow
async def mp_chain(ctx: Context, log: str, x: int) -> int:
    """Four steps: one, two gathered, one (positions 1 to 4)."""
    a = await mp_mix(log, x, 1)
    b, c = await asyncio.gather(mp_mix(log, a, 2), mp_mix(log, a, 3))
    return await mp_mix(log, b + c, 4)


@step(retry=ONCE)
async def mp_gated_step(log: str, x: int, k: int) -> int:
    """As mp_mix, but the body waits until the file ``{log}.go`` exists: a worker holds it mid-step."""
    info = StepInfo.current()
    assert info is not None
    worker = os.environ.get("MP_WORKER_ID", "?")
    _append_line(log, f"{info.run_id} {info.seq} {info.attempt} {worker}\n")
    while not os.path.exists(f"{log}.go"):  # noqa: ASYNC110, ASYNC240 - another process makes it
        await asyncio.sleep(0.01)
    return mix(x, k)


@workflow
async def mp_gated(ctx: Context, log: str, x: int, steps: int) -> int:
    """``steps`` gated steps in a row (positions 1 to ``steps``)."""
    for k in range(1, steps + 1):
        x = await mp_gated_step(log, x, k)
    return x


@step(retry=ONCE)
async def mp_queued_step(log: str, i: int) -> int:
    """Log ``S run worker time`` when the body starts and ``E run worker time`` when it ends."""
    info = StepInfo.current()
    assert info is not None
    worker = os.environ.get("MP_WORKER_ID", "?")
    _append_line(log, f"S {info.run_id} {worker} {time.time():.6f}\n")
    await asyncio.sleep(0.15)
    _append_line(log, f"E {info.run_id} {worker} {time.time():.6f}\n")
    return i


@workflow
async def mp_queued(ctx: Context, log: str, i: int) -> int:
    """One logged step: the queue tests measure how many of these overlap."""
    return await mp_queued_step(log, i)
