"""Fixtures shared by the process-level crash tests."""

from __future__ import annotations

import asyncio
import uuid

import pytest


@pytest.fixture
def pg_url(pg_schema):
    """The URL of a fresh Postgres schema for one test's worker processes; dropped after it."""
    import asyncpg

    dsn, base = pg_schema
    schema = f"{base}_proc_{uuid.uuid4().hex[:6]}"
    sep = "&" if "?" in dsn else "?"
    yield f"{dsn}{sep}schema={schema}"

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())
