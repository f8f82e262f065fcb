"""``continuum import`` killed with SIGKILL at any moment leaves every run of the file or none.

The file holds a run and 39 child runs of 301 events each. The import runs as
the console script in a subprocess, killed after a delay spread over how long
a whole import takes; then the journal holds all 40 runs with every event, or
no run at all, and importing the file again completes it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from continuum_py import Engine
from continuum_py._transfer import FORMAT, FORMAT_VERSION, ExportFile, _exported, _layout
from continuum_py.events import SCHEMA_VERSION
from continuum_py.journal import RunRecord, RunStatus
from continuum_py.testing._journal_helpers import new_run, step_events

SCRIPT = str(Path(sys.executable).with_name("continuum"))
RUNS, STEPS = 40, 150


def big_export() -> bytes:
    runs = []
    for n in range(RUNS):
        run_id = "big" if n == 0 else f"big.{n}"
        rows = [new_run(run_id).first_event]
        for position in range(1, STEPS + 1):
            rows += step_events(run_id, len(rows) + 1, position, result=b'"%s"' % (b"x" * 200))
        rec = RunRecord(
            run_id=run_id,
            workflow="wf",
            status=RunStatus.PARKED,
            created_at=1.0 + n,
            updated_at=1.0 + n,
            last_seq=len(rows),
            parent_run_id=None if n == 0 else "big",
        )
        runs.append(_exported(rec, rows, None))  # type: ignore[arg-type]
    return _layout(
        ExportFile(
            format=FORMAT, version=FORMAT_VERSION, event_schema=SCHEMA_VERSION, run_id="big",
            runs=runs,
        )
    )  # fmt: skip


async def held(url: str) -> dict[str, int]:
    """Each run the journal holds, with how many events."""
    async with Engine(url, worker=False) as engine:
        runs = await engine.list_runs(limit=1000)
        return {r.run_id: len(await engine.history(r.run_id)) for r in runs}


def _import(path: Path, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [SCRIPT, "import", str(path), "--url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url_for(request, tmp_path):
    def make(n: int) -> str:
        if request.param == "postgres":
            dsn, schema = request.getfixturevalue("pg_schema")
            return f"{dsn}?schema={schema}_{uuid.uuid4().hex[:8]}"
        return f"sqlite:///{tmp_path}/j{n}.db"

    return make


def test_an_import_killed_at_any_moment_leaves_all_or_nothing(tmp_path, url_for):
    path = tmp_path / "big.json"
    path.write_bytes(big_export())
    whole = {"big" if n == 0 else f"big.{n}": 1 + 2 * STEPS for n in range(RUNS)}
    url = url_for(0)
    began = time.monotonic()
    proc = _import(path, url)
    assert proc.wait(timeout=120) == 0
    took = time.monotonic() - began
    assert asyncio.run(held(url)) == whole
    for n in range(1, 9):
        url = url_for(n)
        proc = _import(path, url)
        time.sleep(took * (0.3 + 0.7 * n / 8))  # most of the time before: starting Python
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        found = asyncio.run(held(url))  # opened read-write: made if the kill came first
        assert found in ({}, whole), f"kill {n}: a partial import: {len(found)} runs"
        if not found:
            again = _import(path, url)
            assert again.wait(timeout=120) == 0
            assert asyncio.run(held(url)) == whole
