"""A transactional step may not control its transaction; on memory:// it cannot run at all.

The engine's transaction commits the step's SQL together with the record of its
completion. A ``COMMIT`` run through ``step_connection()`` used to make the
step's row durable on its own, so the row stayed although the step failed.
Now such statements are refused before they reach the database: the step fails
at once (not retried) with ``ConfigurationError``, and its writes roll back.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from continuum_py import (
    ConfigurationError,
    Context,
    Engine,
    Registry,
    RetryPolicy,
    RunFailed,
    StepError,
    step,
    step_connection,
    workflow,
)
from continuum_py.adapters._tx_guard import control_statement
from continuum_py.events import StepFailed

# ---- which statements are transaction control ----

REFUSED = {
    "COMMIT": "COMMIT",
    "commit": "COMMIT",
    "  \n\tCommit;": "COMMIT",
    "COMMIT WORK": "COMMIT WORK",
    "-- the end\nEND": "END",
    "/* outer /* nested */ */ end transaction": "END TRANSACTION",
    "ROLLBACK": "ROLLBACK",
    "rollback to savepoint s1": "ROLLBACK TO",
    "BEGIN": "BEGIN",
    "begin immediate": "BEGIN IMMEDIATE",
    "START TRANSACTION": "START TRANSACTION",
    "ABORT": "ABORT",
    "SAVEPOINT s1": "SAVEPOINT",
    "RELEASE SAVEPOINT s1": "RELEASE SAVEPOINT",
    "release s1": "RELEASE",
    "PREPARE TRANSACTION 'tx1'": "PREPARE TRANSACTION",
    "INSERT INTO t VALUES (1); COMMIT": "COMMIT",
    "SELECT 1;commit;BEGIN": "COMMIT",
    "UPDATE t SET a = 'x;'; /* ; */ -- ;\n ROLLBACK": "ROLLBACK",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE u SET a = 1; END; COMMIT": "COMMIT",
}

ALLOWED = [
    "INSERT INTO t VALUES ('COMMIT')",
    "INSERT INTO t VALUES ('it''s; COMMIT')",
    "INSERT INTO t VALUES (E'it\\'s; COMMIT')",
    'SELECT "commit", "end" FROM t',
    "SELECT [commit] FROM t",
    "SELECT 1 -- COMMIT",
    "SELECT 1 /* ; COMMIT */",
    "SELECT $1::text",
    "UPDATE t SET x = 1 WHERE y = $tag$ ; commit $tag$",
    "CREATE FUNCTION f() RETURNS void AS $$ BEGIN COMMIT; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN "
    "UPDATE u SET a = CASE WHEN new.x > 1 THEN 2 ELSE 3 END; INSERT INTO v VALUES (1); END",
    "CREATE FUNCTION f() RETURNS int LANGUAGE SQL BEGIN ATOMIC SELECT 1; SELECT 2; END",
    "PREPARE p AS SELECT 1",
    "WITH begin_at AS (SELECT 1) SELECT * FROM begin_at",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "START_TIME",
    "",
    ";;",
]


@pytest.mark.parametrize(("sql", "found"), REFUSED.items(), ids=list(REFUSED))
def test_transaction_control_is_recognised(sql, found):
    assert control_statement(sql) == found


@pytest.mark.parametrize("sql", ALLOWED)
def test_other_sql_is_not_mistaken_for_transaction_control(sql):
    assert control_statement(sql) is None


# ---- on a real journal ----

reg = Registry()
ran: list[str] = []
TABLE = {"name": "ledger"}
STATEMENT = {"sql": "COMMIT"}


def _pg(url: str) -> bool:
    return url.startswith("postgres")


@step(transactional=True)
async def make_table() -> None:
    await step_connection().execute(f"CREATE TABLE {TABLE['name']} (entry TEXT)")


@step(transactional=True)
async def count_rows() -> int:
    return int(await step_connection().fetchval(f"SELECT count(*) FROM {TABLE['name']}"))


@step(transactional=True)
async def book_then_control(mode: str) -> str:
    ran.append("book")
    conn = step_connection()
    await conn.execute(f"INSERT INTO {TABLE['name']} (entry) VALUES ('booked')")
    try:
        await conn.execute(STATEMENT["sql"])
    except ConfigurationError:
        if mode == "raise":
            raise
    if mode == "then-fail":
        # The case: the step fails after its COMMIT ran.
        raise ValueError("payment declined")
    return "booked"


@step(transactional=True)
async def book_text_that_looks_like_control() -> str:
    conn = step_connection()
    await conn.execute(f"INSERT INTO {TABLE['name']} (entry) VALUES ('COMMIT; -- not a statement')")
    return "ok"


@workflow(registry=reg)
async def setup(ctx: Context) -> None:
    await make_table()


@workflow(registry=reg)
async def rows(ctx: Context) -> int:
    return await count_rows()


@workflow(registry=reg)
async def controls(ctx: Context, mode: str) -> str:
    return await book_then_control(mode)


@workflow(registry=reg)
async def looks_like_control(ctx: Context) -> str:
    return await book_text_that_looks_like_control()


@workflow(registry=reg)
async def handles(ctx: Context) -> str:
    try:
        return await book_then_control("raise")
    except StepError as exc:
        return exc.error_type


@pytest.fixture
async def sql_engine(journal_url):
    if journal_url == "memory://":
        pytest.skip("the memory journal has no SQL connection (see the memory test below)")
    if _pg(journal_url):
        schema = parse_qs(urlsplit(journal_url).query)["schema"][0]
        TABLE["name"] = f'"{schema}".ledger_{uuid.uuid4().hex[:8]}'
    else:
        TABLE["name"] = f"ledger_{uuid.uuid4().hex[:8]}"
    ran.clear()
    async with Engine(journal_url, registry=reg, worker_id="w", poll_interval=0.05) as e:
        await (await e.start(setup)).result(timeout=20)
        yield e


async def _rows(engine) -> int:
    return await (await engine.start(rows)).result(timeout=20)


CONTROL_SQL = [
    "COMMIT",
    "  commit;",
    "/* done */ END",
    "-- undo\nROLLBACK",
    "SAVEPOINT s1",
    "BEGIN",
]


@pytest.mark.parametrize("sql", CONTROL_SQL)
@pytest.mark.parametrize("mode", ["raise", "catch", "then-fail"])
async def test_a_refused_statement_fails_the_step_and_rolls_back_its_row(sql_engine, sql, mode):
    STATEMENT["sql"] = sql
    h = await sql_engine.start(controls, mode)
    with pytest.raises(RunFailed) as ei:
        await h.result(timeout=20)
    # Atomic: the step failed, so its INSERT did not commit (a COMMIT used to keep it).
    assert await _rows(sql_engine) == 0
    assert "ConfigurationError" in ei.value.message
    assert "is not allowed in a transactional step" in ei.value.message
    # At once, not retried (the default policy allows 3 attempts), even when caught.
    assert ran == ["book"]
    failed = [e for e in await sql_engine.history(h.run_id) if isinstance(e, StepFailed)]
    assert len(failed) == 1 and failed[0].final and failed[0].attempt == 1
    assert failed[0].error.type == "continuum_py.errors.ConfigurationError"


async def test_a_commit_hidden_in_a_multi_statement_string_is_refused(sql_engine, journal_url):
    if not _pg(journal_url):
        pytest.skip("sqlite3 runs one statement per call; a second one is its own error")
    STATEMENT["sql"] = f"INSERT INTO {TABLE['name']} (entry) VALUES ('again'); COMMIT"
    h = await sql_engine.start(controls, "raise")
    with pytest.raises(RunFailed, match="'COMMIT' is not allowed"):
        await h.result(timeout=20)
    assert await _rows(sql_engine) == 0


async def test_sql_that_only_mentions_commit_runs(sql_engine):
    h = await sql_engine.start(looks_like_control)
    assert await h.result(timeout=20) == "ok"
    assert await _rows(sql_engine) == 1


async def test_the_workflow_sees_a_step_error_it_can_handle(sql_engine):
    STATEMENT["sql"] = "ROLLBACK"
    h = await sql_engine.start(handles)
    assert await h.result(timeout=20) == "continuum_py.errors.ConfigurationError"
    assert await _rows(sql_engine) == 0


async def test_sqlite_an_error_that_rolls_the_transaction_back_fails_the_step(tmp_path):
    # INSERT OR ROLLBACK ends SQLite's transaction on a conflict: a step that caught
    # the error and returned used to be recorded as done with its earlier row gone.
    r = Registry()

    @step(transactional=True, retry=RetryPolicy(max_attempts=1))
    async def conflicting() -> str:
        conn = step_connection()
        await conn.execute("INSERT INTO kv VALUES ('a', 1)")
        with contextlib.suppress(sqlite3.IntegrityError):
            await conn.execute("INSERT OR ROLLBACK INTO kv VALUES ('seed', 2)")
        return "done"

    @workflow(registry=r)
    async def flow(ctx: Context) -> str:
        return await conflicting()

    db = tmp_path / "j.db"
    async with Engine(f"sqlite:///{db}", registry=r, worker_id="w") as e:
        with contextlib.closing(sqlite3.connect(db)) as raw, raw:
            raw.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v INT)")
            raw.execute("INSERT INTO kv VALUES ('seed', 0)")
        h = await e.start(flow)
        with pytest.raises(RunFailed, match="ended the engine's transaction"):
            await h.result(timeout=20)
    with contextlib.closing(sqlite3.connect(db)) as raw:
        assert raw.execute("SELECT k FROM kv").fetchall() == [("seed",)]


@pytest.mark.postgres
async def test_postgres_a_nested_asyncpg_transaction_still_works(pg_schema):
    # asyncpg's own nesting (a savepoint it opens and closes) is the way to undo part of a step.
    dsn, schema = pg_schema
    r = Registry()
    table = f'"{schema}_nest".kv'

    @step(transactional=True)
    async def partial() -> int:
        conn = step_connection()
        await conn.execute(f"CREATE TABLE {table} (k TEXT)")
        await conn.execute(f"INSERT INTO {table} VALUES ('kept')")
        try:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES ('undone')")
                raise ValueError("undo this part")
        except ValueError:
            pass
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))

    @workflow(registry=r)
    async def flow(ctx: Context) -> int:
        return await partial()

    async with Engine(f"{dsn}?schema={schema}_nest", registry=r, worker_id="w") as e:
        assert await (await e.start(flow)).result(timeout=20) == 1


async def test_memory_journal_refuses_a_transactional_step_at_once():
    r = Registry()
    calls: list[int] = []

    @step(transactional=True)
    async def book() -> int:
        calls.append(1)
        return 1

    @workflow(registry=r)
    async def flow(ctx: Context) -> int:
        return await book()

    async with Engine("memory://", registry=r, worker_id="w") as e:
        h = await e.start(flow)
        with pytest.raises(RunFailed) as ei:
            await h.result(timeout=10)
        assert "ConfigurationError" in ei.value.message
        assert "SQLite or Postgres" in ei.value.message
        # The body never ran, and the step was not retried.
        assert calls == []
        failed = [ev for ev in await e.history(h.run_id) if isinstance(ev, StepFailed)]
        assert len(failed) == 1 and failed[0].final and failed[0].attempt == 1
