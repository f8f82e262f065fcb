"""Bad input gets a clear, typed error naming the problem, and loses or alters nothing recorded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
from typing import Any

import pytest
from helpers import journal_maker, journal_state, wait_until

from continuum_py import (
    ConfigurationError,
    Context,
    EncodingError,
    Engine,
    JournalCorrupt,
    Registry,
    RetryPolicy,
    RunAlreadyExists,
    RunFailed,
    RunNotFound,
    RunStatus,
    SchemaTooNew,
    WorkflowNotRegistered,
    step,
    workflow,
)
from continuum_py.adapters.sqlite import STORAGE_VERSION, SQLiteJournal
from continuum_py.events import (
    SCHEMA_VERSION,
    RunFailedEvent,
    StepCompleted,
    StepFailed,
    StepScheduled,
)

reg = Registry()
ran: list[str] = []
entered: dict[str, asyncio.Event] = {}
gates: dict[str, asyncio.Event] = {}


class Opaque:
    """Something msgspec cannot encode."""


@step
async def double(x: int) -> int:
    ran.append("double")
    return 2 * x


@step(retry=RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=0))
async def gives_opaque(x: int) -> Any:
    ran.append("gives_opaque")
    return Opaque()


@step
async def takes_anything(value: Any) -> int:
    ran.append("takes_anything")
    return 1


@step
async def block(key: str) -> str:
    entered.setdefault(key, asyncio.Event()).set()
    await gates.setdefault(key, asyncio.Event()).wait()
    return key


@workflow(registry=reg)
async def simple(ctx: Context, x: int) -> int:
    return await double(x)


@workflow(registry=reg)
async def bad_result(ctx: Context, x: int) -> int:
    first = await double(x)
    return await gives_opaque(first)


@workflow(registry=reg)
async def bad_argument(ctx: Context, x: int) -> int:
    await double(x)
    return await takes_anything(Opaque())


@workflow(registry=Registry())
async def other(ctx: Context, x: int) -> int:
    return x + 1


@workflow(registry=reg)
async def two_then_block(ctx: Context, key: str) -> str:
    await double(1)
    await double(2)
    return await block(key)


@pytest.fixture(autouse=True)
def _reset():
    ran.clear()
    entered.clear()
    gates.clear()


@pytest.fixture
async def engine(journal_url):
    async with Engine(journal_url, registry=reg, worker_id="w1", poll_interval=0.05) as e:
        # Something already recorded, that no bad input may touch.
        assert await (await e.start(simple, 20, run_id="kept")).result(timeout=10) == 40
        ran.clear()
        yield e


# ---- starting runs ----


async def test_unregistered_workflow_name(engine):
    before = await journal_state(engine)
    with pytest.raises(WorkflowNotRegistered) as ei:
        await engine.start("nope")
    assert ei.value.name == "nope"
    assert "'nope' is not registered" in str(ei.value)
    assert await journal_state(engine) == before


async def test_unencodable_workflow_argument_records_nothing(engine):
    before = await journal_state(engine)
    with pytest.raises(EncodingError) as ei:
        await engine.start(simple, Opaque(), run_id="never")
    assert ei.value.step == "simple"
    assert "Opaque" in ei.value.type_name
    assert "simple" in str(ei.value) and "Opaque" in str(ei.value)
    assert await journal_state(engine) == before
    with pytest.raises(RunNotFound):
        await engine.get("never")


async def test_encoding_error_names_its_owner_whatever_its_kind(engine):
    # .step held workflow names and value descriptions too; .owner says so.
    with pytest.raises(EncodingError) as ei:
        await engine.start(simple, Opaque(), run_id="never")
    assert (ei.value.owner, ei.value.owner_kind, ei.value.step) == ("simple", "workflow", "simple")
    h = await engine.start(simple, 1, run_id="signalled")
    await h.result(timeout=10)
    before = await journal_state(engine)
    with pytest.raises(EncodingError) as ei:
        await engine.signal("signalled", "go", Opaque())
    assert (ei.value.owner, ei.value.owner_kind) == ("signal 'go'", "value")
    assert ei.value.step == ei.value.owner
    assert await journal_state(engine) == before


async def test_argument_of_the_wrong_type_records_nothing(engine):
    before = await journal_state(engine)
    with pytest.raises(EncodingError, match="do not fit the signature"):
        await engine.start(simple, "not an int", run_id="never")
    assert await journal_state(engine) == before


@pytest.mark.parametrize("args", [(), (1, 2)], ids=["missing", "extra"])
async def test_arguments_that_do_not_fit_the_signature_record_nothing(engine, args):
    before = await journal_state(engine)
    with pytest.raises(TypeError, match="simple"):
        await engine.start(simple, *args, run_id="never")
    assert await journal_state(engine) == before
    with pytest.raises(RunNotFound):
        await engine.get("never")


async def test_get_of_a_missing_run(engine):
    with pytest.raises(RunNotFound) as ei:
        await engine.get("missing")
    assert ei.value.run_id == "missing"
    assert "missing" in str(ei.value)


async def test_reusing_a_run_id_for_another_workflow(engine):
    before = await journal_state(engine)
    with pytest.raises(RunAlreadyExists) as ei:
        await engine.start(bad_result, 1, run_id="kept")
    assert (ei.value.run_id, ei.value.workflow, ei.value.requested) == (
        "kept",
        "simple",
        "bad_result",
    )
    assert await journal_state(engine) == before


# ---- values recorded while running ----


async def test_unencodable_step_result_fails_the_step_at_record_time(engine):
    before = await journal_state(engine)
    h = await engine.start(bad_result, 3, run_id="bad-result")
    with pytest.raises(RunFailed) as ei:
        await h.result(timeout=10)
    assert ei.value.error_type == "continuum_py.errors.EncodingError"
    assert "gives_opaque" in ei.value.message and "Opaque" in ei.value.message
    # Not retried: encoding the same value again cannot succeed.
    assert ran == ["double", "gives_opaque"]
    hist = await engine.history("bad-result")
    assert [type(e).__name__ for e in hist] == [
        "RunStarted",
        "StepScheduled",
        "StepCompleted",
        "StepScheduled",
        "StepFailed",
        "RunFailed",
    ]
    assert isinstance(hist[2], StepCompleted) and bytes(hist[2].result) == b"6"
    failed = hist[4]
    assert isinstance(failed, StepFailed) and failed.final and failed.step == "gives_opaque"
    assert failed.error.type == "continuum_py.errors.EncodingError"
    after = await journal_state(engine)
    assert after["kept"] == before["kept"]


async def test_unencodable_step_argument_fails_the_step_before_it_runs(engine):
    h = await engine.start(bad_argument, 3, run_id="bad-arg")
    with pytest.raises(RunFailed) as ei:
        await h.result(timeout=10)
    assert ei.value.error_type == "continuum_py.errors.EncodingError"
    assert "takes_anything" in ei.value.message and "Opaque" in ei.value.message
    assert ran == ["double"]  # the step body never ran
    hist = await engine.history("bad-arg")
    assert isinstance(hist[2], StepCompleted) and bytes(hist[2].result) == b"6"
    assert isinstance(hist[3], StepScheduled) and hist[3].step == "takes_anything"
    assert isinstance(hist[4], StepFailed) and hist[4].final
    assert isinstance(hist[-1], RunFailedEvent)


# ---- a journal this process cannot read ----


async def test_run_of_an_unknown_workflow_is_parked_then_resumed_once_registered(journal_url):
    make = journal_maker(journal_url)
    writer = Registry()
    async with Engine(journal=make(), registry=writer, worker=False) as e:
        await e.start(simple, 5, run_id="orphan")
    empty = Registry()
    async with Engine(journal=make(), registry=empty, worker_id="w2", poll_interval=0.05) as e:
        h = await e.get("orphan")
        rec = await wait_until(lambda: _parked(h))
        assert "WorkflowNotRegistered" in rec.reason and "'simple'" in rec.reason
        assert rec.lease_owner is None
        hist = await e.history("orphan")
        assert [type(x).__name__ for x in hist] == ["RunStarted"]
        assert ran == []
        # The worker is still alive: other runs go on.
        assert await (await e.start(other, 2)).result(timeout=10) == 3
        assert (await h.record()).status == RunStatus.PARKED

        empty.add(simple)
        await e.resume("orphan")
        assert await h.result(timeout=10) == 10
        assert (await e.history("orphan"))[0] == hist[0]


async def _parked(h):
    rec = await h.record()
    return rec if rec.status == RunStatus.PARKED else None


async def _stop_mid_run(url: str, run_id: str) -> None:
    """Leave ``run_id`` recorded up to a step in flight, as a crashed worker would."""
    async with Engine(url, registry=reg, worker_id="w1") as e:
        await e.start(two_then_block, run_id, run_id=run_id)
        await asyncio.wait_for(entered.setdefault(run_id, asyncio.Event()).wait(), 10)
        await e.start(simple, 1, run_id="bystander-before")
        await (await e.get("bystander-before")).result(timeout=10)


def _rows(path: str, run_id: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(
            "SELECT seq, kind, schema, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()


def _sql(path: str, sql: str, *params: object) -> None:
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute(sql, params)
    finally:
        db.close()


async def test_corrupt_event_parks_the_run_and_leaves_others_alone(tmp_path):
    path = str(tmp_path / "j.db")
    url = f"sqlite:///{path}"
    await _stop_mid_run(url, "victim")
    _sql(
        path,
        "UPDATE events SET data = ? WHERE run_id = ? AND seq = 3",
        b'{"kind": garbage',
        "victim",
    )
    rows = _rows(path, "victim")
    entered.clear()
    async with Engine(url, registry=reg, worker_id="w1", poll_interval=0.05) as e:
        h = await e.get("victim")
        rec = await wait_until(lambda: _parked(h))
        assert rec.reason.startswith("JournalCorrupt") and "seq 3" in rec.reason
        with pytest.raises(JournalCorrupt) as ei:
            await e.history("victim")
        assert (ei.value.run_id, ei.value.seq) == ("victim", 3)
        assert "victim" in str(ei.value) and "seq 3" in str(ei.value)
        # Other runs are unaffected, old and new.
        assert await (await e.get("bystander-before")).result(timeout=1) == 2
        assert await (await e.start(simple, 4)).result(timeout=10) == 8
        assert "victim" not in entered  # its step in flight did not run again
    assert _rows(path, "victim") == rows


async def test_event_from_a_newer_schema_parks_the_run_not_fails_it(tmp_path):
    path = str(tmp_path / "j.db")
    url = f"sqlite:///{path}"
    await _stop_mid_run(url, "future")
    _sql(path, "UPDATE events SET schema = 99 WHERE run_id = ? AND seq = 2", "future")
    rows = _rows(path, "future")
    async with Engine(url, registry=reg, worker_id="w1", poll_interval=0.05) as e:
        h = await e.get("future")
        rec = await wait_until(lambda: _parked(h))
        assert rec.status == RunStatus.PARKED and rec.reason.startswith("SchemaTooNew")
        with pytest.raises(SchemaTooNew) as ei:
            await e.history("future")
        assert (ei.value.found, ei.value.supported) == (99, SCHEMA_VERSION)
        assert ei.value.run_id == "future" and ei.value.seq == 2
        assert "upgrade continuum-py" in str(ei.value)
    assert _rows(path, "future") == rows


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


async def test_sqlite_file_from_a_newer_storage_version_is_refused_untouched(tmp_path):
    path = str(tmp_path / "future.db")
    _sql(path, "CREATE TABLE runs (run_id TEXT)")
    _sql(path, f"PRAGMA user_version = {STORAGE_VERSION + 1}")
    digest = _digest(path)
    with pytest.raises(SchemaTooNew) as ei:
        async with Engine(f"sqlite:///{path}", registry=reg):
            pass
    assert (ei.value.found, ei.value.supported) == (STORAGE_VERSION + 1, STORAGE_VERSION)
    assert _digest(path) == digest
    assert sorted(os.listdir(tmp_path)) == ["future.db"]


async def test_file_that_is_not_sqlite_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    digest = _digest(str(path))
    with pytest.raises(JournalCorrupt, match="not a usable SQLite database"):
        async with SQLiteJournal(str(path)):
            pass
    assert _digest(str(path)) == digest


# ---- configuration ----


def test_unknown_url_scheme():
    with pytest.raises(ConfigurationError) as ei:
        Engine("sqlit:///x.db")
    msg = str(ei.value)
    assert "'sqlit'" in msg
    assert all(s in msg for s in ("memory", "sqlite", "postgresql"))


def test_url_without_scheme():
    with pytest.raises(ConfigurationError, match="no scheme"):
        Engine("runs.db")


async def test_sqlite_path_in_a_missing_folder(tmp_path):
    missing = tmp_path / "no" / "such"
    engine = Engine(f"sqlite:///{missing}/runs.db", registry=reg)
    with pytest.raises(ConfigurationError) as ei:
        await engine.open()
    assert str(missing) in str(ei.value)
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    "kwargs",
    [{"lease_ttl": 0}, {"concurrency": 0}, {"snapshot_every": -1}],
    ids=lambda kw: next(iter(kw)),
)
def test_engine_arguments_are_checked(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ConfigurationError, match=name):
        Engine("memory://", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"initial_interval": -1}, "initial_interval"),
        ({"max_interval": -1}, "max_interval"),
        ({"backoff": 0.5}, "backoff"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_retry_policy_arguments_are_checked(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        RetryPolicy(**kwargs)


def test_step_timeout_must_be_positive():
    async def f() -> None:
        pass

    with pytest.raises(ConfigurationError, match="timeout"):
        step(timeout=0)(f)


async def test_closed_engine_says_how_to_open_it():
    engine = Engine("memory://", registry=reg)
    with pytest.raises(ConfigurationError, match="async with"):
        await engine.start(simple, 1)
