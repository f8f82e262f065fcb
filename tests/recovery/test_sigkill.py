"""Kill -9 a worker process at seeded points; the run still finishes exactly once.

A child process (crash_worker.py) drives a 200-step workflow on a SQLite
journal. Each step appends "position attempt" to a side-effect log (fsync'd)
before it returns. The parent SIGKILLs the child at seeded points, starts a
fresh one (same worker id, so it reclaims the run at once), and lets the last
one finish. The journal and the side-effect log must then agree with the
guarantees: every step recorded exactly once, nothing recorded lost, and a
step body repeated only when it was in flight at a kill, with a higher attempt.

Seeds: CONTINUUM_CRASH_SEEDS="1,2,3" runs other seeds (default below).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from continuum_py import Engine, Registry
from continuum_py.events import RunCompleted, RunStarted, StepCompleted, StepScheduled

WORKER = Path(__file__).with_name("crash_worker.py")
ROUNDS, FAN = 40, 4  # 40 x (1 sequential + 4 gathered) = 200 steps
STEPS = ROUNDS * (FAN + 1)
KILLS = 16
STARTUP_KILLS = 4
RUN_ID = "crash-run"
SEEDS = [int(s) for s in os.environ.get("CONTINUUM_CRASH_SEEDS", "20240917,7").split(",")]


def expected_result(rounds: int, fan: int) -> dict[str, int]:
    """The workflow's answer, computed without the engine."""
    mod = 1_000_003
    acc = 1
    for r in range(rounds):
        acc = (acc * 31 + r + 7) % mod
        acc = (acc + sum(r * 100 + k * k for k in range(fan)) * (r + 1)) % mod
    return {"acc": acc, "steps": rounds * (fan + 1)}


def is_sequential(position: int) -> bool:
    return (position - 1) % (FAN + 1) == 0


@dataclass
class KillPoint:
    kind: str  # "sequential" or "gather": the kind of step the kill aims at; or "startup"
    offset: int  # aim at the first such step at least `offset` past what was logged before
    delay: float  # seconds to wait after that step's side effect ("startup": after the spawn)


@dataclass
class Kill:
    point: KillPoint
    target: int  # the position the kill aimed at (0 for a startup kill)
    log_lines: int  # side-effect lines when the process was dead
    history: list = field(repr=False)
    in_flight: dict[int, int] = field(default_factory=dict)  # position -> newest attempt


def kill_plan(rng: random.Random) -> list[KillPoint]:
    kinds = ["sequential"] * (KILLS // 2) + ["gather"] * (KILLS - KILLS // 2)
    rng.shuffle(kinds)
    plan = []
    for kind in kinds:
        # Half the kills land right after a side effect (before its result is recorded).
        delay = 0.0 if rng.random() < 0.5 else round(rng.uniform(0, 0.004), 4)
        plan.append(KillPoint(kind, rng.randint(1, 7), delay))
    # Some restarts are killed too, by time: while importing, reclaiming, replaying
    # or re-running what was in flight.
    for i in sorted(rng.sample(range(KILLS), STARTUP_KILLS), reverse=True):
        plan.insert(i + 1, KillPoint("startup", 0, round(rng.uniform(0.05, 0.25), 3)))
    return plan


def read_log(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    text = path.read_text()
    assert text == "" or text.endswith("\n"), f"torn side-effect line: {text[-20:]!r}"
    return [(int(p), int(a)) for p, a in (line.split() for line in text.splitlines())]


def read_history(db: Path, run_id: str = RUN_ID) -> list:
    async def go() -> list:
        async with Engine(f"sqlite:///{db}", worker=False, registry=Registry()) as e:
            return await e.history(run_id)

    return asyncio.run(go())


def in_flight(history: list) -> dict[int, int]:
    scheduled = {e.position: e.attempt for e in history if isinstance(e, StepScheduled)}
    done = {e.position for e in history if isinstance(e, StepCompleted)}
    return {p: a for p, a in scheduled.items() if p not in done}


class Children:
    """Starts worker processes and makes sure none outlives the test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, n: int) -> subprocess.Popen[bytes]:
        argv = [sys.executable, str(WORKER), "crash", str(self.tmp / "journal.db")]
        argv += [str(self.tmp / "effects.log"), RUN_ID, str(ROUNDS), str(FAN)]
        with (
            (self.tmp / f"gen{n}.out").open("wb") as out,
            (self.tmp / f"gen{n}.err").open("wb") as err,
        ):
            proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=self.tmp)
        self.procs.append(proc)
        return proc

    def output(self, n: int) -> tuple[str, str]:
        return (self.tmp / f"gen{n}.out").read_text(), (self.tmp / f"gen{n}.err").read_text()

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


def wait_and_kill(proc: subprocess.Popen[bytes], log: Path, start: int, point: KillPoint) -> int:
    """Poll the side-effect log until this generation reaches the point, then SIGKILL.

    Returns the position aimed at (0 for a startup kill).
    """
    done_before = max((p for p, _ in read_log(log)[:start]), default=0)
    # Never aim at the last rounds, so every kill lands before the run ends.
    cap = STEPS - 4 * (FAN + 1)
    target = min(done_before + point.offset, cap) if point.kind != "startup" else 0
    wanted = is_sequential if point.kind == "sequential" else lambda p: not is_sequential(p)
    began = time.monotonic()
    while True:
        new = read_log(log)[start:]
        if point.kind == "startup":
            if time.monotonic() - began >= point.delay or any(p >= cap for p, _ in new):
                break
        elif any(p >= target and wanted(p) for p, _ in new):
            if point.delay:
                time.sleep(point.delay)
            break
        if proc.poll() is not None:
            return target  # exited on its own; the caller sees the return code
        assert time.monotonic() - began < 30, f"no progress to {point} in 30s"
        time.sleep(0.0005)
    os.kill(proc.pid, signal.SIGKILL)
    return target


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed={s}")
def test_sigkill_at_seeded_points_loses_nothing_and_repeats_only_in_flight_steps(tmp_path, seed):
    rng = random.Random(seed)
    plan = kill_plan(rng)
    log, db = tmp_path / "effects.log", tmp_path / "journal.db"
    children = Children(tmp_path)
    kills: list[Kill] = []
    began = time.monotonic()
    try:
        for n, point in enumerate(plan):
            proc = children.spawn(n)
            target = wait_and_kill(proc, log, kills[-1].log_lines if kills else 0, point)
            rc = proc.wait(timeout=10)
            assert rc == -signal.SIGKILL, (
                f"seed {seed}: generation {n} ended with {rc} before kill {point}; "
                f"output: {children.output(n)}"
            )
            history = read_history(db)
            kills.append(Kill(point, target, len(read_log(log)), history, in_flight(history)))
        final = children.spawn(len(plan))
        assert final.wait(timeout=30) == 0, children.output(len(plan))
        result = msgspec.json.decode(children.output(len(plan))[0])
    finally:
        children.cleanup()
    elapsed = time.monotonic() - began

    lines = read_log(log)
    history = read_history(db)
    print(f"seed={seed} kills={len(kills)} log_lines={len(lines)} elapsed={elapsed:.2f}s")
    for k in kills:
        print(
            f"  {k.point.kind:10} target={k.target:3} delay={k.point.delay * 1000:5.1f}ms "
            f"log_lines={k.log_lines:3} in_flight={k.in_flight}"
        )

    # The answer is right.
    assert result == expected_result(ROUNDS, FAN)

    # The journal: seqs 1..N, each step completed exactly once, positions 1..n.
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert isinstance(history[0], RunStarted) and isinstance(history[-1], RunCompleted)
    completed = {e.position: e.attempt for e in history if isinstance(e, StepCompleted)}
    per_position = Counter(e.position for e in history if isinstance(e, StepCompleted))
    assert set(per_position.values()) == {1}, "a step was completed twice"
    assert sorted(completed) == list(range(1, STEPS + 1))
    for p, attempt in completed.items():
        tried = [e.attempt for e in history if isinstance(e, StepScheduled) and e.position == p]
        assert tried == list(range(1, attempt + 1)), f"position {p} scheduled {tried}"

    # No recorded event was lost: what the journal held at each kill is a prefix of the end.
    for k in kills:
        assert history[: len(k.history)] == k.history
        assert len(k.in_flight) <= FAN

    # The side-effect log against the journal, generation by generation.
    bounds = [0, *(k.log_lines for k in kills), len(lines)]
    before: dict[int, int] = {}  # position -> attempt, for what earlier generations logged
    repeated: list[tuple[int, int, int]] = []
    for gen in range(len(bounds) - 1):
        chunk = lines[bounds[gen] : bounds[gen + 1]]
        prev = kills[gen - 1] if gen else None
        done = {e.position for e in prev.history if isinstance(e, StepCompleted)} if prev else set()
        flying = prev.in_flight if prev else {}
        positions = [p for p, _ in chunk]
        assert len(positions) == len(set(positions)), f"gen {gen} ran a step twice: {chunk}"
        # A body runs only once its StepScheduled is durable: the journal had it at the kill.
        ended = kills[gen].history if gen < len(kills) else history
        scheduled = {(e.position, e.attempt) for e in ended if isinstance(e, StepScheduled)}
        assert set(chunk) <= scheduled, f"gen {gen} ran {set(chunk) - scheduled} unscheduled"
        for p, attempt in chunk:
            assert p not in done, f"gen {gen} re-ran position {p}, completed before the kill"
            # A step in flight at the kill runs again with the next attempt; others are new.
            assert attempt == flying.get(p, 0) + 1, f"gen {gen}: position {p} attempt {attempt}"
            if p in before:
                assert p in flying and attempt > before[p]
                repeated.append((gen, p, attempt))
            before[p] = attempt
    print(f"  steps whose body ran again (generation, position, attempt): {repeated}")
    # The run that counted is the last one logged, and every recorded result was logged.
    assert before == completed

    # Both paths were crashed, and some step bodies really ran again after a crash.
    assert any(len(k.in_flight) >= 2 for k in kills), "no kill hit a gather in flight"
    assert any(is_sequential(p) for k in kills for p in k.in_flight), "no sequential step hit"
    assert repeated, "no kill landed between a side effect and its record"
