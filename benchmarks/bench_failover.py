"""After `kill -9`, how soon does another live worker carry on the dead worker's runs?

Two ``continuum worker`` processes share a journal, with a lease TTL of 60 s so
that only worker liveness (a lock the database or the OS frees when a process
dies) can explain a takeover. Worker ``a`` takes every run of a workflow of slow
steps; worker ``b`` starts and sits idle with room for them all. Then ``a`` is
SIGKILLed, and this script polls the journal for the first event written after
the kill (by ``b``: the run's next step scheduled again) and for the moment no
run is leased to ``a`` any more.

Reported per journal (SQLite, and Postgres when reachable), over the repeats:

- ``first_event_ms``: from just before the SIGKILL to the ``at`` of the first
  event the new owner wrote (both wall clocks of this machine);
- ``all_moved_ms``: from the SIGKILL to the poll that saw no run leased to ``a``
  (up to one poll, 5 ms, late).

Each repeat uses a fresh SQLite file or Postgres schema (dropped afterwards).

Usage: python benchmarks/bench_failover.py [--quick] [--repeats R] [--runs N] [--dsn DSN]
       [--journals sqlite postgres]
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

from _common import DEFAULT_DSN, emit, meta, note, parser, workdir

from continuum_py import Context, step, workflow

WORKFLOW = "bench_failover_slow"
LEASE_TTL = 60.0
POLL_S = 0.005
HERE = Path(__file__).resolve().parent


@step
async def slow_step(i: int) -> int:
    await asyncio.sleep(0.2)
    return i


@workflow(name=WORKFLOW)
async def slow_workflow(ctx: Context, k: int) -> int:
    total = 0
    for i in range(k):
        total += await slow_step(i)
    return total


class _Pool:
    """Worker processes of one repeat; none outlives it."""

    def __init__(self, folder: Path, url: str, concurrency: int) -> None:
        self.folder, self.url, self.concurrency = folder, url, concurrency
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, worker_id: str) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        argv = [sys.executable, "-m", "continuum_py", "worker", "--url", self.url]
        argv += ["--import", "bench_failover", "--worker-id", worker_id]
        argv += ["--lease-ttl", str(LEASE_TTL), "--concurrency", str(self.concurrency)]
        with (self.folder / f"{worker_id}.err").open("wb") as err:
            self.procs[worker_id] = subprocess.Popen(
                argv, cwd=self.folder, env=env, stdout=subprocess.DEVNULL, stderr=err
            )

    async def started(self, worker_id: str, timeout: float = 60.0) -> None:
        log = self.folder / f"{worker_id}.err"
        deadline = time.monotonic() + timeout
        while b"worker.started" not in log.read_bytes():
            if self.procs[worker_id].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {worker_id} did not start: {log.read_text()}")
            await asyncio.sleep(0.02)

    def cleanup(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _leased_to(client: Any, worker: str) -> int:
    runs = await client.list_runs(status="running", limit=10_000)
    return sum(1 for r in runs if r.lease_owner == worker)


async def one_failover(url: str, folder: Path, runs: int) -> dict[str, float]:
    """One kill; the two delays in milliseconds."""
    from continuum_py import Engine, Registry

    folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - one mkdir before the work
    pool = _Pool(folder, url, concurrency=runs + 4)
    try:
        pool.spawn("a")
        await pool.started("a")
        async with Engine(url, worker=False, registry=Registry()) as client:
            ids = [f"fo-{i}" for i in range(runs)]
            for run_id in ids:
                await client.start(WORKFLOW, 10_000, run_id=run_id)
            deadline = time.monotonic() + 60
            while await _leased_to(client, "a") < runs:
                if time.monotonic() > deadline:
                    raise RuntimeError("worker a never held every run")
                await asyncio.sleep(0.02)
            pool.spawn("b")
            await pool.started("b")
            await asyncio.sleep(0.5)  # let b settle into its idle loop

            killed_at = time.time()
            pool.procs["a"].kill()
            t_kill = time.perf_counter()
            pool.procs["a"].wait()
            deadline = time.monotonic() + LEASE_TTL / 2
            while await _leased_to(client, "a") > 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the dead worker's runs did not move within half a lease")
                await asyncio.sleep(POLL_S)
            all_moved = time.perf_counter() - t_kill
            after: list[float] = []
            while not after:  # b has the runs; its first event follows its replay
                if time.monotonic() > deadline:
                    raise RuntimeError("the new owner wrote nothing within half a lease")
                for run_id in ids:
                    after += [e.at for e in await client.history(run_id) if e.at >= killed_at]
                await asyncio.sleep(POLL_S)
            first = min(after)
    finally:
        pool.cleanup()
    return {
        "first_event_ms": round((first - killed_at) * 1000, 1),
        "all_moved_ms": round(all_moved * 1000, 1),
    }


def _summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": samples}
    for key in ("first_event_ms", "all_moved_ms"):
        values = [s[key] for s in samples]
        out[key] = {
            "median": round(statistics.median(values), 1),
            "min": min(values),
            "max": max(values),
        }
    return out


async def _pg_reachable(dsn: str) -> bool:
    try:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=5)
    except Exception:
        return False
    await conn.close()
    return True


async def _drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--runs", type=int, default=10, help="runs the killed worker holds")
    p.add_argument("--dsn", default=os.environ.get("CONTINUUM_TEST_PG_DSN", DEFAULT_DSN))
    p.add_argument("--journals", nargs="+", default=["sqlite", "postgres"])
    args = p.parse_args()
    repeats = 2 if args.quick else args.repeats
    results: dict[str, Any] = {}
    with workdir(args.dir, keep=args.keep) as folder:
        journals = list(args.journals)
        if "postgres" in journals and not await _pg_reachable(args.dsn):
            note(f"Postgres at {args.dsn} unreachable: skipped")
            results["postgres"] = {"skipped": "unreachable"}
            journals.remove("postgres")
        samples: dict[str, list[dict[str, float]]] = {j: [] for j in journals}
        for r in range(repeats):
            for journal in journals:  # interleaved, so drift hits both alike
                here = folder / f"{journal}-{r}"
                if journal == "sqlite":
                    got = await one_failover(f"sqlite:///{here}/journal.db", here, args.runs)
                else:
                    schema = f"bench_failover_{uuid.uuid4().hex[:8]}"
                    sep = "&" if "?" in args.dsn else "?"
                    try:
                        got = await one_failover(f"{args.dsn}{sep}schema={schema}", here, args.runs)
                    finally:
                        await _drop_schema(args.dsn, schema)
                note(f"{journal} repeat {r + 1}/{repeats}: {got}")
                samples[journal].append(got)
        for journal, got in samples.items():
            results[journal] = _summary(got)
        emit(
            {
                "benchmark": "failover",
                "question": "after kill -9, how soon does another live worker carry on the runs?",
                "settings": {
                    "lease_ttl_s": LEASE_TTL,
                    "runs_held_by_the_killed_worker": args.runs,
                    "repeats": repeats,
                    "step_seconds": 0.2,
                    "worker_command": "python -m continuum_py worker --url URL "
                    f"--import bench_failover --worker-id a|b --lease-ttl {LEASE_TTL:g}",
                },
                "results": results,
                "meta": meta(folder),
            }
        )


if __name__ == "__main__":
    asyncio.run(main())
