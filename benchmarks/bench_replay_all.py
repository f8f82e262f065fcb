"""How many runs per second does `continuum replay --workflow NAME --all` check?

The deploy check replays every run of a workflow in the journal against the
current code. This builds N runs of E events each (default 1,000 runs of 100
events: RunStarted, 49 steps of StepScheduled + StepCompleted, RunCompleted)
in a SQLite journal (and, with --postgres DSN, in a Postgres schema): one run
is recorded by an Engine, the others are copies of its history written through
the journal protocol under their own run ids. Then the real console script runs
`continuum replay --workflow NAME --all --json` in a subprocess, R times.

Reported: runs per second over the command's wall time (interpreter start,
import, listing, loading and replaying every run), and over the replay loop
alone (the `seconds` the command reports: list, load, replay).

Usage: python benchmarks/bench_replay_all.py [--quick] [--runs N] [--events E] [--repeats R]
                                             [--postgres DSN] [--dir DIR]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
from _common import emit, meta, note, parser, workdir

from continuum_py import _codec
from continuum_py._client import stored
from continuum_py._schemes import journal_from_url
from continuum_py.events import AnyEvent, RunStarted
from continuum_py.journal import AppendBatch, NewRun, RunStatus, StoredEvent

FLOWS = """
from continuum_py import Context, step, workflow


@step
async def add(i: int) -> int:
    return i


@workflow(name="bench.replay_all")
async def summed(ctx: Context, steps: int) -> int:
    total = 0
    for i in range(steps):
        total += await add(i)
    return total
"""

RECORD = """
import asyncio, sys
import bench_flows
from continuum_py import Engine
from continuum_py.testing import dump_history

async def main():
    async with Engine("memory://") as engine:
        await (await engine.start(bench_flows.summed, int(sys.argv[1]), run_id="t")).result()
        sys.stdout.buffer.write(dump_history(await engine.history("t")))

asyncio.run(main())
"""

CONTINUUM = str(Path(sys.executable).with_name("continuum"))


def _template(folder: Path, events: int) -> list[AnyEvent]:
    from continuum_py.testing import load_history

    steps = (events - 2) // 2
    out = subprocess.run(
        [sys.executable, "record.py", str(steps)], cwd=folder, capture_output=True, check=True
    )
    history = load_history(out.stdout)
    assert len(history) == 2 + 2 * steps, len(history)
    return history


async def _fill(url: str, template: list[AnyEvent], runs: int) -> None:
    """``runs`` completed runs whose histories are copies of ``template``."""
    journal = journal_from_url(url)
    await journal.connect()
    first = template[0]
    assert isinstance(first, RunStarted)
    rest = [stored("t", ev) for ev in template[1:]]
    outcome = _codec.encode_event(template[-1])
    try:
        for start in range(0, runs, 100):
            ids = [f"bench-{i:06d}" for i in range(start, min(runs, start + 100))]
            for run_id in ids:
                ev = msgspec.structs.replace(first, run_id=run_id)
                await journal.start_run(
                    NewRun(run_id=run_id, workflow=first.workflow, first_event=stored(run_id, ev))
                )
            leases = await journal.claim("filler", ttl=300, limit=len(ids))
            batches = [
                AppendBatch(
                    lease=lease,
                    expected_seq=1,
                    events=[
                        StoredEvent(
                            run_id=lease.run_id,
                            seq=s.seq,
                            kind=s.kind,
                            schema=s.schema,
                            data=s.data,
                        )
                        for s in rest
                    ],
                    status=RunStatus.COMPLETED,
                    outcome=outcome,
                )
                for lease in leases
            ]
            errors = await journal.append(batches)
            assert not any(errors), errors
            note(f"  filled {start + len(ids)}/{runs} runs")
    finally:
        await journal.aclose()


def _replay_all(folder: Path, url: str, runs: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            CONTINUUM,
            "replay",
            "--all",
            "--workflow",
            "bench.replay_all",
            "--url",
            url,
            "--import",
            "bench_flows",
            "--json",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["runs"], doc["ok"]) == (runs, runs), doc
    return wall, float(doc["seconds"])


def _scenario(
    folder: Path, url: str, template: list[AnyEvent], runs: int, repeats: int
) -> dict[str, Any]:
    t0 = time.perf_counter()
    asyncio.run(_fill(url, template, runs))
    fill_s = time.perf_counter() - t0
    walls: list[float] = []
    loops: list[float] = []
    for i in range(repeats):
        wall, loop = _replay_all(folder, url, runs)
        walls.append(wall)
        loops.append(loop)
        note(f"  replay --all #{i + 1}: {wall:.2f} s wall, {loop:.2f} s replay loop")
    wall_med, loop_med = statistics.median(walls), statistics.median(loops)
    return {
        "runs": runs,
        "events_per_run": len(template),
        "fill_s": round(fill_s, 2),
        "wall_s": [round(w, 3) for w in walls],
        "loop_s": [round(x, 3) for x in loops],
        "runs_per_second_wall": round(runs / wall_med, 1),
        "runs_per_second_loop": round(runs / loop_med, 1),
        "events_per_second_loop": round(runs * len(template) / loop_med),
        "us_per_event_loop": round(loop_med / (runs * len(template)) * 1e6, 2),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=None, help="runs in the journal (default 1000)")
    p.add_argument("--events", type=int, default=100, help="events per run (default 100)")
    p.add_argument("--repeats", type=int, default=None, help="timed commands per journal")
    p.add_argument("--postgres", metavar="DSN", help="also measure on Postgres at DSN")
    args = p.parse_args()
    runs = args.runs or (100 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    results: dict[str, Any] = {}
    with workdir(args.dir, keep=args.keep) as folder:
        (folder / "bench_flows.py").write_text(FLOWS)
        (folder / "record.py").write_text(RECORD)
        template = _template(folder, args.events)
        note(f"replay --all: sqlite, {runs} runs of {len(template)} events")
        results["sqlite"] = _scenario(
            folder, f"sqlite:///{folder / 'runs.db'}", template, runs, repeats
        )
        if args.postgres:
            note(f"replay --all: postgres, {runs} runs of {len(template)} events")
            url = f"{args.postgres}?schema=bench_replay_all_{uuid.uuid4().hex[:8]}"
            results["postgres"] = _scenario(folder, url, template, runs, repeats)
        info = meta(folder)
    emit(
        {
            "benchmark": "replay_all",
            "question": "how many runs per second does `continuum replay --all` check?",
            "meta": info,
            "params": {
                "runs": runs,
                "events_per_run": args.events,
                "repeats": repeats,
                "quick": args.quick,
                "measured": "the console script in a subprocess: wall time, and the replay "
                "loop it reports (list the runs, load each history, replay it)",
            },
            "results": results,
        }
    )


if __name__ == "__main__":
    main()
