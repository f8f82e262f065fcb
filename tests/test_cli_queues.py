"""`continuum queues`, a queued run in `continuum show`, and `continuum worker --queue`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from test_cli_inspect import SCRIPT, continuum, one_line_error, reg, url  # noqa: F401 - fixtures

from continuum_py import Engine, Queue


def _queued(journal_url: str) -> None:
    async def main() -> None:
        async with Engine(journal_url, registry=reg, worker=False) as client:
            q = Queue("mail", concurrency=1, rate=(10, 60.0))
            for i in range(3):
                await client.start("kid", i, queue=q, run_id=f"m{i}", priority=i)
            await client.start("kid", 9, queue=Queue("other"), run_id="o1", dedup_key="k")
            await client.journal.claim("w1", ttl=30.0, limit=2)  # type: ignore[call-arg]

    asyncio.run(main())


def test_queues_lists_running_waiting_limit_and_rate_window(url, tmp_path: Path):  # noqa: F811
    _queued(url)
    out = continuum("queues", "--url", url, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    got = {q["name"]: q for q in json.loads(out.stdout)["queues"]}
    assert got["mail"] == {
        "name": "mail",
        "running": 1,
        "waiting": 2,
        "concurrency": 1,
        "per_worker": None,
        "rate": {"n": 10, "seconds": 60.0},
        "started_in_window": 1,
    }
    assert (got["other"]["running"], got["other"]["waiting"]) == (1, 0)
    table = continuum("queues", "--url", url, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "mail" in table.stdout and "1/10 per 60s" in table.stdout


def test_queues_on_a_journal_without_any_says_so(url, tmp_path: Path):  # noqa: F811
    async def make() -> None:
        async with Engine(url, registry=reg, worker=False):
            pass

    asyncio.run(make())
    out = continuum("queues", "--url", url, cwd=tmp_path)
    assert (out.returncode, out.stdout) == (0, "no queues\n"), out.stderr
    listed = continuum("queues", "--url", url, "--json", cwd=tmp_path)
    assert json.loads(listed.stdout) == {"queues": []}


def test_show_gives_a_waiting_runs_position_and_why(url, tmp_path: Path):  # noqa: F811
    _queued(url)
    out = continuum("show", "m2", "--url", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "mail (priority 2), waiting, position 2: concurrency limit: 1 of 1" in out.stdout
    shown = json.loads(continuum("show", "m1", "--url", url, "--json", cwd=tmp_path).stdout)
    assert shown["queue"]["position"] == 1 and not shown["queue"]["admitted"]
    started = continuum("show", "m0", "--url", url, cwd=tmp_path).stdout
    assert "mail (priority 0), started" in started


def test_worker_refuses_an_unknown_queue_in_one_line(url, tmp_path: Path):  # noqa: F811
    _queued(url)
    line = one_line_error(continuum("worker", "--url", url, "--queue", "nope", cwd=tmp_path))
    assert "unknown queue 'nope' for --queue (queues in the journal: mail, other)" in line


def test_worker_with_queue_admits_only_from_that_queue(tmp_path: Path):
    import os
    import signal
    import subprocess
    import time

    journal = f"sqlite:///{tmp_path}/j.db"
    log = str(tmp_path / "effects.log")

    async def start() -> None:
        async with Engine(journal, registry=reg, worker=False) as client:
            await client.start("mp_queued", log, 1, queue=Queue("mine"), run_id="mine-1")
            await client.start("mp_queued", log, 2, queue=Queue("other"), run_id="other-1")

    asyncio.run(start())
    recovery = str(Path(__file__).resolve().parent / "recovery")
    env = {**os.environ, "PYTHONPATH": recovery, "MP_WORKER_ID": "w"}
    argv = [SCRIPT, "worker", "--url", journal]
    argv += ["--import", "mp_flows", "--queue", "mine", "--poll-interval", "0.05"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)
    try:

        async def statuses() -> dict[str, str]:
            async with Engine(journal, registry=reg, worker=False) as client:
                return {r.run_id: r.status.value for r in await client.list_runs()}

        deadline = time.monotonic() + 30
        while asyncio.run(statuses())["mine-1"] != "completed":
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(0.3)  # several claim-loop turns
        assert asyncio.run(statuses())["other-1"] == "pending"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
