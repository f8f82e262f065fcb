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

Throughput on a shared machine moves with its load, so each run also reports
the CPU time it took per run (ms), summed by kind: the client process, the
worker processes, and the Postgres backends serving them (found by the
``application_name`` the run's URL sets; read from ``/proc``, so only when
Postgres runs on this machine and its processes are readable, else null);
``postgres_client`` is the part of ``postgres`` that the client's own backends
took (its starts and polls: the client's URL sets an application_name of its own).
CPU per run moves far less with the load than runs per second.

Issue 12 asks that a queue not cut throughput by more than 20% at a limit above
the worker count: ``LIMIT`` (default 50) is above it, and above each worker's
``--concurrency`` (default 20), so the limit is not what bounds the work.

Usage: python benchmarks/bench_queues.py [--quick] [--runs N] [--steps K]
       [--limit L] [--concurrency C] [--repeats R] [--workers N ...] [--dsn DSN]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from _common import DEFAULT_DSN, emit, meta, note, parser, process_cpu_s, workdir

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


def _backend_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each of ``pids`` (Postgres backends) from /proc, nanosecond counts."""
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            out[pid] = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    return out


async def _backends(conn: Any, *apps: str) -> dict[int, float]:
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = ANY($1::text[])", list(apps)
    )
    return _backend_cpu([r[0] for r in rows])


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    # A backend that appeared meanwhile counts whole.
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


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
    import asyncpg

    admin = await asyncpg.connect(dsn)
    try:
        return await _measure(admin, dsn, folder, workers, queued, args)
    finally:
        await admin.close()


async def _measure(
    admin: Any, dsn: str, folder: Path, workers: int, queued: bool, args: Any
) -> dict[str, Any]:
    schema = f"bench_q_{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in dsn else "?"
    app = f"bq_{schema[-8:]}"
    url = f"{dsn}{sep}schema={schema}&application_name={app}"
    client_url = f"{dsn}{sep}schema={schema}&application_name={app}c"
    tag = f"{'q' if queued else 'p'}{workers}-{schema[-4:]}"
    async with Engine(client_url, worker=False, registry=Registry()) as client:
        procs = _spawn(url, workers, args.concurrency, folder, tag)
        try:
            deadline = time.monotonic() + 60
            while not all(READY in log.read_bytes() for _, log in procs):
                if time.monotonic() > deadline or any(p.poll() is not None for p, _ in procs):
                    raise RuntimeError(f"workers did not start: see {folder}")
                await asyncio.sleep(0.05)
            q = Queue("bench", concurrency=args.limit) if queued else None
            db0 = await _backends(admin, app, f"{app}c")
            dbc0 = await _backends(admin, f"{app}c")
            w0 = [process_cpu_s(p.pid) or 0.0 for p, _ in procs]
            c0 = time.process_time()
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
            client_s = time.process_time() - c0
            w1 = [process_cpu_s(p.pid) or 0.0 for p, _ in procs]
            db1 = await _backends(admin, app, f"{app}c")
            dbc1 = await _backends(admin, f"{app}c")
        finally:
            problems = await asyncio.to_thread(_stop, procs)
    await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    per_run = 1e3 / args.runs
    return {
        "seconds": round(seconds, 3),
        "runs_per_s": round(args.runs / seconds, 1),
        "cpu_ms_per_run": {
            "client": round(client_s * per_run, 3),
            "workers": round((sum(w1) - sum(w0)) * per_run, 3),
            "postgres": round(_cpu_delta(db0, db1) * per_run, 3) if db1 else None,
            "postgres_client": round(_cpu_delta(dbc0, dbc1) * per_run, 3) if dbc1 else None,
        },
        "problems": problems,
    }


async def run(args: Any, folder: Path) -> dict[str, Any]:
    configs = [(w, queued) for w in args.workers for queued in (False, True)]
    reps: dict[str, list[dict[str, Any]]] = {}
    for rep in range(args.repeats):
        for workers, queued in configs:
            name = f"postgres_{workers}w_{'queue' if queued else 'plain'}"
            note(f"  repeat {rep + 1}/{args.repeats}: {name}")
            reps.setdefault(name, []).append(await _one(args.dsn, folder, workers, queued, args))
    results: dict[str, Any] = {}
    for name, rs in reps.items():
        rates = [r["runs_per_s"] for r in rs]
        cpu = {
            kind: [r["cpu_ms_per_run"][kind] for r in rs if r["cpu_ms_per_run"][kind] is not None]
            for kind in ("client", "workers", "postgres", "postgres_client")
        }
        results[name] = {
            "runs_per_s_median": statistics.median(rates),
            "runs_per_s_min_max": [min(rates), max(rates)],
            "cpu_ms_per_run_median": {
                k: statistics.median(v) if v else None for k, v in cpu.items()
            },
            "problems": [p for r in rs for p in r["problems"]],
        }
    targets = {}
    for workers in args.workers:
        plain = results[f"postgres_{workers}w_plain"]["runs_per_s_median"]
        queued = results[f"postgres_{workers}w_queue"]["runs_per_s_median"]
        share = queued / plain
        cpu_p = results[f"postgres_{workers}w_plain"]["cpu_ms_per_run_median"]
        cpu_q = results[f"postgres_{workers}w_queue"]["cpu_ms_per_run_median"]
        targets[f"{workers}_workers"] = {
            "queue_cost_us_per_run": round((1 / queued - 1 / plain) * 1e6, 1),
            # What the queue adds in CPU per run, by kind (ms): steadier than runs/s.
            "queue_cpu_ms_per_run": {
                k: None if cpu_q[k] is None or cpu_p[k] is None else round(cpu_q[k] - cpu_p[k], 3)
                for k in cpu_q
            },
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
        "--workers", type=int, nargs="+", default=[1, 3], help="worker counts (default 1 3)"
    )
    p.add_argument(
        "--dsn",
        default=os.environ.get("CONTINUUM_TEST_PG_DSN", DEFAULT_DSN),
        help=f"Postgres DSN (default: $CONTINUUM_TEST_PG_DSN, else {DEFAULT_DSN})",
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
                "workers": args.workers,
                "quick": args.quick,
            },
            **out,
        }
    )


if __name__ == "__main__":
    main()
