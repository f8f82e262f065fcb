from __future__ import annotations

import asyncio

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


async def empty_tables(dsn: str, schema: str, url: str) -> None:
    """Create the journal's tables in ``schema`` if need be, and empty them."""
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
