"""Journal URL options and read-only opens: what each scheme accepts, and what it refuses.

A SQLite URL takes ``?mode=rwc|rw|ro`` and nothing else; ``memory://`` takes no
option; a Postgres URL takes the journal's own options and what asyncpg and the
server understand, and the server's refusal of anything else names the option.
A read-only open (``mode=ro``, ``journal_from_url(read_only=True)``) never creates
a journal and refuses every write with ``ConfigurationError``.
"""

from __future__ import annotations

import uuid

import pytest
from helpers import new_run

from continuum_py import ConfigurationError, Engine
from continuum_py._schemes import journal_from_url, redact_url
from continuum_py.adapters.sqlite import SQLiteJournal

# ---- URL forms and options ----


@pytest.mark.parametrize("url", ["sqlite:/x.db", "sqlite:x.db", "SQLite:/x.db"])
def test_sqlite_url_without_the_slashes_says_what_form_is_expected(url):
    with pytest.raises(ConfigurationError) as ei:
        journal_from_url(url)
    msg = str(ei.value)
    assert "no scheme" not in msg
    assert "sqlite:///relative.db or sqlite:////abs/path.db" in msg


def test_memory_url_without_the_slashes_says_what_form_is_expected():
    with pytest.raises(ConfigurationError, match="'memory:' is missing the // after memory:"):
        journal_from_url("memory:")


@pytest.mark.parametrize(
    ("query", "mode"), [("", "rwc"), ("?mode=rwc", "rwc"), ("?mode=rw", "rw"), ("?mode=ro", "ro")]
)
def test_sqlite_mode_option(tmp_path, query, mode):
    journal = journal_from_url(f"sqlite:///{tmp_path}/j.db{query}")
    assert (journal.mode, journal.read_only) == (mode, mode == "ro")
    assert journal.path == f"{tmp_path}/j.db"


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("?schema=app", "SQLite URL option 'schema' is not supported; supported: mode="),
        ("?mode=ro&cache=shared", "option 'cache' is not supported"),
        ("?mode=readonly", "mode='readonly' is not supported; supported: mode=rwc"),
        ("?mode=", "mode='' is not supported"),
        ("?mode=ro&mode=rw", "'mode' is given twice"),
    ],
)
def test_sqlite_url_refuses_unknown_options_and_values(tmp_path, query, match):
    with pytest.raises(ConfigurationError, match=match):
        journal_from_url(f"sqlite:///{tmp_path}/j.db{query}")
    with pytest.raises(ConfigurationError, match=match):
        journal_from_url(f"sqlite:///{tmp_path}/j.db{query}", read_only=True)
    assert not (tmp_path / "j.db").exists()


def test_memory_url_refuses_options():
    with pytest.raises(ConfigurationError, match="memory:// URL option 'mode' is not supported"):
        journal_from_url("memory://?mode=ro")


def test_memory_journal_has_nothing_to_read():
    with pytest.raises(ConfigurationError, match="nothing to read"):
        journal_from_url("memory://", read_only=True)


def test_memory_sqlite_cannot_be_read_only():
    with pytest.raises(ConfigurationError, match="mode=ro"):
        SQLiteJournal(":memory:", mode="ro")
    with pytest.raises(ConfigurationError, match="'append' is not one of rwc, rw, ro"):
        SQLiteJournal("x.db", mode="append")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db/app?schema=x", "postgresql://app:***@db/app?schema=x"),
        ("postgresql://app@db/app?password=s3cret", "postgresql://app@db/app?password=***"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("sqlite:///runs.db?mode=ro", "sqlite:///runs.db?mode=ro"),
    ],
)
def test_redact_url_masks_passwords(url, shown):
    assert redact_url(url) == shown


# ---- read-only SQLite journals ----


async def _journal_with_a_run(path) -> None:
    async with SQLiteJournal(str(path)) as journal:
        await journal.start_run(new_run("r1"))


async def test_sqlite_read_only_reads_and_refuses_writes(tmp_path):
    path = tmp_path / "j.db"
    await _journal_with_a_run(path)
    before = path.read_bytes()
    async with journal_from_url(f"sqlite:///{path}?mode=ro") as journal:
        assert [r.run_id for r in await journal.list_runs()] == ["r1"]
        assert len(await journal.load("r1")) == 1
        with pytest.raises(ConfigurationError, match="is open read-only"):
            await journal.start_run(new_run("r2"))
        with pytest.raises(ConfigurationError, match="is open read-only"):
            await journal.claim("w", ttl=30.0, limit=10)
        with pytest.raises(ConfigurationError, match="is open read-only"):
            async with journal.transaction():
                pass
    assert path.read_bytes() == before
    async with SQLiteJournal(str(path)) as journal:
        assert [r.run_id for r in await journal.list_runs()] == ["r1"]


async def test_engine_on_a_read_only_journal_is_a_client_only(tmp_path):
    path = tmp_path / "j.db"
    await _journal_with_a_run(path)
    with pytest.raises(ConfigurationError, match="worker=False"):
        async with Engine(f"sqlite:///{path}?mode=ro"):
            pass
    async with Engine(f"sqlite:///{path}?mode=ro", worker=False) as engine:
        assert [r.run_id for r in await engine.list_runs()] == ["r1"]
        with pytest.raises(ConfigurationError, match="read-only"):
            await engine.start("wf", run_id="r2")


@pytest.mark.parametrize("mode", ["ro", "rw"])
async def test_sqlite_open_of_a_missing_file_names_it_and_creates_nothing(tmp_path, mode):
    with pytest.raises(ConfigurationError) as ei:
        async with journal_from_url(f"sqlite:///{tmp_path}/typo.db?mode={mode}"):
            pass
    assert f"'{tmp_path}/typo.db' does not exist" in str(ei.value)
    assert list(tmp_path.iterdir()) == []


async def test_sqlite_read_only_open_of_a_file_without_tables(tmp_path):
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(ConfigurationError, match="holds no continuum journal"):
        async with journal_from_url(f"sqlite:///{tmp_path}/empty.db", read_only=True):
            pass
    assert (tmp_path / "empty.db").read_bytes() == b""


async def test_sqlite_rw_opens_an_existing_file_for_writing(tmp_path):
    path = tmp_path / "j.db"
    await _journal_with_a_run(path)
    async with journal_from_url(f"sqlite:///{path}?mode=rw") as journal:
        await journal.start_run(new_run("r2"))
        assert [r.run_id for r in await journal.list_runs()] == ["r1", "r2"]


# ---- Postgres ----


@pytest.mark.postgres
async def test_postgres_read_only_open_of_a_missing_schema_creates_nothing(pg_schema):
    import asyncpg

    dsn, schema = pg_schema
    name = f"{schema}_ro_{uuid.uuid4().hex[:6]}"
    with pytest.raises(ConfigurationError) as ei:
        async with journal_from_url(f"{dsn}?schema={name}", read_only=True):
            pass
    assert f"no continuum journal in schema {name!r}" in str(ei.value)
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", name) is None
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_postgres_read_only_reads_and_refuses_writes(pg_schema):
    dsn, schema = pg_schema
    url = f"{dsn}?schema={schema}_ro_{uuid.uuid4().hex[:6]}"
    async with journal_from_url(url) as journal:
        await journal.start_run(new_run("r1"))
    async with journal_from_url(url, read_only=True) as journal:
        assert [r.run_id for r in await journal.list_runs()] == ["r1"]
        with pytest.raises(ConfigurationError, match="is open read-only"):
            await journal.start_run(new_run("r2"))
        with pytest.raises(ConfigurationError, match="is open read-only"):
            await journal.claim("w", ttl=30.0, limit=10)
    async with journal_from_url(url) as journal:
        assert [r.run_id for r in await journal.list_runs()] == ["r1"]


@pytest.mark.postgres
async def test_postgres_unknown_url_option_is_refused_by_name(pg_schema):
    dsn, schema = pg_schema
    journal = journal_from_url(f"{dsn}?schema={schema}&mode=ro")
    with pytest.raises(ConfigurationError) as ei:
        await journal.connect()
    msg = str(ei.value)
    assert '"mode"' in msg and "schema, statement_cache_size" in msg
