"""`continuum show`, `steps`, `history --table`, `signal`, `resume` and `CONTINUUM_URL`.

Each test runs the installed console script in a subprocess, against a SQLite
journal and (with CONTINUUM_TEST_PG_DSN) a Postgres one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from continuum_py import Context, Engine, Registry, RetryPolicy, RunStatus, step, workflow

SCRIPT = str(Path(sys.executable).with_name("continuum"))

reg = Registry()


@step(name="cli_double")
async def double(x: int) -> int:
    return 2 * x


@step(name="cli_boom", retry=RetryPolicy(max_attempts=1))
async def boom(x: int) -> int:
    raise ValueError(f"no {x}")


@workflow(registry=reg, name="kid")
async def kid(ctx: Context, x: int) -> int:
    return await double(x)


@workflow(registry=reg, name="parent")
async def parent(ctx: Context, x: int) -> int:
    return await double(await kid(x))


@workflow(registry=reg, name="fails")
async def fails(ctx: Context, x: int) -> int:
    return await boom(x)


@workflow(registry=reg, name="waits")
async def waits(ctx: Context) -> object:
    return await ctx.wait_for_signal("go")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path) -> str:
    if request.param == "postgres":
        dsn, schema = request.getfixturevalue("pg_schema")
        return f"{dsn}?schema={schema}_{uuid.uuid4().hex[:8]}"
    return f"sqlite:///{tmp_path}/j.db"


def continuum(*args: str, cwd: Path, env: dict[str, str] | None = None):
    base = {k: v for k, v in os.environ.items() if k != "CONTINUUM_URL"}
    return subprocess.run(
        [SCRIPT, *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True
    )


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


async def _until(engine: Engine, run_id: str, status: RunStatus) -> None:
    for _ in range(400):
        if (await (await engine.get(run_id)).status()) == status:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{run_id} never became {status}")


@pytest.fixture
def runs(url: str) -> str:
    """A completed parent with a child, a failed run, and a run waiting for a signal."""

    async def main() -> None:
        async with Engine(url, registry=reg) as engine:
            assert await (await engine.start(parent, 3, run_id="p")).result(timeout=30) == 12
            await engine.start(fails, 4, run_id="f")
            await engine.start(waits, run_id="w")
            await _until(engine, "f", RunStatus.FAILED)
            await _until(engine, "w", RunStatus.SUSPENDED)

    asyncio.run(main())
    return url


def test_show_json_describes_the_run_its_child_and_result(runs, tmp_path):
    out = continuum("show", "p", "--url", runs, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["status"] == "completed" and info["workflow"] == "parent"
    assert info["input"] == [3] and info["result"] == 12 and info["error"] is None
    assert info["children"] == [{"run_id": "p.1", "workflow": "kid", "status": "completed"}]
    assert "outcome" not in info
    child = json.loads(continuum("show", "p.1", "--url", runs, "--json", cwd=tmp_path).stdout)
    assert child["parent_run_id"] == "p" and child["result"] == 6


def test_show_a_failed_run_prints_its_error_and_traceback(runs, tmp_path):
    out = continuum("show", "f", "--url", runs, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:3] == ["run       f", "workflow  fails", "status    failed"]
    assert any(line.startswith("error") and "ValueError" in line for line in lines)
    assert "Traceback (most recent call last):" in out.stdout
    assert 'raise ValueError(f"no {x}")' in out.stdout
    info = json.loads(continuum("show", "f", "--url", runs, "--json", cwd=tmp_path).stdout)
    assert info["error"]["type"] == "ValueError"
    assert info["error"]["message"].endswith("ValueError: no 4")
    assert "Traceback" in info["error"]["traceback"]


def test_show_a_waiting_run_says_what_it_waits_on(runs, tmp_path):
    info = json.loads(continuum("show", "w", "--url", runs, "--json", cwd=tmp_path).stdout)
    assert info["status"] == "suspended"
    assert info["waiting_on"] == [{"kind": "signal", "name": "go", "timeout_at": None}]
    text = continuum("show", "w", "--url", runs, cwd=tmp_path).stdout
    assert "waits on  signal 'go'" in text


def test_steps_table_and_json(runs, tmp_path):
    out = continuum("steps", "f", "--url", runs, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    header, _rule, row = out.stdout.splitlines()
    assert header.split() == ["position", "step", "status", "attempts", "duration", "last", "error"]
    assert row.split()[:4] == ["1", "cli_boom", "failed", "1"]
    assert "ValueError: no 4" in row
    data = json.loads(continuum("steps", "p", "--url", runs, "--json", cwd=tmp_path).stdout)
    [only] = data["steps"]
    assert (only["position"], only["step"], only["status"], only["attempts"]) == (
        2,
        "cli_double",
        "completed",
        1,
    )
    assert only["last_error"] is None and only["duration"] >= 0


def test_history_stays_json_and_table_is_a_timeline(runs, tmp_path):
    default = continuum("history", "p", "--url", runs, cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    explicit = continuum("history", "p", "--url", runs, "--json", cwd=tmp_path)
    assert json.loads(default.stdout) == json.loads(explicit.stdout)
    events = json.loads(default.stdout)
    table = continuum("history", "p", "--url", runs, "--table", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["seq", "time", "event", "details"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == [str(e["seq"]) for e in events]
    assert [r[2] for r in rows] == [e["kind"] for e in events]
    # The time is the event's own, as an ISO 8601 UTC date.
    first = dt.datetime.fromisoformat(rows[0][1])
    assert first.utcoffset() == dt.timedelta(0)
    assert first.timestamp() == pytest.approx(events[0]["at"], abs=0.001)
    assert rows[-1][2:] == ["RunCompleted", "result=12"]


def test_signal_with_a_json_payload_reaches_the_run(runs, tmp_path):
    out = continuum("signal", "w", "go", '{"ok": [1, 2]}', "--url", runs, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "signal 'go' sent to run w"

    async def result() -> object:
        async with Engine(runs, registry=reg) as engine:
            return await (await engine.get("w")).result(timeout=30)

    assert asyncio.run(result()) == {"ok": [1, 2]}


def test_resume_makes_a_parked_run_pending(url, tmp_path):
    async def park() -> None:
        async with Engine(url, worker=False) as client:
            await client.start("ghost", run_id="g")
        async with Engine(url, registry=Registry()) as engine:  # does not define "ghost"
            await _until(engine, "g", RunStatus.PARKED)

    asyncio.run(park())
    shown = json.loads(continuum("show", "g", "--url", url, "--json", cwd=tmp_path).stdout)
    assert shown["status"] == "parked" and "WorkflowNotRegistered" in shown["reason"]
    assert (
        "parked (WorkflowNotRegistered" in continuum("show", "g", "--url", url, cwd=tmp_path).stdout
    )
    out = continuum("resume", "g", "--url", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    after = json.loads(continuum("show", "g", "--url", url, "--json", cwd=tmp_path).stdout)
    assert after["status"] == "pending" and after["reason"] is None
    # Not parked any more: resuming again is a one-line error.
    assert "not parked" in one_line_error(continuum("resume", "g", "--url", url, cwd=tmp_path))


def test_continuum_url_is_every_commands_default_and_the_flag_wins(runs, tmp_path):
    env = {"CONTINUUM_URL": runs}
    for args in (["show", "p"], ["steps", "p"], ["history", "p"], ["runs"]):
        out = continuum(*args, "--json", cwd=tmp_path, env=env)
        assert out.returncode == 0, (args, out.stderr)
    ids = [
        r["run_id"]
        for r in json.loads(continuum("runs", "--json", cwd=tmp_path, env=env).stdout)["runs"]
    ]
    assert set(ids) == {"p", "p.1", "f", "w"}
    # The flag wins over the variable: a missing journal there is the error.
    missing = f"sqlite:///{tmp_path}/other.db"
    line = one_line_error(continuum("show", "p", "--url", missing, cwd=tmp_path, env=env))
    assert "other.db" in line and "does not exist" in line
    assert not (tmp_path / "other.db").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["show", "ghost"], "ghost"),
        (["steps", "ghost"], "ghost"),
        (["history", "ghost", "--table"], "ghost"),
        (["signal", "ghost", "go"], "ghost"),
        (["resume", "ghost"], "ghost"),
        (["signal", "w", "go", "not json"], "not JSON"),
        (["signal", "w", "go", "{'a': 1}"], "not JSON"),
        (["signal", "w", "", "1"], "signal name"),
        (["resume", "p"], "not parked"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(runs, tmp_path, args, says):
    out = continuum(*args, "--url", runs, cwd=tmp_path)
    assert says in one_line_error(out)
    assert out.stdout == ""
    info = json.loads(continuum("show", "w", "--url", runs, "--json", cwd=tmp_path).stdout)
    assert info["inbox_last"] == 0  # no signal was sent


@pytest.mark.parametrize("command", ["show", "steps", "signal", "resume"])
def test_a_missing_sqlite_journal_is_an_error_and_nothing_is_created(tmp_path, command):
    extra = ["go"] if command == "signal" else []
    url = f"sqlite:///{tmp_path}/typo.db"
    line = one_line_error(continuum(command, "r", *extra, "--url", url, cwd=tmp_path))
    assert "typo.db" in line and "does not exist" in line
    assert not (tmp_path / "typo.db").exists()
