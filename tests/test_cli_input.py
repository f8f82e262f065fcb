"""`continuum` on the wrong input: missing or unwritable journals, odd URLs, history files.

Read commands (`runs`, `history`, `replay` of a run id) open the journal read-only:
they never create one, and they work on a file this user may read but not write.
Permission problems are tested for real: as root (which ignores file modes) the
commands run as `nobody` through setpriv; as any other user, directly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from continuum_py import Engine, NonDeterminismError, Registry, step, workflow
from continuum_py.testing import Replayer

REPO = Path(__file__).resolve().parent.parent

FLOWS = textwrap.dedent(
    """
    from continuum_py import Context, step, workflow

    @step
    async def double(x: int) -> int:
        return 2 * x

    @workflow
    async def twice(ctx: Context, x: int) -> int:
        return await double(await double(x))
    """
)

# The same workflow after a change that renamed its step: it cannot replay old runs.
CHANGED = FLOWS.replace("double(", "times_two(")


def continuum(*args: str, cwd: Path, user: list[str] | None = None, timeout: float = 60):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(REPO)])}
    return subprocess.run(
        [*(user or []), sys.executable, "-m", "continuum_py", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


async def _journal_with_a_run(path: Path) -> None:
    registry = Registry()

    @step(name="double")
    async def double(x: int) -> int:
        return 2 * x

    @workflow(registry=registry, name="twice")
    async def twice(ctx, x: int) -> int:
        return await double(await double(x))

    async with Engine(f"sqlite:///{path}", registry=registry) as engine:
        handle = await engine.start(twice, 5, run_id="cli-1")
        assert await handle.result(timeout=30) == 20


@pytest.fixture
def app(tmp_path):
    (tmp_path / "myflows.py").write_text(FLOWS)
    return tmp_path


# ---- arguments the parser refuses ----


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bogus"], "continuum: argument command: invalid choice: 'bogus'"),
        (["worker", "--concurrency", "x"], "continuum worker: argument --concurrency: invalid int"),
        ([], "continuum: the following arguments are required: command"),
        (["show"], "continuum show: the following arguments are required: run_id"),
    ],
    ids=["unknown-command", "bad-int", "no-command", "missing-argument"],
)
def test_an_argument_the_parser_refuses_is_one_line_naming_help(app, args, expected):
    out = continuum(*args, cwd=app)
    line = one_line_error(out)
    assert line.startswith(expected)
    assert line.endswith("--help)")
    assert out.stdout == ""
    assert sorted(p.name for p in app.iterdir()) == ["myflows.py"]


# ---- a journal that does not exist ----


@pytest.mark.parametrize(
    "args",
    [["runs"], ["history", "cli-1"], ["replay", "cli-1"], ["replay", "--run", "cli-1"]],
    ids=["runs", "history", "replay", "replay-run"],
)
def test_reading_a_missing_sqlite_journal_names_it_and_creates_nothing(app, args):
    imports = ["--import", "myflows"] if args[0] == "replay" else []
    line = one_line_error(continuum(*args, "--url", "sqlite:///typo.db", *imports, cwd=app))
    assert "ConfigurationError" in line
    assert f"'{app / 'typo.db'}' does not exist" in line
    assert sorted(p.name for p in app.iterdir()) == ["myflows.py"]


def test_default_url_is_not_created_by_runs(app):
    line = one_line_error(continuum("runs", cwd=app))
    assert "continuum.db' does not exist" in line
    assert not (app / "continuum.db").exists()


@pytest.mark.postgres
def test_reading_a_missing_postgres_schema_names_it_and_creates_nothing(app, pg_schema):
    import asyncio

    import asyncpg

    dsn, schema = pg_schema
    name = f"{schema}_typo_{uuid.uuid4().hex[:6]}"
    for args in (["runs"], ["history", "cli-1"]):
        line = one_line_error(continuum(*args, "--url", f"{dsn}?schema={name}", cwd=app))
        assert f"no continuum journal in schema {name!r}" in line

    async def exists() -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            q = "SELECT 1 FROM pg_namespace WHERE nspname = $1"
            return bool(await conn.fetchval(q, name))
        finally:
            await conn.close()

    assert not asyncio.run(exists())


def test_memory_url_has_nothing_to_read(app):
    assert "nothing to read" in one_line_error(continuum("runs", "--url", "memory://", cwd=app))


# ---- URLs ----


def test_sqlite_url_with_one_slash_says_what_is_expected(app):
    line = one_line_error(continuum("runs", "--url", "sqlite:/x.db", cwd=app))
    assert "no scheme" not in line
    assert "sqlite:///relative.db or sqlite:////abs/path.db" in line


@pytest.mark.parametrize("command", ["runs", "worker"])
def test_unknown_sqlite_url_option_is_refused(app, command):
    line = one_line_error(continuum(command, "--url", "sqlite:///j.db?mdoe=ro", cwd=app))
    assert "option 'mdoe' is not supported; supported: mode=rwc (default), rw or ro" in line
    assert not (app / "j.db").exists()


async def test_worker_refuses_a_read_only_url(app):
    await _journal_with_a_run(app / "j.db")
    line = one_line_error(continuum("worker", "--url", "sqlite:///j.db?mode=ro", cwd=app))
    assert "read-only" in line and "worker=False" in line


def _worker_log(app: Path, url: str) -> str:
    """The worker's stderr, from start until it has logged worker.started and was stopped."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(app), str(REPO)])}
    with subprocess.Popen(
        [sys.executable, "-m", "continuum_py", "worker", "--url", url, "--import", "myflows"],
        cwd=app,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        watchdog = threading.Timer(60, proc.kill)
        watchdog.start()
        try:
            assert proc.stderr is not None
            seen = []
            for line in proc.stderr:
                seen.append(line)
                if "worker.started" in line:
                    break
            proc.send_signal(signal.SIGTERM)
            seen.append(proc.stderr.read())
            proc.wait()
        finally:
            watchdog.cancel()
    assert proc.returncode == 0, "".join(seen)
    return "".join(seen)


def test_worker_logs_the_url_and_file_it_opened(app):
    log = _worker_log(app, "sqlite:///work.db")
    started = next(line for line in log.splitlines() if "worker.started" in line)
    assert "sqlite:///work.db" in started
    assert str(app / "work.db") in started


@pytest.mark.postgres
def test_worker_logs_the_postgres_url_without_its_password(app, pg_schema):
    dsn, schema = pg_schema
    assert dsn.startswith("postgresql://") and ":" not in dsn.split("//")[1].split("@")[0]
    url = dsn.replace("@", ":s3cret-pw@", 1) + f"?schema={schema}_w"
    log = _worker_log(app, url)
    started = next(line for line in log.splitlines() if "worker.started" in line)
    assert ":***@" in started and f"schema={schema}_w" in started
    assert "s3cret-pw" not in log


# ---- permissions ----


def _other_user() -> list[str]:
    """The prefix that runs a command as a user file modes apply to (none if we are one)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot test file permissions")
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run(
        [*user, sys.executable, "-c", "import continuum_py"],
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("user nobody cannot run this checkout's Python")
    return user


@pytest.fixture
def shared_dir():
    """A folder outside pytest's private tmp (which other users cannot enter)."""
    path = Path(tempfile.mkdtemp(prefix="continuum-perm-"))
    path.chmod(0o755)
    (path / "myflows.py").write_text(FLOWS)
    (path / "myflows.py").chmod(0o644)
    yield path
    path.chmod(0o755)
    shutil.rmtree(path)


async def test_read_commands_work_on_a_journal_in_a_read_only_folder(shared_dir):
    user = _other_user()
    folder = shared_dir / "ro"
    folder.mkdir()
    await _journal_with_a_run(folder / "j.db")
    (folder / "j.db").chmod(0o644)
    folder.chmod(0o555)  # nobody may write here; with no -wal file left, as after a clean stop
    assert sorted(p.name for p in folder.iterdir()) == ["j.db"]
    url = f"sqlite:///{folder}/j.db"

    runs = continuum("runs", "--url", url, "--json", cwd=shared_dir, user=user)
    assert runs.returncode == 0, runs.stderr
    (run,) = json.loads(runs.stdout)["runs"]
    assert (run["run_id"], run["workflow"], run["status"]) == ("cli-1", "twice", "completed")
    history = continuum("history", "cli-1", "--url", url, cwd=shared_dir, user=user)
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout)[-1]["result"] == 20
    replay = continuum(
        "replay", "--run", "cli-1", "--url", url, "--import", "myflows", cwd=shared_dir, user=user
    )
    assert replay.returncode == 0, replay.stderr
    assert "returned 20" in replay.stdout

    # A worker needs to write: a permission problem, named as one, not a corrupt file.
    line = one_line_error(continuum("worker", "--url", url, cwd=shared_dir, user=user))
    assert "ConfigurationError" in line and "JournalCorrupt" not in line
    assert "permission denied" in line and str(folder / "j.db") in line
    assert sorted(p.name for p in folder.iterdir()) == ["j.db"]


async def test_read_only_file_in_a_writable_folder(shared_dir):
    user = _other_user()
    folder = shared_dir / "rw"
    folder.mkdir()
    await _journal_with_a_run(folder / "j.db")
    folder.chmod(0o777)
    (folder / "j.db").chmod(0o444)
    before = (folder / "j.db").read_bytes()
    url = f"sqlite:///{folder}/j.db"

    runs = continuum("runs", "--url", url, "--json", cwd=shared_dir, user=user)
    assert runs.returncode == 0, runs.stderr
    assert [r["run_id"] for r in json.loads(runs.stdout)["runs"]] == ["cli-1"]
    # SQLite would open it read-only without a word and fail at the first
    # write (a worker then retried forever): refused at open, as a permission problem.
    line = one_line_error(continuum("worker", "--url", url, cwd=shared_dir, user=user))
    assert "permission denied: the file is read-only for this user" in line
    assert "?mode=ro" in line
    assert (folder / "j.db").read_bytes() == before
    assert stat.S_IMODE((folder / "j.db").stat().st_mode) == 0o444


# ---- replay: a file or a run id ----


async def test_replay_takes_an_existing_file_whatever_its_name(app):
    await _journal_with_a_run(app / "j.db")
    url = f"sqlite:///{app}/j.db"
    history = continuum("history", "cli-1", "--url", url, cwd=app)
    assert history.returncode == 0, history.stderr
    (app / "exports").mkdir()
    (app / "exports" / "cli-1.history").write_text(history.stdout)
    for source in ("exports/cli-1.history", str(app / "exports" / "cli-1.history")):
        rep = continuum("replay", source, "--import", "myflows", cwd=app)
        assert rep.returncode == 0, rep.stderr
        assert "run cli-1 (twice): 6 events, finished" in rep.stdout
    assert not (app / "continuum.db").exists()


@pytest.mark.parametrize("source", ["exports/cli-1.history", "cli-1.json", "./cli-1"])
def test_replay_of_a_missing_file_names_it(app, source):
    line = one_line_error(continuum("replay", source, "--import", "myflows", cwd=app))
    assert f"no history file {source!r}" in line and "--run" in line
    assert not (app / "continuum.db").exists()


async def test_replay_run_option_reads_the_journal_even_when_a_file_has_that_name(app):
    await _journal_with_a_run(app / "j.db")
    (app / "cli-1").write_text("not a history")
    url = f"sqlite:///{app}/j.db"
    rep = continuum("replay", "--run", "cli-1", "--url", url, "--import", "myflows", cwd=app)
    assert rep.returncode == 0, rep.stderr
    assert "returned 20" in rep.stdout
    line = one_line_error(continuum("replay", "cli-1", "--import", "myflows", cwd=app))
    assert "'cli-1' is not a history written by `continuum history`" in line


def test_replay_takes_a_file_or_a_run_not_both(app):
    out = continuum("replay", "a.json", "--run", "cli-1", cwd=app)
    assert out.returncode == 2 and "not allowed with argument" in out.stderr


async def test_replay_that_strays_does_not_claim_the_run_was_parked(app):
    await _journal_with_a_run(app / "j.db")
    history = continuum("history", "cli-1", "--url", f"sqlite:///{app}/j.db", cwd=app)
    (app / "run.json").write_text(history.stdout)
    (app / "changed.py").write_text(CHANGED)
    out = continuum("replay", "run.json", "--import", "changed", cwd=app)
    # A divergence is what the replay found, not bad input: a report on stdout, exit 1.
    assert out.returncode == 1 and out.stderr == "", out.stderr
    assert "DIVERGED at position 1" in out.stdout
    assert "is parked" not in out.stdout and "resumes it" not in out.stdout
    assert "this replay changed nothing" in out.stdout


def test_replayer_words_non_determinism_for_an_offline_replay():
    old, new = Registry(), Registry()

    @step
    async def charge() -> int:
        return 1

    @step
    async def refund() -> int:
        return 2

    @workflow(registry=old, name="pay")
    async def pay_v1(ctx) -> int:
        return await charge()

    @workflow(registry=new, name="pay")
    async def pay_v2(ctx) -> int:
        return await refund()

    async def record():
        async with Engine("memory://", registry=old) as engine:
            await (await engine.start("pay", run_id="p1")).result(timeout=30)
            return await engine.history("p1")

    import asyncio

    events = asyncio.run(record())
    with pytest.raises(NonDeterminismError) as ei:
        Replayer(new).replay(events)
    err = ei.value
    assert err.offline and (err.run_id, err.position) == ("p1", 1)
    assert "is parked" not in str(err) and "this replay changed nothing" in str(err)


def test_a_workers_non_determinism_message_still_says_the_run_is_parked():
    err = NonDeterminismError("r1", 3, "StepScheduled(a)", "StepScheduled(b)")
    assert not err.offline
    assert str(err) == (
        "run r1 position 3: history has StepScheduled(a), code asked for StepScheduled(b). "
        "Workflow code must be deterministic; the run is parked until code matching its "
        "history resumes it"
    )
