"""Transactional steps: a step's own SQL commits with its completion, so it happens once.

The proof kills the worker process (SIGKILL, from inside the step, after its SQL
ran and before the completion committed): the restarted worker runs the step
again, and the table still holds exactly one row for it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from continuum_py import (
        Context, Engine, RetryPolicy, StepInfo, step, step_connection, workflow,
    )

    URL, MODE, PG_SCHEMA = sys.argv[1], sys.argv[2], sys.argv[3]
    TABLE = f'"{PG_SCHEMA}".ledger' if PG_SCHEMA != "-" else "ledger"
    PARAM = "$1" if URL.startswith("postgres") else "?"

    @step(transactional=True, retry=RetryPolicy(max_attempts=1))
    async def book(amount: int) -> int:
        info = StepInfo.current()
        conn = step_connection()
        sql = f"INSERT INTO {TABLE} (entry) VALUES ({PARAM})"
        if URL.startswith("postgres"):
            await conn.execute(sql, f"{info.seq}:{amount}")  # asyncpg: positional args
        else:
            await conn.execute(sql, (f"{info.seq}:{amount}",))
        if MODE == "crash" and info.attempt == 1 and info.seq == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # after the INSERT, before the commit
        if amount < 0:
            raise ValueError("negative amount")
        return amount

    @workflow
    async def ledger_flow(ctx: Context) -> list[int]:
        out = [await book(10), await book(20), await book(30)]
        try:
            await book(-1)
        except Exception:
            out.append(-1)
        return out

    async def main():
        async with Engine(URL, worker_id="tx-worker") as engine:
            h = await engine.start(ledger_flow, run_id="tx")
            print(await h.result(timeout=60))

    asyncio.run(main())
    """
)


def _run(tmp_path, url: str, mode: str, schema: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "txflow.py").write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, "txflow.py", url, mode, schema],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _sqlite_rows(path) -> list[str]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return sorted(r[0] for r in conn.execute("SELECT entry FROM ledger"))


def test_sqlite_transactional_step_writes_exactly_once_across_a_kill(tmp_path):
    import sqlite3

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE ledger (entry TEXT)")
    url = f"sqlite:///{db}"
    first = _run(tmp_path, url, "crash", "-")
    assert first.returncode == -9, first.stderr
    # The killed attempt's INSERT rolled back with its missing completion.
    assert _sqlite_rows(db) == ["1:10"]
    second = _run(tmp_path, url, "crash", "-")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().splitlines()[-1] == "[10, 20, 30, -1]"
    # One row per completed step; the failed step's row rolled back with its failure.
    assert _sqlite_rows(db) == ["1:10", "2:20", "3:30"]


@pytest.mark.postgres
def test_postgres_transactional_step_writes_exactly_once_across_a_kill(tmp_path, pg_schema):
    import asyncio

    import asyncpg

    dsn, schema = pg_schema
    app_schema = f"{schema}_app"

    async def sql(query: str) -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            if query.startswith("SELECT"):
                return sorted(r[0] for r in await conn.fetch(query))
            await conn.execute(query)
            return []
        finally:
            await conn.close()

    asyncio.run(sql(f'CREATE SCHEMA "{app_schema}"'))
    try:
        asyncio.run(sql(f'CREATE TABLE "{app_schema}".ledger (entry TEXT)'))
        url = f"{dsn}?schema={schema}_tx"
        first = _run(tmp_path, url, "crash", app_schema)
        assert first.returncode == -9, first.stderr
        assert asyncio.run(sql(f'SELECT entry FROM "{app_schema}".ledger')) == ["1:10"]
        second = _run(tmp_path, url, "crash", app_schema)
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip().splitlines()[-1] == "[10, 20, 30, -1]"
        rows = asyncio.run(sql(f'SELECT entry FROM "{app_schema}".ledger'))
        assert rows == ["1:10", "2:20", "3:30"]
    finally:
        asyncio.run(sql(f'DROP SCHEMA IF EXISTS "{app_schema}" CASCADE'))
        asyncio.run(sql(f'DROP SCHEMA IF EXISTS "{schema}_tx" CASCADE'))


def test_step_connection_outside_a_transactional_step_is_a_clear_error():
    from continuum_py import ConfigurationError, step_connection

    with pytest.raises(ConfigurationError, match="transactional"):
        step_connection()


@pytest.mark.postgres
async def test_postgres_session_state_set_by_a_step_does_not_leak_into_the_journal(pg_schema):
    # With one pooled connection, the journal reuses the very connection the step
    # had: a session setting left on it would make every later journal write fail.
    from continuum_py import Context, Engine, Registry, step, step_connection, workflow

    dsn, schema = pg_schema
    reg = Registry()

    @step(transactional=True)
    async def sets_session_state() -> int:
        await step_connection().execute("SET default_transaction_read_only = on")
        return 1

    @step
    async def plain(x: int) -> int:
        return x + 1

    @workflow(registry=reg)
    async def flow(ctx: Context) -> int:
        x = await sets_session_state()
        for _ in range(3):
            x = await plain(x)
        return x

    url = f"{dsn}?schema={schema}_leak&pool_size=1"
    async with Engine(url, registry=reg, worker_id="w") as eng:
        h = await eng.start(flow)
        assert await h.result(timeout=20) == 4
