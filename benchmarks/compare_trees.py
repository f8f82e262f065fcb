"""Is one checkout slower than another? Run the benchmarks of both, alternating, and compare.

Usage: python benchmarks/compare_trees.py BEFORE_DIR AFTER_DIR [--rounds N] [--quick]

Each directory is a checkout of continuum_py (``git worktree add /tmp/before <commit>``).
Its own ``benchmarks/`` run with its own code (``PYTHONPATH`` set to it; a checkout whose
``continuum_py/adapters`` is missing gets a symlink to its ``adapters/``). The two trees take
turns, round after round, so drift of the machine's speed hits both alike; the figure to
quote is the median over rounds of the after/before ratio taken within each round.
Progress goes to stderr; stdout carries one JSON document.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import emit, meta, note, parser

H2H_CONFIGS = ["continuum:memory", "continuum:sqlite", "continuum:postgres"]

# benchmark: (script, extra arguments, how to pick its figures out of its JSON)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "step": ("bench_step_overhead.py", ["--repeats", "3"]),
    "replay": ("bench_replay.py", ["--repeats", "3"]),
    "workers": ("bench_workers.py", ["--runs", "500", "--repeats", "1", "--configs", "sqlite:1"]),
    # continuum_py's side of head_to_head.py (no DBOS): steps and whole workflows; Postgres
    # from $CONTINUUM_TEST_PG_DSN (skipped, with a line, when not reachable).
    "h2h": (
        "head_to_head.py",
        ["--rounds", "1", "--configs", *H2H_CONFIGS],
    ),
}
HIGHER_IS_BETTER = {"workers"}  # and every h2h figure per second (the key says so)


def _figures(name: str, doc: dict[str, Any]) -> dict[str, float]:
    if name == "h2h":
        f = doc["summary"]["figures"]
        got = {
            f"{c.split(':')[1]}_{k}": f[c][k]
            for c in H2H_CONFIGS
            if c in f
            for k in ("us_per_step", "seq_per_s", "conc_per_s")
        }
        for what in ("step", "3_step_workflow"):
            for c, n in doc.get(f"round_trips_per_{what}", {}).items():
                got[f"{c.split(':')[1]}_round_trips_per_{what}"] = n
        return got
    r = doc["results"]
    if name == "step":
        return {
            "memory_us_per_step": r["memory_sequential"]["us_per_step_median"],
            "memory_gather_us_per_step": r["memory_gather"]["us_per_step_median"],
            "sqlite_over_fsync": doc["targets"]["sqlite_us_per_step_over_fsync"]["ratio"],
        }
    if name == "replay":
        return {f"{k}_us_per_event": v["us_per_history_event"] for k, v in r.items()}
    return {f"{k}_steps_per_s": v["median"]["steps_per_s_busy"] for k, v in r.items()}


def _run(tree: Path, script: str, args: list[str], quick: bool) -> dict[str, Any]:
    adapters = tree / "continuum_py" / "adapters"
    if not adapters.exists():
        adapters.symlink_to(tree / "adapters")
    cmd = [sys.executable, f"benchmarks/{script}", *args, *(["--quick"] if quick else [])]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> None:
    p = parser(__doc__)
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    opts = p.parse_args()
    chosen = {k: v for k, v in BENCHMARKS.items() if not opts.only or k in opts.only}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {"before": [], "after": []} for name in chosen
    }
    for i in range(opts.rounds):
        for name, (script, args) in chosen.items():
            for side in ("before", "after"):
                note(f"round {i + 1}/{opts.rounds}: {name} on {side}")
                tree = getattr(opts, side).resolve()
                runs[name][side].append(_figures(name, _run(tree, script, args, opts.quick)))
    ratios: dict[str, dict[str, Any]] = {}
    for name, sides in runs.items():
        for key in sides["before"][0]:
            pairs = [a[key] / b[key] for a, b in zip(sides["after"], sides["before"], strict=True)]
            ratios[f"{name}.{key}"] = {
                "after_over_before_median": round(statistics.median(pairs), 3),
                "per_round": [round(x, 3) for x in pairs],
                "higher_is_better": name in HIGHER_IS_BETTER or key.endswith("per_s"),
            }
    emit(
        {
            "benchmark": "compare_trees",
            "meta": meta(),
            "before": str(opts.before),
            "after": str(opts.after),
            "runs": runs,
            "ratios": ratios,
        }
    )


if __name__ == "__main__":
    main()
