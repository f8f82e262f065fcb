"""Smoke test of benchmarks/head_to_head.py: tiny sizes, continuum_py only, no Postgres.

The numbers mean nothing at these sizes; the test checks that the one command runs
every workload in fresh processes, prints its table and its JSON, and skips DBOS
Transact with a line saying so when it cannot be imported (CI installs `.[dev]` only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_quick_run_measures_continuum_and_skips_an_unimportable_dbos(tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "dbos"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('simulated: not installed')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "fake")}
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "head_to_head.py"),
        "--quick",
        "--dir",
        str(tmp_path),
        "--configs",
        "continuum:memory",
        "continuum:sqlite",
        "dbos:sqlite",
        "--steps",
        "20",
        "--workflows",
        "5",
        "--concurrent-workflows",
        "60",
        "--history-steps",
        "30",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DBOS Transact is not importable" in proc.stderr
    assert "3-step workflows/s, 50 at a time" in proc.stderr  # the table
    doc = json.loads(proc.stdout)
    assert doc["params"]["configs"] == ["continuum:memory", "continuum:sqlite"]
    assert "dbos:sqlite" in doc["params"]["skipped"]
    figures = doc["summary"]["figures"]
    for config in ("continuum:memory", "continuum:sqlite"):
        assert figures[config]["us_per_step"] > 0
        assert figures[config]["seq_per_s"] > 0
        assert figures[config]["conc_per_s"] > 0
        assert doc["summary"]["peak_rss_mb"][config] > 0
    assert figures["continuum:sqlite"]["kill9_to_first_step_ms"] > 0
    assert figures["continuum:memory"]["replay_memory_us_per_event"] > 0
    assert doc["durability"]["continuum:sqlite"] == {
        "sqlite_journal_mode": "wal",
        "sqlite_synchronous": "FULL",
    }
    assert doc["summary"]["yardsticks"]["fsync_floor_us"] > 0
    assert doc["targets"]["sqlite_step_over_fsync_floor"]["met"] in (True, False)
