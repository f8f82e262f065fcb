"""`continuum fork`, `export`, `import` and `runs` run as the installed console script.

Against a SQLite journal and (with CONTINUUM_TEST_PG_DSN) a Postgres one. The
workflow's steps append a line to a side-effect log file each time their body
runs, so what a fork reuses and what it runs again is read from that file.
Runs are driven by a separate Python process (``drive.py``) with a worker.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from test_cli_inspect import one_line_error

from continuum_py.testing import Replayer, load_history

SCRIPT = str(Path(sys.executable).with_name("continuum"))

FLOWS = """
import os
from continuum_py import Context, RetryPolicy, step, workflow

def log(line):
    with open(os.environ["FLOW_LOG"], "a") as f:
        f.write(line + "\\n")

@step(name="t_add")
async def add(label: str, n: int) -> int:
    log(label)
    return n + 1

@step(name="t_flaky", retry=RetryPolicy(max_attempts=1))
async def flaky(n: int) -> int:
    log("flaky")
    if os.path.exists(os.environ["FLOW_BROKEN"]):
        raise ValueError("flaky is broken")
    return n * 10

@workflow(name="t_kid")
async def kid(ctx: Context, n: int) -> int:
    return await add("kid", n)

@workflow(name="t_pipe")
async def pipe(ctx: Context, n: int) -> int:
    a = await add("one", n)
    k = await kid(a)
    c = await flaky(k)
    return await add("four", c)

@workflow(name="t_waits")
async def waits(ctx: Context) -> int:
    n = await add("before", 0)
    return n + await ctx.wait_for_signal("go")
"""

DRIVE = """
import asyncio, json, sys
import flows
from continuum_py import Engine

async def main():
    what, url, run_id = sys.argv[1:4]
    async with Engine(url) as engine:
        if what == "start":
            handle = await engine.start(flows.pipe, 1, run_id=run_id)
        elif what == "start-waits":
            await engine.start(flows.waits, run_id=run_id)
            while (await (await engine.get(run_id)).status()) != "suspended":
                await asyncio.sleep(0.02)
            return
        else:
            handle = await engine.get(run_id)
        try:
            print(json.dumps({"result": await handle.result(timeout=30)}))
        except Exception as exc:
            print(json.dumps({"error": type(exc).__name__}))

asyncio.run(main())
"""


def _url(kind: str, request, tmp_path: Path, name: str = "j") -> str:
    if kind == "postgres":
        dsn, schema = request.getfixturevalue("pg_schema")
        return f"{dsn}?schema={schema}_{uuid.uuid4().hex[:8]}"
    return f"sqlite:///{tmp_path}/{name}.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path) -> str:
    return _url(request.param, request, tmp_path)


@pytest.fixture
def app(tmp_path) -> Path:
    (tmp_path / "flows.py").write_text(textwrap.dedent(FLOWS))
    (tmp_path / "drive.py").write_text(textwrap.dedent(DRIVE))
    return tmp_path


def _env(app: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "CONTINUUM_URL"}
    return {**base, "FLOW_LOG": str(app / "effects.log"), "FLOW_BROKEN": str(app / "broken")}


def continuum(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args], cwd=app, env=_env(app), capture_output=True, text=True, timeout=120
    )


def drive(app: Path, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "drive.py", *args],
        cwd=app,
        env=_env(app),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else {}


def effects(app: Path) -> list[str]:
    """The step bodies run since the last call, in order (the log is emptied)."""
    log = app / "effects.log"
    lines = log.read_text().splitlines() if log.exists() else []
    log.write_text("")
    return lines


def ok_json(out: subprocess.CompletedProcess[str]) -> dict:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def run_ids(app: Path, url: str, *args: str) -> list[str]:
    return [
        r["run_id"] for r in ok_json(continuum(app, "runs", "--url", url, "--json", *args))["runs"]
    ]


def test_fork_from_the_failure_a_step_and_a_position_reuses_what_came_before(app, url):
    (app / "broken").touch()
    assert drive(app, "start", url, "p") == {"error": "RunFailed"}
    assert effects(app) == ["one", "kid", "flaky"]
    (app / "broken").unlink()  # the fix is deployed

    fork = ok_json(continuum(app, "fork", "p", "--failed", "--url", url, "--json"))
    assert fork == {"run_id": "p-fork-1", "forked_from": "p"}
    assert drive(app, "wait", url, "p-fork-1") == {"result": 31}
    assert effects(app) == ["flaky", "four"]  # "one" and the child run came from history

    out = continuum(app, "fork", "p", "--step", "t_flaky", "--run-id", "by-step", "--url", url)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "forked run p as by-step: pending, for the next worker\n"
    assert drive(app, "wait", url, "by-step") == {"result": 31}
    assert effects(app) == ["flaky", "four"]

    history = json.loads(continuum(app, "history", "p", "--url", url).stdout)
    child_at = next(e["position"] for e in history if e["kind"] == "ChildStarted")
    fork = ok_json(continuum(app, "fork", "p", "--at", str(child_at), "--url", url, "--json"))
    assert drive(app, "wait", url, fork["run_id"]) == {"result": 31}
    assert effects(app) == ["kid", "flaky", "four"]  # from the child on, all live
    assert f"{fork['run_id']}.{child_at}" in run_ids(app, url, "--id-prefix", fork["run_id"])

    # Linked both ways.
    shown = ok_json(continuum(app, "show", "p", "--url", url, "--json"))
    assert [f["run_id"] for f in shown["forks"]] == ["p-fork-1", "by-step", "p-fork-3"]
    assert {f["status"] for f in shown["forks"]} == {"completed"}
    assert ok_json(continuum(app, "show", "by-step", "--url", url, "--json"))["forked_from"] == "p"
    text = continuum(app, "show", "by-step", "--url", url).stdout
    assert "forked from  p" in text
    listed = ok_json(continuum(app, "runs", "--url", url, "--json", "--id-prefix", "p-fork-1"))
    assert [(r["run_id"], r["forked_from"]) for r in listed["runs"]] == [("p-fork-1", "p")]


def test_fork_refusals_are_one_line_and_record_nothing(app, url):
    assert drive(app, "start", url, "p") == {"result": 31}
    drive(app, "start-waits", url, "w")
    before = run_ids(app, url)
    cases = [
        (["p", "--at", "99"], "ForkPointNotFound: cannot fork run 'p' at position 99: "
                              "it is beyond the history"),
        (["p", "--step", "nope"], "no step of that name ran (steps: t_add, t_flaky)"),
        (["p", "--failed"], "no step of it failed for good, no child run failed, and the run did not fail"),
        (["missing", "--at", "1"], "RunNotFound: no run with run_id 'missing'"),
        (["p", "--at", "0"], "--at takes a call-order position (1, 2, ...), got 0"),
        (["p", "--at", "two"], "--at takes a call-order position (1, 2, ...), got 'two'"),
        (["p", "--at", "1", "--run-id", "w"], "RunIdTaken: a run with run_id 'w' exists already"),
        (["p", "--at", "1", "--args", "{nope"], "--args is not JSON"),
        (["p", "--at", "1", "--args", '{"n": 1}'], "--args takes a JSON array"),
        (["w", "--step", "t_add"], "RunInFlight: run 'w' is suspended, still in flight"),
    ]  # fmt: skip
    for args, message in cases:
        line = one_line_error(continuum(app, "fork", *args, "--url", url))
        assert message in line, line
    assert run_ids(app, url) == before
    assert effects(app) == ["one", "kid", "flaky", "four", "before"]

    fork = ok_json(continuum(app, "fork", "w", "--at", "2", "--force", "--url", url, "--json"))
    assert continuum(app, "signal", fork["run_id"], "go", "5", "--url", url).returncode == 0
    assert drive(app, "wait", url, fork["run_id"]) == {"result": 6}
    assert effects(app) == []  # "before" came from history
    missing = one_line_error(continuum(app, "fork", "p", "--at", "1", "--url", f"{url}x"))
    assert "Error" in missing


def _import_flows(app: Path):
    sys.path.insert(0, str(app))
    try:
        return importlib.import_module("flows")
    finally:
        sys.path.remove(str(app))


@pytest.mark.postgres
def test_export_import_round_trip_between_sqlite_and_postgres_replays_alike(app, request, tmp_path):
    lite, pg = _url("sqlite", request, tmp_path), _url("postgres", request, tmp_path)
    assert drive(app, "start", lite, "p") == {"result": 31}
    out = continuum(app, "export", "p", "--children", "-o", "p.json", "--url", lite)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "exported run p (2 runs) to p.json\n"
    imported = ok_json(continuum(app, "import", "p.json", "--url", pg, "--json"))
    assert imported == {
        "runs": [{"run_id": "p", "status": "completed"}, {"run_id": "p.2", "status": "completed"}]
    }
    for run_id in ("p", "p.2"):
        there = continuum(app, "history", run_id, "--url", pg)
        assert there.returncode == 0, there.stderr
        assert there.stdout == continuum(app, "history", run_id, "--url", lite).stdout
    _import_flows(app)
    history = load_history(continuum(app, "history", "p", "--url", pg).stdout.encode())
    replayed = Replayer().replay(history)
    assert replayed.finished and replayed.result == 31 and replayed.error is None
    # And back: Postgres to a fresh SQLite file, through stdout and stdin.
    again = continuum(app, "export", "p", "--url", pg)
    assert again.returncode == 0, again.stderr
    assert (
        json.loads(again.stdout)["runs"][0] == json.loads((app / "p.json").read_text())["runs"][0]
    )
    back = subprocess.run(
        [SCRIPT, "import", "-", "--url", f"sqlite:///{tmp_path}/back.db"],
        cwd=app, env=_env(app), input=again.stdout, capture_output=True, text=True,
    )  # fmt: skip
    assert back.returncode == 0, back.stderr
    assert back.stdout == "imported run p: completed\n"
    assert effects(app) == ["one", "kid", "flaky", "four"]  # only the first run ran steps


def test_export_and_import_refusals_are_one_line_and_write_nothing(app, url, tmp_path):
    source = f"sqlite:///{tmp_path}/source.db"
    assert drive(app, "start", source, "p") == {"result": 31}
    assert (
        continuum(app, "export", "p", "--children", "-o", "p.json", "--url", source).returncode == 0
    )
    data = (app / "p.json").read_bytes()
    (app / "short.json").write_bytes(data[: len(data) - 40])
    (app / "altered.json").write_bytes(data.replace(b'"args":[1]', b'"args":[2]', 1))
    (app / "newer.json").write_bytes(data.replace(b'"version":1', b'"version":7', 1))
    drive(app, "start-waits", url, "p.2")  # takes the child's id in the target
    before = run_ids(app, url)
    cases = [
        ("short.json", "ExportCorrupt: the export cannot be imported: it is not a whole continuum export"),
        ("altered.json", "ExportCorrupt: the export cannot be imported (run 'p'): its checksum does not match"),
        ("newer.json", "ExportTooNew: the export cannot be imported: it was written with format version 7"),
        ("p.json", "RunIdTaken: a run with run_id 'p.2' exists already; nothing was written"),
        ("nowhere.json", "cannot read 'nowhere.json': No such file or directory"),
    ]  # fmt: skip
    for name, message in cases:
        line = one_line_error(continuum(app, "import", name, "--url", url))
        assert message in line, line
    assert run_ids(app, url) == before
    line = one_line_error(continuum(app, "export", "nope", "--url", url))
    assert "RunNotFound: no run with run_id 'nope'" in line
    line = one_line_error(
        continuum(app, "export", "p", "-o", "no/such/dir/p.json", "--url", source)
    )
    assert "cannot write 'no/such/dir/p.json'" in line
    # Into a journal with nothing in the way, the same file imports whole.
    fresh = f"sqlite:///{tmp_path}/fresh.db"
    out = continuum(app, "import", "p.json", "--url", fresh)
    assert out.stdout == "imported run p: completed\nimported run p.2: completed\n", out.stderr


def _on_a_terminal(app: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """What the command prints when its stdout is a terminal (a pseudo-terminal)."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [SCRIPT, *args], cwd=app, env={**_env(app), **(env or {})}, stdout=follower,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def test_runs_is_coloured_only_on_a_terminal(app, url):
    assert drive(app, "start", url, "p") == {"result": 31}
    coloured = _on_a_terminal(app, "runs", "--url", url)
    assert "\x1b[32mcompleted\x1b[0m" in coloured  # the status, green
    plain = _on_a_terminal(app, "runs", "--url", url, env={"NO_COLOR": "1"})
    assert "\x1b[3" not in plain and " completed " in plain  # no colour (the header stays bold)
    piped = continuum(app, "runs", "--url", url)
    assert "\x1b[" not in piped.stdout and "completed" in piped.stdout
