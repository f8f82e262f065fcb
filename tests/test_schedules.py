"""Cron schedules: each fire once across workers, catch-up, overlap, DST, restart, bad input.

Time is a VirtualClock: a simulated day of minute fires runs in seconds (on
memory and SQLite); the rest runs on every journal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter

import pytest
from helpers import journal_maker, wait_until

from continuum_py import (
    ConfigurationError,
    Context,
    Engine,
    Registry,
    RunStatus,
    ScheduleNotFound,
    step,
    workflow,
)
from continuum_py.testing import VirtualClock

reg = Registry()
executed: list[str] = []
received: dict[str, dt.datetime] = {}
UTC = dt.UTC
NY = "America/New_York"


@step
async def note(run_id: str) -> None:
    executed.append(run_id)


@workflow(registry=reg)
async def tick(ctx: Context, label: str, at: dt.datetime) -> str:
    received[ctx.run_id] = at
    await note(ctx.run_id)
    return label


@workflow(registry=reg)
async def held(ctx: Context, at: dt.datetime) -> None:
    await note(ctx.run_id)
    await ctx.wait_for_signal("done")


@workflow(registry=reg)
async def no_fire_time(ctx: Context, label: str) -> None:
    pass


@pytest.fixture(autouse=True)
def _fresh() -> None:
    executed.clear()
    received.clear()


@pytest.fixture(params=["memory", "sqlite"])
def local_url(request, tmp_path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'runs.db'}"


def engine(journal, clock: VirtualClock, name: str = "w1") -> Engine:
    return Engine(journal=journal, clock=clock, registry=reg, worker_id=name, lease_ttl=600)


def at(s: str) -> float:
    return dt.datetime.fromisoformat(s).timestamp()


def rid(name: str, t: float) -> str:
    return f"{name}@{dt.datetime.fromtimestamp(t, UTC).strftime('%Y-%m-%dT%H:%M:%S')}Z"


async def info(eng: Engine, name: str):
    [found] = [s for s in await eng.schedules() if s.name == name]
    return found


async def fired(eng: Engine, name: str, n: int) -> bool:
    """At least ``n`` fires started, and the newest one's run exists (it is started after it is recorded)."""
    s = await info(eng, name)
    if s.fired < n:
        return False
    return s.last_run_id is None or await eng.journal.get_run(s.last_run_id) is not None


async def handled(eng: Engine, name: str, t: float) -> bool:
    """The schedule has handled (started, skipped or buffered) its fires up to ``t``."""
    return (await info(eng, name)).last_fire.timestamp() >= t


async def completed(eng: Engine, prefix: str, n: int) -> bool:
    runs = await eng.list_runs(run_id_prefix=prefix, limit=10_000)
    return sum(r.status == RunStatus.COMPLETED for r in runs) >= n


async def run_ids(eng: Engine, name: str) -> list[str]:
    return sorted(r.run_id for r in await eng.list_runs(limit=10_000) if r.run_id.startswith(name))


# ---- once each, across workers ----


async def test_a_minute_schedule_fires_1440_times_once_each_in_a_day_with_two_workers(local_url):
    make = journal_maker(local_url)
    day = at("2026-01-02T00:00:00+00:00")
    clock = VirtualClock(day - 30, idle_delay=0.001)
    async with engine(make(), clock, "w1") as a, engine(make(), clock, "w2") as b:
        # Every process declares its schedules at start: the second declaration is a no-op.
        # (Every minute of 2 January only: after the day the next fire is a year away.)
        for eng in (a, b):
            await eng.schedule("minutely", tick, "x", cron="* * 2 1 *", overlap="allow")
        await wait_until(lambda: fired(a, "minutely", 1440), timeout=120)
        await wait_until(lambda: asyncio.sleep(0, len(executed) >= 1440), timeout=30)
        s = await info(a, "minutely")
        ids = await run_ids(a, "minutely@2026")
    expected = [rid("minutely", day + 60 * i) for i in range(1440)]
    assert ids == expected
    in_day = [r for r in executed if r.startswith("minutely@2026")]
    assert sorted(in_day) == expected  # each fire's run did its step once
    assert s.skipped == 0 and s.last_skipped is None
    assert received[expected[0]] == dt.datetime(2026, 1, 2, tzinfo=UTC)


async def test_the_workflow_gets_its_fire_time_in_the_schedules_zone(journal_url):
    clock = VirtualClock(at("2026-06-01T11:59:00+00:00"), idle_delay=0.001)
    async with engine(journal_maker(journal_url)(), clock) as eng:
        await eng.schedule("noon", tick, "hi", cron="0 8 * * *", tz=NY)
        await wait_until(lambda: eng.journal.get_run("noon@2026-06-01T12:00:00Z"))
        h = await eng.get("noon@2026-06-01T12:00:00Z")
        assert await h.result(timeout=5) == "hi"
    when = received["noon@2026-06-01T12:00:00Z"]
    assert when == dt.datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert when.utcoffset() == dt.timedelta(hours=-4)  # 08:00 EDT


# ---- catch-up and restart ----


async def test_a_worker_down_30_minutes_catches_up_within_catchup_and_skips_the_rest(journal_url):
    make = journal_maker(journal_url)
    t0 = at("2026-01-01T00:00:00+00:00")
    clock = VirtualClock(t0, auto_advance=False)
    async with engine(make(), clock) as eng:
        await eng.schedule("m", tick, "x", cron="* * * * *", catchup=600, overlap="allow")
        for _ in range(5):
            await clock.advance(60)
            await wait_until(lambda: handled(eng, "m", clock.now()))
        await wait_until(lambda: fired(eng, "m", 5))
        # (Closing with grace=0 would interrupt a step mid-way; it would run again.)
        await wait_until(lambda: completed(eng, "m@", 5))
    await clock.advance(1800)  # nobody runs for 30 minutes
    async with engine(make(), clock, "w2") as eng:  # a restart: a new Engine
        await wait_until(lambda: fired(eng, "m", 16))
        s = await info(eng, "m")
        assert (s.fired, s.skipped) == (16, 19)
        assert s.last_skipped == dt.datetime.fromtimestamp(t0 + 1440, UTC)
        ids = await run_ids(eng, "m@")
        started = [t0 + 60 * i for i in range(1, 6)] + [t0 + 1500 + 60 * i for i in range(11)]
        assert ids == [rid("m", t) for t in started]
        # It goes on from the stored last fire: one more minute, one more fire.
        await clock.advance(60)
        await wait_until(lambda: fired(eng, "m", 17))
        assert (await run_ids(eng, "m@"))[-1] == rid("m", t0 + 2160)
        await wait_until(lambda: asyncio.sleep(0, len(executed) == 17))
    assert max(Counter(executed).values()) == 1


async def test_catch_up_fires_start_in_fire_order(tmp_path):
    t0 = at("2026-01-01T00:00:00+00:00")
    clock = VirtualClock(t0, auto_advance=False)
    make = journal_maker("memory://")
    async with engine(make(), clock) as eng:
        await eng.schedule("m", tick, "x", cron="*/5 * * * *", overlap="allow")
    await clock.advance(3000)
    async with engine(make(), clock) as eng:
        await wait_until(lambda: fired(eng, "m", 10))
        runs = await eng.list_runs(limit=100, oldest_first=True)
    assert [r.run_id for r in runs] == [rid("m", t0 + 300 * i) for i in range(1, 11)]


# ---- overlap ----


async def _fire_three(eng: Engine, clock: VirtualClock, overlap: str) -> None:
    await eng.schedule("o", held, cron="* * * * *", overlap=overlap)
    for n in range(3):
        await clock.advance(60)
        await wait_until(lambda: handled(eng, "o", clock.now()))
        if n == 0:
            await wait_until(lambda: _status(eng, rid("o", T_OVERLAP + 60), RunStatus.SUSPENDED))


T_OVERLAP = at("2026-01-01T00:00:00+00:00")


async def _status(eng: Engine, run_id: str, status: RunStatus) -> bool:
    rec = await eng.journal.get_run(run_id)
    return rec is not None and rec.status == status


async def test_overlap_skip_skips_fires_while_the_previous_run_is_unfinished(journal_url):
    clock = VirtualClock(T_OVERLAP, auto_advance=False)
    async with engine(journal_maker(journal_url)(), clock) as eng:
        await _fire_three(eng, clock, "skip")
        s = await info(eng, "o")
        assert (s.fired, s.skipped) == (1, 2)
        assert s.last_skipped == dt.datetime.fromtimestamp(T_OVERLAP + 180, UTC)
        await eng.signal(rid("o", T_OVERLAP + 60), "done")
        await wait_until(lambda: _status(eng, rid("o", T_OVERLAP + 60), RunStatus.COMPLETED))
        await clock.advance(60)
        await wait_until(lambda: fired(eng, "o", 2))
        assert await run_ids(eng, "o@") == [rid("o", T_OVERLAP + 60), rid("o", T_OVERLAP + 240)]


async def test_overlap_buffer_one_starts_one_waiting_fire_when_the_previous_ends(journal_url):
    clock = VirtualClock(T_OVERLAP, auto_advance=False)
    async with engine(journal_maker(journal_url)(), clock) as eng:
        await _fire_three(eng, clock, "buffer_one")
        s = await info(eng, "o")
        assert (s.fired, s.skipped) == (1, 1)
        assert s.buffered == dt.datetime.fromtimestamp(T_OVERLAP + 120, UTC)
        await eng.signal(rid("o", T_OVERLAP + 60), "done")
        # No clock move: the run's end starts the buffered fire.
        await wait_until(lambda: fired(eng, "o", 2))
        s = await info(eng, "o")
        assert s.buffered is None and s.last_run_id == rid("o", T_OVERLAP + 120)
        assert await run_ids(eng, "o@") == [rid("o", T_OVERLAP + 60), rid("o", T_OVERLAP + 120)]


async def test_overlap_allow_starts_every_fire(journal_url):
    clock = VirtualClock(T_OVERLAP, auto_advance=False)
    async with engine(journal_maker(journal_url)(), clock) as eng:
        await _fire_three(eng, clock, "allow")
        await wait_until(lambda: fired(eng, "o", 3))
        s = await info(eng, "o")
        assert (s.fired, s.skipped) == (3, 0)
        assert await run_ids(eng, "o@") == [rid("o", T_OVERLAP + 60 * i) for i in (1, 2, 3)]


# ---- DST ----


async def test_dst_next_fires_spring_forward_and_fall_back():
    clock = VirtualClock(at("2026-03-07T12:00:00-05:00"), auto_advance=False)
    async with engine(journal_maker("memory://")(), clock) as eng:
        await eng.schedule("spring", tick, "x", cron="30 2 * * *", tz=NY)
        # 02:30 does not exist on 8 March: it fires once, at 03:00 EDT.
        assert [d.isoformat() for d in await eng.next_fires("spring", 3)] == [
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:30:00-04:00",
            "2026-03-10T02:30:00-04:00",
        ]
    clock = VirtualClock(at("2026-10-31T12:00:00-04:00"), auto_advance=False)
    async with engine(journal_maker("memory://")(), clock) as eng:
        await eng.schedule("fall", tick, "x", cron="30 1 * * *", tz=NY)
        # 01:30 happens twice on 1 November: it fires once, at the first (EDT).
        assert [d.isoformat() for d in await eng.next_fires("fall", 2)] == [
            "2026-11-01T01:30:00-04:00",
            "2026-11-02T01:30:00-05:00",
        ]
        # An hourly one counts elapsed time: both 01:00s.
        await eng.schedule("hourly", tick, "x", cron="@hourly", tz=NY)
        got = [d.isoformat() for d in await eng.next_fires("hourly", 15)]
        assert got[-3:] == [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T02:00:00-05:00",
        ]


@pytest.mark.parametrize(
    ("start", "cron", "expected"),
    [
        (
            "2026-03-07T12:00:00-05:00",
            "30 2 * * *",
            ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],  # 03:00 EDT, then 02:30 EDT
        ),
        (
            "2026-10-31T12:00:00-04:00",
            "30 1 * * *",
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],  # 01:30 EDT once, then EST
        ),
    ],
)
async def test_dst_days_fire_once(start, cron, expected):
    clock = VirtualClock(at(start), idle_delay=0.001)
    async with engine(journal_maker("memory://")(), clock) as eng:
        await eng.schedule("dst", tick, "x", cron=cron, tz=NY)
        await wait_until(lambda: fired(eng, "dst", 2))
        ids = await run_ids(eng, "dst@")
    assert ids[:2] == [f"dst@{e}" for e in expected]


# ---- declaring, pausing, deleting ----


async def test_declaring_again_is_a_no_op_and_a_change_replaces_keeping_progress():
    t0 = at("2026-01-01T00:00:00+00:00")
    clock = VirtualClock(t0, auto_advance=False)
    async with engine(journal_maker("memory://")(), clock) as eng:
        first = await eng.schedule("d", tick, "x", cron="* * * * *", overlap="allow")
        await clock.advance(120)
        await wait_until(lambda: fired(eng, "d", 2))
        before = await info(eng, "d")
        assert await eng.schedule("d", tick, "x", cron="* * * * *", overlap="allow") == before
        changed = await eng.schedule("d", tick, "y", cron="*/10 * * * *", overlap="allow")
        assert changed.cron == "*/10 * * * *" and changed.fired == 2
        assert changed.created_at == first.created_at
        assert changed.next_fire == dt.datetime.fromtimestamp(t0 + 600, UTC)


async def test_pause_stops_fires_and_resume_does_not_make_them_up(journal_url):
    t0 = at("2026-01-01T00:00:00+00:00")
    clock = VirtualClock(t0, auto_advance=False)
    async with engine(journal_maker(journal_url)(), clock) as eng:
        await eng.schedule("p", tick, "x", cron="* * * * *", overlap="allow")
        await eng.pause_schedule("p")
        assert (await info(eng, "p")).paused and (await info(eng, "p")).next_fire is None
        await clock.advance(600)
        await asyncio.sleep(0.1)
        assert await run_ids(eng, "p@") == []
        await eng.resume_schedule("p")
        s = await info(eng, "p")
        assert (s.fired, s.skipped, s.paused) == (0, 0, False)
        assert s.next_fire == dt.datetime.fromtimestamp(t0 + 660, UTC)
        await clock.advance(60)
        await wait_until(lambda: fired(eng, "p", 1))
        assert await run_ids(eng, "p@") == [rid("p", t0 + 660)]
        await eng.delete_schedule("p")
        assert await eng.schedules() == []
        await clock.advance(120)
        await asyncio.sleep(0.1)
        assert await run_ids(eng, "p@") == [rid("p", t0 + 660)]


# ---- bad input ----


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"cron": "61 * * * *"}, "Bad minute"),
        ({"cron": "* * *"}, "3 fields"),
        ({"cron": "* * * * * *"}, "6 fields"),
        ({"cron": "@reboot"}, "unknown name"),
        ({"cron": "0 0 31 2 *"}, "day-of-month"),
        ({"tz": "Mars/Olympus"}, "Mars/Olympus"),
        ({"tz": ""}, "tz"),
        ({"overlap": "queue"}, "overlap"),
        ({"catchup": -1}, "catchup"),
        ({"catchup": float("nan")}, "catchup"),
    ],
)
async def test_bad_schedule_input_is_refused_and_nothing_is_recorded(kwargs, words):
    async with engine(journal_maker("memory://")(), VirtualClock(0.0)) as eng:
        with pytest.raises(ConfigurationError) as ei:
            await eng.schedule("bad", tick, "x", **kwargs)
        assert words in str(ei.value)
        assert await eng.schedules() == []


async def test_a_workflow_without_room_for_the_fire_time_is_refused():
    async with engine(journal_maker("memory://")(), VirtualClock(0.0)) as eng:
        with pytest.raises(ConfigurationError, match="fire time as its last argument"):
            await eng.schedule("bad", no_fire_time, "x")
        with pytest.raises(ConfigurationError, match="non-empty"):
            await eng.schedule("", tick, "x")
        assert await eng.schedules() == []


@pytest.mark.parametrize("method", ["pause_schedule", "resume_schedule", "delete_schedule"])
async def test_an_unknown_schedule_name_is_a_typed_error(method):
    async with engine(journal_maker("memory://")(), VirtualClock(0.0)) as eng:
        with pytest.raises(ScheduleNotFound, match="no schedule named 'nope'"):
            await getattr(eng, method)("nope")
        with pytest.raises(ScheduleNotFound):
            await eng.next_fires("nope", 3)
        assert await eng.schedules() == []


# ---- journals of an older layout ----


async def test_an_older_sqlite_file_read_only_has_no_schedules_and_gains_the_table(tmp_path):
    import sqlite3

    from continuum_py._cli_inspect import reader
    from continuum_py.adapters.sqlite import MIGRATIONS as SQLITE_MIGRATIONS

    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    async with Engine(url, worker=False):
        pass
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE schedules")
    # Layout 8's trigger (it reads the column below) and layout 7's column (an
    # ADD COLUMN cannot be applied twice, unlike the CREATE ... IF NOT EXISTS of
    # the layouts between).
    conn.execute("DROP TRIGGER queue_line_end")
    conn.execute("DROP INDEX runs_claimable")
    conn.execute("ALTER TABLE runs DROP COLUMN queued_waiting")
    conn.execute(f"PRAGMA user_version = {_before_schedules(SQLITE_MIGRATIONS)}")
    conn.commit()
    conn.close()
    async with reader(url) as eng:  # read-only: nothing is upgraded
        assert await eng.schedules() == []
    async with Engine(url, registry=reg, worker=False) as eng:  # upgraded on open
        await eng.schedule("s", tick, "x")
        assert [s.name for s in await eng.schedules()] == ["s"]


def _before_schedules(migrations) -> int:
    """The layout just before the one that added the schedules table."""
    return next(m.version for m in migrations if "schedules" in m.name) - 1


@pytest.mark.postgres
async def test_an_older_postgres_schema_read_only_has_no_schedules(pg_schema):
    import uuid

    from continuum_py._cli_inspect import reader
    from continuum_py._schemes import journal_from_url
    from continuum_py.adapters.postgres import MIGRATIONS

    dsn, schema = pg_schema
    url = f"{dsn}?schema={schema}_{uuid.uuid4().hex[:8]}"
    old = journal_from_url(url)
    old.migrations = [m for m in MIGRATIONS if m.version <= _before_schedules(MIGRATIONS)]
    async with old:
        pass
    async with reader(url) as eng:
        assert await eng.schedules() == []
    async with Engine(url, registry=reg, worker=False) as eng:
        await eng.schedule("s", tick, "x")
        assert [s.name for s in await eng.schedules()] == ["s"]


async def test_a_schedule_whose_run_cannot_start_does_not_hold_up_the_others():
    import msgspec

    t0 = at("2026-01-01T00:00:00+00:00")
    clock = VirtualClock(t0, auto_advance=False)
    async with engine(journal_maker("memory://")(), clock) as eng:
        await eng.schedule("bad", tick, "x", cron="* * * * *", overlap="allow")
        await eng.schedule("good", tick, "y", cron="* * * * *", overlap="allow")
        # As if the workflow's signature changed under a stored schedule: its args no longer fit.
        stored = await eng.journal.get_schedule("bad")
        await eng.journal.put_schedule(msgspec.structs.replace(stored, args=b"[1]"))
        await clock.advance(60)
        await wait_until(lambda: fired(eng, "good", 1))
        assert await run_ids(eng, "good@") == [rid("good", t0 + 60)]
        assert await run_ids(eng, "bad@") == []
