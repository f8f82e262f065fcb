"""The `continuum` command: list runs, dump a history, replay it against code."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import textwrap

import pytest

from continuum_py import Engine


@pytest.fixture
def app(tmp_path):
    (tmp_path / "myflows.py").write_text(
        textwrap.dedent(
            """
            from continuum_py import Context, step, workflow

            @step
            async def double(x: int) -> int:
                return 2 * x

            @workflow
            async def twice(ctx: Context, x: int) -> int:
                ctx.logger.info("doubling", x=x)
                return await double(await double(x))
            """
        )
    )
    (tmp_path / "start.py").write_text(
        textwrap.dedent(
            """
            import asyncio, sys
            import myflows
            from continuum_py import Engine

            async def main():
                async with Engine(sys.argv[1]) as engine:
                    h = await engine.start(myflows.twice, 5, run_id="cli-1")
                    print(await h.result(timeout=30))

            asyncio.run(main())
            """
        )
    )
    url = f"sqlite:///{tmp_path}/j.db"
    out = subprocess.run(
        [sys.executable, "start.py", url], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "20"
    return tmp_path, url


def continuum(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "continuum_py", *args], cwd=cwd, capture_output=True, text=True
    )


def test_runs_lists_the_run(app):
    cwd, url = app
    out = continuum("runs", "--url", url, "--json", cwd=cwd)
    assert out.returncode == 0, out.stderr
    (run,) = json.loads(out.stdout)["runs"]
    assert (run["run_id"], run["workflow"], run["status"]) == ("cli-1", "twice", "completed")
    table = continuum("runs", "--url", url, cwd=cwd).stdout.splitlines()
    assert table[0].split() == ["run", "workflow", "status", "created", "events", "note"]
    assert table[2].split()[:3] == ["cli-1", "twice", "completed"]


def test_history_then_replay_from_the_file(app):
    cwd, url = app
    out = continuum("history", "cli-1", "--url", url, cwd=cwd)
    assert out.returncode == 0, out.stderr
    events = json.loads(out.stdout)
    assert events[0]["kind"] == "RunStarted"
    assert events[-1] == {**events[-1], "kind": "RunCompleted", "result": 20}
    (cwd / "run.json").write_text(out.stdout)
    rep = continuum("replay", "run.json", "--import", "myflows", cwd=cwd)
    assert rep.returncode == 0, rep.stderr
    assert "run cli-1 (twice): 6 events, finished" in rep.stdout
    assert "returned 20" in rep.stdout


def test_unknown_run_is_a_clear_error(app):
    cwd, url = app
    out = continuum("history", "nope", "--url", url, cwd=cwd)
    assert out.returncode == 2
    assert "RunNotFound" in out.stderr and "nope" in out.stderr


# ---- runs: filters and pages ----


@pytest.fixture
def many_runs(tmp_path):
    """A journal with 7 runs of two workflows; their records, newest first."""
    url = f"sqlite:///{tmp_path}/many.db"

    async def start() -> list:
        async with Engine(url, worker=False) as engine:
            for n in range(4):
                await engine.start("billing", run_id=f"invoice-{n}")
            for n in range(3):
                await engine.start("mailing", run_id=f"mail-{n}")
            return list(await engine.list_runs())

    return tmp_path, url, asyncio.run(start())


def run_lines(out) -> list[str]:
    """The run ids of ``continuum runs --json``."""
    assert out.returncode == 0, out.stderr
    return [r["run_id"] for r in json.loads(out.stdout)["runs"]]


def test_runs_pages_with_the_cursor_it_prints(many_runs):
    cwd, url, records = many_runs
    listed, cursor, pages = [], None, 0
    while True:
        extra = ["--cursor", cursor] if cursor else []
        out = continuum("runs", "--url", url, "--limit", "3", "--json", *extra, cwd=cwd)
        assert out.returncode == 0, out.stderr
        listed += run_lines(out)
        pages += 1
        cursor = json.loads(out.stdout)["next_cursor"]
        hint = [line for line in out.stderr.splitlines() if line.startswith("more runs:")]
        assert hint == []  # --json: the cursor is in the JSON, stderr stays quiet
        if cursor is None:
            break
    assert pages == 3
    assert listed == [r.run_id for r in records]  # newest first, each once


def test_runs_filters(many_runs):
    cwd, url, records = many_runs

    def runs(*args):
        return continuum("runs", "--url", url, "--json", *args, cwd=cwd)

    out = runs("--workflow", "mailing", "--oldest-first")
    assert run_lines(out) == ["mail-0", "mail-1", "mail-2"]
    out = runs("--id-prefix", "invoice-", "--status", "pending")
    assert run_lines(out) == ["invoice-3", "invoice-2", "invoice-1", "invoice-0"]
    assert run_lines(runs("--prefix", "mail-")) == ["mail-2", "mail-1", "mail-0"]  # older name
    since = dt.datetime.fromtimestamp(records[-1].created_at, dt.UTC).isoformat()
    out = runs("--since", since, "--until", "2999-01-01")
    assert run_lines(out) == [
        r.run_id for r in records if r.created_at >= dt.datetime.fromisoformat(since).timestamp()
    ]
    out = runs("--until", "2000-01-01T00:00:00+01:00")
    assert run_lines(out) == []
    # Times ago: every run was made within the last hour, none more than a week ago.
    assert run_lines(runs("--since", "1h")) == [r.run_id for r in records]
    assert run_lines(runs("--since", "1h30m", "--until", "0s")) == [r.run_id for r in records]
    assert run_lines(runs("--until", "1w")) == []
    empty = continuum("runs", "--url", url, "--until", "2d", cwd=cwd)
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", "no runs match\n")


def test_runs_json_carries_the_next_cursor(many_runs):
    cwd, url, records = many_runs
    out = continuum("runs", "--url", url, "--limit", "5", "--json", cwd=cwd)
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)
    assert [r["run_id"] for r in first["runs"]] == [r.run_id for r in records[:5]]
    assert first["runs"][0]["workflow"] == records[0].workflow
    assert first["runs"][0]["status"] == "pending"
    assert first["next_cursor"]
    out = continuum(
        "runs", "--url", url, "--limit", "5", "--json", "--cursor", first["next_cursor"], cwd=cwd
    )
    second = json.loads(out.stdout)
    assert [r["run_id"] for r in second["runs"]] == [r.run_id for r in records[5:]]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--since", "yesterday"], "--since"),
        (["--since", "2x"], "a time ago such as 2h"),
        (["--until", "2025-13-01"], "--until"),
        (["--limit", "0"], "limit"),
        (["--limit", "ten"], "--limit"),
        (["--cursor", "garbage"], "cursor"),
        (["--workflow", ""], "workflow"),
        (["--since", "2025-02-01", "--until", "2025-01-01"], "created_after"),
    ],
)
def test_runs_bad_options_are_one_line_errors(many_runs, args, named):
    cwd, url, _ = many_runs
    out = continuum("runs", "--url", url, *args, cwd=cwd)
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert named in out.stderr and "Traceback" not in out.stderr


def test_runs_cursor_with_other_filters_is_refused(many_runs):
    cwd, url, _ = many_runs
    out = continuum("runs", "--url", url, "--limit", "2", "--json", cwd=cwd)
    cursor = json.loads(out.stdout)["next_cursor"]
    out = continuum("runs", "--url", url, "--workflow", "billing", "--cursor", cursor, cwd=cwd)
    assert out.returncode == 2
    assert out.stdout == ""
    assert "same status, workflow" in out.stderr and len(out.stderr.splitlines()) == 1
