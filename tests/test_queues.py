"""Queues through the engine, on every journal: rate windows, racing dedup starts, bad input."""

from __future__ import annotations

import asyncio

import pytest
from helpers import wait_until

from continuum_py import ConfigurationError, Context, Engine, Queue, Registry, RunStatus, workflow
from continuum_py._schemes import journal_from_url
from continuum_py.testing import VirtualClock

T0 = 1_800_000_000.0


def _registry() -> tuple[Registry, list[float]]:
    reg = Registry()
    started: list[float] = []

    @workflow(name="stamp", registry=reg)
    async def stamp(ctx: Context, i: int) -> int:
        started.append(ctx.now().timestamp())
        return i

    return reg, started


async def test_rate_no_window_of_a_second_holds_more_than_ten_starts(journal_url):
    reg, started = _registry()
    clock = VirtualClock(T0, auto_advance=False)
    async with Engine(journal_url, registry=reg, clock=clock, poll_interval=0.005) as e:
        q = Queue("api", rate=(10, 1.0))
        handles = [await e.start("stamp", i, queue=q) for i in range(50)]

        async def all_done() -> bool:
            if len(started) < 50:
                await clock.advance(0.1)
                return False
            return all([await h.status() == RunStatus.COMPLETED for h in handles])

        await wait_until(all_done, timeout=60, interval=0.01)
        # A start is the run's admission (the time its queue counts), on the engine clock.
        places = [await e.queue_place(h.run_id) for h in handles]
    times = sorted(p.admitted_at for p in places if p is not None and p.admitted_at is not None)
    assert len(times) == 50
    for i, t in enumerate(times):
        in_window = sum(1 for u in times[i:] if u < t + 1.0)
        assert in_window <= 10, (t, in_window)
    assert times[-1] - times[0] >= 4.0  # 50 starts at 10 a second: the waits happened


async def test_two_racing_clients_with_one_dedup_key_get_one_run(journal_url):
    reg, _ = _registry()
    q = Queue("mail", concurrency=1)
    # Two journal objects (two connections) race on SQLite and Postgres; the
    # memory journal is one object shared by both clients.
    shared = journal_from_url(journal_url) if journal_url.startswith("memory") else None
    async with (
        Engine(journal_url, registry=reg, worker=False, journal=shared) as a,
        Engine(journal_url, registry=reg, worker=False, journal=shared) as b,
    ):
        handles = await asyncio.gather(
            *[c.start("stamp", i, queue=q, dedup_key="user-1") for i, c in enumerate([a, b] * 5)]
        )
        assert len({h.run_id for h in handles}) == 1
        runs = await a.list_runs()
        assert [r.run_id for r in runs] == [handles[0].run_id]
    async with Engine(journal_url, registry=reg, poll_interval=0.01, journal=shared) as w:
        await (await w.get(handles[0].run_id)).result(timeout=30)
        again = await w.start("stamp", 9, queue=q, dedup_key="user-1")
        assert again.run_id != handles[0].run_id  # the key is free once its run finished
        assert await again.result(timeout=30) == 9


async def test_queues_report_running_waiting_and_each_waiting_runs_place(journal_url):
    reg, _ = _registry()
    q = Queue("slow", concurrency=1, rate=(5, 60.0))
    async with Engine(journal_url, registry=reg, worker=False) as client:
        first = await client.start("stamp", 1, queue=q)
        later = await client.start("stamp", 2, queue=q, priority=5)
        sooner = await client.start("stamp", 3, queue=q, priority=1)
        [state] = await client.queues()
        assert (state.queue, state.running, state.waiting) == (q, 0, 3)
        place = await client.queue_place(later.run_id)
        assert place is not None and (place.position, place.admitted) == (3, False)
        assert "ahead" in place.why
        assert (await client.queue_place(sooner.run_id)).position == 2  # type: ignore[union-attr]
        assert await client.queue_place("not-queued") is None
        await client.journal.claim("w1", ttl=30.0, limit=10)  # type: ignore[call-arg]
        [state] = await client.queues()
        assert (state.running, state.waiting, state.started_in_window) == (1, 2, 1)
        place = await client.queue_place(sooner.run_id)
        assert place is not None and place.why.startswith("concurrency limit: 1 of 1")
        assert (await client.queue_place(first.run_id)).admitted  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Queue("q", concurrency=-1), "concurrency must be a whole number >= 1"),
        (lambda: Queue("q", concurrency=0), "concurrency must be a whole number >= 1"),
        (lambda: Queue("q", per_worker=1.5), "per_worker must be a whole number >= 1"),
        (lambda: Queue("q", rate=(0, 1.0)), "rate must be (n >= 1, seconds > 0)"),
        (lambda: Queue("q", rate=(5, 0)), "rate must be (n >= 1, seconds > 0)"),
        (lambda: Queue("q", rate=(5, float("inf"))), "rate must be (n >= 1, seconds > 0)"),
        (lambda: Queue(""), "Queue name must be non-empty text"),
    ],
)
def test_a_bad_queue_is_refused_naming_the_problem(make, message):
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


async def test_bad_start_arguments_record_nothing(journal_url):
    reg, _ = _registry()
    async with Engine(journal_url, registry=reg, worker=False) as client:
        with pytest.raises(ConfigurationError, match=r"queue must be a continuum_py\.Queue"):
            await client.start("stamp", 1, queue="mail")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match=r"priority must be a whole number"):
            await client.start("stamp", 1, queue=Queue("q"), priority=1.5)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="dedup_key must be non-empty text"):
            await client.start("stamp", 1, queue=Queue("q"), dedup_key="")
        with pytest.raises(ConfigurationError, match="need a queue"):
            await client.start("stamp", 1, dedup_key="k")
        assert list(await client.list_runs()) == []
        assert await client.queues() == []
    with pytest.raises(ConfigurationError, match="Engine queues must be a list"):
        Engine(journal_url, registry=reg, queues=Queue("q"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="names queue 'q' twice"):
        Engine(journal_url, registry=reg, queues=[Queue("q"), Queue("q", concurrency=2)])


async def test_a_worker_told_its_queues_admits_only_from_them(journal_url):
    reg, _ = _registry()
    mine, other = Queue("mine"), Queue("other")
    client_journal = journal_from_url(journal_url)
    async with Engine(journal_url, registry=reg, worker=False, journal=client_journal) as client:
        theirs = await client.start("stamp", 1, queue=other)
        ours = await client.start("stamp", 2, queue=mine)
        # The worker's own journal object (on memory://, the client's is the only store).
        worker_journal = client_journal if journal_url.startswith("memory") else None
        async with Engine(
            journal_url, registry=reg, queues=[mine], poll_interval=0.01, journal=worker_journal
        ):
            assert await (await client.get(ours.run_id)).result(timeout=30) == 2
            await asyncio.sleep(0.1)
            assert await theirs.status() == RunStatus.PENDING
