"""Several `continuum worker` processes on one journal; SIGKILL one mid-work.

A client starts many runs of mp_flows.mp_chain (four steps, two of them
gathered). Every step body appends ``run_id position attempt worker_id`` to
one shared, fsync'd side-effect log. Once about a third of the runs have
completed, the worker holding the most runs is killed with SIGKILL. The others
must finish every run: each with the right result, each step completed once in
its history, and a step body run twice only where the dead worker was running
it. The log order also shows that no run ever had two live runners: a run's
lines come from one worker, or from the dead worker and then one survivor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import wait_until

from continuum_py import Engine, Registry, RunStatus
from continuum_py.events import RunCompleted, StepCompleted, StepScheduled

HERE = Path(__file__).parent
MOD = 1_000_003
STEPS = 4


def mix(x: int, k: int) -> int:
    return (x * 31 + k * 7) % MOD


def expected(x: int) -> int:
    """mp_chain's answer, computed without the engine."""
    a = mix(x, 1)
    return mix(mix(a, 2) + mix(a, 3), 4)


@dataclass(frozen=True)
class Line:
    run_id: str
    position: int
    attempt: int
    worker: str


def read_log(path: Path) -> list[Line]:
    if not path.exists():
        return []
    text = path.read_text()
    assert text == "" or text.endswith("\n"), f"torn side-effect line: {text[-40:]!r}"
    out = []
    for row in text.splitlines():
        run_id, pos, attempt, worker = row.split()
        out.append(Line(run_id, int(pos), int(attempt), worker))
    return out


class Workers:
    """`continuum worker` processes; none outlives the test."""

    def __init__(self, tmp: Path, url: str, *, lease_ttl: float, concurrency: int) -> None:
        self.tmp = tmp
        self.url = url
        self.lease_ttl = lease_ttl
        self.concurrency = concurrency
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, worker_id: str) -> None:
        path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, "MP_WORKER_ID": worker_id}
        argv = [sys.executable, "-m", "continuum_py", "worker", "--url", self.url]
        argv += ["--import", "mp_flows", "--worker-id", worker_id]
        argv += ["--concurrency", str(self.concurrency), "--lease-ttl", str(self.lease_ttl)]
        argv += ["--grace", "10"]
        with (self.tmp / f"{worker_id}.err").open("wb") as err:
            self.procs[worker_id] = subprocess.Popen(
                argv, cwd=self.tmp, env=env, stdout=subprocess.DEVNULL, stderr=err
            )

    def stderr(self, worker_id: str) -> str:
        return (self.tmp / f"{worker_id}.err").read_text()

    async def wait_started(self) -> None:
        async def up() -> bool:
            for wid, proc in self.procs.items():
                assert proc.poll() is None, f"{wid} exited early: {self.stderr(wid)}"
            return all("worker.started" in self.stderr(w) for w in self.procs)

        await wait_until(up, timeout=30, interval=0.05)

    async def stop(self, worker_id: str) -> int:
        proc = self.procs[worker_id]
        proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(proc.wait, 30)

    def cleanup(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


async def count(client: Engine, status: RunStatus) -> int:
    return len(await client.list_runs(status=status, limit=10_000))


async def freeze_mid_step(
    client: Engine, pool: Workers, ids: list[str], log: Path
) -> tuple[str, set[str]]:
    """SIGSTOP the worker holding the most runs at a moment it is inside a step body.

    Frozen, it is hung but alive: it keeps its liveness lock and its runs, so
    what it holds now is what it holds when it dies (once dead, the others take
    its runs at once). A step is inside its body when the log has its line and
    the journal has no completion for it. If the frozen worker has none, it is
    thawed and tried again, so the kill always lands between a side effect and
    its record.
    """
    for _ in range(200):
        holding = Counter(r.lease_owner for r in await client.list_runs(status="running"))
        victim = max(ids, key=lambda w: holding[w])
        pool.procs[victim].send_signal(signal.SIGSTOP)
        await asyncio.sleep(0.05)  # a statement it sent before the stop lands first
        held = {
            r.run_id for r in await client.list_runs(status="running") if r.lease_owner == victim
        }
        for line in read_log(log):
            if line.worker != victim or line.run_id not in held:
                continue
            history = await client.history(line.run_id)
            if not any(
                isinstance(e, StepCompleted) and e.position == line.position for e in history
            ):
                return victim, held
        pool.procs[victim].send_signal(signal.SIGCONT)
        await asyncio.sleep(0.02)
    raise AssertionError("no worker was ever frozen inside a step body")


async def kill_one_mid_work(url: str, tmp: Path, *, workers: int, runs: int) -> None:
    """The whole scenario; asserts everything at the end."""
    log = tmp / "effects.log"
    ids = [f"w{i}" for i in range(workers)]
    pool = Workers(tmp, url, lease_ttl=2.0, concurrency=10)
    began = time.monotonic()
    try:
        for wid in ids:
            pool.spawn(wid)
        await pool.wait_started()
        async with Engine(url, worker=False, registry=Registry()) as client:

            async def start_all() -> list:
                return [
                    await client.start("mp_chain", str(log), i, run_id=f"mp-{i:03d}")
                    for i in range(runs)
                ]

            # Runs are started while the workers run the first ones, as in production.
            starter = asyncio.create_task(start_all())

            async def a_third_done() -> bool:
                return await count(client, RunStatus.COMPLETED) >= runs // 3

            await wait_until(a_third_done, timeout=60, interval=0.01)
            victim, held = await freeze_mid_step(client, pool, ids, log)
            pool.procs[victim].kill()
            assert await asyncio.to_thread(pool.procs[victim].wait, 10) == -signal.SIGKILL
            done_at_kill = await count(client, RunStatus.COMPLETED)
            handles = await starter
            killed_at = time.monotonic() - began

            async def all_done() -> bool:
                return await count(client, RunStatus.COMPLETED) == runs

            await wait_until(all_done, timeout=90, interval=0.05)
            results = [await h.result(timeout=10) for h in handles]
            histories = {h.run_id: await client.history(h.run_id) for h in handles}
        survivors = [w for w in ids if w != victim]
        for wid in survivors:
            assert await pool.stop(wid) == 0, pool.stderr(wid)
    finally:
        pool.cleanup()
    elapsed = time.monotonic() - began
    lines = read_log(log)
    by_worker = Counter(line.worker for line in lines)
    print(
        f"runs={runs} workers={workers} victim={victim} killed_at={killed_at:.2f}s "
        f"completed_at_kill={done_at_kill} held_at_kill={len(held)} "
        f"steps_by_worker={dict(by_worker)} elapsed={elapsed:.2f}s"
    )

    # Every run completed with its own answer.
    assert results == [expected(i) for i in range(runs)]
    for wid in survivors:
        assert "driver_crashed" not in pool.stderr(wid), pool.stderr(wid)

    # The kill landed mid-work: the dead worker had run steps and held runs.
    assert by_worker[victim] > 0 and held, (by_worker, held)
    assert done_at_kill < runs

    # The journal: each position completed exactly once; attempts counted 1, 2, ...
    completed: dict[tuple[str, int], int] = {}
    for run_id, history in histories.items():
        assert isinstance(history[-1], RunCompleted), run_id
        done = Counter(e.position for e in history if isinstance(e, StepCompleted))
        assert done == dict.fromkeys(range(1, STEPS + 1), 1), (run_id, done)
        for e in history:
            if isinstance(e, StepCompleted):
                completed[(run_id, e.position)] = e.attempt
        for p in range(1, STEPS + 1):
            tried = [e.attempt for e in history if isinstance(e, StepScheduled) and e.position == p]
            assert tried == list(range(1, len(tried) + 1)), (run_id, p, tried)
            assert tried[-1] == completed[(run_id, p)]

    # The log against the journal.
    runs_of: dict[tuple[str, int], list[Line]] = defaultdict(list)
    workers_of: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        runs_of[(line.run_id, line.position)].append(line)
        seen = workers_of[line.run_id]
        if not seen or seen[-1] != line.worker:
            seen.append(line.worker)
    assert set(runs_of) == set(completed), "a recorded step never ran, or an unknown one did"
    repeated = []
    for key, execs in runs_of.items():
        run_id, _ = key
        attempts = [x.attempt for x in execs]
        # The recorded result is the last body that ran, and no attempt ran twice.
        assert attempts == sorted(set(attempts)) and attempts[-1] == completed[key], (key, execs)
        assert len(execs) <= 2, (key, execs)
        if len(execs) == 2:
            # Only the dead worker's in-flight steps ran again, on a survivor.
            first, second = execs
            assert run_id in held and first.worker == victim and second.worker != victim, execs
            repeated.append(key)
    # One live runner per run: its log lines come from one worker, or from the
    # dead worker and then a single survivor (never back and forth).
    for run_id, seq in workers_of.items():
        if run_id in held:
            assert len(seq) <= 2 and (len(seq) == 1 or seq[0] == victim), (run_id, seq)
        else:
            assert len(seq) == 1, (run_id, seq)
    print(f"  steps run twice after the kill: {len(repeated)}")
    assert repeated, "no kill landed between a step's side effect and its record"


@pytest.mark.slow
@pytest.mark.postgres
async def test_three_postgres_workers_one_killed_the_others_finish_every_run(tmp_path, pg_url):
    await kill_one_mid_work(pg_url, tmp_path, workers=3, runs=200)


@pytest.mark.slow
async def test_two_sqlite_workers_one_killed_the_other_finishes_every_run(tmp_path):
    await kill_one_mid_work(f"sqlite:///{tmp_path}/journal.db", tmp_path, workers=2, runs=200)
