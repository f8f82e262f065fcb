"""A runner that lost its lease (a zombie) writes nothing; the new owner finishes the run.

Runner A (worker "a") holds a run whose second step blocks. A goes stale: its
heartbeats stop reaching the journal, so its lease expires, and runner B
(worker "b") claims the run with a newer fencing token and runs the step again.
When A wakes up, its writes must be refused (``LeaseLost``) and its driver must
stop cleanly, while B completes the run with every step recorded once.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import os
import signal
import sqlite3
import sys
from pathlib import Path

import crash_worker
import msgspec
import pytest

from continuum_py import (
    Context,
    Engine,
    JournalUnavailable,
    LeaseLost,
    Registry,
    RetryPolicy,
    StepInfo,
    step,
    workflow,
)
from continuum_py._schemes import journal_from_url
from continuum_py.adapters.memory import MemoryJournal
from continuum_py.events import RunCompleted, StepCompleted, StepScheduled

reg = Registry()
RUN = "handover-1"
ONCE = RetryPolicy(max_attempts=1)


class Gates:
    """Lets a test hold the `hold` step, per attempt, and see what it did."""

    def __init__(self) -> None:
        self.started: collections.defaultdict[int, asyncio.Event] = collections.defaultdict(
            asyncio.Event
        )
        self.release: collections.defaultdict[int, asyncio.Event] = collections.defaultdict(
            asyncio.Event
        )
        self.cancelled: list[int] = []


gates = Gates()


@pytest.fixture(autouse=True)
def _fresh_gates():
    global gates
    gates = Gates()


@step(retry=ONCE)
async def prepare(x: int) -> int:
    return x + 1


@step(retry=ONCE)
async def hold(tag: str) -> str:
    info = StepInfo.current()
    assert info is not None
    gates.started[info.attempt].set()
    try:
        await gates.release[info.attempt].wait()
    except asyncio.CancelledError:
        gates.cancelled.append(info.attempt)
        raise
    return f"{tag}@{info.attempt}"


@step(retry=ONCE)
async def finish(s: str) -> str:
    return s.upper()


@workflow(registry=reg)
async def handover(ctx: Context, x: int) -> list[int | str]:
    a = await prepare(x)
    b = await hold("held")
    c = await finish(b)
    return [a, b, c]


class Partition:
    """Runner A's view of the journal.

    While ``cut``, A's heartbeats and claims fail as on a broken network; its
    appends still reach the journal, as when a paused process wakes up and
    writes. Records what A's appends and releases got back.
    """

    def __init__(self, inner: object, *, owns: bool) -> None:
        self.inner = inner
        self.owns = owns
        self.cut = False
        self.appends: list[list[object]] = []
        self.releases: list[bool] = []

    async def renew(self, leases, *, ttl):
        if self.cut:
            raise JournalUnavailable("partitioned (test)")
        return await self.inner.renew(leases, ttl=ttl)

    async def claim(self, worker_id, *, ttl, limit, reclaim_own=False, now=None):
        if self.cut:
            raise JournalUnavailable("partitioned (test)")
        return await self.inner.claim(
            worker_id, ttl=ttl, limit=limit, reclaim_own=reclaim_own, now=now
        )

    async def append(self, batches):
        results = await self.inner.append(batches)
        self.appends.append(list(results))
        return results

    async def release(self, lease):
        ok = await self.inner.release(lease)
        self.releases.append(ok)
        return ok

    async def aclose(self):
        if self.owns:
            await self.inner.aclose()

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def runners(journal_url):
    """Engines A and B on one journal (A sees it through a Partition), and a reader maker."""
    if journal_url.startswith("memory"):
        shared = MemoryJournal()
        part, b_journal = Partition(shared, owns=False), shared

        def reader() -> Engine:
            return Engine(journal=shared, worker=False)
    else:
        # Two connections to one database, as two processes would have.
        part = Partition(journal_from_url(journal_url), owns=True)
        b_journal = journal_from_url(journal_url)

        def reader() -> Engine:
            return Engine(journal_url, worker=False)

    a = Engine(journal=part, worker_id="a", registry=reg, lease_ttl=0.25)
    b = Engine(journal=b_journal, worker_id="b", registry=reg, lease_ttl=5, poll_interval=0.02)
    return a, b, part, reader


def other_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def until(predicate, timeout: float = 10.0) -> None:
    """Poll ``predicate`` (sync or async) until it holds."""
    async with asyncio.timeout(timeout):
        while True:
            ok = predicate()
            if inspect.isawaitable(ok):
                ok = await ok
            if ok:
                return
            await asyncio.sleep(0.005)


async def take_over(a: Engine, b: Engine, part: Partition):
    """A runs until its held step; A goes stale; B claims the run and re-runs the step.

    Returns A's driver task, every task A had, and the history as A left it.
    """
    await a.open()
    part.cut = True  # from here on A cannot renew its lease
    await a.start(handover, 1, run_id=RUN)
    await asyncio.wait_for(gates.started[1].wait(), 10)
    a_tasks = other_tasks()
    (driver_a,) = [t for t in a_tasks if t.get_name() == f"continuum-run-{RUN}"]
    rec_a = await (await a.get(RUN)).record()
    assert (rec_a.lease_owner, rec_a.lease_token) == ("a", 1)
    a_history = await a.history(RUN)

    await b.open()

    async def owned_by_b() -> bool:
        return (await (await b.get(RUN)).record()).lease_owner == "b"

    await until(owned_by_b)
    await asyncio.wait_for(gates.started[2].wait(), 10)  # B runs the held step again
    assert (await (await b.get(RUN)).record()).lease_token == 2
    return driver_a, a_tasks, a_history


def check_history(history: list, a_history: list) -> None:
    """B appended after A's events, and nothing else; each step completed once."""
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert history[: len(a_history)] == a_history
    after = [
        (type(e).__name__, getattr(e, "position", None), getattr(e, "attempt", None))
        for e in history[len(a_history) :]
    ]
    assert after == [
        ("StepScheduled", 2, 2),
        ("StepCompleted", 2, 2),
        ("StepScheduled", 3, 1),
        ("StepCompleted", 3, 1),
        ("RunCompleted", None, None),
    ]
    completed = [(e.position, e.attempt) for e in history if isinstance(e, StepCompleted)]
    assert completed == [(1, 1), (2, 2), (3, 1)]
    tried = [e.attempt for e in history if isinstance(e, StepScheduled) and e.position == 2]
    assert tried == [1, 2]


async def test_zombie_write_is_refused_and_the_new_owner_finishes(runners):
    a, b, part, reader = runners
    try:
        driver_a, a_tasks, a_history = await take_over(a, b, part)
        took_over = await b.history(RUN)
        writes_before = len(part.appends)

        gates.release[1].set()  # A's step returns; A tries to record it
        assert await asyncio.wait_for(driver_a, 10) is None  # A's driver stops by itself
        assert len(part.appends) == writes_before + 1
        (refused,) = part.appends[-1]
        assert isinstance(refused, LeaseLost)
        assert (refused.run_id, refused.token, refused.current_token) == (RUN, 1, 2)
        assert await b.history(RUN) == took_over

        gates.release[2].set()
        result = await (await b.get(RUN)).result(timeout=10)
        assert result == [2, "held@2", "HELD@2"]

        await a.aclose()
        assert all(t.done() for t in a_tasks)
        assert [t for t in a_tasks if not t.cancelled() and t.exception()] == []
        assert gates.cancelled == []
    finally:
        await a.aclose()
        await b.aclose()
    async with reader() as r:
        check_history(await r.history(RUN), a_history)
    assert other_tasks() == set()


async def test_zombie_that_learns_from_its_heartbeat_stops_without_writing(runners):
    a, b, part, reader = runners
    try:
        driver_a, a_tasks, a_history = await take_over(a, b, part)
        writes_before = len(part.appends)

        part.cut = False  # A's next heartbeat reaches the journal and learns the lease is gone
        done, _ = await asyncio.wait([driver_a], timeout=10)
        assert driver_a in done and driver_a.cancelled()
        assert gates.cancelled == [1]  # A's step was stopped, not left running
        assert len(part.appends) == writes_before  # A tried no write
        assert part.releases == [False]  # its attempt to release was refused

        gates.release[2].set()
        result = await (await b.get(RUN)).result(timeout=10)
        assert result == [2, "held@2", "HELD@2"]
        await a.aclose()
        assert all(t.done() for t in a_tasks)
    finally:
        await a.aclose()
        await b.aclose()
    async with reader() as r:
        check_history(await r.history(RUN), a_history)
    assert other_tasks() == set()


# ---- two OS processes on one SQLite file: A is paused with SIGSTOP, B takes over ----


def write_locked(db: Path) -> bool:
    con = sqlite3.connect(db, timeout=0)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.rollback()
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        con.close()


def is_stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


async def pause_outside_a_write(pid: int, db: Path) -> None:
    """SIGSTOP the process at a moment it holds no SQLite write lock."""
    for _ in range(200):
        os.kill(pid, signal.SIGSTOP)
        await until(lambda: is_stopped(pid))
        if not write_locked(db):
            return
        os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.005)
    raise AssertionError("the process always held the write lock")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_paused_worker_process_is_fenced_after_another_takes_over(tmp_path):
    db, gate_dir = tmp_path / "journal.db", tmp_path / "gates"
    gate_dir.mkdir()
    url = f"sqlite:///{db}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(crash_worker.__file__)),
        "zombie",
        str(db),
        str(gate_dir),
        RUN,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    me = os.getpid()
    b = Engine(url, worker_id="b", registry=crash_worker.REG, lease_ttl=5, poll_interval=0.02)
    reader = Engine(url, worker=False, registry=crash_worker.REG)
    try:
        await until((gate_dir / f"started-{proc.pid}-1").exists, 30)
        await pause_outside_a_write(proc.pid, db)  # A is a zombie from here on
        await reader.open()
        a_history = await reader.history(RUN)

        await b.open()  # claims the run once A's lease (0.6s) has expired
        await until((gate_dir / f"started-{me}-2").exists)
        (gate_dir / "open").touch()  # both A's and B's attempt may now finish ...
        os.kill(proc.pid, signal.SIGCONT)  # ... and A wakes up
        result = await (await b.get(RUN)).result(timeout=10)
        done_history = await reader.history(RUN)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await b.aclose()
    try:
        final_history = await reader.history(RUN)
    finally:
        await reader.aclose()

    assert result == [f"first:{proc.pid}:1", f"gate:{me}:2", f"last:{me}:1"]
    # A saw the run finish through the journal, exited cleanly, and knew it had lost the run.
    assert proc.returncode == 0, err.decode()
    assert msgspec.json.decode(out) == result
    assert b"run.lease_lost" in err and b"Traceback" not in err, err.decode()
    assert final_history == done_history  # A wrote nothing after waking
    check_history(final_history, a_history)
    assert isinstance(final_history[-1], RunCompleted)
