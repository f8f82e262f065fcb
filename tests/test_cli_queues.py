"""`continuum queues`, a queued run in `continuum show`, and `continuum worker --queue`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from test_cli_inspect import continuum, one_line_error, reg, url  # noqa: F401 - fixtures

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
