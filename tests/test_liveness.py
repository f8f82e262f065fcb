"""Worker liveness across journal objects on one storage, as two processes see it.

Closing a journal object lets go of its locks the way a process dying does (its
descriptors and connections close), so a second object on the same file or
schema plays the surviving process. The process-level proof, with SIGKILL and
SIGSTOP, is tests/recovery/test_failover.py.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from helpers import new_run, step_batch, wait_until

from continuum_py import Engine, Registry, step, workflow
from continuum_py._schemes import journal_from_url
from continuum_py.adapters.memory import MemoryJournal
from continuum_py.errors import LeaseLost

LONG = 3600.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    """A SQLite file, or a Postgres schema of its own (dropped with the session's)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/journal.db"
    dsn, base = request.getfixturevalue("pg_schema")
    return f"{dsn}?schema={base}_live_{uuid.uuid4().hex[:6]}"


async def test_an_id_held_by_a_live_journal_is_refused_and_freed_when_it_closes(url):
    first, second = journal_from_url(url), journal_from_url(url)
    async with first, second:
        await first.start_run(new_run("r1"))
        assert await first.hold_liveness("a") is True
        assert await second.hold_liveness("a") is False
        [held] = await first.claim("a", ttl=LONG, limit=10)
        assert await second.claim("b", ttl=LONG, limit=10) == []
        assert await second.dead_workers() == []

        await first.aclose()  # what the process dying does to its locks
        assert await second.dead_workers() == ["a"]
        [taken] = await second.claim("b", ttl=LONG, limit=10)
        assert taken.run_id == "r1" and taken.token == held.token + 1
        [err] = await second.append([step_batch(held, 1)])
        assert isinstance(err, LeaseLost)
        # The id is free again: a process restarted with it takes it.
        assert await second.hold_liveness("a") is True


@pytest.mark.postgres
async def test_a_lost_liveness_connection_is_fenced_then_taken_back(pg_schema):
    dsn, base = pg_schema
    url = f"{dsn}?schema={base}_lost_{uuid.uuid4().hex[:6]}"
    first, second = journal_from_url(url), journal_from_url(url)
    async with first, second:
        await first.start_run(new_run("r1"))
        assert await first.hold_liveness("a") is True
        [held] = await first.claim("a", ttl=LONG, limit=10)
        pid = first._liveness._held["a"].conn.get_server_pid()
        killer = await asyncpg.connect(dsn)
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()

        # The server let go of the lock: the run moves at once, fenced.
        async def moved():
            return await second.claim("b", ttl=LONG, limit=10)

        [taken] = await wait_until(moved, timeout=10)
        assert taken.token == held.token + 1
        [err] = await first.append([step_batch(held, 1)])
        assert isinstance(err, LeaseLost)

        # The worker finds its liveness lost and takes it again on a new connection.
        assert await first.liveness_held("a") is True
        assert first._liveness._held["a"].conn.get_server_pid() != pid
        await first.start_run(new_run("r2"))
        [again] = await first.claim("a", ttl=LONG, limit=10)
        assert again.run_id == "r2"
        assert await second.claim("b", ttl=LONG, limit=10) == []


@pytest.mark.postgres
async def test_an_engine_whose_liveness_connection_drops_takes_it_back_and_carries_on(pg_schema):
    dsn, base = pg_schema
    url = f"{dsn}?schema={base}_eng_{uuid.uuid4().hex[:6]}"
    registry = Registry()
    gate = asyncio.Event()

    @step(name="wait_gate")
    async def wait_gate(n: int) -> int:
        await gate.wait()
        return n

    @workflow(registry=registry, name="gated")
    async def gated(ctx, n: int) -> int:
        return await wait_gate(n)

    engine = Engine(url, registry=registry, worker_id="a", lease_ttl=LONG, poll_interval=0.05)
    async with engine, journal_from_url(url) as other:
        first = await engine.start(gated, 1, run_id="g1")

        async def leased_to_a(run_id: str) -> bool:
            rec = await other.get_run(run_id)
            return rec.lease_owner == "a"

        await wait_until(lambda: leased_to_a("g1"), timeout=10)
        liveness = engine.journal._liveness
        pid = liveness._held["a"].conn.get_server_pid()
        killer = await asyncpg.connect(dsn)
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()

        # The worker's watch finds the lock lost and holds it again on a new connection.
        async def back() -> bool:
            entry = liveness._held.get("a")
            return entry is not None and not entry.lost and entry.conn.get_server_pid() != pid

        await wait_until(back, timeout=10)
        second = await engine.start(gated, 2, run_id="g2")
        await wait_until(lambda: leased_to_a("g2"), timeout=10)
        # Alive again: another worker leaves its runs alone.
        assert await other.claim("b", ttl=LONG, limit=10) == []
        gate.set()
        assert [await first.result(timeout=30), await second.result(timeout=30)] == [1, 2]


@pytest.mark.postgres
async def test_a_lost_lock_is_retried_while_postgres_is_unreachable(pg_schema, monkeypatch):
    from continuum_py.adapters import _postgres_liveness
    from continuum_py.errors import JournalUnavailable

    dsn, base = pg_schema
    url = f"{dsn}?schema={base}_retry_{uuid.uuid4().hex[:6]}"
    async with journal_from_url(url) as journal:
        liveness = journal._liveness
        assert await liveness.hold("a") is True
        down = True
        real = liveness._connect

        async def connect():
            if down:
                raise JournalUnavailable("Postgres is down (test)")
            return await real()

        liveness._connect = connect
        entry = liveness._held["a"]
        entry.conn.terminate()  # the connection drops, and its listener says so
        entry.lost = True
        clock = [1000.0]
        monkeypatch.setattr(_postgres_liveness.time, "monotonic", lambda: clock[0])
        assert await liveness.held("a") is False  # tried at once, failed
        assert await liveness.held("a") is False  # too soon for the next try
        clock[0] += 0.1
        assert await liveness.held("a") is False  # tried again, failed; next in 0.2 s
        down = False
        clock[0] += 0.1
        assert await liveness.held("a") is False  # still waiting
        clock[0] += 0.1
        assert await liveness.held("a") is True  # taken again
        assert await liveness.held("a") is True


class _Flaky(MemoryJournal):
    """A memory journal whose worker liveness can be lost and given back, counting claim-loop turns."""

    def __init__(self) -> None:
        super().__init__()
        self.lose = False
        self.claims: list[str] = []
        self.turns = 0

    async def liveness_held(self, worker_id: str) -> bool:
        return not self.lose and await super().liveness_held(worker_id)

    async def claim(self, worker_id: str, **kw):
        self.claims.append(worker_id)
        return await super().claim(worker_id, **kw)

    async def next_wake_at(self):
        self.turns += 1  # the claim loop asks this once per turn, claim or not
        return await super().next_wake_at()


async def test_a_worker_that_lost_its_liveness_claims_nothing_until_it_is_back():
    registry = Registry()

    @workflow(registry=registry, name="quick")
    async def quick(ctx, n: int) -> int:
        return n

    journal = _Flaky()
    async with (
        Engine(journal=journal, registry=registry, worker_id="a", poll_interval=0.05) as engine,
        Engine(journal=journal, registry=registry, worker=False) as client,
    ):
        watch = engine._worker._liveness
        journal.lose = True
        await wait_until(lambda: asyncio.sleep(0, watch.lost), timeout=10)
        handle = await client.start(quick, 7, run_id="q1")
        journal.claims.clear()
        turns = journal.turns
        engine._worker.wake()
        await wait_until(lambda: asyncio.sleep(0, journal.turns >= turns + 2), timeout=10)
        assert journal.claims == []  # turns went by, claiming nothing
        rec = await journal.get_run("q1")
        assert (rec.status, rec.lease_owner) == ("pending", None)
        journal.lose = False
        assert await handle.result(timeout=10) == 7
        assert not watch.lost
