"""Where does the time go in the two CPU-bound hot paths? (a profile, not a benchmark)

``step``: the memory:// sequential workflow of bench_step_overhead (the engine's
own per-step cost, no disk). ``replay``: a fresh runner's load + replay of the
10,000-event history of bench_replay, on memory://, with and without a snapshot.

Prints one JSON document: the top functions by own time and by cumulative
time (cProfile, whose per-call overhead inflates small functions, so read the
shares, not the absolute times). With ``--pyinstrument`` (if installed; it is
not a project dependency) it also prints pyinstrument's call tree to stderr.

Usage: python benchmarks/profile_hot_paths.py [--quick] [--target step replay] [--top N]
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import bench_replay
import bench_step_overhead
from _common import emit, meta, note, parser

from continuum_py import Engine
from continuum_py._client import JournalClient
from continuum_py._runner import RunDriver
from continuum_py._runner_config import RunnerConfig
from continuum_py.adapters.memory import MemoryJournal
from continuum_py.journal import Lease

REPO = Path(__file__).resolve().parent.parent


def _where(func: tuple[str, int, str]) -> str:
    path, line, name = func
    if path == "~":
        return name
    try:
        path = str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        parts = Path(path).parts
        path = "/".join(parts[-2:])
    return f"{path}:{line}({name})"


def _top(prof: cProfile.Profile, key: str, n: int) -> list[dict[str, Any]]:
    st = pstats.Stats(prof, stream=io.StringIO())
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    idx = {"tottime": 2, "cumtime": 3}[key]
    rows = sorted(raw.items(), key=lambda kv: kv[1][idx], reverse=True)[:n]
    return [
        {
            "function": _where(func),
            "calls": v[1],
            "tottime_s": round(v[2], 4),
            "cumtime_s": round(v[3], 4),
            "own_share": round(v[2] / total, 3),
        }
        for func, v in rows
    ]


async def _profiled(
    body: Callable[[], Awaitable[None]], top: int, use_pyinstrument: bool, label: str
) -> dict[str, Any]:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    await body()
    prof.disable()
    out: dict[str, Any] = {
        "profiled_wall_s": round(time.perf_counter() - t0, 3),
        "top_own_time": _top(prof, "tottime", top),
        "top_cumulative": _top(prof, "cumtime", top),
    }
    if use_pyinstrument:
        try:
            from pyinstrument import Profiler
        except ImportError:
            note("pyinstrument is not installed; cProfile only")
        else:
            p = Profiler(interval=0.0001, async_mode="disabled")
            p.start()
            await body()
            p.stop()
            print(f"==== pyinstrument: {label}", file=sys.stderr)
            print(p.output_text(unicode=False, color=False, show_all=False), file=sys.stderr)
    return out


async def profile_step(steps: int, runs: int, top: int, pyinst: bool) -> dict[str, Any]:
    reg = bench_step_overhead.reg
    wf = bench_step_overhead.sequential
    async with Engine(journal=MemoryJournal(), registry=reg, worker_id="prof") as engine:
        h = await engine.start(wf, steps)
        await h.result(timeout=300)

        async def body() -> None:
            for _ in range(runs):
                handle = await engine.start(wf, steps)
                await handle.result(timeout=300)

        res = await _profiled(body, top, pyinst, f"memory step x{steps * runs}")
    res["steps"] = steps * runs
    return res


async def profile_replay(
    steps: int, snapshot_every: int, runs: int, top: int, pyinst: bool
) -> dict[str, Any]:
    reg = bench_replay.reg
    bench_replay._gate()
    journal = MemoryJournal()
    run_id = f"profile-{snapshot_every}"
    async with Engine(
        journal=journal, registry=reg, worker_id="builder", snapshot_every=snapshot_every
    ) as engine:
        await engine.start(bench_replay.long_run, steps, run_id=run_id)
        await bench_replay._wait_reached(600)
        cfg = RunnerConfig(
            client=JournalClient(journal), registry=reg, worker_id="prof", snapshot_every=0
        )
        lease = Lease(run_id=run_id, worker_id="prof", token=0, expires_at=0.0)

        async def body() -> None:
            for _ in range(runs):
                driver = RunDriver(cfg, lease, lambda _driver: None)
                core = await driver._load()
                core.close()

        res = await _profiled(body, top, pyinst, f"replay snapshot_every={snapshot_every}")
        res["history_events"] = len(await journal.load(run_id))
    res["loads"] = runs
    return res


async def run(targets: list[str], quick: bool, top: int, pyinst: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "step" in targets:
        note("profile: memory step")
        out["memory_step"] = await profile_step(
            100 if quick else 1000, 2 if quick else 10, top, pyinst
        )
    if "replay" in targets:
        for every in (0, 500):
            note(f"profile: replay, snapshot_every={every}")
            out[f"replay_snapshot_every_{every}"] = await profile_replay(
                500 if quick else 5000, every, 2 if quick else 5, top, pyinst
            )
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--target", nargs="+", choices=["step", "replay"], default=["step", "replay"])
    p.add_argument("--top", type=int, default=25, help="functions listed per profile")
    p.add_argument("--pyinstrument", action="store_true", help="also print pyinstrument trees")
    args = p.parse_args()
    results = asyncio.run(run(args.target, args.quick, args.top, args.pyinstrument))
    emit({"benchmark": "profile", "meta": meta(), "results": results})


if __name__ == "__main__":
    main()
