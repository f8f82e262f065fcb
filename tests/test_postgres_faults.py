"""Postgres faults as a user meets them through the Engine and `continuum worker`.

Postgres down or a bad URL at start is a clear error, never a traceback; the
engine's backends killed while runs are in flight cost no run and no step
record: the runs are given back, taken again by the same worker, and finished.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import Counter

import asyncpg
import pytest
import structlog
from helpers import wait_until

from continuum_py import Context, Engine, Registry, RetryPolicy, StepInfo, step, workflow
from continuum_py.errors import ConfigurationError, JournalUnavailable
from continuum_py.events import RunCompleted, StepCompleted, StepScheduled

pytestmark = pytest.mark.postgres

DOWN = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1
GARBAGE = [
    "postgresql://postgres@127.0.0.1:notaport/test",
    "postgresql://postgres@127.0.0.1/test?sslmode=sometimes",
    "postgresql://postgres@[::1/test",
]


def host_of(dsn: str) -> str:
    return dsn.split("@", 1)[1].split("/", 1)[0]


def worker_command(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "continuum_py", "worker", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(out: subprocess.CompletedProcess[str], error: str, *words: str) -> None:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"continuum: {error}: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


# ---- down or misconfigured at start ----


async def test_engine_open_with_postgres_down_is_journal_unavailable_naming_host_and_port():
    for worker in (True, False):
        engine = Engine(DOWN, worker=worker)
        with pytest.raises(JournalUnavailable, match=r"Postgres at 127\.0\.0\.1:1\b"):
            await engine.open()


async def test_engine_on_a_missing_database_is_a_configuration_error(pg_schema):
    dsn, _ = pg_schema
    db = f"no_such_db_{uuid.uuid4().hex[:6]}"
    with pytest.raises(ConfigurationError, match=f"no database '{db}'"):
        async with Engine(f"postgresql://postgres@{host_of(dsn)}/{db}"):
            pass


@pytest.mark.parametrize("url", GARBAGE)
async def test_engine_on_a_garbage_url_is_a_configuration_error(url):
    with pytest.raises(ConfigurationError):
        async with Engine(url):
            pass


def test_worker_command_with_postgres_down_says_so_in_one_line():
    assert_one_line_error(worker_command(DOWN), "JournalUnavailable", "127.0.0.1:1")


def test_worker_command_on_a_missing_database_says_so_in_one_line(pg_schema):
    dsn, _ = pg_schema
    db = f"no_such_db_{uuid.uuid4().hex[:6]}"
    out = worker_command(f"postgresql://postgres@{host_of(dsn)}/{db}")
    assert_one_line_error(out, "ConfigurationError", db, host_of(dsn))


@pytest.mark.parametrize("url", GARBAGE)
def test_worker_command_on_a_garbage_url_says_so_in_one_line(url):
    assert_one_line_error(worker_command(url), "ConfigurationError")


# ---- backends killed while runs are in flight ----

reg = Registry()
ONCE = RetryPolicy(max_attempts=1)  # a failing step fails the run; nothing hides a fault
MOD = 1_000_003
STEPS = 6
RUNS = 20
executed: list[tuple[str, int, int]] = []  # (run_id, position, attempt) per step body run


def mix(x: int, k: int) -> int:
    return (x * 31 + k * 7) % MOD


def expected(x: int) -> int:
    a = mix(x, 1)
    d = mix(mix(a, 2) + mix(a, 3), 4)
    return mix(mix(d, 5), 6)


@step(retry=ONCE)
async def hop(x: int, k: int) -> int:
    info = StepInfo.current()
    assert info is not None
    executed.append((info.run_id, info.seq, info.attempt))
    await asyncio.sleep(0.02)
    return mix(x, k)


@workflow(registry=reg)
async def pg_hops(ctx: Context, x: int) -> int:
    a = await hop(x, 1)
    b, c = await asyncio.gather(hop(a, 2), hop(a, 3))
    d = await hop(b + c, 4)
    return await hop(await hop(d, 5), 6)


@pytest.fixture
def logs(_quiet_logs):
    cap = structlog.testing.LogCapture()
    structlog.configure(
        processors=[cap],
        wrapper_class=structlog.make_filtering_bound_logger(30),
        cache_logger_on_first_use=False,
    )
    return cap.entries


@pytest.fixture
async def pg_url(pg_schema):
    """(url of a fresh schema, its dsn); the schema is dropped after the test."""
    dsn, base = pg_schema
    schema = f"{base}_faults_{uuid.uuid4().hex[:6]}"
    sep = "&" if "?" in dsn else "?"
    yield f"{dsn}{sep}schema={schema}", dsn
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def terminate(dsn: str, app: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1 AND pid <> pg_backend_pid()",
            app,
        )
        return len(rows)
    finally:
        await conn.close()


async def test_runs_finish_when_the_engines_backends_are_killed_mid_run(pg_url, logs):
    url, dsn = pg_url
    app = f"ct_faults_{uuid.uuid4().hex[:8]}"
    executed.clear()
    # A lease far longer than the test: the runs must come back through the worker
    # reclaiming its own runs, not by waiting out their leases.
    worker = Engine(
        f"{url}&application_name={app}",
        registry=reg,
        worker_id="faulty",
        lease_ttl=300,
        poll_interval=0.1,
    )
    client = Engine(f"{url}&application_name={app}_client", registry=reg, worker=False)
    kills: list[int] = []
    async with worker, client:
        handles = [await client.start(pg_hops, i, run_id=f"f-{i:02d}") for i in range(RUNS)]
        for target in (RUNS, 2 * RUNS, 3 * RUNS):  # step bodies run so far, of 120+

            async def progressed(target: int = target) -> bool:
                return len(executed) >= target

            await wait_until(progressed, timeout=30)
            kills.append(await terminate(dsn, app))
        results = [await h.result(timeout=60) for h in handles]
        histories = {h.run_id: await client.history(h.run_id) for h in handles}
    events = Counter(e["event"] for e in logs)
    print(f"backends killed per round: {kills}; warnings: {dict(events)}")

    assert all(k >= 1 for k in kills), kills
    # The kills hit runs in flight: drivers saw the journal go away and gave runs back.
    assert events["run.journal_unavailable"] >= 1, events
    assert not events["run.driver_crashed"] and not events["run.parked"], events

    assert results == [expected(i) for i in range(RUNS)]
    ran = Counter(executed)
    assert set(ran.values()) == {1}, "the same attempt of a step ran twice"
    for run_id, history in histories.items():
        assert isinstance(history[-1], RunCompleted), run_id
        done = {e.position: e.attempt for e in history if isinstance(e, StepCompleted)}
        per_position = Counter(e.position for e in history if isinstance(e, StepCompleted))
        assert per_position == dict.fromkeys(range(1, STEPS + 1), 1), (run_id, per_position)
        for p, attempt in done.items():
            tried = [e.attempt for e in history if isinstance(e, StepScheduled) and e.position == p]
            assert tried == list(range(1, attempt + 1)), (run_id, p, tried)
            # The recorded result is from the last body that ran for that position.
            bodies = [a for r, q, a in executed if (r, q) == (run_id, p)]
            assert bodies and bodies[-1] == attempt and set(bodies) <= set(tried), (
                run_id,
                p,
                bodies,
                tried,
            )
