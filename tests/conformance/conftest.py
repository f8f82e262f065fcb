from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from continuum_py._schemes import journal_from_url

# Postgres runs the whole suite in one schema made for the conformance tests of
# this session (beside `pg_schema`'s own, which other tests expect empty);
# every test starts from empty tables.


@pytest.fixture(scope="session")
def pg_conformance(pg_schema):
    """(dsn, schema, url) of the conformance schema; dropped at the end of the session."""
    dsn, base = pg_schema
    schema = f"{base}_conf"
    sep = "&" if "?" in dsn else "?"
    yield dsn, schema, f"{dsn}{sep}schema={schema}&application_name=continuum_conformance"

    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


async def _empty_tables(dsn: str, schema: str, url: str) -> None:
    import asyncpg

    # Connecting a journal creates the schema and tables on first use.
    j = journal_from_url(url)
    await j.connect()
    await j.aclose()
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = $1 AND table_name <> 'continuum_schema_version'",
            schema,
        )
        names = ", ".join(f'"{schema}"."{t[0]}"' for t in tables)
        await conn.execute(f"TRUNCATE {names}")
    finally:
        await conn.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def journal_url(request, tmp_path) -> str:
    """One URL per adapter; every test using it runs against each journal."""
    if request.param == "postgres":
        dsn, schema, url = request.getfixturevalue("pg_conformance")
        # Its own thread and loop: this runs outside the test's event loop.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _empty_tables(dsn, schema, url)).result()
        return url
    return {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/journal.db"}[request.param]


@pytest.fixture
async def journal(journal_url):
    j = journal_from_url(journal_url)
    connect = getattr(j, "connect", None)
    if connect is not None:
        await connect()
    try:
        yield j
    finally:
        await j.aclose()
