"""Two worker processes fire one schedule on one journal (real clock): each fire once.

On SQLite and Postgres.

The schedule's stored last fire is seeded 15 minutes in the past, so both
processes find 15 fires due at once when they start and race to handle them.
Each fire's run must exist once and its step must have run once, in one
process or the other.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from helpers import wait_until
from sched_worker import SCHEDULE, minutely, reg

from continuum_py import Engine, RunStatus
from continuum_py.journal import ScheduleProgress

HERE = Path(__file__).parent


def spawn(url: str, worker_id: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "sched_worker.py"), url, worker_id, str(log)]
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path) -> str:
    if request.param == "postgres":
        dsn, schema = request.getfixturevalue("pg_schema")
        return f"{dsn}?schema={schema}_{uuid.uuid4().hex[:8]}"
    return f"sqlite:///{tmp_path / 'runs.db'}"


async def test_two_worker_processes_start_each_fire_once(url, tmp_path):
    log = tmp_path / "fires.log"
    now = time.time()
    seeded = math.floor(now / 60) * 60 - 15 * 60
    async with Engine(url, registry=reg, worker=False) as eng:
        await eng.schedule("mp", minutely, str(log), **SCHEDULE)
        rec = await eng.journal.get_schedule("mp")
        assert await eng.journal.advance_schedule(
            "mp", rec.progress, ScheduleProgress(last_fire=seeded)
        )
    procs = [spawn(url, f"w{i}", log) for i in (1, 2)]
    try:
        async with Engine(url, registry=reg, worker=False) as eng:

            async def done() -> bool:
                runs = await eng.list_runs(run_id_prefix="mp@", limit=1000)
                finished = [r.run_id for r in runs if r.status == RunStatus.COMPLETED]
                return len(finished) >= 15

            await wait_until(done, timeout=60, interval=0.1)

            async def both_ready() -> bool:
                ready = tmp_path / "fires.log.ready"
                return ready.exists() and len(ready.read_text().split()) == 2

            await wait_until(both_ready, timeout=60, interval=0.05)  # SIGTERM handlers are set
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    async with Engine(url, registry=reg, worker=False) as eng:
        runs = await eng.list_runs(run_id_prefix="mp@", limit=1000)
        [s] = await eng.schedules()
    finished = {r.run_id for r in runs if r.status == RunStatus.COMPLETED}
    expected = {
        f"mp@{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seeded + 60 * i))}Z"
        for i in range(1, 16)
    }
    assert expected <= finished
    # (A fire at a minute boundary during the test may be recorded too: then it is there once.)
    assert s.fired == len(runs) and s.skipped == 0
    lines = [line.split() for line in log.read_text().splitlines()]
    counts = Counter(run_id for run_id, _ in lines)
    assert finished <= set(counts) <= {r.run_id for r in runs}
    assert max(counts.values()) == 1, counts.most_common(3)
    assert all(p.returncode == 0 for p in procs)
