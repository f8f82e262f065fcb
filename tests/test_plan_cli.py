"""`continuum steps` and `show` show a plan run's branches (SQLite and Postgres).

The commands run as the installed console script, with no plan code loaded:
what they show comes from the run's history alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from continuum_py import Engine, Plan, PlanFailed, PlanState, Registry

SCRIPT = str(Path(sys.executable).with_name("continuum"))


async def ok(state: PlanState) -> str:
    return "ok"


async def broken(state: PlanState) -> str:
    raise ValueError("boom")


async def undo(state: PlanState) -> None:
    return None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path) -> str:
    if request.param == "postgres":
        dsn, schema = request.getfixturevalue("pg_schema")
        url = f"{dsn}?schema={schema}_{uuid.uuid4().hex[:8]}"
    else:
        url = f"sqlite:///{tmp_path}/j.db"
    reg = Registry()
    plan = Plan("shown", registry=reg)
    plan.add("net", ok, rollback=undo)
    plan.add("app", broken, after=["net"])
    plan.add("dns", ok, after=["app"])

    async def main() -> None:
        async with Engine(url, registry=reg) as engine:
            with pytest.raises(PlanFailed):
                await (await engine.start(plan, run_id="plan-1")).result(timeout=30)

    asyncio.run(main())
    return url


def continuum(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONTINUUM_URL"}
    return subprocess.run([SCRIPT, *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_steps_lists_each_branch_with_its_status_and_error(url, tmp_path):
    out = continuum("steps", "plan-1", "--url", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    table = out.stdout.split("\n\n")[1].splitlines()
    assert table[0].split() == ["branch", "status", "attempts", "after", "errors"]
    assert table[2].split() == ["net", "rolled_back", "1"]
    assert table[3].split() == ["app", "failed", "1", "net", "error:", "ValueError:", "boom"]
    assert table[4].split() == ["dns", "skipped", "0", "app"]

    data = json.loads(continuum("steps", "plan-1", "--url", url, "--json", cwd=tmp_path).stdout)
    assert [(b["branch"], b["status"]) for b in data["branches"]] == [
        ("net", "rolled_back"),
        ("app", "failed"),
        ("dns", "skipped"),
    ]
    assert [s["step"] for s in data["steps"]] == [
        "shown/net/apply",
        "shown/app/apply",
        "shown/net/rollback",
    ]


def test_show_names_the_branches_and_the_plan_error(url, tmp_path):
    out = continuum("show", "plan-1", "--url", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "PlanFailed: plan 'shown' branch 'app' failed (ValueError: boom)" in out.stdout
    assert "net: rolled_back" in out.stdout and "dns: skipped" in out.stdout
    info = json.loads(continuum("show", "plan-1", "--url", url, "--json", cwd=tmp_path).stdout)
    assert [b["status"] for b in info["branches"]] == ["rolled_back", "failed", "skipped"]
