"""How long does a fresh runner take to load and replay a long history?

Builds one run of N sequential steps (N=5,000 gives a history of 10,000
events: RunStarted, then StepScheduled + StepCompleted per step, and the last
step left in flight) on memory:// and on SQLite, with snapshots every S events
and with snapshots off. Then a fresh ``RunDriver`` (the object a worker makes
when it takes a run over) loads the snapshot and tail and replays the workflow
code up to the point where it would resume live work; that is timed, with
the journal read and the event decoding also timed on their own.

On SQLite it also times the whole resume through a fresh ``Engine``: open,
claim, load, replay, record the in-flight step's next attempt (one commit),
until that step's body starts again.

Target from the issue: under 5 us per history event.

Usage: python benchmarks/bench_replay.py [--quick] [--dir DIR] [--steps N] [--snapshot-every S ...]
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from pathlib import Path
from typing import Any

from _common import emit, meta, note, parser, stats_us, workdir

from continuum_py import Context, Engine, Registry, step, workflow
from continuum_py._client import JournalClient, decode_all, decode_snapshot
from continuum_py._runner import RunDriver
from continuum_py._runner_config import RunnerConfig
from continuum_py.adapters.memory import MemoryJournal
from continuum_py.adapters.sqlite import SQLiteJournal
from continuum_py.journal import Lease

TARGET_US_PER_EVENT = 5.0

reg = Registry()


class _Gate:
    """Lets the builder know when the last step has started, and holds that step forever."""

    reached: asyncio.Event | None = None
    forever: asyncio.Event | None = None


@step
async def work(i: int, block_at: int) -> int:
    if i == block_at:
        assert _Gate.reached is not None
        assert _Gate.forever is not None
        _Gate.reached.set()
        await _Gate.forever.wait()
    return i


@workflow(registry=reg, name="bench.replay")
async def long_run(ctx: Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await work(i, n - 1)
    return total


def _gate() -> None:
    _Gate.reached = asyncio.Event()
    _Gate.forever = asyncio.Event()


async def _wait_reached(timeout: float) -> None:
    assert _Gate.reached is not None
    await asyncio.wait_for(_Gate.reached.wait(), timeout)


async def _measure_driver(journal: Any, run_id: str, history: int, repeats: int) -> dict[str, Any]:
    client = JournalClient(journal)
    cfg = RunnerConfig(client=client, registry=reg, worker_id="replayer", snapshot_every=0)
    lease = Lease(run_id=run_id, worker_id="replayer", token=0, expires_at=0.0)
    loads: list[float] = []
    decodes: list[float] = []
    totals: list[float] = []
    cpu: list[float] = []
    read = snap_seq = snap_bytes = snap_events = None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        snap, rows = await client.load_with_snapshot(run_id)
        t1 = time.perf_counter()
        state = decode_snapshot(snap) if snap is not None else None
        decode_all(rows)
        t2 = time.perf_counter()
        loads.append(t1 - t0)
        decodes.append(t2 - t1)
        snap_seq = snap.seq if snap is not None else None
        snap_bytes = len(snap.data) if snap is not None else None
        snap_events = len(state.events) if state is not None else None
        read = len(rows)
        del snap, rows, state

        gc.collect()
        driver = RunDriver(cfg, lease, lambda _driver: None)
        c0 = time.thread_time()
        t0 = time.perf_counter()
        core = await driver._load()
        t1 = time.perf_counter()
        cpu.append(time.thread_time() - c0)
        assert core.last_seq == history, (core.last_seq, history)
        assert [c.position for c in core.pending_steps()] == [history // 2], (
            "not at the resume point"
        )
        core.close()
        totals.append(t1 - t0)
    med = statistics.median(totals)
    load_med = statistics.median(loads)
    decode_med = statistics.median(decodes)
    return {
        "history_events": history,
        "snapshot_seq": snap_seq,
        "snapshot_bytes": snap_bytes,
        "snapshot_events": snap_events,
        "tail_events_read": read,
        "load_and_replay": stats_us(totals),
        "journal_load": stats_us(loads),
        "decode_only": stats_us(decodes),
        "load_and_replay_ms_median": round(med * 1e3, 3),
        "us_per_history_event": round(med / history * 1e6, 3),
        "us_per_history_event_best": round(min(totals) / history * 1e6, 3),
        # CPU time of this thread: steadier than the wall clock on a shared machine,
        # but without the SQLite reader thread's share of the load.
        "cpu_us_per_history_event": round(statistics.median(cpu) / history * 1e6, 3),
        "split_us_per_history_event": {
            "journal_load": round(load_med / history * 1e6, 3),
            "decode": round(decode_med / history * 1e6, 3),
            "replay_rest": round((med - load_med - decode_med) / history * 1e6, 3),
        },
    }


async def _engine_resume(url: str, run_id: str, repeats: int) -> dict[str, Any]:
    """Fresh Engine on the file: open -> claim -> load -> replay -> commit -> step body starts."""
    samples: list[float] = []
    for _ in range(repeats):
        _gate()
        gc.collect()
        t0 = time.perf_counter()
        engine = Engine(url, registry=reg, worker_id="resumer", lease_ttl=60)
        await engine.open()
        t_open = time.perf_counter()
        try:
            await _wait_reached(120)
            t1 = time.perf_counter()
        finally:
            await engine.aclose()
        samples.append(t1 - t0)
        note(f"  engine resume: {(t1 - t0) * 1e3:.1f} ms (open {(t_open - t0) * 1e3:.1f} ms)")
    return {"open_to_step_body": stats_us(samples)}


async def _scenario(
    backend: str, folder: Path, steps: int, snapshot_every: int, repeats: int
) -> dict[str, Any]:
    _gate()
    url = f"sqlite:///{folder / f'replay-{snapshot_every}.db'}" if backend == "sqlite" else None
    journal = MemoryJournal() if backend == "memory" else None
    run_id = f"replay-{backend}-{snapshot_every}"
    engine = Engine(
        url, journal=journal, registry=reg, worker_id="builder", snapshot_every=snapshot_every
    )
    await engine.open()
    try:
        t0 = time.perf_counter()
        await engine.start(long_run, steps, run_id=run_id)
        await _wait_reached(3600)
        build_s = time.perf_counter() - t0
        history = len(await engine.journal.load(run_id))
        if backend == "memory":
            res = await _measure_driver(engine.journal, run_id, history, repeats)
        else:
            assert url is not None
            fresh = SQLiteJournal.from_url(url)
            await fresh.connect()
            try:
                res = await _measure_driver(fresh, run_id, history, repeats)
            finally:
                await fresh.aclose()
    finally:
        await engine.aclose()
    res["build_s"] = round(build_s, 3)
    res["build_us_per_step"] = round(build_s / steps * 1e6, 2)
    if backend == "sqlite":
        assert url is not None
        res["engine_resume"] = await _engine_resume(url, run_id, max(1, repeats // 2))
    return res


async def run(folder: Path, steps: int, snapshots: list[int], repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for backend in ("memory", "sqlite"):
        for every in snapshots:
            name = f"{backend}_snapshot_every_{every}" if every else f"{backend}_no_snapshot"
            note(f"replay: {name} ({steps} steps)")
            results[name] = await _scenario(backend, folder, steps, every, repeats)
    return results


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="steps in the run (default 5000)")
    p.add_argument(
        "--snapshot-every",
        type=int,
        nargs="+",
        default=[0, 500],
        help="Engine(snapshot_every=...) values to compare; 0 = no snapshot (default: 0 500)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed loads per scenario")
    args = p.parse_args()
    steps = args.steps or (500 if args.quick else 5000)
    repeats = args.repeats or (2 if args.quick else 7)
    with workdir(args.dir, keep=args.keep) as folder:
        results = asyncio.run(run(folder, steps, args.snapshot_every, repeats))
        info = meta(folder)
    targets = {
        name: {
            "target": f"< {TARGET_US_PER_EVENT} us per event",
            "measured": r["us_per_history_event"],
            "met": r["us_per_history_event"] < TARGET_US_PER_EVENT,
            "ratio_to_target": round(r["us_per_history_event"] / TARGET_US_PER_EVENT, 2),
        }
        for name, r in results.items()
    }
    emit(
        {
            "benchmark": "replay",
            "question": "how long does a fresh runner take to load and replay a long history?",
            "meta": info,
            "params": {
                "steps": steps,
                "snapshot_every": args.snapshot_every,
                "repeats": repeats,
                "quick": args.quick,
                "measured": "RunDriver._load(): journal.load_with_snapshot + decode + "
                "snapshot restore + replay of the tail, up to the in-flight last step",
            },
            "results": results,
            "targets": targets,
        }
    )


if __name__ == "__main__":
    main()
