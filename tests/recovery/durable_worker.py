"""Workflows and a worker process for the durable-feature crash tests.

Run as a script it is one worker process::

    python durable_worker.py WORKFLOW DB LOG GATE RUN_ID [ARG ...]

It starts (or finds) run RUN_ID of WORKFLOW with ``(LOG, GATE, *ARGS)``, drives
it, prints the outcome as JSON on stdout and exits 0 (also for a cancelled
run: ``{"cancelled": reason, "compensations": [...]}``, and a failed one:
``{"failed": error_type, "compensations": [[position undone, ok], ...]}``). Every step appends ``run_id position attempt
label`` to LOG (one fsync'd line) when its body runs, so a test can count step
executions across processes. Gated steps then wait until the file GATE exists:
that is where a test kills the process. Engine logs (warnings and up) go to
stderr. Imported by a test module (tests/recovery is on sys.path), it provides
the same workflows by name.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import structlog

from continuum_py import (
    CompensationOutcome,
    Context,
    Engine,
    Registry,
    RetryPolicy,
    RunCancelled,
    RunFailed,
    StepInfo,
    step,
    workflow,
)

REG = Registry()
ONCE = RetryPolicy(max_attempts=1)  # a failing step fails the run loudly; no retry muddies the log
WORKER_ID = "durable-w"  # the same id in every process: a restart reclaims its own runs at once


def _append_line(path: str, text: str) -> None:
    # One write and one fsync per line: a line in the file is a side effect that happened.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _side_effect(log: str, label: str) -> StepInfo:
    info = StepInfo.current()
    assert info is not None
    _append_line(log, f"{info.run_id} {info.seq} {info.attempt} {label}\n")
    return info


async def _until_open(gate: str) -> None:
    # The gate is a file because the test opens it from another process.
    while True:
        if _gate_open(gate):
            return
        await asyncio.sleep(0.005)


def _gate_open(gate: str) -> bool:
    return os.path.exists(gate)


@step(name="work", retry=ONCE)
async def work(log: str, label: str) -> str:
    info = _side_effect(log, label)
    return f"{label}@{info.seq}"


@step(name="gated_work", retry=ONCE)
async def gated_work(log: str, gate: str, label: str) -> str:
    info = _side_effect(log, label)
    await _until_open(gate)
    return f"{label}@{info.seq}"


# ---- a: a durable sleep, suspended in the journal ----


@workflow(name="sleeper", registry=REG)
async def sleeper(ctx: Context, log: str, gate: str, seconds: float) -> list[str]:
    before = await work(log, "before")
    await ctx.sleep(seconds)
    return [before, await work(log, "after")]


# ---- b: a signal wait; the signal may come while no worker runs ----


@workflow(name="approver", registry=REG)
async def approver(ctx: Context, log: str, gate: str) -> dict[str, object]:
    prepared = await gated_work(log, gate, "prepare")
    decision = await ctx.wait_for_signal("approve", timeout=3600)
    return {"prepared": prepared, "decision": decision, "done": await work(log, "finish")}


# ---- c: a parent waiting on a child whose step is running ----


@workflow(name="packer", registry=REG)
async def packer(ctx: Context, log: str, gate: str) -> list[str]:
    return [
        await work(log, "pick"),
        await gated_work(log, gate, "pack"),
        await work(log, "label"),
    ]


@workflow(name="shipper", registry=REG)
async def shipper(ctx: Context, log: str, gate: str) -> dict[str, object]:
    order = await work(log, "order")
    packed = await packer(log, gate)
    return {"order": order, "packed": packed, "shipped": await work(log, "ship")}


# ---- d: cancellation with a cleanup step ----


@workflow(name="holder", registry=REG)
async def holder(ctx: Context, log: str, gate: str) -> str:
    held = await work(log, "hold")
    try:
        await ctx.sleep(3600)
    except asyncio.CancelledError:
        await gated_work(log, gate, "cleanup")
        raise
    return held


# ---- e: a saga; one compensation waits at the gate ----


@step(name="unbook", retry=ONCE)
async def unbook(booking: str, log: str, gate: str, label: str, gated: str) -> str:
    _side_effect(log, f"undo-{label}")
    if label == gated:
        await _until_open(gate)
    return f"unbooked {booking}"


@step(name="book", retry=ONCE, compensate=unbook)
async def book(log: str, gate: str, label: str, gated: str) -> str:
    info = _side_effect(log, label)
    return f"{label}@{info.position}"


@step(name="pay", retry=ONCE)
async def pay(log: str) -> str:
    _side_effect(log, "pay")
    raise RuntimeError("card declined")


@workflow(name="saga", registry=REG)
async def saga(ctx: Context, log: str, gate: str, gated: float) -> str:
    # ``gated`` is the index (as a float, like every extra argument) of the booking
    # whose compensation waits at the gate.
    names = ["flight", "hotel", "car"]
    which = names[int(gated)]
    await book(log, gate, "flight", which)
    await asyncio.gather(book(log, gate, "hotel", which), book(log, gate, "car", which))
    return await pay(log)


@workflow(name="held_saga", registry=REG)
async def held_saga(ctx: Context, log: str, gate: str, gated: float) -> str:
    which = ["flight", "hotel"][int(gated)]
    await book(log, gate, "flight", which)
    await book(log, gate, "hotel", which)
    await ctx.sleep(3600)
    return "kept"


# ---- process entry point ----


def worker_engine(db: str) -> Engine:
    """The engine every worker process of these tests runs."""
    return Engine(
        f"sqlite:///{db}",
        worker_id=WORKER_ID,
        registry=REG,
        # Signals and cancels sent from another process are found by polling.
        poll_interval=0.05,
        # Suspend for any timer, however near: the journal, not the process, waits.
        hold=0.0,
    )


def _undone(compensations: list[CompensationOutcome]) -> list[list[object]]:
    return [[c.compensates, c.ok] for c in compensations]


async def _main(argv: list[str]) -> None:
    name, db, log, gate, run_id, *extra = argv
    args: list[object] = [log, gate, *(float(a) for a in extra)]
    async with worker_engine(db) as engine:
        handle = await engine.start(name, *args, run_id=run_id)
        try:
            result: object = await handle.result(timeout=60)
        except RunCancelled as exc:
            result = {"cancelled": exc.reason, "compensations": _undone(exc.compensations)}
        except RunFailed as exc:
            result = {"failed": exc.error_type, "compensations": _undone(exc.compensations)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        wrapper_class=structlog.make_filtering_bound_logger(30),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    asyncio.run(_main(sys.argv[1:]))
