"""Kill -9 a process whose SQLite writes share transactions: no acknowledged write is lost.

The child (group_writer.py) starts runs 50 at a time, so their transactions
group into one commit, and one at a time between waves, so some commit on the
event loop's own thread. It prints each run's id once its start returned. The
parent SIGKILLs it at seeded moments; every run the child acknowledged must be
in the journal, whole (its row and its first event), and nothing half-written.
A second round has the child checkpoint its WAL every few commits, so kills
also land during checkpoints; the file must then pass SQLite's integrity check.
A third kills the child within its first half second, while it opens the file
and sizes its WAL (zeros written past the WAL's end) or makes its first commits.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from continuum_py.adapters.sqlite import SQLiteJournal
from continuum_py.journal import NewRun, StoredEvent

CHILD = Path(__file__).with_name("group_writer.py")


def _run_until_killed(
    db: Path, prefix: str, acks: int, delay: float, every: int | None
) -> set[str]:
    """Start the child, SIGKILL it ``delay`` s after its ``acks``-th acknowledgement."""
    extra = [] if every is None else [str(every)]
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), prefix, *extra], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while len(seen) < acks and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.add(line.strip())
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate()
    seen.update(x for x in rest.split() if x)  # printed before the kill landed
    assert len(seen) >= acks, "the child did not get going"
    return seen


async def _check(db: Path, acked: set[str]) -> None:
    # The journal opens first: it recovers the WAL the child left behind, sizes
    # it (past those frames, before they are copied into the file) and commits.
    async with SQLiteJournal(str(db)) as j:
        check = f"check-{len(acked)}-{time.monotonic_ns()}"
        first = StoredEvent(run_id=check, seq=1, kind="RunStarted", schema=1, data=b"{}")
        await j.start_run(NewRun(run_id=check, workflow="w", first_event=first))
        runs = {r.run_id for r in await j.list_runs(limit=100_000)}
        assert acked <= runs, f"acknowledged but lost: {sorted(acked - runs)[:5]}"
        for run_id in runs:  # every run landed whole: its row and its first event
            assert [e.seq for e in await j.load(run_id)] == [1]
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# None: the journal's own checkpoint schedule; 2: a checkpoint after every other
# commit at first (then every 8 or more), so the kills also hit checkpoints.
# "early": killed 0.1-0.5 s after it was spawned, acknowledged or not.
@pytest.mark.parametrize("every", [None, 2, "early"])
def test_acknowledged_grouped_writes_survive_sigkill(
    tmp_path: Path, every: int | str | None
) -> None:
    rng = random.Random(20261207)
    db = tmp_path / "j.db"
    acked: set[str] = set()
    for i in range(4):
        acks, delay = rng.randint(20, 400), rng.uniform(0, 0.02)
        if every == "early":
            acks, delay = 0, rng.uniform(0.1, 0.5)
        checkpoints = every if isinstance(every, int) else None
        acked |= _run_until_killed(db, f"k{i}-", acks, delay, checkpoints)
        asyncio.run(_check(db, acked))
