"""Runs per second through a queue with a global limit, beside the same runs with no queue.

On Postgres (the journal where workers in many processes share one limit), with
1 and 3 `continuum worker` processes. For each configuration a fresh schema;
the workers are started and ready first, then a client starts N runs of a
workflow of K trivial steps, either plain or in ``Queue("bench",
concurrency=LIMIT)``, and the script polls until every run finished. The window
is from the first start to the poll that saw the last run done (so it includes
starting the runs, the same in both modes). Configurations are interleaved over
the repeats so drift on the machine hits them alike; medians are reported, and
per worker count the queue's cost per run (``1/queued - 1/plain``, in µs) and
its throughput as a share of the plain one.

Issue 12 asks that a queue not cut throughput by more than 20% at a limit above
the worker count: ``LIMIT`` (default 50) is above it, and above each worker's
``--concurrency`` (default 20), so the limit is not what bounds the work.

Usage: python benchmarks/bench_queues.py [--quick] [--runs N] [--steps K]
       [--limit L] [--concurrency C] [--repeats R] [--dsn DSN]
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from _common import emit, meta, note, parser, workdir

from continuum_py import Context, Engine, Queue, Registry, step, workflow

HERE = Path(__file__).resolve().parent
WORKFLOW = "bench.queues"
READY = b"worker.started"


@step
async def queue_step(i: int) -> int:
    return i


@workflow(name=WORKFLOW)
async def queued_workflow(ctx: Context, k: int) -> int:
    total = 0
    for i in range(k):
        total += await queue_step(i)
    return total


def _spawn(url: str, n: int, concurrency: int, folder: Path, tag: str) -> list[Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    procs = []
    for i in range(n):
        log = folder / f"{tag}-{i}.log"
        with log.open("wb") as err:
            argv = [sys.executable, "-m", "continuum_py", "worker", "--url", url]
            argv += ["--import", "bench_queues", "--concurrency", str(concurrency)]
            argv += ["--worker-id", f"{tag}-{i}", "--grace", "5"]
            procs.append(
                (
                    subprocess.Popen(
                        argv, stdout=subprocess.DEVNULL, stderr=err, cwd=folder, env=env
                    ),
                    log,
                )
            )
    return procs


def _stop(procs: list[Any]) -> list[str]:
    problems = []
    for proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, log in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            problems.append(f"{log.name}: did not stop on SIGTERM")
        text = log.read_bytes().decode(errors="replace")
        problems += [ln for ln in text.splitlines() if "[error" in ln or "Traceback" in ln][:3]
    return problems


async def _one(dsn: str, folder: Path, workers: int, queued: bool, args: Any) -> dict[str, Any]:
    schema = f"bench_q_{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in dsn else "?"
    url = f"{dsn}{sep}schema={schema}"
    tag = f"{'q' if queued else 'p'}{workers}-{schema[-4:]}"
    async with Engine(url, worker=False, registry=Registry()) as client:
        procs = _spawn(url, workers, args.concurrency, folder, tag)
        try:
            deadline = time.monotonic() + 60
            while not all(READY in log.read_bytes() for _, log in procs):
                if time.monotonic() > deadline or any(p.poll() is not None for p, _ in procs):
                    raise RuntimeError(f"workers did not start: see {folder}")
                await asyncio.sleep(0.05)
            q = Queue("bench", concurrency=args.limit) if queued else None
            t0 = time.perf_counter()
            for _ in range(args.runs):
                await client.start(WORKFLOW, args.steps, queue=q)
            while True:
                left = [
                    r
                    for status in ("pending", "running")
                    for r in await client.list_runs(status=status, limit=1)
                ]
                if not left:
                    break
                await asyncio.sleep(0.02)
            seconds = time.perf_counter() - t0
        finally:
            problems = await asyncio.to_thread(_stop, procs)
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    return {
        "seconds": round(seconds, 3),
        "runs_per_s": round(args.runs / seconds, 1),
        "problems": problems,
    }


async def run(args: Any, folder: Path) -> dict[str, Any]:
    configs = [(w, queued) for w in (1, 3) for queued in (False, True)]
    reps: dict[str, list[dict[str, Any]]] = {}
    for rep in range(args.repeats):
        for workers, queued in configs:
            name = f"postgres_{workers}w_{'queue' if queued else 'plain'}"
            note(f"  repeat {rep + 1}/{args.repeats}: {name}")
            reps.setdefault(name, []).append(await _one(args.dsn, folder, workers, queued, args))
    results: dict[str, Any] = {}
    for name, rs in reps.items():
        rates = [r["runs_per_s"] for r in rs]
        results[name] = {
            "runs_per_s_median": statistics.median(rates),
            "runs_per_s_min_max": [min(rates), max(rates)],
            "problems": [p for r in rs for p in r["problems"]],
        }
    targets = {}
    for workers in (1, 3):
        plain = results[f"postgres_{workers}w_plain"]["runs_per_s_median"]
        queued = results[f"postgres_{workers}w_queue"]["runs_per_s_median"]
        share = queued / plain
        targets[f"{workers}_workers"] = {
            "queue_cost_us_per_run": round((1 / queued - 1 / plain) * 1e6, 1),
            "queued_over_plain": round(share, 3),
            "target": ">= 0.8 (a queue cuts throughput by at most 20% at a limit above the workers)",
            "met": share >= 0.8,
        }
    return {"results": results, "targets": targets}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=None, help="runs per configuration (default 600)")
    p.add_argument("--steps", type=int, default=3, help="steps per run")
    p.add_argument("--limit", type=int, default=50, help="the queue's concurrency")
    p.add_argument("--concurrency", type=int, default=20, help="each worker's --concurrency")
    p.add_argument("--repeats", type=int, default=None, help="repeats (default 3)")
    p.add_argument(
        "--dsn",
        default=os.environ.get("CONTINUUM_TEST_PG_DSN"),
        help="Postgres DSN (default: $CONTINUUM_TEST_PG_DSN)",
    )
    args = p.parse_args()
    if not args.dsn:
        note("no Postgres DSN (--dsn or $CONTINUUM_TEST_PG_DSN): nothing measured")
        emit({"benchmark": "queues", "meta": meta(), "skipped": "no Postgres DSN"})
        return
    args.runs = args.runs or (60 if args.quick else 600)
    args.repeats = args.repeats or (1 if args.quick else 3)
    with workdir(args.dir, keep=args.keep) as folder:
        out = asyncio.run(run(args, folder))
    emit(
        {
            "benchmark": "queues",
            "meta": meta(),
            "params": {
                "runs": args.runs,
                "steps": args.steps,
                "limit": args.limit,
                "worker_concurrency": args.concurrency,
                "repeats": args.repeats,
                "quick": args.quick,
            },
            **out,
        }
    )


if __name__ == "__main__":
    main()
