"""What only the Postgres journal does: migrations, schemas, concurrent claims,
LISTEN/NOTIFY, and surviving lost connections. The shared behaviour is in
tests/conformance, which runs on Postgres too."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import msgspec
import pytest
import structlog
from helpers import new_run, step_events, wait_until

from continuum_py import Context, Engine, Registry, step, workflow
from continuum_py._schemes import journal_from_url
from continuum_py.adapters.postgres import MIGRATIONS, Migration, PostgresJournal
from continuum_py.errors import (
    ConfigurationError,
    JournalUnavailable,
    LeaseLost,
    SchemaTooNew,
)
from continuum_py.journal import AppendBatch, Lease, NewRun, RunStatus, Snapshot

pytestmark = pytest.mark.postgres


class Pg:
    """Journals on schemas of their own (dropped after the test), found by application_name."""

    def __init__(self, dsn: str, base: str) -> None:
        self.dsn = dsn
        self.base = base
        self.tag = uuid.uuid4().hex[:8]
        self.schemas: set[str] = set()
        self.journals: list[PostgresJournal] = []

    def schema(self, name: str = "main") -> str:
        schema = f"{self.base}_{self.tag}_{name}"
        self.schemas.add(schema)
        return schema

    def app(self, name: str = "main") -> str:
        return f"ct_{self.tag}_{name}"

    def journal(self, schema: str = "main", app: str = "main", **kw) -> PostgresJournal:
        j = PostgresJournal(
            self.dsn, schema=self.schema(schema), application_name=self.app(app), **kw
        )
        self.journals.append(j)
        return j

    async def sql(self, query: str, *args):
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def lock_waiters(self, app: str = "main") -> int:
        """How many of the app's connections wait for a lock."""
        rows = await self.sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
            "AND wait_event_type = 'Lock'",
            self.app(app),
        )
        return len(rows)

    async def terminate(self, app: str = "main", where: str = "true") -> int:
        rows = await self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = $1 AND pid <> pg_backend_pid() AND {where}",
            self.app(app),
        )
        return len(rows)

    async def close(self) -> None:
        for j in self.journals:
            await j.aclose()
        for schema in self.schemas:
            await self.sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
async def pg(pg_schema):
    dsn, base = pg_schema
    p = Pg(dsn, base)
    yield p
    await p.close()


async def tables_and_versions(pg: Pg, schema: str) -> tuple[list, list]:
    cols = await pg.sql(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = $1 ORDER BY 1, 2",
        schema,
    )
    versions = await pg.sql(f'SELECT version, name FROM "{schema}".continuum_schema_version')
    return [tuple(c) for c in cols], sorted(tuple(v) for v in versions)


async def claim_one(journal, run_id: str):
    [lease] = await journal.claim("w1", ttl=300, limit=10)
    assert lease.run_id == run_id
    return lease


# ---- migrations and schemas ----


async def test_connect_creates_the_schema_and_records_each_migration(pg):
    j = pg.journal()
    assert not await pg.sql("SELECT 1 FROM pg_namespace WHERE nspname = $1", j.schema)
    async with j:
        await j.start_run(new_run("r1"))
    cols, versions = await tables_and_versions(pg, j.schema)
    assert versions == [(m.version, m.name) for m in MIGRATIONS]
    assert {c[0] for c in cols} >= {"runs", "events", "snapshots", "inbox"}
    # Connecting again applies nothing twice and keeps the data.
    async with pg.journal() as again:
        assert (await again.get_run("r1")).workflow == "wf"
    assert await tables_and_versions(pg, j.schema) == (cols, versions)


async def test_workers_starting_together_create_and_upgrade_the_schema_once(pg):
    first = [pg.journal() for _ in range(4)]
    await asyncio.gather(*(j.connect() for j in first))
    await first[0].start_run(new_run("r1"))
    newer = [*MIGRATIONS, Migration(99, "probe", "ALTER TABLE {s}.runs ADD COLUMN probe integer")]
    journals = [pg.journal() for _ in range(4)]
    for j in journals:
        j.migrations = newer
    await asyncio.gather(*(j.connect() for j in journals))
    cols, versions = await tables_and_versions(pg, journals[0].schema)
    assert versions == [(m.version, m.name) for m in newer]
    assert ("runs", "probe", "integer") in cols
    assert [r.run_id for r in await journals[0].list_runs()] == ["r1"]


async def test_an_older_library_refuses_a_newer_schema_and_changes_nothing(pg):
    newer = pg.journal()
    newer.migrations = [*MIGRATIONS, Migration(99, "future", "CREATE TABLE {s}.future (x int)")]
    async with newer:
        await newer.start_run(new_run("r1"))
    before = await tables_and_versions(pg, newer.schema)
    old = pg.journal()
    with pytest.raises(SchemaTooNew) as ei:
        await old.connect()
    assert ei.value.found == 99 and ei.value.supported == MIGRATIONS[-1].version
    assert "upgrade continuum-py" in str(ei.value)
    assert old._pool is None  # nothing left open
    assert await tables_and_versions(pg, newer.schema) == before
    rows = await pg.sql(f'SELECT run_id, status FROM "{newer.schema}".runs')
    assert [tuple(r) for r in rows] == [("r1", "pending")]


async def test_a_version_1_schema_gains_the_listing_indexes_keeping_its_runs(pg):
    old = pg.journal()
    old.migrations = list(MIGRATIONS[:1])
    async with old:
        # Rows as that layout held them (today's statements name later columns).
        for n, run_id in enumerate(("b-1", "a-1", "b-2")):
            await pg.sql(
                f'INSERT INTO "{old.schema}".runs (run_id, workflow, status, created_at, '
                "updated_at, last_seq) VALUES ($1, $2, 'pending', $3, $3, 1)",
                run_id,
                run_id[0],
                float(n),
            )
    _, versions = await tables_and_versions(pg, old.schema)
    assert versions == [(1, MIGRATIONS[0].name)]
    async with pg.journal() as j:
        _, versions = await tables_and_versions(pg, j.schema)
        assert versions == [(m.version, m.name) for m in MIGRATIONS]
        assert [r.run_id for r in await j.list_runs(newest_first=True)] == ["b-2", "a-1", "b-1"]
        assert [r.run_id for r in await j.list_runs(workflow="b", run_id_prefix="b-")] == [
            "b-1",
            "b-2",
        ]
    indexes = {
        r[0]
        for r in await pg.sql("SELECT indexname FROM pg_indexes WHERE schemaname = $1", j.schema)
    }
    assert indexes >= {"runs_by_created", "runs_by_workflow", "runs_by_id_bytes"}


@pytest.mark.parametrize(
    ("options", "index"),
    [
        ({}, "runs_by_created"),
        ({"after": (5.0, "r")}, "runs_by_created"),
        ({"created_after": 1.0, "created_before": 9.0}, "runs_by_created"),
        ({"workflow": "wf", "after": (5.0, "r")}, "runs_by_workflow"),
        ({"status": RunStatus.PARKED}, "runs_by_status"),
        ({"run_id_prefix": "order-"}, "runs_by_id_bytes"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_listing_queries_can_be_answered_from_an_index(pg, options, index):
    from continuum_py.journal import list_runs_sql

    async with pg.journal() as j:
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
        tail, params = list_runs_sql(
            **query, param=lambda n: f"${n}", id_bytewise='run_id COLLATE "C"'
        )
        conn = await asyncpg.connect(pg.dsn)
        try:
            # An empty table is cheaper to scan; forbid that to see which index fits.
            await conn.execute("SET enable_seqscan = off")
            plan = await conn.fetch(f"EXPLAIN {j._sql.list_runs}{tail}", *params)
        finally:
            await conn.close()
    text = "\n".join(r[0] for r in plan)
    assert index in text, text


async def test_two_schemas_in_one_database_do_not_see_each_other(pg):
    async with pg.journal("a") as a, pg.journal("b") as b:
        heard: list[str] = []
        await a.listen(heard.append)
        await a.start_run(new_run("only-a"))
        await b.start_run(new_run("only-b"))
        await b.start_run(new_run("shared-id"))
        rec, _, created = await a.start_run(new_run("shared-id", workflow="other"))
        assert created and rec.workflow == "other"
        assert [r.run_id for r in await a.list_runs()] == ["only-a", "shared-id"]
        assert [r.run_id for r in await b.list_runs()] == ["only-b", "shared-id"]
        assert {lease.run_id for lease in await b.claim("w", ttl=30, limit=10)} == {
            "only-b",
            "shared-id",
        }
        assert (await a.get_run("shared-id")).status == RunStatus.PENDING
        await a.start_run(new_run("marker"))
        await wait_until(lambda: _async("marker" in heard))
        assert "only-b" not in heard


async def _async(value):
    return value


def test_schema_and_pool_size_come_from_the_url_and_are_checked(pg_schema):
    dsn, _ = pg_schema
    j = journal_from_url(f"{dsn}?schema=app_one&pool_size=3&application_name=billing")
    assert isinstance(j, PostgresJournal)
    assert (j.schema, j.pool_size, j.application_name) == ("app_one", 3, "billing")
    assert "schema" not in j._dsn and "pool_size" not in j._dsn
    assert PostgresJournal(dsn, schema="mine", pool_size=2).schema == "mine"
    for bad in ('x"; DROP TABLE runs; --', "1abc", "a-b", "", "x" * 64):
        with pytest.raises(ConfigurationError, match="plain identifier"):
            PostgresJournal(dsn, schema=bad)
    with pytest.raises(ConfigurationError, match="pool_size"):
        journal_from_url(f"{dsn}?pool_size=0")
    with pytest.raises(ConfigurationError, match="pool_size"):
        journal_from_url(f"{dsn}?pool_size=many")


# ---- claims ----


async def test_concurrent_claimers_never_get_the_same_run(pg):
    journals = [pg.journal(pool_size=3) for _ in range(4)]
    for j in journals:
        await j.connect()
    claimed: list[tuple[str, int, str]] = []
    workers = [(j, f"w{n}-{k}") for n, j in enumerate(journals) for k in range(3)]
    # Each claimer's first claim prepares the statement on its connection: done
    # with nothing to claim, so a claimer whose connection was warm first does
    # not take every run while the others still prepare (seen on a loaded CI).
    assert not any(await asyncio.gather(*(j.claim(w, ttl=300, limit=7) for j, w in workers)))
    for i in range(200):
        await journals[i % 4].start_run(new_run(f"r{i:03}"))

    async def loop(j: PostgresJournal, worker: str) -> None:
        while len(claimed) < 200:  # not until the first empty claim: everyone keeps trying
            leases = await j.claim(worker, ttl=300, limit=7)
            claimed.extend((lease.run_id, lease.token, worker) for lease in leases)
            await asyncio.sleep(0)

    async with asyncio.timeout(60):
        await asyncio.gather(*(loop(j, w) for j, w in workers))
    ids = [c[0] for c in claimed]
    assert sorted(ids) == [f"r{i:03}" for i in range(200)]  # each run exactly once
    assert {c[1] for c in claimed} == {1}
    assert len({c[2] for c in claimed}) > 1  # the work really was shared
    runs = await journals[0].list_runs()
    assert all(r.status == RunStatus.RUNNING for r in runs)
    assert {(r.run_id, r.lease_owner) for r in runs} == {(c[0], c[2]) for c in claimed}


# ---- LISTEN/NOTIFY ----


async def test_notify_wakes_a_listener_when_work_appears(pg):
    async with pg.journal(app="listener") as lj, pg.journal(app="writer") as w:
        heard: list[str] = []
        await lj.listen(heard.append)

        async def heard_n(run_id: str, n: int) -> None:
            await wait_until(lambda: _async(heard.count(run_id) >= n))

        await w.start_run(new_run("r1"))
        await heard_n("r1", 1)
        assert await w.send("r1", "signal", "go", b"1") == 1
        await heard_n("r1", 2)
        lease = await claim_one(w, "r1")
        assert await w.release(lease)
        await heard_n("r1", 3)
        lease = await claim_one(w, "r1")
        [ok] = await w.append(
            [
                AppendBatch(
                    lease=lease,
                    expected_seq=1,
                    events=[],
                    status=RunStatus.SUSPENDED,
                    wake_at=1e12,
                )
            ]
        )
        assert ok is None
        await heard_n("r1", 4)
        # A child's end wakes its parent.
        child = NewRun(
            run_id="c1",
            workflow="wf",
            first_event=new_run("c1").first_event,
            parent_run_id="r1",
            parent_position=2,
        )
        _, clease, _ = await w.start_run(child, claim_for="w1")
        [ok] = await w.append(
            [
                AppendBatch(
                    lease=clease,
                    expected_seq=1,
                    events=[],
                    status=RunStatus.COMPLETED,
                    outcome=b"done",
                )
            ]
        )
        assert ok is None
        await heard_n("r1", 5)
        assert "c1" not in heard  # claimed as it started: nobody else needs to know


@pytest.fixture
def logs(_quiet_logs):
    cap = structlog.testing.LogCapture()
    structlog.configure(
        processors=[cap],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )
    return cap.entries


async def test_the_listener_reconnects_after_its_connection_is_killed(pg, logs):
    async with pg.journal(app="listener") as lj, pg.journal(app="writer") as w:
        heard: list[str] = []
        await lj.listen(heard.append)
        assert await pg.terminate("listener", "query ILIKE 'LISTEN%'") == 1
        # Back on a new connection, it says notifications may have been missed...
        await wait_until(lambda: _async("" in heard), timeout=15)
        # ...and hears the next ones.
        await w.start_run(new_run("after"))
        await wait_until(lambda: _async("after" in heard))
        lost = [e for e in logs if e["event"] == "journal.listen_connection_lost"]
        assert lost and lost[0]["log_level"] == "warning"


# ---- lost connections ----


async def _retry(fn, attempts: int = 5):
    for _ in range(attempts - 1):
        try:
            return await fn()
        except JournalUnavailable:
            await asyncio.sleep(0.05)
    return await fn()


async def test_killed_idle_connections_are_replaced(pg):
    async with pg.journal() as j:
        await j.start_run(new_run("r1"))
        assert await pg.terminate() >= 1
        # The pool may not have noticed yet: one call can fail, the next one works.
        rec = await _retry(lambda: j.get_run("r1"))
        assert rec.run_id == "r1"
        assert await _retry(lambda: j.send("r1", "signal", "s", b"1")) == 1


async def test_after_its_kept_connection_is_killed_the_journal_keeps_a_new_one(pg):
    # Calls one after another share one kept connection; once the server ends it,
    # the pool takes it back, and the journal must notice and keep another.
    async with pg.journal(pool_size=3) as j:
        pid = await j._lend.run(lambda c: c.fetchval("SELECT pg_backend_pid()"))
        await pg.sql("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)  # the client reads the connection's end
        await _retry(lambda: j.get_run("r1"))
        pids = [
            await j._lend.run(lambda c: c.fetchval("SELECT pg_backend_pid()")) for _ in range(3)
        ]
        assert len(set(pids)) == 1 and pids[0] != pid
        kept = j._lend.steps
        assert kept is not None and kept.conn is not None and kept.free  # kept, not lent


async def _claimed_child(j: PostgresJournal, run_id: str, position: int) -> Lease:
    """Start run "parent" and its child ``run_id`` (at ``position``), claimed by w1."""
    await j.start_run(new_run("parent"))
    child = NewRun(
        run_id=run_id,
        workflow="wf",
        first_event=new_run(run_id).first_event,
        parent_run_id="parent",
        parent_position=position,
    )
    _, lease, _ = await j.start_run(child, claim_for="w1", ttl=300)
    assert lease is not None
    return lease


@pytest.mark.parametrize("path", ["one statement", "transaction"])
async def test_an_append_cut_off_in_flight_lands_not_at_all_and_the_next_works(pg, path):
    async with pg.journal() as j:
        lease = await _claimed_child(j, "r1", 4)
        if path == "one statement":
            batch = AppendBatch(lease=lease, expected_seq=1, events=step_events("r1", 2, 1))
            table, locked = "heads", "r1"  # a step's batch writes the run's heads row only
        else:
            # The child's row is written first, then the parent's inbox: one statement, one transaction.
            batch = AppendBatch(
                lease=lease,
                expected_seq=1,
                events=step_events("r1", 2, 1),
                status=RunStatus.COMPLETED,
                outcome=b"out",
            )
            table, locked = "runs", "parent"
        blocker = await asyncpg.connect(pg.dsn)
        try:
            tr = blocker.transaction()
            await tr.start()
            await blocker.execute(
                f'SELECT 1 FROM "{j.schema}".{table} WHERE run_id = $1 FOR UPDATE', locked
            )
            task = asyncio.create_task(j.append([batch]))
            await wait_until(pg.lock_waiters)
            assert await pg.terminate(where="wait_event_type = 'Lock'") == 1
            with pytest.raises(JournalUnavailable, match="append"):
                await task
            await tr.rollback()
        finally:
            await blocker.close()
        assert [e.seq for e in await _retry(lambda: j.load("r1"))] == [1]
        rec = await j.get_run("r1")
        assert rec.status == RunStatus.RUNNING and rec.last_seq == 1
        assert await j.inbox("parent") == []
        assert await j.append([batch]) == [None]
        assert [e.seq for e in await j.load("r1")] == [1, 2, 3]
        if path == "transaction":
            [msg] = await j.inbox("parent")
            assert (msg.kind, msg.name, msg.data) == ("child", "4", b"out")


@pytest.mark.parametrize("n_events", [0, 1, 2, 3])
@pytest.mark.parametrize("snapshot", [False, True])
@pytest.mark.parametrize("ending", [False, True])
async def test_a_batch_of_any_shape_lands_whole_or_is_refused_whole(pg, n_events, snapshot, ending):
    # One batch is one statement, shaped by its events, snapshot and end.
    async with pg.journal() as j:
        lease = await _claimed_child(j, "c1", 3)
        events = [e for pos in range(2) for e in step_events("c1", 2 + 2 * pos, pos + 1)]
        batch = AppendBatch(
            lease=lease,
            expected_seq=1,
            events=events[:n_events],
            snapshot=Snapshot(run_id="c1", seq=1, schema=1, data=b"snap") if snapshot else None,
            status=RunStatus.COMPLETED if ending else None,
            outcome=b"out" if ending else None,
        )
        stale = Lease(run_id="c1", worker_id="w1", token=lease.token + 1, expires_at=0.0)
        [refused] = await j.append([msgspec.structs.replace(batch, lease=stale)])
        assert isinstance(refused, LeaseLost)
        assert [e.seq for e in await j.load("c1")] == [1]
        assert await j.inbox("parent") == []
        assert await j.append([batch]) == [None]
        assert [e.seq for e in await j.load("c1")] == list(range(1, 2 + n_events))
        rec = await j.get_run("c1")
        assert rec.last_seq == 1 + n_events
        assert rec.status == (RunStatus.COMPLETED if ending else RunStatus.RUNNING)
        snap, _ = await j.load_with_snapshot("c1")
        assert (snap is not None and snap.data) == (b"snap" if snapshot else False)
        msgs = await j.inbox("parent")
        assert [(m.kind, m.name, m.data) for m in msgs] == (
            [("child", "3", b"out")] if ending else []
        )


async def test_a_group_commit_with_a_child_end_and_its_parents_batch_lands_both(pg):
    # One statement writes the group; the child's end, held back from it, tells
    # its parent in a statement of its own.
    async with pg.journal() as j:
        clease = await _claimed_child(j, "c1", 2)
        [please] = await j.claim("w1", ttl=300, limit=1)
        assert please.run_id == "parent"
        _, olease, _ = await j.start_run(new_run("other"), claim_for="w1", ttl=300)
        ends = {"status": RunStatus.COMPLETED, "outcome": b"done"}
        got = await j.append(
            [
                AppendBatch(lease=please, expected_seq=1, events=step_events("parent", 2, 1)),
                AppendBatch(lease=clease, expected_seq=1, events=step_events("c1", 2, 1), **ends),
                AppendBatch(lease=olease, expected_seq=1, events=[], **ends),
            ]
        )
        assert got == [None, None, None]
        assert [(m.kind, m.name, m.data) for m in await j.inbox("parent")] == [
            ("child", "2", b"done")
        ]
        runs = {r: await j.get_run(r) for r in ("parent", "c1", "other")}
        assert {r: (rec.status, rec.last_seq) for r, rec in runs.items()} == {
            "parent": (RunStatus.RUNNING, 3),
            "c1": (RunStatus.COMPLETED, 3),
            "other": (RunStatus.COMPLETED, 1),
        }
        assert runs["parent"].inbox_last == 1
        assert await j.inbox("other") == []


@pytest.mark.parametrize("pool_size", [1, 2])
async def test_an_append_cancelled_while_it_waits_lands_whole_or_not_and_calls_go_on(pg, pool_size):
    # The journal keeps one pooled connection for calls that come one after
    # another (pool_size 2); a cancelled call must not leave it unusable.
    async with pg.journal(pool_size=pool_size) as j:
        _, lease, _ = await j.start_run(new_run("r1"), claim_for="w1", ttl=300)
        batch = AppendBatch(lease=lease, expected_seq=1, events=step_events("r1", 2, 1))
        blocker = await asyncpg.connect(pg.dsn)
        try:
            async with blocker.transaction():
                # A step's batch writes the run's heads row.
                await blocker.execute(
                    f'SELECT 1 FROM "{j.schema}".heads WHERE run_id = $1 FOR UPDATE', "r1"
                )
                task = asyncio.create_task(j.append([batch]))
                await wait_until(pg.lock_waiters)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        finally:
            await blocker.close()
        # The server may still run the statement once the lock is free (the
        # cancel request races it), but a batch lands whole or not at all.
        seqs = [e.seq for e in await j.load("r1")]
        assert seqs in ([1], [1, 2, 3])
        # Calls one after another, then at once, all answer.
        tail = seqs[-1]
        after = AppendBatch(lease=lease, expected_seq=tail, events=step_events("r1", tail + 1, 2))
        assert await j.append([after]) == [None]
        got = await asyncio.gather(*(j.get_run("r1") for _ in range(5)))
        assert {rec.last_seq for rec in got} == {tail + 2}


async def test_appends_under_repeated_backend_kills_land_whole_batches(pg):
    async with pg.journal(pool_size=4) as j:
        run_ids = [f"r{i}" for i in range(6)]
        leases = {}
        for rid in run_ids:
            _, leases[rid], _ = await j.start_run(new_run(rid), claim_for="w1", ttl=300)
        acked = dict.fromkeys(run_ids, 0)
        failures = 0
        done = asyncio.Event()

        async def writer(rid: str) -> None:
            nonlocal failures
            last = 1
            while not done.is_set():
                batch = AppendBatch(
                    lease=leases[rid], expected_seq=last, events=step_events(rid, last + 1, 1)
                )
                try:
                    [err] = await j.append([batch])
                except JournalUnavailable:
                    failures += 1
                    # Did it land? The journal knows: carry on from its tail.
                    last = (await _retry(lambda: j.get_run(rid), attempts=20)).last_seq
                    continue
                assert err is None
                last += 2
                acked[rid] += 1

        async def killer() -> None:
            for _ in range(3):
                target = sum(acked.values()) + 30
                await wait_until(lambda t=target: _async(sum(acked.values()) >= t), timeout=20)
                await pg.terminate()
            done.set()

        await asyncio.gather(killer(), *(writer(rid) for rid in run_ids))
        assert failures > 0  # the kills did interrupt appends
        for rid in run_ids:
            # The last kill may not have been noticed yet: one call can fail.
            events = await _retry(lambda r=rid: j.load(r))
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            # Every batch is two events: a torn batch would leave an odd count.
            assert (len(events) - 1) % 2 == 0
            assert [e.kind for e in events[1:]] == ["StepScheduled", "StepCompleted"] * (
                (len(events) - 1) // 2
            )
            assert (len(events) - 1) // 2 >= acked[rid]


class Proxy:
    """A TCP relay to Postgres that can go down and come back, as a server restart would."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.pipes: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for w in self.writers:
            w.close()
        await asyncio.gather(*self.pipes, return_exceptions=True)
        self.writers.clear()

    async def _relay(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection(*self.target)
        self.writers += [cw, uw]

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        for r, w in ((cr, uw), (ur, cw)):
            task = asyncio.create_task(pipe(r, w))
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)


async def test_postgres_going_away_mid_run_and_coming_back(pg, logs):
    host_port = pg.dsn.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    proxy = Proxy(host, int(port or 5432))
    await proxy.start()
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{pg.dsn.rsplit('/', 1)[1]}"
    j = PostgresJournal(url, schema=pg.schema(), connect_timeout=5)
    pg.journals.append(j)
    await j.connect()
    heard: list[str] = []
    await j.listen(heard.append)
    await j.start_run(new_run("r1"))

    await proxy.stop()
    with pytest.raises(JournalUnavailable, match=f"127.0.0.1:{proxy.port}"):
        await j.get_run("r1")
    with pytest.raises(JournalUnavailable):
        await j.send("r1", "signal", "s", b"1")
    await wait_until(
        lambda: _async(any(e["event"] == "journal.listen_reconnect_failed" for e in logs)),
        timeout=15,
    )

    await proxy.start()
    assert (await _retry(lambda: j.get_run("r1"), attempts=50)).run_id == "r1"
    assert await j.send("r1", "signal", "s", b"1") == 1
    await wait_until(lambda: _async("" in heard), timeout=15)
    await j.aclose()
    await proxy.stop()


# ---- connecting ----


async def test_postgres_down_is_journal_unavailable_naming_host_and_port():
    j = PostgresJournal("postgresql://postgres:s3cret@127.0.0.1:1/test", connect_timeout=5)
    with pytest.raises(JournalUnavailable) as ei:
        await j.connect()
    assert "127.0.0.1:1" in str(ei.value) and "s3cret" not in str(ei.value)


async def test_an_unknown_database_is_a_configuration_error(pg_schema):
    dsn, _ = pg_schema
    host = dsn.split("@", 1)[1].split("/", 1)[0]
    j = PostgresJournal(f"postgresql://postgres:s3cret@{host}/no_such_db_{uuid.uuid4().hex[:6]}")
    with pytest.raises(ConfigurationError, match="has no database 'no_such_db_") as ei:
        await j.connect()
    assert host in str(ei.value) and "s3cret" not in str(ei.value)


async def test_an_unknown_role_is_a_configuration_error(pg_schema):
    dsn, _ = pg_schema
    host = dsn.split("@", 1)[1].split("/", 1)[0]
    j = PostgresJournal(f"postgresql://nobody_{uuid.uuid4().hex[:6]}:s3cret@{host}/test")
    with pytest.raises(ConfigurationError, match="refused the login") as ei:
        await j.connect()
    assert "s3cret" not in str(ei.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:s3cret@127.0.0.1:notaport/test",
        "postgresql://postgres:s3cret@[::1/test",
        "postgresql://postgres:s3cret@127.0.0.1/test?sslmode=sometimes",
    ],
)
async def test_an_unusable_url_is_a_configuration_error(url):
    with pytest.raises(ConfigurationError) as ei:
        await PostgresJournal.from_url(url).connect()
    assert "s3cret" not in str(ei.value)


async def test_transaction_yields_the_connection_inside_an_open_transaction(pg):
    async with pg.journal() as j, j.transaction() as tx:
        assert tx.connection.is_in_transaction()
        name = await tx.connection.fetchval("SELECT current_setting('application_name')")
        assert name == pg.app()


# ---- an engine on Postgres ----

reg = Registry()


@step
async def double(x: int) -> int:
    return 2 * x


@workflow(registry=reg)
async def pg_approval(ctx: Context, x: int) -> str:
    y = await double(x)
    ok = await ctx.wait_for_signal("approve")
    return f"{y}:{ok}"


async def test_a_worker_that_never_polls_is_woken_by_notify(pg):
    url = f"{pg.dsn}?schema={pg.schema('engine')}&application_name={pg.app('engine')}"
    async with (
        Engine(url, registry=reg, worker_id="w1", poll_interval=3600),
        Engine(url, registry=reg, worker=False) as client,
    ):
        handle = await client.start(pg_approval, 21, run_id="e1")
        await wait_until(
            lambda: _async_status(handle, RunStatus.SUSPENDED), timeout=10, interval=0.02
        )
        await client.signal("e1", "approve", True)
        assert await handle.result(timeout=10) == "42:True"


async def _async_status(handle, status) -> bool:
    return await handle.status() == status
