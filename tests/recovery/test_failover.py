"""A SIGKILLed worker's runs move to a live worker through liveness, not lease expiry.

Three `continuum worker` processes share a journal with a 60 s lease. Worker
``a`` takes every run of mp_flows.mp_gated and stays in each run's first step (a
step logs a side-effect line, then waits for a gate file the test makes only
once ``a`` is dead), then ``b`` and ``c`` start. First ``a`` is frozen with
SIGSTOP: hung but alive, it still holds its liveness lock, so the others (which
provably claim meanwhile: they run a probe run to the end) must leave ``a``'s
runs alone. Then ``a`` is SIGKILLed: the others must take its runs long before
any lease could expire, finish every run, record each step once, and run again
only the steps ``a`` was in the middle of (each run's first step).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import wait_until
from test_multiprocess import Line, Workers, mix, read_log

from continuum_py import Engine, Registry, RunStatus
from continuum_py.events import StepCompleted

LEASE_TTL = 60.0  # no lease lapses during the test: only liveness can move a run
RUNS = 6
STEPS = 4
SURVIVORS = ("b", "c")


def slow_expected(x: int) -> int:
    for k in range(1, STEPS + 1):
        x = mix(x, k)
    return x


async def held_by(client: Engine, worker: str) -> dict[str, int]:
    """Run id -> lease token of the running runs ``worker`` leases."""
    return {
        r.run_id: r.lease_token
        for r in await client.list_runs(status=RunStatus.RUNNING, limit=1000)
        if r.lease_owner == worker
    }


async def failover(url: str, tmp: Path) -> None:
    log = tmp / "effects.log"
    pool = Workers(tmp, url, lease_ttl=LEASE_TTL, concurrency=RUNS + 4)
    try:
        pool.spawn("a")
        await pool.wait_started()
        async with Engine(url, worker=False, registry=Registry()) as client:
            handles = [
                await client.start("mp_gated", str(log), i, STEPS, run_id=f"fo-{i}")
                for i in range(RUNS)
            ]

            async def a_holds_every_run_mid_step() -> bool:
                stepped = {line.run_id for line in read_log(log)}
                return len(await held_by(client, "a")) == RUNS and len(stepped) == RUNS

            await wait_until(a_holds_every_run_mid_step, timeout=30, interval=0.02)
            for survivor in SURVIVORS:
                pool.spawn(survivor)
            await pool.wait_started()

            # Hung but alive: its lock is held, so its runs stay where they are.
            pool.procs["a"].send_signal(signal.SIGSTOP)
            frozen = await held_by(client, "a")
            probe = await client.start("mp_chain", str(tmp / "probe.log"), 1, run_id="probe")
            await probe.result(timeout=30)  # the others claimed while a was frozen
            assert await held_by(client, "a") == frozen
            assert {line.worker for line in read_log(tmp / "probe.log")} <= set(SURVIVORS)

            killed_at = time.time()
            pool.procs["a"].kill()
            assert await asyncio.to_thread(pool.procs["a"].wait, 10) == -signal.SIGKILL

            async def all_moved() -> bool:
                return not await held_by(client, "a")

            await wait_until(all_moved, timeout=LEASE_TTL / 2, interval=0.01)
            Path(f"{log}.go").touch()  # noqa: ASYNC240 - opens the gate of the steps
            results = [await h.result(timeout=60) for h in handles]
            histories = {h.run_id: await client.history(h.run_id) for h in handles}
        for survivor in SURVIVORS:
            assert await pool.stop(survivor) == 0, pool.stderr(survivor)
    finally:
        pool.cleanup()

    assert results == [slow_expected(i) for i in range(RUNS)]
    for survivor in SURVIVORS:
        assert "driver_crashed" not in pool.stderr(survivor), pool.stderr(survivor)
    assert set(frozen) == {h.run_id for h in handles}

    # The takeover: the first event written after the kill, by a survivor, came long
    # before any lease could expire.
    first_after = min(e.at for h in histories.values() for e in h if e.at >= killed_at)
    takeover = first_after - killed_at
    print(f"kill -> first event by the new owner: {takeover * 1000:.0f} ms")
    assert takeover < LEASE_TTL / 2, takeover

    # Each step completed exactly once; the log against the history.
    lines = read_log(log)
    bodies: dict[tuple[str, int], list[Line]] = defaultdict(list)
    for line in lines:
        bodies[(line.run_id, line.position)].append(line)
    repeated = []
    for run_id, history in histories.items():
        done = [e for e in history if isinstance(e, StepCompleted)]
        assert sorted(e.position for e in done) == list(range(1, STEPS + 1)), run_id
        for e in done:
            execs = bodies[(run_id, e.position)]
            workers = [x.worker for x in execs]
            attempts = [x.attempt for x in execs]
            assert attempts == sorted(set(attempts)) and attempts[-1] == e.attempt, execs
            if e.attempt > 1:
                # Run again only because a died in it (its body may not have begun).
                assert workers[-1] in SURVIVORS and set(workers[:-1]) <= {"a"}, execs
                assert e.at > killed_at, execs
                repeated.append((run_id, e.position))
            else:
                assert len(execs) == 1, execs
    assert set(bodies) == {(r, p) for r in histories for p in range(1, STEPS + 1)}
    # a was in each run's first step: exactly those ran again.
    assert sorted(repeated) == [(r, 1) for r in sorted(histories)], repeated
    # One live runner per run: a, then a single survivor, never back and forth.
    for run_id in histories:
        seq = [line.worker for line in lines if line.run_id == run_id]
        after_a = seq[seq.count("a") :]
        assert seq[: seq.count("a")] == ["a"] * seq.count("a"), seq
        assert len(set(after_a)) == 1 and after_a[0] in SURVIVORS, seq


@pytest.mark.slow
async def test_sqlite_sigkilled_workers_runs_move_at_once_and_a_hung_ones_stay(tmp_path):
    await failover(f"sqlite:///{tmp_path}/journal.db", tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
async def test_postgres_sigkilled_workers_runs_move_at_once_and_a_hung_ones_stay(tmp_path, pg_url):
    await failover(pg_url, tmp_path)
