"""The Postgres test set-up itself: each session gets its own, empty schema."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.postgres


async def test_session_schema_is_fresh_and_isolated(pg_schema):
    import asyncpg

    dsn, schema = pg_schema
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        assert tables == []
        # A name of this session's own: other test sessions may run on the same database.
        probe = f"probe_{schema}"
        await conn.execute(f'CREATE TABLE "{schema}"."{probe}" (x int)')
        found = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = $2 "
            "AND table_schema <> $1",
            schema,
            probe,
        )
        assert found == 0
    finally:
        await conn.close()
