"""A plan and a process entry point for the plan SIGKILL tests.

Run as a script it is one worker process::

    python plan_worker.py URL LOG RUN_ID MODE   # MODE: "fail" (the last branch fails) or "ok"

It starts (or finds) the plan run, drives it to its end, and prints the
outcome as JSON on stdout. Every hook appends ``"branch hook position
attempt"`` to LOG (fsync'd) as its body starts, then works a little, so a kill
can land between the side effect and its record.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import structlog

from continuum_py import Engine, Plan, PlanFailed, PlanState, Registry, StepInfo

REG = Registry()
# net -> db, cache, queue -> app1 (db, cache), app2 (db, queue) -> edge -> verify
SHAPE = [
    ("net", []),
    ("db", ["net"]),
    ("cache", ["net"]),
    ("queue", ["net"]),
    ("app1", ["db", "cache"]),
    ("app2", ["db", "queue"]),
    ("edge", ["app1", "app2"]),
    ("verify", ["edge"]),
]


def _append_line(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def hook(branch: str, kind: str, index: int):
    async def run(state: PlanState) -> str:
        info = StepInfo.current()
        assert info is not None
        _append_line(state.input[0], f"{branch} {kind} {info.position} {info.attempt}\n")
        # Different lengths, so concurrent hooks finish in varying orders.
        await asyncio.sleep(0.002 + 0.002 * (index % 3))
        if kind == "apply" and branch == "verify" and state.input[1] == "fail":
            raise RuntimeError("verify failed")
        state[f"{branch}.{kind}"] = index
        return f"{branch}-{kind}"

    return run


def build(name: str) -> Plan:
    plan = Plan(name, registry=REG)
    for i, (branch, after) in enumerate(SHAPE):
        plan.add(
            branch,
            hook(branch, "apply", i),
            after=after,
            pre=hook(branch, "pre", i) if i % 2 else None,
            rollback=hook(branch, "rollback", i),
            cleanup=hook(branch, "cleanup", i),
        )
    return plan


PLAN = build("crash-plan")


async def outcome(engine: Engine, run_id: str) -> dict[str, object]:
    handle = await engine.get(run_id)
    out: dict[str, object]
    try:
        out = {"result": await handle.result(timeout=60)}
    except PlanFailed as exc:
        out = {
            "failures": sorted(exc.failures),
            "rolled_back": exc.rolled_back,
            "rollback_errors": sorted(exc.rollback_errors),
            "skipped": exc.skipped,
            "cleanup_errors": sorted(exc.cleanup_errors),
        }
    out["branches"] = {b.branch: b.status for b in await handle.branches()}
    return out


async def _main(url: str, log: str, run_id: str, mode: str) -> None:
    async with Engine(url, worker_id="plan-w", registry=REG, snapshot_every=16) as e:
        await e.start(PLAN, log, mode, run_id=run_id)
        print(json.dumps(await outcome(e, run_id)), flush=True)


if __name__ == "__main__":
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        wrapper_class=structlog.make_filtering_bound_logger(40),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    asyncio.run(_main(*sys.argv[1:]))
