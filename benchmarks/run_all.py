"""Run every benchmark, one subprocess each, and print one combined JSON document.

Usage: python benchmarks/run_all.py [--quick] [--dir DIR] [--only NAME ...] [--out FILE]

Each benchmark's progress goes to stderr; stdout carries only the combined JSON.
The benchmarks run one after another, never at the same time, so they do not
compete for the CPU or the disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import emit, meta, note, parser

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "fsync",
    "step_overhead",
    "replay",
    "replay_all",
    "resume",
    "failover",
    "workers",
    "plan",
    "queues",
]


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers, next to their targets."""
    out: dict[str, Any] = {}
    ok = {k: v for k, v in results.items() if "error" not in v}
    if "fsync" in ok:
        out["fsync_floor_us"] = ok["fsync"]["results"]["floor_us"]
    if "step_overhead" in ok:
        r = ok["step_overhead"]
        t = r["targets"]
        out["step_overhead"] = {
            "fsync_floor_us_same_run": r["fsync"]["floor_us"],
            "memory_us_per_step": t["memory_us_per_step"]["measured"],
            "memory_target_met": t["memory_us_per_step"]["met"],
            "sqlite_us_per_step": t["sqlite_us_per_step_over_fsync"]["sqlite_us_per_step"],
            "sqlite_over_fsync": t["sqlite_us_per_step_over_fsync"]["ratio"],
            "sqlite_target_met": t["sqlite_us_per_step_over_fsync"]["met"],
            "memory_gather_us_per_step": r["results"]["memory_gather"]["us_per_step_median"],
            "sqlite_gather_us_per_step": r["results"]["sqlite_gather"]["us_per_step_median"],
        }
    if "replay" in ok:
        out["replay_us_per_event"] = {
            name: {"measured": t["measured"], "met": t["met"]}
            for name, t in ok["replay"]["targets"].items()
        }
    if "replay_all" in ok:
        out["replay_all_runs_per_second"] = {
            journal: r["runs_per_second_loop"] for journal, r in ok["replay_all"]["results"].items()
        }
    if "resume" in ok:
        same = ok["resume"]["results"]["same_worker"]
        out["resume_same_worker"] = {
            "spawn_to_first_step_ms": same["spawn_to_first_step_ms_median"],
            "split_ms": same["split_ms_median"],
            "lease_ttl_s": ok["resume"]["params"]["lease_ttl_s"],
        }
        other = ok["resume"]["results"].get("other_worker")
        if other is not None:
            out["resume_other_worker_ms"] = other["spawn_to_first_step_ms"]
    if "failover" in ok:
        out["failover_kill_to_first_event_ms"] = {
            journal: r["first_event_ms"]["median"]
            for journal, r in ok["failover"]["results"].items()
            if "first_event_ms" in r
        }
    if "workers" in ok:
        # Per configuration (journal, worker processes): medians over the repeats.
        out["workers"] = {
            name: None
            if s is None
            else {
                "steps_per_s": s["steps_per_s_busy"],
                "runs_per_s": s["runs_per_s_busy"],
                "steps_per_s_min_max": s["steps_per_s_busy_min_max"],
            }
            for name, s in ok["workers"]["summary"].items()
        }
    if "plan" in ok:
        out["plan_over_plain_step"] = ok["plan"]["results"]["targets"]
    if "queues" in ok and "targets" in ok["queues"]:
        out["queues_over_plain"] = ok["queues"]["targets"]
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    p.add_argument("--out", help="also write the combined JSON to this file")
    args = p.parse_args()
    extra = (["--quick"] if args.quick else []) + (["--dir", args.dir] if args.dir else [])
    extra += ["--keep"] if args.keep else []
    results: dict[str, Any] = {}
    t_all = time.perf_counter()
    for name in args.only or BENCHMARKS:
        note(f"== {name}")
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / f"bench_{name}.py"), *extra],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        took = round(time.perf_counter() - t0, 1)
        if proc.returncode != 0:
            results[name] = {"error": f"exit status {proc.returncode}", "seconds": took}
            continue
        try:
            results[name] = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            results[name] = {"error": f"not JSON: {exc}", "stdout": proc.stdout[-2000:]}
            continue
        results[name]["seconds"] = took
    doc = {
        "benchmark": "all",
        "meta": meta(),
        "seconds": round(time.perf_counter() - t_all, 1),
        "summary": _summary(results),
        "results": results,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    emit(doc)
    if any("error" in r for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
