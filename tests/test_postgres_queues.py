"""What only the Postgres journal's queues do: admission in one statement that skips
a queue another claim is admitting from (its admission lock or its row), counts again when another claim admitted
after its snapshot, wakes the workers when it leaves runs, and the upgrade of a
schema made before waiting runs were marked on their row. The shared behaviour is
in the conformance suite (continuum_py.testing.conformance._queues)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from helpers import wait_until

from continuum_py.adapters._postgres_lend import Lender
from continuum_py.adapters._postgres_sql import ADMISSION_LOCK_CLASS
from continuum_py.adapters.postgres import MIGRATIONS, PostgresJournal
from continuum_py.journal import AppendBatch, RunStatus
from continuum_py.queues import Queue
from continuum_py.testing._journal_helpers import new_run

pytestmark = pytest.mark.postgres

NOW = 1_000_000.0


def _at_layout(pg_test_schema: tuple[str, str], version: int) -> PostgresJournal:
    """A journal on the test schema that creates (or keeps) it at layout ``version``."""
    dsn, name = pg_test_schema
    assert MIGRATIONS[version].version == version + 1  # the next one is what is tested
    old = PostgresJournal(dsn, schema=name)
    old.migrations = MIGRATIONS[:version]
    return old


# How often the admission's prepared statement ran on its generic plan and on
# plans made for its parameters, on the connection asked.
_ADMISSION_PLANS = (
    "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
    "WHERE statement LIKE '%cand AS MATERIALIZED%' "
    "AND statement NOT LIKE '%pg_prepared_statements%'"
)


async def _eight_admissions(j: PostgresJournal) -> None:
    """Eight queued runs, each admitted by a claim of its own."""
    await j.declare_queue(Queue("q", concurrency=50))
    for i in range(8):
        await j.start_queued(new_run(f"r{i}"), "q")
        assert await _claimed(j, "w1", 1) == [f"r{i}"]


async def _claimed(journal: PostgresJournal, worker: str, limit: int) -> list[str]:
    return [x.run_id for x in await journal.claim(worker, ttl=30.0, limit=limit, now=NOW)]


async def test_a_claim_whose_snapshot_predates_another_admission_counts_again(pg_test_schema):
    """The second claim looked at the queue before the first admitted, and locks after."""
    dsn, name = pg_test_schema
    async with (
        PostgresJournal(dsn, schema=name) as first,
        PostgresJournal(dsn, schema=name) as late,
    ):
        await first.declare_queue(Queue("q", concurrency=2))
        for r in ("a", "b"):
            await first.start_queued(new_run(r), "q")
        # The late claim's statement pauses after taking its snapshot and before it
        # locks the queue's row. Meanwhile two runs ahead of a and b in line are
        # started and admitted: the late claim's snapshot sees neither them nor
        # their slots.
        marker = "AND ($5::text[] IS NULL"
        assert marker in late._qsql.admission
        late._qsql.admission = late._qsql.admission.replace(
            marker, "AND pg_sleep(0.5) IS NOT NULL " + marker, 1
        )
        late_claim = asyncio.create_task(_claimed(late, "w2", 2))
        await asyncio.sleep(0.2)
        for r in ("u1", "u2"):
            await first.start_queued(new_run(r), "q", priority=-1)
        assert await _claimed(first, "w1", 2) == ["u1", "u2"]
        assert await late_claim == []  # the queue is full: it counted the first's admissions
        waiting = [r.run_id for r in await first.list_runs(status=RunStatus.PENDING)]
        assert sorted(waiting) == ["a", "b"]


async def _claims_while_busy_is_held(dsn: str, name: str, hold: str, *args: object) -> tuple:
    """Queues "busy" (b1 waiting) and "free" (f1 waiting): what a claim admits while
    another connection holds ``hold`` (SQL) on "busy", then what the next claim admits."""
    async with PostgresJournal(dsn, schema=name) as j:
        await j.declare_queue(Queue("busy", concurrency=5))
        await j.declare_queue(Queue("free", concurrency=5))
        await j.start_queued(new_run("b1"), "busy")
        await j.start_queued(new_run("f1"), "free")
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.execute(hold, *args)
                # No wait on the held queue: the other one is admitted at once.
                during = await asyncio.wait_for(_claimed(j, "w1", 10), timeout=5)
        finally:
            await conn.close()
        return during, await _claimed(j, "w1", 10)


async def test_a_claim_skips_a_queue_another_claim_has_locked(pg_test_schema):
    dsn, name = pg_test_schema
    hold = f'SELECT 1 FROM "{name}".queues WHERE name = $1 FOR UPDATE'
    during, after = await _claims_while_busy_is_held(dsn, name, hold, "busy")
    assert during == ["f1"]
    assert after == ["b1"]


async def test_a_claim_leaves_a_queue_another_admission_is_working_on_to_it(pg_test_schema):
    """The queue's admission lock held elsewhere: the claim admits from the other queue."""
    dsn, name = pg_test_schema
    # What an admission from "busy" holds while its statement runs.
    hold = "SELECT pg_advisory_xact_lock($1, hashtext($2))"
    during, after = await _claims_while_busy_is_held(
        dsn, name, hold, ADMISSION_LOCK_CLASS, f"{name}.busy"
    )
    assert during == ["f1"]
    assert after == ["b1"]  # released: the next claim admits it


async def test_a_plain_claim_leaves_runs_waiting_in_a_queue_being_admitted_from_to_it(
    pg_test_schema,
):
    """The claim after one that saw nothing waiting looks with the plain claim first."""
    dsn, name = pg_test_schema
    async with PostgresJournal(dsn, schema=name) as j:
        await j.declare_queue(Queue("q", concurrency=5))
        assert await _claimed(j, "w1", 10) == []  # nothing waits: the next claim is plain
        await j.start_queued(new_run("a"), "q")
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                    ADMISSION_LOCK_CLASS,
                    f"{name}.q",
                )
                assert await asyncio.wait_for(_claimed(j, "w1", 10), timeout=5) == []
        finally:
            await conn.close()
        assert await _claimed(j, "w1", 10) == ["a"]


async def test_a_claim_that_leaves_runs_it_had_no_room_for_wakes_the_workers(pg_test_schema):
    dsn, name = pg_test_schema
    async with (
        PostgresJournal(dsn, schema=name) as j,
        PostgresJournal(dsn, schema=name) as other,
    ):
        heard: list[str] = []
        await other.listen(heard.append)
        await j.declare_queue(Queue("q", concurrency=5))
        for r in ("a", "b", "c"):
            await j.start_queued(new_run(r), "q")
        await asyncio.sleep(0.3)  # the starts' notifications
        heard.clear()
        assert await _claimed(j, "w1", 1) == ["a"]
        for _ in range(50):
            if "" in heard:
                break
            await asyncio.sleep(0.05)
        assert "" in heard
        heard.clear()
        assert await _claimed(j, "w1", 5) == ["b", "c"]  # took all it could: nobody to wake
        await asyncio.sleep(0.3)
        assert "" not in heard


async def test_a_schema_from_before_migration_7_upgrades_and_its_waiting_runs_still_wait(
    pg_test_schema,
):
    dsn, name = pg_test_schema
    old = _at_layout(pg_test_schema, 6)
    async with old:
        pass
    s = f'"{name}"'
    conn = await asyncpg.connect(dsn)
    try:
        # What the previous version wrote: a queue, one admitted run holding a
        # slot, two waiting, and a plain run.
        await conn.execute(f"INSERT INTO {s}.queues (name, concurrency) VALUES ('q', 2)")
        for run_id, status, owner in [
            ("held", "running", "w0"),
            ("wait1", "pending", None),
            ("wait2", "pending", None),
            ("plain", "pending", None),
        ]:
            await conn.execute(
                f"INSERT INTO {s}.runs (run_id, workflow, status, created_at, updated_at, "
                "last_seq, lease_owner, lease_token, lease_expires_at) "
                "VALUES ($1, 'wf', $2, $3, $3, 1, $4, $5, $6)",
                run_id,
                status,
                NOW - 10,
                owner,
                1 if owner else 0,
                4e9 if owner else None,  # far ahead of the journal clock
            )
        for i, (run_id, admitted) in enumerate(
            [("held", NOW - 5), ("wait1", None), ("wait2", None)]
        ):
            await conn.execute(
                f"INSERT INTO {s}.queue_runs (run_id, queue, priority, admitted_at) "
                "VALUES ($1, 'q', $2, $3)",
                run_id,
                i,
                admitted,
            )
    finally:
        await conn.close()
    async with PostgresJournal(dsn, schema=name) as new:
        flags = {
            r[0]: r[1]
            for r in await new._fetch("t", f"SELECT run_id, queued_waiting FROM {s}.runs")
        }
        assert flags == {"held": False, "wait1": True, "wait2": True, "plain": False}
        # A plain claim takes the plain run only; admission lets one waiting run in
        # (the held one fills the other slot of two).
        assert await _claimed(new, "w1", 10) == ["wait1", "plain"]
        assert await _claimed(new, "w1", 10) == []
        rec = await new.get_run("wait2")
        assert rec is not None and rec.status == RunStatus.PENDING


async def test_a_schema_from_before_migration_9_counts_its_held_slots_from_the_runs(
    pg_test_schema,
):
    """Layout 8's admitted runs keep their slots on upgrade: live ones hold one, the
    ended one its admission never saw finished (not marked done) and the parked one do not."""
    dsn, name = pg_test_schema
    old = _at_layout(pg_test_schema, 8)
    async with old:
        await old.declare_queue(Queue("q", concurrency=3))
        for r in ("live", "slept", "ended", "parked", "wait1", "wait2", "wait3"):
            await old.start_queued(new_run(r), "q")
    s = f'"{name}"'
    conn = await asyncpg.connect(dsn)
    try:
        # What layout 8's admission wrote: four admitted (one running, one
        # suspended, one ended and one parked since), none marked done yet.
        for run_id, status in [
            ("live", "running"),
            ("slept", "suspended"),
            ("ended", "completed"),
            ("parked", "parked"),
        ]:
            await conn.execute(
                f"UPDATE {s}.queue_runs SET admitted_at = $2 WHERE run_id = $1", run_id, NOW - 5
            )
            await conn.execute(
                f"UPDATE {s}.runs SET status = $2, queued_waiting = false, "
                "lease_owner = CASE WHEN $2 = 'running' THEN 'w0' END, lease_token = 1, "
                "lease_expires_at = CASE WHEN $2 = 'running' THEN 4e9::float8 END "
                "WHERE run_id = $1",
                run_id,
                status,
            )
    finally:
        await conn.close()
    async with PostgresJournal(dsn, schema=name) as new:
        (load,) = await new.queue_loads(now=NOW)
        assert load.holding == 2  # live and slept
        assert load.waiting == ["wait1", "wait2", "wait3"]
        assert await _claimed(new, "w1", 10) == ["wait1"]  # one slot of three left
        assert await _claimed(new, "w1", 10) == []
        # An upgraded run that ends frees its slot; so does a newly admitted one.
        assert await new.set_status("live", RunStatus.CANCELLED)
        assert await _claimed(new, "w1", 10) == ["wait2"]
        assert await new.set_status("wait1", RunStatus.CANCELLED)
        assert await _claimed(new, "w1", 10) == ["wait3"]
        (load,) = await new.queue_loads(now=NOW)
        assert (load.holding, load.mine, load.waiting) == (3, 0, [])
        # A parked run resumed is live again, and holds its slot again.
        assert await new.set_status("parked", RunStatus.PENDING)
        (load,) = await new.queue_loads(now=NOW)
        assert load.holding == 4


async def test_a_queued_run_started_after_a_claim_saw_none_waiting_is_admitted_at_once(
    pg_test_schema,
):
    """A claim skips the admission while the last one saw no queued run waiting."""
    dsn, name = pg_test_schema
    async with PostgresJournal(dsn, schema=name) as j:
        await j.declare_queue(Queue("q", concurrency=5))
        await j.start_run(new_run("plain1"))
        assert await _claimed(j, "w1", 10) == ["plain1"]  # nothing queued: seen so
        await j.start_queued(new_run("queued"), "q")
        await j.start_run(new_run("plain2"))
        assert sorted(await _claimed(j, "w1", 10)) == ["plain2", "queued"]
        await j.start_queued(new_run("queued2"), "q")
        assert await _claimed(j, "w1", 10) == ["queued2"]


async def _while_an_admission_sleeps_past_its_snapshot(
    dsn: str, j: PostgresJournal, act: Callable[[], Awaitable[object]]
) -> list[str]:
    """What a claim admits (run "a" waiting) when ``act`` runs after its snapshot."""
    marker = "AND ($5::text[] IS NULL"
    assert marker in j._qsql.admission
    plain = j._qsql.admission
    j._qsql.admission = plain.replace(marker, "AND pg_sleep(0.5) IS NOT NULL " + marker, 1)
    j._qsql.waiting = True  # admit first, with the statement above
    claim = asyncio.create_task(_claimed(j, "w1", 5))
    conn = await asyncpg.connect(dsn)
    try:  # until the admission sleeps, past its snapshot
        await wait_until(
            lambda: conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                "AND query LIKE '%cand AS MATERIALIZED%'"
            ),
            timeout=30,
        )
    finally:
        await conn.close()
    await act()
    got = await claim
    j._qsql.admission = plain
    return got


async def test_a_run_ended_after_the_admission_s_snapshot_is_not_leased(pg_test_schema):
    """The admission picked it in its snapshot; its lease follows the row to its
    newest version, which is no longer pending."""
    dsn, name = pg_test_schema
    async with (
        PostgresJournal(dsn, schema=name) as j,
        PostgresJournal(dsn, schema=name) as other,
    ):
        await j.declare_queue(Queue("q", concurrency=5))
        await j.start_queued(new_run("a"), "q")

        async def cancel() -> None:
            assert await other.set_status("a", RunStatus.CANCELLED, reason="test")

        assert await _while_an_admission_sleeps_past_its_snapshot(dsn, j, cancel) == []
        rec = await other.get_run("a")
        assert rec is not None and rec.status == RunStatus.CANCELLED
        assert rec.lease_owner is None


async def test_a_run_messaged_after_the_admission_s_snapshot_is_still_leased(pg_test_schema):
    """Its row changed (the inbox count), it is still pending: admitted and leased,
    never marked admitted while left out of every claim."""
    dsn, name = pg_test_schema
    async with (
        PostgresJournal(dsn, schema=name) as j,
        PostgresJournal(dsn, schema=name) as other,
    ):
        await j.declare_queue(Queue("q", concurrency=5))
        await j.start_queued(new_run("a"), "q")

        async def signal() -> None:
            await other.send("a", "signal", "go", b"1")

        got = await _while_an_admission_sleeps_past_its_snapshot(dsn, j, signal)
        assert got + await _claimed(j, "w1", 5) == ["a"]


async def test_the_admission_runs_on_its_generic_plan_and_leaves_the_session_s_setting(
    pg_test_schema,
):
    """Planned again for its parameters (the server's choice after the first five
    executions, too), the admission cost about twice its running. It is never
    planned for its parameters, and the connection's own setting is back after it
    (a step's SQL on a lent connection keeps the server's choice)."""
    dsn, name = pg_test_schema
    async with PostgresJournal(dsn, schema=name, pool_size=1) as j:
        before = (await j._fetch("mode", "SHOW plan_cache_mode"))[0][0]
        await _eight_admissions(j)
        # One connection (pool_size=1): the statements seen are the claims'.
        rows = [tuple(r) for r in await j._fetch("plans", _ADMISSION_PLANS)]
        after = (await j._fetch("mode", "SHOW plan_cache_mode"))[0][0]
    assert len(rows) == 1 and rows[0][0] >= 8 and rows[0][1] == 0, rows
    assert after == before


async def test_the_admission_runs_without_jit_and_gives_the_session_s_setting_back(
    pg_test_schema,
):
    """With 200,000 runs the generic plan's estimates passed ``jit_above_cost``:
    compiling it took 1.4 s of a 2 ms admission. Here JIT is forced on for every
    statement of the session (``jit_above_cost = 0``); the admission runs without."""
    dsn, name = pg_test_schema
    seen: list[str] = []
    async with PostgresJournal(dsn, schema=name, pool_size=1) as j:
        await j.declare_queue(Queue("q", concurrency=5))
        await j.start_queued(new_run("a"), "q")
        marker = "AND ($5::text[] IS NULL"
        j._qsql.admission = j._qsql.admission.replace(
            marker, "AND (SELECT current_setting('jit') = 'off') " + marker, 1
        )
        await j._fetch("jit", "SET jit = on")
        await j._fetch("jit", "SET jit_above_cost = 0")
        assert await _claimed(j, "w1", 5) == ["a"]  # the queue was seen with jit off
        seen.append((await j._fetch("jit", "SHOW jit"))[0][0])
    assert seen == ["on"]


async def test_claims_run_on_a_connection_of_their_own_set_to_generic_plans(pg_test_schema):
    """With a pool of three or more, claims keep a connection aside set to generic
    plans: the admission is planned for no call's parameters with no SET or RESET
    around it, and the journal's other statements keep the server's choice."""
    dsn, name = pg_test_schema
    async with PostgresJournal(dsn, schema=name, pool_size=3) as j:
        before = (await j._fetch("mode", "SHOW plan_cache_mode"))[0][0]
        assert before != "force_generic_plan"
        await _eight_admissions(j)
        claiming = j._lend.claiming
        assert claiming is not None
        assert await claiming.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        assert await claiming.fetchval("SHOW jit") == "off"
        rows = [tuple(r) for r in await claiming.fetch(_ADMISSION_PLANS)]
        assert len(rows) == 1 and rows[0][0] >= 8 and rows[0][1] == 0, rows
        assert (await j._fetch("mode", "SHOW plan_cache_mode"))[0][0] == before


async def test_the_claim_connection_goes_back_to_the_pool_with_the_server_s_setting(
    pg_test_schema,
):
    """A claim that fails inside a transaction gives its connection back, rolled back
    and reset; so does closing the lender."""
    pool = await asyncpg.create_pool(pg_test_schema[0], min_size=3, max_size=3)
    try:
        before = await pool.fetchval("SHOW plan_cache_mode")
        lender = Lender(pool, keep=True, claims=True)

        async def fails(conn: asyncpg.Connection) -> None:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            tx = conn.transaction()
            await tx.start()
            raise RuntimeError("the claim failed")

        with pytest.raises(RuntimeError):
            await lender.claim(fails)
        assert lender.claiming is None
        modes = []
        async with pool.acquire() as a, pool.acquire() as b, pool.acquire() as c:
            for conn in (a, b, c):
                modes.append(await conn.fetchval("SHOW plan_cache_mode"))
                assert not conn.is_in_transaction()
        assert modes == [before] * 3

        async def mode(conn: asyncpg.Connection) -> str:
            return str(await conn.fetchval("SHOW plan_cache_mode"))

        assert await lender.claim(mode) == "force_generic_plan"
        assert lender.claiming is not None
        await lender.aclose()
        async with pool.acquire() as a, pool.acquire() as b, pool.acquire() as c:
            assert [await x.fetchval("SHOW plan_cache_mode") for x in (a, b, c)] == [before] * 3
    finally:
        await pool.close()


async def test_a_terminated_waiting_run_leaves_the_line_and_claims_stop_admitting(
    pg_test_schema,
):
    """A queued run ended before its admission took its entry with it: once the queue
    drains, the next claim is the plain one again, not an admission for good."""
    dsn, name = pg_test_schema
    async with PostgresJournal(dsn, schema=name) as j:
        await j.declare_queue(Queue("q", concurrency=1))
        for r in ("first", "doomed"):
            await j.start_queued(new_run(r), "q")
        assert await _claimed(j, "w1", 5) == ["first"]
        lease = await j.seize("doomed", "terminator", ttl=30.0)
        assert lease is not None
        rec = await j.get_run("doomed")
        [err] = await j.append(
            [
                AppendBatch(
                    lease=lease,
                    expected_seq=rec.last_seq,
                    events=[],
                    status=RunStatus.CANCELLED,
                    outcome=b"x",
                )
            ]
        )
        assert err is None
        first = await j.get_run("first")
        assert await j.set_status("first", RunStatus.COMPLETED)
        assert first.status == RunStatus.RUNNING
        assert await _claimed(j, "w1", 5) == []
        assert j._qsql.waiting is False  # nothing waits: the next claim skips the admission


async def test_a_schema_from_before_migration_10_drops_the_entries_of_runs_that_ended_waiting(
    pg_test_schema,
):
    dsn, name = pg_test_schema
    old = _at_layout(pg_test_schema, 9)
    async with old:
        await old.declare_queue(Queue("q", concurrency=1))
        for r in ("ended", "waits"):
            await old.start_queued(new_run(r), "q")
        assert await old.set_status("ended", RunStatus.CANCELLED)
        assert await old.queue_entry("ended") is not None  # layout 9 kept it in line
    async with PostgresJournal(dsn, schema=name) as new:
        assert await new.queue_entry("ended") is None
        assert await new.queue_entry("waits") is not None
        assert await _claimed(new, "w1", 5) == ["waits"]
        assert await _claimed(new, "w1", 5) == []
        (load,) = await new.queue_loads(now=NOW)
        assert (load.holding, load.waiting) == (1, [])
