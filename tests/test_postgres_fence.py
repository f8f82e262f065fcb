"""Fencing on Postgres, under real concurrency: a stale writer's batch never lands.

A step's batch checks and moves the run's narrow heads row (layout 8), whose
token the database sets on every lease change of the runs row; a status batch
is fenced on the runs row itself. These tests race a takeover against a batch
already in flight, on separate connections and in separate processes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import asyncpg
import pytest
from helpers import new_run, step_events, wait_until

from continuum_py.adapters.postgres import MIGRATIONS, PostgresJournal
from continuum_py.errors import JournalConflict, LeaseLost
from continuum_py.journal import AppendBatch, Lease, RunStatus

pytestmark = pytest.mark.postgres


async def _waiting(dsn: str, app: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND wait_event_type = 'Lock'",
                app,
            )
        )
    finally:
        await conn.close()


def _batch(kind: str, lease: Lease, run_id: str) -> AppendBatch:
    events = step_events(run_id, 2, 1)
    if kind == "step":
        return AppendBatch(lease=lease, expected_seq=1, events=events, inbox_seen=0)
    return AppendBatch(
        lease=lease,
        expected_seq=1,
        events=events,
        status=RunStatus.COMPLETED,
        outcome=b"done",
        inbox_seen=0,
    )


@pytest.mark.parametrize("group", [False, True], ids=["alone", "in a group commit"])
@pytest.mark.parametrize("kind", ["step", "end"])
async def test_a_takeover_committing_while_a_batch_waits_refuses_the_batch_whole(
    pg_test_schema, kind, group
):
    """Worker 2 seizes the run while worker 1's batch is in flight: the batch is refused.

    Worker 1's statement starts while the takeover is uncommitted (it sees the
    old token), then waits for it; once the takeover commits, the statement must
    find its token stale and write nothing. Removing the token check from the
    fence, or the heads row's following the runs row's lease, lets it land.
    """
    dsn, name = pg_test_schema
    tag = uuid.uuid4().hex[:8]
    w1 = PostgresJournal(dsn, schema=name, application_name=f"f1_{tag}")
    w2 = PostgresJournal(dsn, schema=name, application_name=f"f2_{tag}")
    async with w1, w2:
        _, lease, _ = await w1.start_run(new_run("r1"), claim_for="w1", ttl=300)
        _, other, _ = await w1.start_run(new_run("r2"), claim_for="w1", ttl=300)
        assert lease is not None and other is not None
        batches = [_batch(kind, lease, "r1")]
        if group:
            batches.append(_batch(kind, other, "r2"))
        # Hold the run's heads row, so that the takeover, once it has moved the
        # runs row's token, waits to move the heads row's: uncommitted.
        blocker = await asyncpg.connect(dsn)
        try:
            tr = blocker.transaction()
            await tr.start()
            await blocker.execute(
                f'SELECT 1 FROM "{name}".heads WHERE run_id = $1 FOR UPDATE', "r1"
            )
            seize = asyncio.create_task(w2.seize("r1", "w2", ttl=300))
            await wait_until(lambda: _waiting(dsn, f"f2_{tag}"))
            append = asyncio.create_task(w1.append(batches))
            await wait_until(lambda: _waiting(dsn, f"f1_{tag}"))
            await tr.rollback()
            new = await seize
            results = await append
        finally:
            await blocker.close()
        assert new is not None and new.token == lease.token + 1
        assert isinstance(results[0], LeaseLost)
        assert [e.seq for e in await w2.load("r1")] == [1]
        rec = await w2.get_run("r1")
        assert rec is not None and (rec.last_seq, rec.status) == (1, RunStatus.RUNNING)
        if group:
            assert results[1] is None
            assert [e.seq for e in await w2.load("r2")] == [1, 2, 3]
        # The new holder carries on from the tail it finds.
        assert await w2.append([_batch(kind, new, "r1")]) == [None]
        assert [e.seq for e in await w2.load("r1")] == [1, 2, 3]


@pytest.mark.parametrize("how", ["release", "park", "end", "claim"])
async def test_a_step_after_the_lease_is_let_go_or_taken_is_refused(pg_test_schema, how):
    """Every way a lease ends or moves refuses the old holder's next step, nothing written."""
    dsn, name = pg_test_schema
    async with PostgresJournal(dsn, schema=name) as j:
        _, lease, _ = await j.start_run(new_run("r1"), claim_for="w1", ttl=300)
        assert lease is not None
        step = AppendBatch(lease=lease, expected_seq=1, events=step_events("r1", 2, 1))
        assert await j.append([step]) == [None]
        if how == "release":
            assert await j.release(lease)
        elif how == "park":
            assert await j.set_status("r1", RunStatus.PARKED, reason="stop")
        elif how == "end":
            end = AppendBatch(lease=lease, expected_seq=3, events=[], status=RunStatus.CANCELLED)
            assert await j.append([end]) == [None]
        else:
            assert await j.release(lease)
            [taken] = await j.claim("w2", ttl=300, limit=10)
            assert taken.token == lease.token + 1
        late = AppendBatch(lease=lease, expected_seq=3, events=step_events("r1", 4, 2))
        [refused] = await j.append([late])
        assert isinstance(refused, LeaseLost)
        assert [e.seq for e in await j.load("r1")] == [1, 2, 3]


_WORKER_1 = """
import asyncio, json, sys
from continuum_py.adapters.postgres import PostgresJournal
from continuum_py.journal import AppendBatch, Lease
from continuum_py.testing._journal_helpers import step_events

async def main(dsn, schema, token):
    lease = Lease(run_id="r1", worker_id="w1", token=token, expires_at=0.0)
    async with PostgresJournal(dsn, schema=schema) as j:
        tail, landed = 1, 0
        print("ready", flush=True)
        while True:
            batch = AppendBatch(lease=lease, expected_seq=tail,
                                events=step_events("r1", tail + 1, tail))
            [err] = await j.append([batch])
            if err is not None:
                print(json.dumps({"landed": landed, "tail": tail, "error": type(err).__name__}))
                return
            tail, landed = tail + 2, landed + 1

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_a_worker_appending_steps_in_another_process_stops_at_a_takeover(pg_test_schema):
    """A zombie in another process, appending as fast as it can, loses to a takeover.

    Once worker 2's seize returns, worker 1's next batch is refused, and worker 2
    carries on from the tail it loads: none of worker 1's batches lands after it.
    """
    dsn, name = pg_test_schema
    async with PostgresJournal(dsn, schema=name) as j:
        _, lease, _ = await j.start_run(new_run("r1"), claim_for="w1", ttl=300)
        assert lease is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER_1,
            dsn,
            name,
            str(lease.token),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            assert (await proc.stdout.readline()).strip() == b"ready"
            await wait_until(lambda: _has_events(j, 20))
            new = await j.seize("r1", "w2", ttl=300)
            assert new is not None
            # Worker 1 still tries: each try after the seize must be refused.
            await asyncio.sleep(0.2)
            events = await j.load("r1")
            tail = events[-1].seq
            mine = AppendBatch(lease=new, expected_seq=tail, events=step_events("r1", tail + 1, 0))
            assert await j.append([mine]) == [None]
            out = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        assert out["error"] == "LeaseLost"
        assert out["tail"] == tail  # its last batch to land is the tail worker 2 found
        assert [e.seq for e in await j.load("r1")] == list(range(1, tail + 3))


async def _has_events(j: PostgresJournal, n: int) -> bool:
    return len(await j.load("r1")) >= n


async def test_a_schema_from_before_migration_8_keeps_its_runs_tails_and_fences(pg_test_schema):
    """Layout 7's runs gain heads rows on upgrade: held leases still write, stale ones not."""
    dsn, name = pg_test_schema
    assert MIGRATIONS[7].version == 8
    old = PostgresJournal(dsn, schema=name)
    old.migrations = MIGRATIONS[:7]
    async with old:
        pass
    s = f'"{name}"'
    conn = await asyncpg.connect(dsn)
    try:
        # What layout 7 held: a run leased by w1 three events in, and one let go.
        for run_id, owner, last in [("held", "w1", 3), ("freed", None, 1)]:
            await conn.execute(
                f"INSERT INTO {s}.runs (run_id, workflow, status, created_at, updated_at, "
                "last_seq, lease_owner, lease_token, lease_expires_at) "
                "VALUES ($1, 'wf', $2, 1.0, 1.0, $3, $4, 1, $5)",
                run_id,
                "running" if owner else "pending",
                last,
                owner,
                4e9 if owner else None,
            )
            await conn.execute(
                f"INSERT INTO {s}.events SELECT $1, x, 'StepCompleted', 1, '{{}}' "
                "FROM generate_series(1, $2::int) x",
                run_id,
                last,
            )
    finally:
        await conn.close()
    async with PostgresJournal(dsn, schema=name, read_only=True) as reader:
        # A read-only open cannot upgrade: it reads layout 7's runs rows as they are.
        rec = await reader.get_run("held")
        assert rec is not None and rec.last_seq == 3
        assert sorted(r.run_id for r in await reader.list_runs()) == ["freed", "held"]
    held = Lease(run_id="held", worker_id="w1", token=1, expires_at=0.0)
    freed = Lease(run_id="freed", worker_id="w1", token=1, expires_at=0.0)
    async with PostgresJournal(dsn, schema=name) as new:
        rec = await new.get_run("held")
        assert rec is not None and rec.last_seq == 3 and rec.lease_owner == "w1"
        late = AppendBatch(lease=freed, expected_seq=1, events=step_events("freed", 2, 1))
        assert isinstance((await new.append([late]))[0], LeaseLost)
        stale = AppendBatch(lease=held, expected_seq=1, events=step_events("held", 2, 1))
        assert isinstance((await new.append([stale]))[0], JournalConflict)
        step = AppendBatch(lease=held, expected_seq=3, events=step_events("held", 4, 2))
        assert await new.append([step]) == [None]
        assert (await new.get_run("held")).last_seq == 5  # type: ignore[union-attr]
        [again] = await new.claim("w2", ttl=300, limit=10)
        assert again.run_id == "freed" and again.token == 2
        step = AppendBatch(lease=again, expected_seq=1, events=step_events("freed", 2, 1))
        assert await new.append([step]) == [None]
