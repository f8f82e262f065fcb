"""The run and step lifecycle is logged, bound to run_id; replay stays quiet; defaults print nothing.

With nothing configured the engine logs through the stdlib ``continuum_py``
logger (silent below WARNING); an application that configures structlog gets
structured events through its own pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pty
import signal
import subprocess
import sys
import textwrap
import time

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


# ---- defaults: nothing configured ----

PROGRAM = textwrap.dedent(
    """
    import asyncio, logging, sys

    mode, url = sys.argv[1], sys.argv[2]
    if mode == "debug":
        logging.basicConfig(level=logging.DEBUG, format="%(name)s|%(levelname)s|%(message)s")

    from continuum_py import Context, Engine, Registry, RetryPolicy, RunFailed, step, workflow

    reg = Registry()


    @step
    async def add(a: int, b: int) -> int:
        return a + b


    @step(retry=RetryPolicy(max_attempts=1))
    async def boom() -> int:
        raise ValueError("boom")


    @workflow(registry=reg)
    async def wf(ctx: Context, fail: bool) -> int:
        ctx.logger.info("wf.begin")
        total = await add(1, 2)
        if fail:
            await boom()
        return total


    async def main() -> None:
        async with Engine(url, registry=reg, worker_id="w1") as engine:
            print("result", await (await engine.start(wf, False, run_id="ok")).result(timeout=30))
            if mode == "fail":
                print("now failing", file=sys.stderr, flush=True)
                try:
                    await (await engine.start(wf, True, run_id="bad")).result(timeout=30)
                except RunFailed:
                    print("failed")


    asyncio.run(main())
    """
)


def _program(tmp_path, mode: str, url: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(PROGRAM)
    proc = subprocess.run(
        [sys.executable, str(script), mode, url],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_unconfigured_program_sees_only_its_own_output(tmp_path, journal_url):
    proc = _program(tmp_path, "plain", journal_url)
    assert proc.stdout == "result 3\n"
    assert proc.stderr == ""


def test_unconfigured_program_gets_warnings_on_stderr_only(tmp_path, journal_url):
    proc = _program(tmp_path, "fail", journal_url)
    assert proc.stdout == "result 3\nfailed\n"
    quiet, _, warnings = proc.stderr.partition("now failing\n")
    assert quiet == ""  # the normal run printed nothing
    [line] = warnings.splitlines()  # stdlib's last-resort handler: WARNING and above
    assert line.startswith("step.failed ")
    assert "run_id=bad" in line and "step=boom" in line and "error_type=ValueError" in line


def test_basic_config_debug_gets_engine_events_with_run_id_and_seq(tmp_path):
    proc = _program(tmp_path, "debug", "memory://")
    assert proc.stdout == "result 3\n"  # logging.basicConfig writes to stderr
    ours = [ln.split("|", 2) for ln in proc.stderr.splitlines() if ln.startswith("continuum_py|")]
    by_event = {msg.split(" ", 1)[0]: (level, msg) for _, level, msg in ours}
    level, msg = by_event["step.completed"]
    assert level == "DEBUG" and "run_id=ok" in msg and "seq=3" in msg and "step=add" in msg
    level, msg = by_event["run.completed"]
    assert level == "INFO" and "run_id=ok" in msg and "seq=4" in msg
    assert "run_id=ok" in by_event["wf.begin"][1]


@pytest.fixture
def records(caplog):
    """The engine's stdlib records at every level (structlog left unconfigured)."""
    caplog.set_level(logging.DEBUG, logger="continuum_py")
    return lambda: [r for r in caplog.records if r.name == "continuum_py"]


async def test_stdlib_records_carry_the_structured_fields(records, journal_url):
    assert not structlog.is_configured()
    async with Engine(journal_url, registry=reg, worker_id="w1") as e:
        assert await (await e.start(chatty, "", run_id="ok")).result(timeout=10) == 3
        with pytest.raises(RunFailed):
            await (await e.start(failing, run_id="bad")).result(timeout=10)
    fields = [r.continuum for r in records()]
    [done] = [f for f in fields if f["event"] == "step.completed" and f["run_id"] == "ok"]
    assert done["step"] == "add" and done["seq"] == 3 and done["worker_id"] == "w1"
    failed = [r for r in records() if r.continuum["event"] == "step.failed"]
    assert [(r.levelno, r.continuum["attempt"]) for r in failed] == [
        (logging.WARNING, 1),
        (logging.WARNING, 2),
    ]
    assert failed[0].getMessage().startswith("step.failed run_id=bad ")


async def test_unconfigured_workflow_logger_uses_stdlib_and_is_silent_during_replay(
    records, journal_url
):
    make = journal_maker(journal_url)
    async with Engine(journal=make(), registry=reg, worker_id="w1") as e:
        await e.start(chatty, "k", run_id="r")
        await asyncio.wait_for(entered.setdefault("k", asyncio.Event()).wait(), 10)
    gates.setdefault("k", asyncio.Event()).set()
    async with Engine(journal=make(), registry=reg, worker_id="w1") as e:
        assert await (await e.get("r")).result(timeout=10) == 3
    lines = [r.continuum for r in records() if r.continuum["event"].startswith("wf.")]
    assert [x["event"] for x in lines] == ["wf.begin", "wf.after_add", "wf.end"]
    assert all(x["run_id"] == "r" for x in lines) and lines[0]["key"] == "k"


async def test_warning_level_drops_info_and_debug_lines(caplog, journal_url):
    caplog.set_level(logging.WARNING, logger="continuum_py")
    async with Engine(journal_url, registry=reg, worker_id="w1") as e:
        assert await (await e.start(chatty, "")).result(timeout=10) == 3
    assert [r for r in caplog.records if r.name == "continuum_py"] == []


def test_continuum_command_logs_plain_lines_to_a_redirected_stderr(tmp_path):
    # `continuum worker 2>worker.log` from a terminal: stdout is a tty, stderr a file.
    master, slave = pty.openpty()
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "continuum_py", "worker", "--url", "memory://"],
            stdout=slave,
            stderr=err,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 30
            while b"worker.started" not in log.read_bytes():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            os.close(slave)
            os.close(master)
    text = log.read_bytes()
    assert b"\x1b[" not in text  # no colour codes in a file
    assert b"[info     ] worker.started" in text and b"worker.stopped" in text
