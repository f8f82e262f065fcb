"""A journal file written by an older version upgrades in place, keeping every run."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from helpers import claim_run, new_run, step_events, suspend_batch

from continuum_py.adapters.sqlite import _RUNNABLE, MIGRATIONS, STORAGE_VERSION, SQLiteJournal
from continuum_py.errors import JournalCorrupt
from continuum_py.journal import AppendBatch, RunStatus, Snapshot

# The layout continuum-py wrote as storage version 1, verbatim.
V1_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_seq INTEGER NOT NULL,
    lease_owner TEXT,
    lease_token INTEGER NOT NULL DEFAULT 0,
    lease_expires_at REAL,
    wake_at REAL,
    outcome BLOB,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    schema INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    run_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    schema INTEGER NOT NULL,
    data BLOB NOT NULL
);
PRAGMA user_version = 1;
"""

RUNS = [
    # run_id, status, created_at, last_seq, lease_owner, lease_token, lease_expires_at, outcome, reason
    ("mid", "pending", 100.0, 3, None, 1, None, None, None),
    ("held", "running", 101.0, 1, "w-old", 4, 1.0, None, None),
    ("done", "completed", 102.0, 2, None, 2, None, b"the-end", None),
    ("stuck", "parked", 103.0, 1, None, 1, None, None, "NonDeterminismError: ..."),
]


def make_v1_file(path: str, *, extra_sql: str = "") -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(V1_DDL + extra_sql)
        conn.execute("PRAGMA journal_mode = WAL")
        for run_id, status, created, last, owner, token, expires, outcome, reason in RUNS:
            conn.execute(
                "INSERT INTO runs (run_id, workflow, status, created_at, updated_at, last_seq, "
                "lease_owner, lease_token, lease_expires_at, outcome, reason) "
                "VALUES (?, 'wf', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, status, created, created, last, owner, token, expires, outcome, reason),
            )
            conn.executemany(
                "INSERT INTO events (run_id, seq, kind, schema, data) VALUES (?, ?, ?, 1, ?)",
                [
                    (run_id, s, "RunStarted" if s == 1 else "Step", f"{run_id}:{s}".encode())
                    for s in range(1, last + 1)
                ],
            )
        conn.execute(
            "INSERT INTO snapshots (run_id, seq, schema, data) VALUES ('mid', 2, 1, x'cafe')"
        )
        conn.commit()
    finally:
        conn.close()


def dump(path: str) -> dict:
    conn = sqlite3.connect(path)
    try:
        return {
            "version": conn.execute("PRAGMA user_version").fetchone()[0],
            "runs": {
                t: conn.execute(f"PRAGMA table_info({t})").fetchall()
                for (t,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            },
            "indexes": conn.execute(
                "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' "
                "AND sql IS NOT NULL ORDER BY name"
            ).fetchall(),
        }
    finally:
        conn.close()


async def test_v1_file_upgrades_in_place_keeping_every_run_and_event(tmp_path):
    path = str(tmp_path / "old.db")
    make_v1_file(path)
    async with SQLiteJournal(path) as j:
        runs = {r.run_id: r for r in await j.list_runs()}
        assert list(runs) == ["mid", "held", "done", "stuck"]
        for run_id, status, created, last, owner, token, expires, outcome, reason in RUNS:
            rec = runs[run_id]
            assert (rec.status, rec.created_at, rec.last_seq) == (RunStatus(status), created, last)
            assert (rec.lease_owner, rec.lease_token, rec.lease_expires_at) == (
                owner,
                token,
                expires,
            )
            assert (rec.outcome, rec.reason, rec.wake_at) == (outcome, reason, None)
            assert (rec.parent_run_id, rec.inbox_last, rec.inbox_seen) == (None, 0, 0)
            events = await j.load(run_id)
            assert [(e.seq, e.data) for e in events] == [
                (s, f"{run_id}:{s}".encode()) for s in range(1, last + 1)
            ]
        snap, tail = await j.load_with_snapshot("mid")
        assert snap == Snapshot(run_id="mid", seq=2, schema=1, data=b"\xca\xfe")
        assert [e.seq for e in tail] == [3]
    assert dump(path)["version"] == STORAGE_VERSION == MIGRATIONS[-1].version


async def test_new_features_work_on_an_upgraded_file(tmp_path):
    path = str(tmp_path / "old.db")
    make_v1_file(path)
    async with SQLiteJournal(path) as j:
        # The old running run's lease (expired long ago) and the pending one are claimable.
        leases = {lease.run_id: lease for lease in await j.claim("w1", ttl=30, limit=10)}
        assert set(leases) == {"mid", "held"}
        assert leases["held"].token == 5
        assert await j.append(
            [
                AppendBatch(lease=leases["mid"], expected_seq=3, events=step_events("mid", 4, 9)),
                suspend_batch(leases["held"], 1, wake_at=5_000.0),
            ]
        ) == [None, None]
        assert await j.next_wake_at() == 5_000.0
        assert await j.claim("w1", ttl=30, limit=10, now=4_999.0) == []
        assert await j.send("held", "signal", "go", b"1") == 1
        assert await j.send("mid", "signal", "go", b"2") == 1
        [lease] = await j.claim("w2", ttl=30, limit=10, now=0.0)
        assert lease.run_id == "held"

        await j.start_run(new_run("child", parent_run_id="mid", parent_position=9))
        child = await claim_run(j, "child")
        assert await j.append(
            [
                AppendBatch(
                    lease=child, expected_seq=1, events=[], status=RunStatus.COMPLETED, outcome=b"c"
                )
            ]
        ) == [None]
        assert [(m.id, m.kind, m.name) for m in await j.inbox("mid")] == [
            (1, "signal", "go"),
            (2, "child", "9"),
        ]
        async with j.transaction() as tx:
            assert await tx.connection.fetchval("SELECT count(*) FROM events") == 7 + 2 + 1


async def test_upgraded_and_fresh_files_have_the_same_layout(tmp_path):
    old, fresh = str(tmp_path / "old.db"), str(tmp_path / "fresh.db")
    make_v1_file(old)
    for path in (old, fresh):
        async with SQLiteJournal(path):
            pass
    assert dump(old) == dump(fresh)
    assert {name for name, _, _ in dump(fresh)["indexes"]} >= {
        "runs_by_status",
        "runs_by_wake",
        "runs_unseen",
    }


async def test_a_failed_upgrade_leaves_the_v1_file_as_it_was(tmp_path):
    # A hand-edited file whose runs table already has one of the new columns:
    # the third ALTER fails, after two have run. All of them must roll back.
    path = str(tmp_path / "odd.db")
    make_v1_file(path, extra_sql="ALTER TABLE runs ADD COLUMN inbox_last INTEGER;")
    before = dump(path)
    with pytest.raises(JournalCorrupt, match="duplicate column"):
        async with SQLiteJournal(path):
            pass
    assert dump(path) == before
    assert before["version"] == 1


async def test_two_journals_upgrading_the_same_file_at_once_both_open_it(tmp_path):
    path = str(tmp_path / "old.db")
    make_v1_file(path)
    journals = [SQLiteJournal(path), SQLiteJournal(path)]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(j.connect() for j in journals))
        for j in journals:
            assert len(await j.list_runs()) == len(RUNS)
    finally:
        for j in journals:
            await j.aclose()
    assert dump(path)["version"] == STORAGE_VERSION


async def test_claim_reads_runnable_runs_through_indexes_only(tmp_path):
    path = str(tmp_path / "j.db")
    async with SQLiteJournal(path):
        pass
    conn = sqlite3.connect(path)
    conn.create_function("continuum_dead", 1, lambda owner: 0)  # the journal's liveness check
    try:
        plan = conn.execute(
            f"EXPLAIN QUERY PLAN SELECT run_id FROM ({_RUNNABLE})",
            {"own": 0, "worker": "w", "limit": 10, "now": 1.0},
        ).fetchall()
    finally:
        conn.close()
    reads = [row[3] for row in plan if " runs " in f"{row[3]} "]
    assert reads, plan
    # Every read of runs is bounded by an index (no full scan of finished runs).
    assert all("INDEX" in r for r in reads), reads
    assert any("runs_by_wake (status=? AND wake_at<?)" in r for r in reads), reads
    assert any("runs_unseen" in r for r in reads), reads


async def test_many_journals_opening_a_new_file_at_once_all_succeed(tmp_path):
    # Workers started together race to create the file and switch it to WAL; a
    # brief "database is locked" there is waited out, never reported as corrupt.
    from continuum_py.adapters.sqlite import SQLiteJournal

    for i in range(10):
        journals = [SQLiteJournal(str(tmp_path / f"j{i}.db")) for _ in range(6)]
        try:
            await asyncio.gather(*(j.connect() for j in journals))
            assert {await j.get_run("none") for j in journals} == {None}
        finally:
            for j in journals:
                await j.aclose()


def make_v2_file(path: str) -> None:
    """A file in the layout continuum-py wrote as storage version 2 (v1 plus its upgrade)."""
    from continuum_py.adapters.sqlite import _MIGRATIONS

    make_v1_file(path)
    conn = sqlite3.connect(path)
    try:
        for statement in _MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        conn.commit()
    finally:
        conn.close()


async def test_v2_file_gains_the_listing_indexes_keeping_every_run(tmp_path):
    old, fresh = str(tmp_path / "v2.db"), str(tmp_path / "fresh.db")
    make_v2_file(old)
    assert {name for name, _, _ in dump(old)["indexes"]}.isdisjoint(
        {"runs_by_created", "runs_by_workflow"}
    )
    async with SQLiteJournal(old) as j:
        assert [r.run_id for r in await j.list_runs(newest_first=True)] == [
            "stuck",
            "done",
            "held",
            "mid",
        ]
        assert [r.run_id for r in await j.list_runs(workflow="wf", after=(101.0, "held"))] == [
            "done",
            "stuck",
        ]
    async with SQLiteJournal(fresh):
        pass
    assert dump(old) == dump(fresh)
    assert dump(old)["version"] == STORAGE_VERSION == MIGRATIONS[-1].version
    assert {name for name, _, _ in dump(old)["indexes"]} >= {"runs_by_created", "runs_by_workflow"}


def _list_plan(path: str, **options) -> list[str]:
    from continuum_py.journal import RUN_COLUMNS, list_runs_sql

    query = {
        "status": None,
        "limit": 100,
        "workflow": None,
        "run_id_prefix": None,
        "created_after": None,
        "created_before": None,
        "after": None,
        "newest_first": True,
        **options,
    }
    tail, params = list_runs_sql(**query, param=lambda _: "?")
    conn = sqlite3.connect(path)
    try:
        cols = ", ".join(RUN_COLUMNS)
        rows = conn.execute(f"EXPLAIN QUERY PLAN SELECT {cols} FROM runs{tail}", params).fetchall()
    finally:
        conn.close()
    return [row[3] for row in rows]


@pytest.mark.parametrize(
    ("options", "index"),
    [
        ({}, "runs_by_created"),
        ({"newest_first": False}, "runs_by_created"),
        ({"after": (5.0, "r")}, "runs_by_created"),
        ({"created_after": 1.0, "created_before": 9.0}, "runs_by_created"),
        ({"workflow": "wf"}, "runs_by_workflow"),
        ({"workflow": "wf", "after": (5.0, "r")}, "runs_by_workflow"),
        ({"status": RunStatus.PARKED}, "runs_by_status"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_listing_reads_an_index_in_order_with_no_sort(tmp_path, options, index):
    path = str(tmp_path / "j.db")
    async with SQLiteJournal(path):
        pass
    plan = _list_plan(path, **options)
    assert any(index in step for step in plan), plan
    assert not any(step.startswith("SCAN runs") and "INDEX" not in step for step in plan), plan
    # A sort of the whole table would be "USE TEMP B-TREE FOR ORDER BY"; one status
    # sorts only the run_id ties within a created_at ("RIGHT PART OF ORDER BY").
    assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan


async def test_a_run_id_prefix_is_a_range_on_the_primary_key(tmp_path):
    path = str(tmp_path / "j.db")
    async with SQLiteJournal(path):
        pass
    plan = _list_plan(path, run_id_prefix="order-")
    assert "SEARCH runs USING INDEX sqlite_autoindex_runs_1 (run_id>? AND run_id<?)" in plan, plan


def _at_layout(path: str, version: int) -> sqlite3.Connection:
    """A connection to a new file created at storage ``version`` (its tables, no rows)."""
    conn = sqlite3.connect(path)
    for m in MIGRATIONS[:version]:
        for statement in m.sql.split(";\n"):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def _make_v6_file(path: str) -> None:
    """A file as storage version 6 left it: a queue, one admitted run, two waiting, one plain."""
    conn = _at_layout(path, 6)
    try:
        conn.execute("INSERT INTO queues (name, concurrency) VALUES ('q', 2)")
        for run_id, status, owner in [
            ("held", "running", "w0"),
            ("wait1", "pending", None),
            ("wait2", "pending", None),
            ("plain", "pending", None),
        ]:
            conn.execute(
                "INSERT INTO runs (run_id, workflow, status, created_at, updated_at, last_seq, "
                "lease_owner, lease_token, lease_expires_at) VALUES (?, 'wf', ?, 1.0, 1.0, 1, ?, ?, ?)",
                (run_id, status, owner, 1 if owner else 0, 4e9 if owner else None),
            )
        conn.executemany(
            "INSERT INTO queue_runs (run_id, queue, priority, seq, admitted_at) "
            "VALUES (?, 'q', 0, ?, ?)",
            [("held", 1, 0.5), ("wait1", 2, None), ("wait2", 3, None)],
        )
        conn.commit()
    finally:
        conn.close()


async def test_v6_file_marks_its_waiting_queued_runs_and_they_still_wait(tmp_path):
    old, fresh = str(tmp_path / "v6.db"), str(tmp_path / "fresh.db")
    _make_v6_file(old)
    async with SQLiteJournal(old) as j:
        conn = sqlite3.connect(old)
        try:
            flags = dict(conn.execute("SELECT run_id, queued_waiting FROM runs").fetchall())
        finally:
            conn.close()
        assert flags == {"held": 0, "wait1": 1, "wait2": 1, "plain": 0}
        # The plain run is claimed; one waiting run is admitted (the held one has
        # the other slot of two); the last one still waits.
        leases = await j.claim("w1", ttl=30.0, limit=10, now=2.0)
        assert sorted(x.run_id for x in leases) == ["plain", "wait1"]
        assert await j.claim("w1", ttl=30.0, limit=10, now=2.0) == []
        rec = await j.get_run("wait2")
        assert rec is not None and rec.status == RunStatus.PENDING
    async with SQLiteJournal(fresh):
        pass
    assert dump(old) == dump(fresh)


async def test_v7_file_drops_the_entries_of_runs_that_ended_waiting_and_gains_the_trigger(
    tmp_path,
):
    path = str(tmp_path / "v7.db")
    conn = _at_layout(path, 7)
    try:
        conn.execute("INSERT INTO queues (name, concurrency) VALUES ('q', 1)")
        for run_id, status in [("ended", "cancelled"), ("waits", "pending")]:
            conn.execute(
                "INSERT INTO runs (run_id, workflow, status, created_at, updated_at, last_seq, "
                "lease_token, queued_waiting) VALUES (?, 'wf', ?, 1.0, 1.0, 1, 0, 1)",
                (run_id, status),
            )
        conn.executemany(
            "INSERT INTO queue_runs (run_id, queue, priority, seq) VALUES (?, 'q', 0, ?)",
            [("ended", 1), ("waits", 2)],
        )
        conn.commit()
    finally:
        conn.close()
    async with SQLiteJournal(path) as j:
        assert await j.queue_entry("ended") is None
        assert await j.queue_entry("waits") is not None
        assert await j.set_status("waits", RunStatus.CANCELLED)  # the trigger, installed
        assert await j.queue_entry("waits") is None
        (load,) = await j.queue_loads(now=2.0)
        assert (load.holding, load.waiting) == (0, [])
