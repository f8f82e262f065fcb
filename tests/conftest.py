from __future__ import annotations

import asyncio
import os
import uuid

import pytest
import structlog


@pytest.fixture(autouse=True)
def _quiet_logs():
    # Every test runs with the library's defaults, as a user gets them: structlog
    # unconfigured, so the engine logs through the stdlib `continuum_py` logger
    # (WARNING and above reach pytest's log capture; nothing is printed). A test
    # that captures structured events configures structlog after this fixture.
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def journal_url(request, tmp_path) -> str:
    """One URL per adapter; every test using it runs against each journal.

    Postgres gets a schema of its own per test (under the session's prefix), so
    tests never see each other's runs.
    """
    if request.param == "postgres":
        dsn, schema = request.getfixturevalue("pg_schema")
        return f"{dsn}?schema={schema}_{uuid.uuid4().hex[:8]}"
    return {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/journal.db"}[request.param]


# ---- Postgres: a fresh schema per test session ----
# Tests marked `postgres` use `pg_schema`. Locally they skip without
# CONTINUUM_TEST_PG_DSN; in CI (CI or CONTINUUM_REQUIRE_PG set) a missing or
# unreachable database is a failure, never a skip.


def _pg_required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("CONTINUUM_REQUIRE_PG"))


@pytest.fixture(scope="session")
def pg_schema():
    """(dsn, schema): a schema made for this session and dropped after it."""
    dsn = os.environ.get("CONTINUUM_TEST_PG_DSN")
    if not dsn:
        if _pg_required():
            pytest.fail("CONTINUUM_TEST_PG_DSN is not set, and CI must run the Postgres tests")
        pytest.skip("CONTINUUM_TEST_PG_DSN is not set")
    import asyncpg

    schema = f"continuum_test_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(run(f'CREATE SCHEMA "{schema}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        if _pg_required():
            pytest.fail(f"Postgres at CONTINUUM_TEST_PG_DSN is unreachable: {exc}")
        pytest.skip(f"Postgres unreachable: {exc}")
    yield dsn, schema

    async def drop_all() -> None:
        # The session schema and every per-test schema made under its name.
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            names = await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", schema + "%"
            )
            for row in names:
                await conn.execute(f'DROP SCHEMA "{row[0]}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop_all())


@pytest.fixture
async def pg_test_schema(pg_schema):
    """(dsn, a fresh schema name) for one test, the schema dropped after it."""
    import asyncpg

    dsn, base = pg_schema
    name = f"{base}_t{uuid.uuid4().hex[:8]}"
    yield dsn, name
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()
