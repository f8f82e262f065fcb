"""`continuum schedules`: the table, --json, --pause/--resume/--delete, and its errors."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from continuum_py import Context, Engine, Registry, workflow
from continuum_py.testing import VirtualClock

SCRIPT = str(Path(sys.executable).with_name("continuum"))
reg = Registry()


@workflow(registry=reg, name="cli_report")
async def report(ctx: Context, region: str, at: dt.datetime) -> str:
    return region


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=60)


async def _declare(url: str) -> None:
    clock = VirtualClock(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), auto_advance=False)
    async with Engine(url, registry=reg, worker=False, clock=clock) as eng:
        await eng.schedule("nightly", report, "eu", cron="0 3 * * *", tz="Europe/Paris")


async def test_schedules_lists_pauses_resumes_and_deletes(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    await _declare(url)
    table = cli("schedules", "--url", url)
    assert table.returncode == 0, table.stderr
    assert "nightly" in table.stdout and "0 3 * * *" in table.stdout
    assert "2026-03-01T03:00:00+01:00" in table.stdout  # the next fire, in its zone
    listed = json.loads(cli("schedules", "--json", "--url", url).stdout)["schedules"]
    assert [(s["name"], s["workflow"], s["paused"], s["fired"], s["skipped"]) for s in listed] == [
        ("nightly", "cli_report", False, 0, 0)
    ]
    assert listed[0]["next_fire"] == "2026-03-01T03:00:00+01:00"
    paused = cli("schedules", "--pause", "nightly", "--url", url)
    assert (paused.returncode, paused.stdout) == (0, "schedule nightly paused\n")
    assert json.loads(cli("schedules", "--json", "--url", url).stdout)["schedules"][0]["paused"]
    assert cli("schedules", "--resume", "nightly", "--url", url).returncode == 0
    assert cli("schedules", "--delete", "nightly", "--url", url).returncode == 0
    assert cli("schedules", "--url", url).stdout == "no schedules\n"


async def test_schedules_errors_are_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    await _declare(url)
    for flag in ("--pause", "--resume", "--delete"):
        bad = cli("schedules", flag, "nope", "--url", url)
        assert bad.returncode == 2 and bad.stdout == ""
        assert bad.stderr == "continuum: ScheduleNotFound: no schedule named 'nope'\n"
    missing = cli("schedules", "--url", f"sqlite:///{tmp_path / 'absent.db'}")
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
    assert not (tmp_path / "absent.db").exists()
