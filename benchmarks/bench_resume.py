"""How soon does a restarted worker carry on a run its crashed predecessor left?

A child process works through a long workflow on SQLite and is SIGKILLed
mid-run, its lease still valid for most of its TTL. Then a fresh process is
started with the same worker id; the time from just before spawning it to the
moment its first step body begins is measured and split into interpreter
start-up, imports, ``Engine.open`` (connect + reclaim the run's lease), and
load + replay + the first commit. The lease's remaining life at the restart is
reported beside it: the restarted worker reclaims its own run at once instead
of waiting for the lease to expire.

For contrast, the same crash is resumed by a worker with another id. Before
worker liveness it had to wait for the lease to lapse (a short TTL kept that
run brief); now the dead worker's file lock is gone, so it takes the run at
its first claim too (``bench_failover.py`` measures that takeover between two
live workers).

Usage: python benchmarks/bench_resume.py [--quick] [--dir DIR] [--kill-after STEPS]
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import emit, meta, note, parser, stats_us, workdir

CHILD = Path(__file__).resolve().parent / "_resume_child.py"


def _spawn(args: list[str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args], text=True, stdout=subprocess.PIPE, **kw
    )


def _crash(db: Path, progress: Path, kill_after: int, ttl: float, timeout: float) -> None:
    """Run the workflow in a child and SIGKILL it once ``kill_after`` steps have started."""
    progress.write_bytes(b"0\n")
    child = _spawn(
        [
            "--mode",
            "run",
            "--db",
            str(db),
            "--worker",
            "w1",
            "--ttl",
            str(ttl),
            "--progress",
            str(progress),
        ]
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            text = progress.read_bytes().strip()
            if text and int(text) >= kill_after:
                break
            if child.poll() is not None:
                raise RuntimeError(f"the workflow child exited early ({child.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workflow child did not reach step {kill_after} in time")
            time.sleep(0.002)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def _run_row(db: Path) -> dict[str, Any]:
    """The run's row and the journal clock, read with the stdlib driver (no engine)."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT status, lease_owner, lease_expires_at, last_seq, "
            "(julianday('now') - 2440587.5) * 86400.0 FROM runs WHERE run_id = 'resume-bench'"
        ).fetchone()
    finally:
        conn.close()
    status, owner, expires, last_seq, now = row
    return {
        "status": status,
        "lease_owner": owner,
        "last_seq": last_seq,
        "lease_remaining_s": round(expires - now, 3) if expires is not None else None,
    }


def _resume(db: Path, worker: str, timeout: float) -> dict[str, Any]:
    """Start the resuming process; time from just before the spawn to its first step body."""
    t_spawn = time.monotonic()
    child = _spawn(
        ["--mode", "resume", "--db", str(db), "--worker", worker, "--timeout", str(timeout)]
    )
    out, _ = child.communicate(timeout=timeout + 30)
    if child.returncode != 0:
        raise RuntimeError(f"the resuming child failed ({child.returncode})")
    r = json.loads(out.strip().splitlines()[-1])
    ms = 1e3
    return {
        "spawn_to_first_step_ms": round((r["t_first_step"] - t_spawn) * ms, 2),
        "split_ms": {
            "interpreter_startup": round((r["t_main"] - t_spawn) * ms, 2),
            "imports": round((r["t_imported"] - r["t_main"]) * ms, 2),
            "engine_open_and_reclaim": round((r["t_engine_opened"] - r["t_imported"]) * ms, 2),
            # Load + replay + the commit of the step's next attempt; for a worker that
            # is not the lease's owner, also the wait until the lease lapses.
            "after_open_to_first_step": round((r["t_first_step"] - r["t_engine_opened"]) * ms, 2),
        },
        "first_step": {"position": r["position"], "attempt": r["attempt"]},
    }


def _startup_baselines(repeats: int) -> dict[str, Any]:
    """Bare interpreter start, and start + imports (subprocess wall time), to split start-up."""
    out = {}
    for name, code in (
        ("python_-c_pass", "pass"),
        ("python_import_asyncio", "import asyncio"),
        ("python_import_dependencies", "import asyncio, msgspec, structlog, aiosqlite"),
        ("python_import_continuum_sqlite", "import continuum_py, continuum_py.adapters.sqlite"),
    ):
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            samples.append(time.perf_counter() - t0)
        out[name] = stats_us(samples)
    return out


def _scenario(folder: Path, i: int, worker: str, ttl: float, kill_after: int) -> dict[str, Any]:
    db = folder / f"resume-{worker}-{i}.db"
    progress = folder / f"progress-{worker}-{i}"
    _crash(db, progress, kill_after, ttl, timeout=300)
    before = _run_row(db)
    res = _resume(db, worker, timeout=ttl + 60)
    res["at_restart"] = before
    res["lease_ttl_s"] = ttl
    remaining = before["lease_remaining_s"]
    if remaining is not None:
        res["waited_for_lease_expiry"] = res["spawn_to_first_step_ms"] / 1e3 >= remaining
    return res


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return round(statistics.median(r["split_ms"][key] for r in runs), 2)

    return {
        "repeats": len(runs),
        "spawn_to_first_step_ms_median": round(
            statistics.median(r["spawn_to_first_step_ms"] for r in runs), 2
        ),
        "split_ms_median": {k: med(k) for k in runs[0]["split_ms"]},
        "runs": runs,
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--kill-after", type=int, default=None, help="steps before SIGKILL (2000)")
    p.add_argument("--ttl", type=float, default=30.0, help="lease TTL of the crashed worker")
    p.add_argument("--other-ttl", type=float, default=2.0, help="TTL in the other-worker case")
    p.add_argument("--repeats", type=int, default=None, help="crash/resume cycles (default 5)")
    p.add_argument("--no-other", action="store_true", help="skip the other-worker contrast")
    args = p.parse_args()
    kill_after = args.kill_after or (200 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 5)
    with workdir(args.dir, keep=args.keep) as folder:
        note("resume: start-up baselines")
        baselines = _startup_baselines(3 if args.quick else 10)
        same = []
        for i in range(repeats):
            note(f"resume: same worker, cycle {i + 1}/{repeats} (kill after {kill_after} steps)")
            same.append(_scenario(folder, i, "w1", args.ttl, kill_after))
            note(f"  first new step after {same[-1]['spawn_to_first_step_ms']} ms")
        results: dict[str, Any] = {"same_worker": _summary(same)}
        if not args.no_other:
            note(f"resume: another worker, lease TTL {args.other_ttl}s")
            other = _scenario(folder, 0, "w2", args.other_ttl, kill_after)
            # The crash was by w1; a w2 resume must wait for w1's lease.
            results["other_worker"] = other
        info = meta(folder)
    emit(
        {
            "benchmark": "resume",
            "question": "how soon does a restarted worker carry on a run its crashed "
            "predecessor left?",
            "meta": info,
            "params": {
                "kill_after_steps": kill_after,
                "lease_ttl_s": args.ttl,
                "other_worker_ttl_s": args.other_ttl,
                "repeats": repeats,
                "quick": args.quick,
                "engine_defaults": "snapshot_every=500, poll_interval=1.0",
            },
            "startup_baselines": baselines,
            "results": results,
        }
    )


if __name__ == "__main__":
    main()
