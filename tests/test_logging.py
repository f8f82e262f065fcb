"""The run and step lifecycle is logged through structlog, bound to run_id; replay stays quiet."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from helpers import journal_maker, wait_until

from continuum_py import Context, Engine, Registry, RetryPolicy, RunFailed, step, workflow

reg = Registry()
entered: dict[str, asyncio.Event] = {}
gates: dict[str, asyncio.Event] = {}


class Declined(Exception):
    pass


@step
async def add(a: int, b: int) -> int:
    return a + b


@step(retry=RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=0))
async def declines() -> int:
    raise Declined("no")


@step
async def block(key: str) -> str:
    entered.setdefault(key, asyncio.Event()).set()
    await gates.setdefault(key, asyncio.Event()).wait()
    return key


@workflow(registry=reg)
async def chatty(ctx: Context, key: str) -> int:
    ctx.logger.info("wf.begin", key=key)
    total = await add(1, 2)
    ctx.logger.info("wf.after_add", total=total)
    if key:
        await block(key)
    ctx.logger.info("wf.end", total=total)
    return total


@workflow(registry=reg)
async def failing(ctx: Context) -> int:
    return await declines()


@workflow(registry=reg)
async def unknown_later(ctx: Context) -> int:
    return 1


@pytest.fixture(autouse=True)
def _reset():
    entered.clear()
    gates.clear()


@pytest.fixture
def logs(_quiet_logs):
    """Every log entry at every level, with contextvars merged, as a list of dicts."""
    cap = structlog.testing.LogCapture()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, cap],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )
    return cap.entries


def _named(logs: list[dict], event: str) -> list[dict]:
    return [e for e in logs if e["event"] == event]


async def test_run_and_step_lifecycle_is_logged_with_run_id(logs, journal_url):
    async with Engine(journal_url, registry=reg, worker_id="w1") as e:
        assert await (await e.start(chatty, "", run_id="ok")).result(timeout=10) == 3
        with pytest.raises(RunFailed):
            await (await e.start(failing, run_id="bad")).result(timeout=10)

    [started_ok] = [x for x in _named(logs, "run.started") if x["run_id"] == "ok"]
    assert started_ok["seq"] == 1 and started_ok["worker_id"] == "w1"
    [done] = _named(logs, "run.completed")
    assert done["run_id"] == "ok" and done["seq"] >= 4

    failed_steps = _named(logs, "step.failed")
    assert [(x["run_id"], x["step"], x["attempt"]) for x in failed_steps] == [
        ("bad", "declines", 1),
        ("bad", "declines", 2),
    ]
    assert all(x["position"] == 1 and x["error_type"] == "Declined" for x in failed_steps)
    assert failed_steps[0]["retry_in"] is not None and failed_steps[1]["retry_in"] is None
    [run_failed] = _named(logs, "run.failed")
    assert run_failed["run_id"] == "bad" and run_failed["log_level"] == "info"


async def test_workflow_logger_is_silent_during_replay(logs, journal_url):
    make = journal_maker(journal_url)
    async with Engine(journal=make(), registry=reg, worker_id="w1") as e:
        await e.start(chatty, "k", run_id="r")
        await asyncio.wait_for(entered.setdefault("k", asyncio.Event()).wait(), 10)
    live = [x["event"] for x in logs if x["event"].startswith("wf.")]
    assert live == ["wf.begin", "wf.after_add"]

    gates.setdefault("k", asyncio.Event()).set()
    async with Engine(journal=make(), registry=reg, worker_id="w1") as e:
        assert await (await e.get("r")).result(timeout=10) == 3

    workflow_lines = [x for x in logs if x["event"].startswith("wf.")]
    assert [x["event"] for x in workflow_lines] == ["wf.begin", "wf.after_add", "wf.end"]
    assert all(x["run_id"] == "r" for x in workflow_lines)
    assert workflow_lines[0]["key"] == "k"
    [resumed] = _named(logs, "run.resumed")
    assert resumed["run_id"] == "r" and resumed["seq"] >= 4 and resumed["worker_id"] == "w1"


async def test_parked_run_is_logged_with_its_reason(logs, journal_url):
    make = journal_maker(journal_url)
    async with Engine(journal=make(), registry=reg, worker=False) as e:
        await e.start(unknown_later, run_id="p")
    async with Engine(journal=make(), registry=Registry(), worker_id="w2") as e:
        h = await e.get("p")

        async def parked():
            return (await h.status()) == "parked"

        await wait_until(parked)
    [entry] = _named(logs, "run.parked")
    assert entry["run_id"] == "p" and entry["log_level"] == "error"
    assert entry["error_type"] == "WorkflowNotRegistered" and "unknown_later" in entry["reason"]
    assert entry["seq"] == 1


async def test_library_writes_nothing_to_stdout_or_stderr(logs, capsys, journal_url):
    async with Engine(journal_url, registry=reg, worker_id="w1") as e:
        assert await (await e.start(chatty, "")).result(timeout=10) == 3
        with pytest.raises(RunFailed):
            await (await e.start(failing)).result(timeout=10)
    assert logs  # the lines went to structlog ...
    assert capsys.readouterr() == ("", "")  # ... and nowhere else
