"""Kill -9 a worker running lone steps one after another (the sequential fast path).

A child process (crash_worker.py, mode ``lone``) drives a 120-step workflow that
awaits one step at a time on a SQLite journal, so after its first step every
step is scheduled, run and recorded by the runner's sequential fast path
(``continuum_py._sequential``). Each step body appends "position attempt" to
a side-effect log (fsync'd) first. The parent SIGKILLs the child at seeded
points, right after a side effect or a moment later, starts a fresh one (same
worker id) and lets the last one finish. Then: the answer is right, every step
is recorded exactly once, nothing recorded at a kill is lost, a body ran only
once its ``StepScheduled`` was durable, and only the step in flight at a kill
ran again, with the next attempt.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest
import test_sigkill as base

from continuum_py.events import RunCompleted, StepCompleted, StepScheduled

STEPS, KILLS = 120, 8
RUN_ID = "lone-run"


def expected(steps: int) -> dict[str, int]:
    acc = 1
    for r in range(steps):
        acc = (acc * 31 + r + 7) % 1_000_003
    return {"acc": acc, "steps": steps}


def spawn(tmp: Path, n: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, str(base.WORKER), "lone", str(tmp / "journal.db")]
    argv += [str(tmp / "effects.log"), RUN_ID, str(STEPS)]
    with (tmp / f"gen{n}.out").open("wb") as out, (tmp / f"gen{n}.err").open("wb") as err:
        return subprocess.Popen(argv, stdout=out, stderr=err, cwd=tmp)


def history(db: Path) -> list:
    return base.read_history(db, RUN_ID)


@pytest.mark.slow
@pytest.mark.parametrize("seed", base.SEEDS, ids=lambda s: f"seed={s}")
def test_sigkill_during_lone_steps_loses_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    log, db = tmp_path / "effects.log", tmp_path / "journal.db"
    procs: list[subprocess.Popen[bytes]] = []
    kills: list[tuple[int, list]] = []  # (side-effect lines, history) at each kill
    try:
        for n in range(KILLS):
            proc = spawn(tmp_path, n)
            procs.append(proc)
            start = kills[-1][0] if kills else 0
            aim = rng.randint(2, 9)  # side effects of this generation before the kill
            delay = 0.0 if rng.random() < 0.5 else rng.uniform(0, 0.003)
            began = time.monotonic()
            while len(base.read_log(log)) - start < aim:
                assert proc.poll() is None, (n, (tmp_path / f"gen{n}.err").read_text())
                assert time.monotonic() - began < 30, f"no progress in generation {n}"
                time.sleep(0.0005)
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
            kills.append((len(base.read_log(log)), history(db)))
        final = spawn(tmp_path, KILLS)
        procs.append(final)
        assert final.wait(timeout=60) == 0, (tmp_path / f"gen{KILLS}.err").read_text()
        result = msgspec.json.decode((tmp_path / f"gen{KILLS}.out").read_text())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)

    assert result == expected(STEPS)
    events = history(db)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert isinstance(events[-1], RunCompleted)
    done = Counter(e.position for e in events if isinstance(e, StepCompleted))
    assert sorted(done) == list(range(1, STEPS + 1))
    assert set(done.values()) == {1}, "a step was completed twice"

    lines = base.read_log(log)
    bounds = [0, *(k[0] for k in kills), len(lines)]
    repeated = []
    for gen in range(len(bounds) - 1):
        chunk = lines[bounds[gen] : bounds[gen + 1]]
        before = kills[gen - 1][1] if gen else []
        after = kills[gen][1] if gen < len(kills) else events
        assert before == after[: len(before)], "an event recorded before a kill was lost"
        flying = base.in_flight(before)
        completed = {e.position for e in before if isinstance(e, StepCompleted)}
        scheduled = {(e.position, e.attempt) for e in after if isinstance(e, StepScheduled)}
        # A body runs only once its StepScheduled is durable (the journal held it at the kill).
        assert set(chunk) <= scheduled, f"gen {gen} ran {set(chunk) - scheduled} unscheduled"
        for p, attempt in chunk:
            assert p not in completed, f"gen {gen} re-ran position {p}, completed before the kill"
            assert attempt == flying.get(p, 0) + 1, f"gen {gen}: position {p} attempt {attempt}"
            if p in flying:
                repeated.append((gen, p, attempt))
        assert len(flying) <= 1, "lone steps: at most one in flight"
    print(f"seed={seed} steps whose body ran again (generation, position, attempt): {repeated}")
    assert repeated, "no kill landed between a side effect and its record"
