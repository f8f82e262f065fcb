"""The `continuum` command: list runs, dump a history, replay it against code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


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
    out = continuum("runs", "--url", url, cwd=cwd)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\t")[:3] == ["cli-1", "twice", "completed"]


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
