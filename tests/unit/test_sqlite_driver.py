"""The SQLite journal's writes: at most one hop across threads per write transaction,
none when nothing else waits, and concurrent writes grouped into one transaction."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from helpers import claim_run, new_run, step_events

from continuum_py.adapters._sqlite_thread import SQLiteThread
from continuum_py.adapters.sqlite import SQLiteJournal
from continuum_py.errors import RunNotFound
from continuum_py.journal import AppendBatch


@pytest.fixture
def hops(monkeypatch):
    """The name of the thread each call to a connection's thread went to."""
    calls: list[str] = []
    real = SQLiteThread.call

    async def counted(self, fn):
        calls.append(self._thread.name)
        return await real(self, fn)

    monkeypatch.setattr(SQLiteThread, "call", counted)
    return calls


async def _claimed_batch(j: SQLiteJournal) -> AppendBatch:
    """Run r1 started and claimed: its next step's batch."""
    await j.start_run(new_run("r1"))
    lease = await claim_run(j, "r1")
    return AppendBatch(lease=lease, expected_seq=1, events=step_events("r1", 2, 1))


async def test_an_append_alone_runs_on_the_loop_thread(tmp_path, hops):
    # A hop to the writer's thread and back costs about as much as the fsync:
    # a durable step made while nothing else waits costs one commit and no hop.
    async with SQLiteJournal(str(tmp_path / "j.db")) as j:
        batch = await _claimed_batch(j)
        hops.clear()
        assert await j.append([batch]) == [None]
        assert hops == []
        assert [e.seq for e in await j.load("r1")] == [1, 2, 3]


async def test_an_append_beside_a_read_is_one_call_to_the_writer_thread(tmp_path, hops):
    # With a read in flight the loop has work coming: the whole transaction
    # goes to the writer's thread in one call, not one per statement.
    async with SQLiteJournal(str(tmp_path / "j.db")) as j:
        batch = await _claimed_batch(j)
        hops.clear()
        _, landed = await asyncio.gather(j.get_run("r1"), j.append([batch]))
        assert landed == [None]
        assert hops.count("continuum-sqlite-writer") == 1
        assert [e.seq for e in await j.load("r1")] == [1, 2, 3]


async def test_concurrent_writes_share_transactions_and_fail_alone(tmp_path, hops):
    async with SQLiteJournal(str(tmp_path / "j.db")) as j:
        hops.clear()
        starts = [j.start_run(new_run(f"r{i}")) for i in range(20)]
        # A write that fails (a message to a missing run) fails alone: the
        # writes grouped with it in the same transaction still land.
        got = await asyncio.gather(
            *starts[:10],
            j.send("missing", "signal", "s", b""),
            *starts[10:],
            return_exceptions=True,
        )
        assert isinstance(got[10], RunNotFound)
        assert all(created for _, _, created in got[:10] + got[11:])
        assert hops.count("continuum-sqlite-writer") < 10
        for i in range(20):
            rec = await j.get_run(f"r{i}")
            assert rec is not None and rec.last_seq == 1


async def test_a_cancelled_queued_write_never_runs(tmp_path):
    async with SQLiteJournal(str(tmp_path / "j.db")) as j:
        first = asyncio.ensure_future(j.start_run(new_run("a")))
        second = asyncio.ensure_future(j.start_run(new_run("b")))
        await asyncio.sleep(0)
        second.cancel()
        await first
        with pytest.raises(asyncio.CancelledError):
            await second
        assert await j.get_run("a") is not None
        # b was either cancelled before any transaction took it (then it is
        # missing) or had already been taken (then it landed whole).
        rec = await j.get_run("b")
        assert rec is None or rec.last_seq == 1


async def test_a_write_waits_for_another_process_without_blocking_the_loop(tmp_path):
    # Another connection holds the file's write lock: the journal's write waits
    # for it on its own thread (busy_timeout), never on the event loop's.
    path = str(tmp_path / "j.db")
    async with SQLiteJournal(path) as j:
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.ensure_future(j.start_run(new_run("r1")))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.005)
            ticks += 1
        assert not write.done()
        other.execute("COMMIT")
        other.close()
        rec, _, created = await write
        assert created and rec.run_id == "r1"
        assert ticks == 20


async def test_after_a_write_on_the_loop_thread_the_writer_thread_still_waits_its_turn(
    tmp_path, hops
):
    # A write alone on the loop's thread turns busy_timeout off (it must never
    # wait there) and leaves it off for the next one; a transaction begun on the
    # writer's thread after it still waits for another process's write lock.
    path = str(tmp_path / "j.db")
    async with SQLiteJournal(path) as j:
        batch = await _claimed_batch(j)
        hops.clear()
        assert await j.append([batch]) == [None]
        assert hops == []  # it ran on the loop's thread
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")

        async def transactional_step() -> None:
            async with j.transaction() as tx:
                await tx.connection.execute("SELECT 1")

        tx = asyncio.ensure_future(transactional_step())
        starts = asyncio.gather(j.start_run(new_run("r2")), j.start_run(new_run("r3")))
        await asyncio.sleep(0.1)
        assert not tx.done() and not starts.done()
        other.execute("COMMIT")
        other.close()
        await tx
        assert [created for _, _, created in await starts] == [True, True]
