"""A queue's concurrency limit holds across worker processes, and through a SIGKILL.

Three `continuum worker` processes share a journal; a client puts 30 runs of
mp_flows.mp_queued in a queue with ``concurrency=2``. Each run's one step logs
when its body starts and ends (wall clock, one machine). Once some runs are
done, a worker in the middle of a run is SIGKILLed; liveness moves its run to
a survivor. At the end: every run finished, and at no instant were more than
two step bodies running (the killed body counts as running until the kill).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from helpers import wait_until
from test_multiprocess import Workers

from continuum_py import Engine, Queue, Registry, RunStatus

RUNS = 30
LIMIT = 2


def intervals(path: Path, victim: str, killed_at: float) -> list[tuple[float, float]]:
    """Each step body's (start, end); a body the victim never ended ends at the kill."""
    open_: dict[tuple[str, str], float] = {}
    out = []
    for row in path.read_text().splitlines():
        kind, run_id, worker, at = row.split()
        if kind == "S":
            assert (run_id, worker) not in open_, row
            open_[(run_id, worker)] = float(at)
        else:
            out.append((open_.pop((run_id, worker)), float(at)))
    for (run_id, worker), start in open_.items():
        assert worker == victim, f"{run_id}: a body on {worker} never ended"
        out.append((start, killed_at))
    return out


def most_at_once(spans: list[tuple[float, float]]) -> int:
    # At equal times an end comes before a start: a slot freed, then taken.
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, delta in edges:
        now += delta
        peak = max(peak, now)
    return peak


async def limit_through_a_kill(url: str, tmp: Path) -> None:
    log = tmp / "queue.log"
    pool = Workers(tmp, url, lease_ttl=60.0, concurrency=5)
    try:
        for w in ("a", "b", "c"):
            pool.spawn(w)
        await pool.wait_started()
        async with Engine(url, worker=False, registry=Registry()) as client:
            q = Queue("mp", concurrency=LIMIT)
            for i in range(RUNS):
                await client.start("mp_queued", str(log), i, queue=q, run_id=f"q-{i:02d}")

            async def done() -> int:
                return len(await client.list_runs(status=RunStatus.COMPLETED, limit=1000))

            async def some_done_and_one_running() -> str | None:
                if await done() < RUNS // 4:
                    return None
                running = await client.list_runs(status=RunStatus.RUNNING, limit=1000)
                owners = [r.lease_owner for r in running if r.lease_owner in pool.procs]
                return owners[0] if owners else None

            victim = await wait_until(some_done_and_one_running, timeout=60, interval=0.02)
            assert isinstance(victim, str)
            pool.procs[victim].kill()
            killed_at = time.time()
            await asyncio.to_thread(pool.procs[victim].wait, 10)

            async def all_done() -> bool:
                return await done() == RUNS

            await wait_until(all_done, timeout=90, interval=0.1)
            for i in range(RUNS):
                assert await (await client.get(f"q-{i:02d}")).result(timeout=5) == i
        spans = intervals(log, victim, killed_at)
        assert len(spans) >= RUNS
        assert most_at_once(spans) <= LIMIT
        assert most_at_once(spans) == LIMIT  # the queue was used to its limit
    finally:
        pool.cleanup()


async def test_sqlite_three_workers_never_run_more_than_the_limit(tmp_path):
    await limit_through_a_kill(f"sqlite:///{tmp_path}/journal.db", tmp_path)


@pytest.mark.postgres
async def test_postgres_three_workers_never_run_more_than_the_limit(tmp_path, pg_url):
    await limit_through_a_kill(pg_url, tmp_path)
