"""A queued start on Postgres wakes one worker: its notification names one registered
worker in turn, that worker looks at once, and the others look a moment later unless
a claim of theirs started since, so a run named to a worker that is busy, silent or
dead is still taken by another without waiting for the poll."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import pytest

from continuum_py import Context, Engine, Queue, Registry, RunStatus, workflow
from continuum_py.adapters._postgres_liveness import liveness_key
from continuum_py.adapters._postgres_wake import WakeOne
from continuum_py.adapters.postgres import PostgresJournal
from continuum_py.testing._journal_helpers import new_run

DELAY = 0.02


def _wake_one(ours: set[str]) -> tuple[WakeOne, list[int]]:
    woken: list[int] = []
    return WakeOne(ours.__contains__, lambda: woken.append(1), DELAY), woken


async def test_the_named_worker_and_an_unnamed_start_wake_at_once():
    w, woken = _wake_one({"me"})
    w.on_notify("me")
    w.on_notify("")
    assert woken == [1, 1]
    await asyncio.sleep(DELAY * 3)
    assert woken == [1, 1]  # nothing more later
    w.close()


async def test_a_start_named_elsewhere_is_looked_at_once_after_the_delay():
    w, woken = _wake_one({"me"})
    for _ in range(5):
        w.on_notify("other")
    assert woken == []
    await asyncio.sleep(DELAY * 4)
    assert woken == [1]  # one look for the five starts
    w.close()


async def test_a_claim_started_after_the_start_spares_the_look():
    w, woken = _wake_one({"me"})
    w.on_notify("other")
    w.claiming()  # its snapshot sees the run
    await asyncio.sleep(DELAY * 4)
    assert woken == []
    # A start after the claim is not covered by it.
    w.claiming()
    w.on_notify("other")
    await asyncio.sleep(DELAY * 4)
    assert woken == [1]
    w.close()


async def test_a_claim_that_started_before_the_newest_start_does_not_spare_the_look():
    w, woken = _wake_one({"me"})
    w.on_notify("other")
    w.claiming()
    w.on_notify("other")  # while the look is pending: the claim did not see this one
    await asyncio.sleep(DELAY * 4)
    assert woken == [1]
    w.close()


async def test_close_drops_a_pending_look():
    w, woken = _wake_one(set())
    w.on_notify("other")
    w.close()
    await asyncio.sleep(DELAY * 4)
    assert woken == []


async def _payloads(dsn: str, j: PostgresJournal, starts: list[str]) -> list[str]:
    conn = await asyncpg.connect(dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    try:
        await conn.add_listener(
            j.wake_channel, lambda _c, _p, _ch, payload: heard.put_nowait(payload)
        )
        for r in starts:
            await j.start_queued(new_run(r), "q")
        return [await asyncio.wait_for(heard.get(), 10) for _ in starts]
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_queued_starts_name_each_registered_worker_in_turn(pg_test_schema):
    dsn, name = pg_test_schema
    async with PostgresJournal(dsn, schema=name) as j, PostgresJournal(dsn, schema=name) as k:
        await j.declare_queue(Queue("q", concurrency=5))
        # No worker registered: the notification names none (every worker looks).
        assert await _payloads(dsn, j, ["a"]) == [""]
        # j registering a worker makes it read the registered ids at its next start.
        assert await j.hold_liveness("w1")
        assert await k.hold_liveness("w2")
        named = await _payloads(dsn, j, ["b", "c", "d", "e"])
        assert sorted(named) == ["w1", "w1", "w2", "w2"]
        assert all(x != y for x, y in itertools.pairwise(named))
        # A plain start still notifies every worker on the main channel, by run id.
        heard: list[str] = []
        await k.listen(heard.append)
        await j.start_run(new_run("plain"))
        for _ in range(100):
            if "plain" in heard:
                break
            await asyncio.sleep(0.02)
        assert "plain" in heard


@pytest.mark.postgres
async def test_a_worker_registered_elsewhere_is_named_once_the_ids_are_read_again(
    pg_test_schema,
):
    """A starting journal names workers from the ids it read last (at most
    NAMES_TTL seconds ago), not from a look at the table in every start."""
    dsn, name = pg_test_schema
    async with PostgresJournal(dsn, schema=name) as j, PostgresJournal(dsn, schema=name) as k:
        await j.declare_queue(Queue("q", concurrency=5))
        j._qsql.names_ttl = 3600.0  # no read again but those asked for below
        assert await k.hold_liveness("w1")
        assert await _payloads(dsn, j, ["a", "b"]) == ["w1", "w1"]
        assert await k.hold_liveness("w2")  # registered by another journal
        assert await _payloads(dsn, j, ["c", "d"]) == ["w1", "w1"]
        j._qsql.forget_names()  # as when the ids are older than NAMES_TTL
        named = await _payloads(dsn, j, ["e", "f", "g", "h"])
        assert sorted(named) == ["w1", "w1", "w2", "w2"]
        assert all(x != y for x, y in itertools.pairwise(named))
        # A journal that registers a worker itself names it from its next start.
        assert await j.hold_liveness("w0")
        assert sorted(await _payloads(dsn, j, ["i", "j", "k"])) == ["w0", "w1", "w2"]


@pytest.mark.postgres
@pytest.mark.parametrize("named", ["silent", "dead"])
async def test_runs_named_to_a_worker_that_does_not_look_are_taken_by_another(
    pg_test_schema, named
):
    """A registered worker that never looks (holding its liveness but not listening,
    or gone with its lock free) is named for about half of the starts; the one live
    worker, whose poll is ten minutes away, still runs every run (each started once
    the one before ended, so nothing else wakes it)."""
    dsn, name = pg_test_schema
    reg = Registry()

    @workflow(name="echo", registry=reg)
    async def echo(ctx: Context, i: int) -> int:
        return i

    url = f"{dsn}{'&' if '?' in dsn else '?'}schema={name}"
    async with Engine(url, registry=reg, worker=False) as client:
        holder = await asyncpg.connect(dsn)
        try:
            key = liveness_key(name, "aaa-silent")
            if named == "silent":
                assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", key)
            await holder.execute(
                f'INSERT INTO "{name}".workers (worker_id, lock_key, since) VALUES ($1, $2, 0)',
                "aaa-silent",
                key,
            )
            q = Queue("q", concurrency=50)
            async with Engine(url, registry=reg, worker_id="zzz-live", poll_interval=600.0):
                # One at a time: each start finds the live worker idle, so a run
                # named to the other one is looked at only by the delayed look.
                for i in range(4):
                    h = await client.start("echo", i, queue=q)
                    assert await asyncio.wait_for(h.result(), 20) == i
                    assert await h.status() == RunStatus.COMPLETED
        finally:
            await holder.close()
