"""How many runs and steps per second do `continuum worker` processes get through?

In one run it compares, by default: SQLite with 1 worker process, Postgres
with 1 worker process, Postgres with 3 worker processes, and (for a fair
contrast) SQLite with 3 worker processes, all on this one machine: workers,
the Postgres server and this script share its CPUs.

For each configuration a client ``Engine(url, worker=False)`` starts N runs of
a workflow of K sequential trivial steps by name, with no worker running. Then
the worker processes are started as a user would start them
(``python -m continuum_py worker --url URL --import bench_workers
--concurrency C``), and this script polls the journal until no run is left
pending or running. Two windows are reported:

- wall: from spawning the workers to the poll that saw the last run finished
  (includes interpreter start-up, imports and connecting, and up to one poll
  interval);
- busy: from the first event a worker wrote to the last run's completion
  (journal clock), i.e. the work alone.

Beside runs/s and steps/s it reports where the CPU went: the workers (after
start-up), the Postgres backends serving them (found by application_name),
Postgres's own background processes, this client, and everything else on the
machine (other people's work shows up there); also per-run latency and, for
Postgres, WAL fsyncs per step (``pg_stat_wal`` is server-wide, so other
sessions on the same server add to it; ``other_backends`` counts them).

Each Postgres configuration gets a fresh schema, dropped afterwards; SQLite a
fresh file in the work folder. Configurations are interleaved across repeats,
so drift on the machine hits them alike.

``--profile`` runs cProfile in each worker (through the environment variable
``CONTINUUM_BENCH_PROFILE=/path/prefix``, which dumps ``prefix-<pid>.prof`` at
exit) and puts the top functions in the JSON; a profiled run is much slower,
so its throughput means nothing.

Usage: python benchmarks/bench_workers.py [--quick] [--runs N] [--steps K]
       [--concurrency C] [--repeats R] [--dsn DSN] [--configs sqlite:1 postgres:3 ...]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pstats
import resource
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    DEFAULT_DSN,
    dist_version,
    emit,
    machine_cpu_s,
    meta,
    note,
    parser,
    process_cpu_s,
    thread_cpu_s,
    workdir,
)

from continuum_py import Context, Engine, step, workflow
from continuum_py.events import RunCompleted
from continuum_py.journal import RunStatus

# ---- the workflow; the worker processes import this module to get it ----

WORKFLOW = "bench.workers"


@step
async def bench_step(i: int) -> int:
    return i


@workflow(name=WORKFLOW)
async def steps_workflow(ctx: Context, k: int) -> int:
    total = 0
    for i in range(k):
        total += await bench_step(i)
    return total


def _profile_worker(prefix: str) -> None:
    """In a worker process: profile everything after this import, dump at exit.

    cProfile's default wall-clock timer: a CPU-time timer costs a system call
    per function call and distorts small functions far more. So ``epoll`` is
    idle time, and on a busy machine a ``socket.send`` to Postgres also holds
    the time the woken backend ran in our place.
    """
    import atexit
    import cProfile

    prof = cProfile.Profile()

    def dump() -> None:
        prof.disable()
        prof.dump_stats(f"{prefix}-{os.getpid()}.prof")

    atexit.register(dump)
    prof.enable()


if __name__ != "__main__" and os.environ.get("CONTINUUM_BENCH_PROFILE"):
    _profile_worker(os.environ["CONTINUUM_BENCH_PROFILE"])


# ---- the benchmark ----

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIGS = ["sqlite:1", "postgres:1", "postgres:3", "sqlite:3"]
POLL_S = 0.05
READY_MARK = b"worker.started"


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    ready_at: float | None = None  # perf_counter when its "worker.started" line was seen
    cpu_at_ready: float | None = None
    cpu_at_end: float | None = None
    # The event-loop thread (tid == pid) and the others (aiosqlite's, for SQLite).
    loop_cpu_at_ready: float = 0.0
    loop_cpu_at_end: float = 0.0
    exit_code: int | None = None
    log_lines: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class _Window:
    """What was read while the workers ran."""

    t_spawn: float  # perf_counter
    t_spawn_epoch: float  # time.time(), to compare with event and journal times
    t_seen: float  # perf_counter of the poll that saw no run left
    workers: list[_Worker]
    machine_cpu_s: float | None  # busy CPU seconds of the whole machine, spawn to seen
    client_cpu_s: float
    pg: dict[str, Any] | None = None


def _pg_url(dsn: str, schema: str, app: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}&application_name={app}"


class _Postgres:
    """Server facts and counters, over a plain asyncpg connection (not the journal's)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: Any = None

    async def __aenter__(self) -> _Postgres:
        import asyncpg

        self.conn = await asyncpg.connect(self.dsn)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    async def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in (
            "server_version",
            "synchronous_commit",
            "fsync",
            "wal_sync_method",
            "shared_buffers",
            "max_connections",
        ):
            out[name] = await self.conn.fetchval(f"SHOW {name}")
        return out

    async def wal_syncs(self) -> int | None:
        with contextlib.suppress(Exception):
            return int(await self.conn.fetchval("SELECT wal_sync FROM pg_stat_wal"))
        return None

    async def pids(self, app: str | None) -> list[int]:
        """Backends with this application_name, or (``None``) the server's own processes."""
        if app is None:
            sql = "SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'"
            rows = await self.conn.fetch(sql)
        else:
            sql = "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
            rows = await self.conn.fetch(sql, app)
        return [r[0] for r in rows]

    async def other_backends(self, apps: list[str]) -> int:
        # Client connections that are not this benchmark's: other sessions' load.
        return int(
            await self.conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid() AND NOT application_name = ANY($1::text[])",
                apps,
            )
        )

    async def drop(self, schema: str) -> None:
        await self.conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _cpu_of(pids: list[int]) -> dict[int, float]:
    return {pid: c for pid in pids if (c := process_cpu_s(pid)) is not None}


def _spawn(
    url: str, n: int, concurrency: int, folder: Path, tag: str, profile: str | None
) -> list[_Worker]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("CONTINUUM_BENCH_PROFILE", None)
    if profile:
        env["CONTINUUM_BENCH_PROFILE"] = f"{profile}-{tag}"
    workers = []
    for i in range(n):
        log = folder / f"worker-{tag}-{i}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "continuum_py",
                    "worker",
                    "--url",
                    url,
                    "--import",
                    "bench_workers",
                    "--concurrency",
                    str(concurrency),
                    "--worker-id",
                    f"bench-{tag}-{i}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=folder,
                env=env,
            )
        workers.append(_Worker(proc=proc, log=log))
    return workers


def _check_ready(workers: list[_Worker]) -> None:
    for w in workers:
        if w.ready_at is None and READY_MARK in w.log.read_bytes():
            w.ready_at = time.perf_counter()
            w.cpu_at_ready = process_cpu_s(w.proc.pid)
            w.loop_cpu_at_ready = thread_cpu_s(w.proc.pid).get(w.proc.pid, 0.0)


def _stop(workers: list[_Worker], timeout: float = 60.0) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.exit_code = w.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.exit_code = w.proc.wait()
            w.problems.append(f"did not stop within {timeout} s of SIGTERM; killed")
        lines = w.log.read_bytes().decode(errors="replace").splitlines()
        w.log_lines = len(lines)
        bad = [ln for ln in lines if "[warning" in ln or "[error" in ln or "Traceback" in ln]
        w.problems += bad[:5]


async def _all_done(client: Engine) -> bool:
    # A run is pending or running until it ends (no timers or signals here).
    for status in ("pending", "running"):
        if await client.list_runs(status=status, limit=1):
            return False
    return True


async def _work(
    client: Engine,
    url: str,
    n_workers: int,
    args: Any,
    folder: Path,
    tag: str,
    pg: _Postgres | None,
    profile: str | None,
) -> _Window:
    """Spawn the workers, wait until every run has ended, stop them."""
    server0: dict[int, float] = {}
    if pg is not None:
        server0 = _cpu_of(await pg.pids(None) + await pg.pids(f"bw-client-{tag}"))
    mach0 = machine_cpu_s()
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    t_spawn_epoch, t_spawn = time.time(), time.perf_counter()
    workers = _spawn(url, n_workers, args.concurrency, folder, tag, profile)
    try:
        deadline = t_spawn + args.timeout
        while True:
            _check_ready(workers)
            dead = [w for w in workers if w.proc.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"worker exited early ({dead[0].proc.returncode}): "
                    + dead[0].log.read_bytes().decode(errors="replace")[-1500:]
                )
            if await _all_done(client):
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"runs not finished after {args.timeout} s")
            # Poll the logs often until every worker is ready, to read its start-up CPU.
            await asyncio.sleep(POLL_S if all(w.ready_at for w in workers) else 0.005)
        t_seen = time.perf_counter()
        for w in workers:
            w.cpu_at_end = process_cpu_s(w.proc.pid)
            w.loop_cpu_at_end = thread_cpu_s(w.proc.pid).get(w.proc.pid, 0.0)
        mach1 = machine_cpu_s()
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        pg_cpu: dict[str, Any] | None = None
        if pg is not None:
            # The workers' backends were born in the window: all their CPU counts.
            served = _cpu_of(await pg.pids(f"bw-{tag}"))
            now = _cpu_of(list(server0))
            client_pids = set(await pg.pids(f"bw-client-{tag}"))
            delta = {pid: now[pid] - c for pid, c in server0.items() if pid in now}
            pg_cpu = {
                "worker_backends_s": sum(served.values()),
                "worker_backends": len(served),
                "background_s": sum(d for pid, d in delta.items() if pid not in client_pids),
                "client_backend_s": sum(d for pid, d in delta.items() if pid in client_pids),
            }
        # A worker still starting would die of SIGTERM before its handler is in.
        while not all(w.ready_at for w in workers) and time.perf_counter() < deadline:
            _check_ready(workers)
            await asyncio.sleep(0.01)
    finally:
        _stop(workers)
    return _Window(
        t_spawn=t_spawn,
        t_spawn_epoch=t_spawn_epoch,
        t_seen=t_seen,
        workers=workers,
        machine_cpu_s=(mach1[0] - mach0[0]) if mach0 and mach1 else None,
        client_cpu_s=(self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime),
        pg=pg_cpu,
    )


async def _timings(client: Engine, runs: int, k: int) -> tuple[float, float, list[float]]:
    """Check every run, and return (first worker event, last completion, per-run latencies)."""
    records = await client.list_runs(limit=runs + 10)
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r.status.value] = statuses.get(r.status.value, 0) + 1
    if statuses.get(RunStatus.COMPLETED.value) != runs:
        raise RuntimeError(f"not every run completed: {statuses}")
    first_at: list[float] = []
    latency: list[float] = []
    for r in records:
        events = await client.history(r.run_id)
        if not isinstance(events[-1], RunCompleted) or len(events) != 2 + 2 * k:
            raise RuntimeError(f"run {r.run_id}: unexpected history ({len(events)} events)")
        first_at.append(events[1].at)  # the first event a worker wrote
        latency.append(r.updated_at - events[1].at)
    result = await (await client.get(records[0].run_id)).result(timeout=10)
    if result != k * (k - 1) // 2:
        raise RuntimeError(f"wrong result {result!r}")
    return min(first_at), max(r.updated_at for r in records), latency


def _pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(p * (len(v) - 1))))]


def _cpu_report(w: _Window, steps: int) -> dict[str, Any]:
    """Where the CPU went: seconds, and microseconds per step for the work itself."""
    us = 1e6 / steps
    out: dict[str, Any] = {}
    ready = [
        x.cpu_at_end - x.cpu_at_ready
        for x in w.workers
        if x.cpu_at_end is not None
        and x.cpu_at_ready is not None
        and x.ready_at is not None
        and x.ready_at <= w.t_seen
    ]
    # (A worker that got ready only after the last run ended did none of the work.)
    if len(ready) == len(w.workers):
        out["workers_startup_s"] = [round(x.cpu_at_ready or 0.0, 3) for x in w.workers]
        out["workers_after_startup_s"] = [round(c, 3) for c in ready]
        out["workers_us_per_step"] = round(sum(ready) * us, 1)
        loop = sum(x.loop_cpu_at_end - x.loop_cpu_at_ready for x in w.workers)
        out["workers_event_loop_thread_us_per_step"] = round(loop * us, 1)
        out["workers_other_threads_us_per_step"] = round((sum(ready) - loop) * us, 1)
    known = w.client_cpu_s + sum(x.cpu_at_end or 0.0 for x in w.workers)
    out["client_s"] = round(w.client_cpu_s, 3)
    if w.pg is not None:
        out["postgres_worker_backends_s"] = round(w.pg["worker_backends_s"], 3)
        out["postgres_worker_backends_us_per_step"] = round(w.pg["worker_backends_s"] * us, 1)
        out["postgres_background_s"] = round(w.pg["background_s"], 3)
        out["postgres_client_backend_s"] = round(w.pg["client_backend_s"], 3)
        known += w.pg["worker_backends_s"] + w.pg["background_s"] + w.pg["client_backend_s"]
    if "workers_us_per_step" in out:
        out["engine_and_journal_us_per_step"] = round(
            out["workers_us_per_step"] + out.get("postgres_worker_backends_us_per_step", 0.0), 1
        )
    if w.machine_cpu_s is not None:
        wall = w.t_seen - w.t_spawn
        out["machine_busy_s"] = round(w.machine_cpu_s, 3)
        # Everything not accounted for above: other people's processes and the kernel.
        out["other_s"] = round(w.machine_cpu_s - known, 3)
        out["other_cores"] = round((w.machine_cpu_s - known) / wall, 2)
    return out


async def _one(
    kind: str,
    n_workers: int,
    rep: int,
    args: Any,
    folder: Path,
    pg: _Postgres | None,
    profile: str | None,
) -> dict[str, Any]:
    runs, k = args.runs, args.steps
    steps = runs * k
    tag = f"{kind}{n_workers}-r{rep}"
    schema = f"bench_workers_{os.getpid()}_{kind}{n_workers}_r{rep}"
    on_pg = pg if kind == "postgres" else None
    if on_pg is None:
        url = client_url = f"sqlite:///{folder / (tag + '.db')}"
    else:
        url = _pg_url(args.dsn, schema, f"bw-{tag}")
        client_url = _pg_url(args.dsn, schema, f"bw-client-{tag}")
    out: dict[str, Any] = {"repeat": rep}
    others = wal0 = wal1 = None
    try:
        async with Engine(client_url, worker=False) as client:
            # Start every run before any worker exists, so the workers find a full queue.
            t0 = time.perf_counter()
            for i in range(runs):
                await client.start(WORKFLOW, k, run_id=f"run-{i:06d}")
            out["client_start_s"] = round(time.perf_counter() - t0, 4)
            if on_pg is not None:
                others = await on_pg.other_backends([f"bw-{tag}", f"bw-client-{tag}"])
                wal0 = await on_pg.wal_syncs()
            win = await _work(client, url, n_workers, args, folder, tag, on_pg, profile)
            if on_pg is not None:
                # Backends report their WAL counters when they exit; give them a moment.
                await asyncio.sleep(0.3)
                wal1 = await on_pg.wal_syncs()
            # Untimed from here.
            t_first, t_last, latency = await _timings(client, runs, k)
        busy = t_last - t_first
        wall = win.t_seen - win.t_spawn
        out.update(
            {
                "wall_s": round(wall, 4),
                "busy_s": round(busy, 4),
                "runs_per_s_wall": round(runs / wall, 1),
                "steps_per_s_wall": round(steps / wall, 1),
                "runs_per_s_busy": round(runs / busy, 1),
                "steps_per_s_busy": round(steps / busy, 1),
                "spawn_to_first_event_s": round(t_first - win.t_spawn_epoch, 4),
                "spawn_to_workers_ready_s": [
                    round(w.ready_at - win.t_spawn, 4) for w in win.workers if w.ready_at
                ],
                "last_completion_to_seen_s": round(wall - (t_last - win.t_spawn_epoch), 4),
                "run_latency_ms": {
                    "median": round(statistics.median(latency) * 1e3, 1),
                    "p90": round(_pct(latency, 0.9) * 1e3, 1),
                    "max": round(max(latency) * 1e3, 1),
                },
                "cpu": _cpu_report(win, steps),
            }
        )
        if on_pg is not None:
            syncs = wal1 - wal0 if wal0 is not None and wal1 is not None else None
            out["postgres"] = {
                "other_backends": others,
                "wal_syncs": syncs,
                "wal_syncs_per_step": round(syncs / steps, 3) if syncs is not None else None,
            }
        out["workers"] = [
            {"exit_code": w.exit_code, "log_lines": w.log_lines, "problems": w.problems}
            for w in win.workers
        ]
        if profile:
            out["profile"] = _profile_top(folder, f"{profile}-{tag}", steps)
    finally:
        if on_pg is not None:
            await on_pg.drop(schema)
    return out


# ---- profiles ----


def _owner(fname: str, func: str) -> str:
    """A coarse owner for a profiled function, to say where the time goes."""
    if fname == "~":  # a builtin: name it by what it does
        if "socket" in func:
            return "socket syscalls"
        if "print" in func or "write" in func:
            return "log output"
        if "epoll" in func:
            return "epoll (idle)"
        return "other builtins"
    for mark, name in (
        ("/asyncpg/", "asyncpg"),
        ("/aiosqlite/", "aiosqlite"),
        ("/structlog/", "structlog"),
        ("/msgspec/", "msgspec"),
        ("/asyncio/", "asyncio"),
    ):
        if mark in fname:
            return name
    path = Path(fname)
    if path.parent.name in ("continuum_py", "adapters"):
        return f"{path.parent.name}/{path.name}"
    return "other Python"


def _profile_top(folder: Path, prefix: str, steps: int, n: int = 25) -> dict[str, Any]:
    files = sorted(str(p) for p in folder.glob(Path(prefix).name + "-*.prof"))
    if not files:
        return {"error": "no profile written"}
    st = pstats.Stats(*files)
    rows = []
    owners: dict[str, float] = {}
    for (fname, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, f"{Path(fname).name}:{line}({func})"))
        owner = _owner(fname, func)
        owners[owner] = owners.get(owner, 0.0) + tt

    def top(key: int) -> list[dict[str, Any]]:
        return [
            {
                "function": name,
                "calls": nc,
                "tottime_s": round(tt, 4),
                "cumtime_s": round(ct, 4),
                "tottime_us_per_step": round(tt / steps * 1e6, 2),
            }
            for tt, ct, nc, name in sorted(rows, key=lambda r: r[key], reverse=True)[:n]
        ]

    total = sum(r[0] for r in rows) - owners.get("epoll (idle)", 0.0)
    return {
        "timer": "wall clock of each worker's event-loop thread (cProfile's default)",
        "files": len(files),
        "total_s_without_epoll": round(total, 3),
        "by_owner_us_per_step": {
            k: round(v / steps * 1e6, 1) for k, v in sorted(owners.items(), key=lambda kv: -kv[1])
        },
        "by_tottime": top(0),
        "by_cumtime": top(1),
    }


# ---- main ----

_SUMMARY_KEYS = (
    "steps_per_s_busy",
    "runs_per_s_busy",
    "steps_per_s_wall",
    "runs_per_s_wall",
    "busy_s",
    "wall_s",
)
_CPU_KEYS = (
    "workers_us_per_step",
    "workers_event_loop_thread_us_per_step",
    "workers_other_threads_us_per_step",
    "postgres_worker_backends_us_per_step",
    "engine_and_journal_us_per_step",
    "other_cores",
)


def _median_of(reps: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _SUMMARY_KEYS:
        out[key] = round(statistics.median(r[key] for r in reps), 3 if key.endswith("_s") else 1)
    for key in _CPU_KEYS:
        got = [r["cpu"][key] for r in reps if key in r["cpu"]]
        if got:
            out[key] = round(statistics.median(got), 2)
    syncs = [r["postgres"]["wal_syncs_per_step"] for r in reps if "postgres" in r]
    if syncs and None not in syncs:
        out["wal_syncs_per_step"] = round(statistics.median(syncs), 3)
    return out


async def _connect_pg(dsn: str, stack: contextlib.AsyncExitStack) -> _Postgres | str:
    """The side connection to Postgres, or why there is none."""
    try:
        return await stack.enter_async_context(_Postgres(dsn))
    except Exception as exc:
        return f"cannot connect to Postgres ({type(exc).__name__}: {exc})"


async def run(args: Any, folder: Path) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs]
    pg_info: dict[str, Any] | None = None
    failed = False
    profile = str(folder / "prof") if args.profile else None
    results: dict[str, Any] = {
        f"{k}_{n}w": {"journal": k, "worker_processes": n, "repeats": []} for k, n in configs
    }
    async with contextlib.AsyncExitStack() as stack:
        pg: _Postgres | str | None = None
        if any(kind == "postgres" for kind, _ in configs):
            pg = await _connect_pg(args.dsn, stack)
            if isinstance(pg, str):
                note(f"workers: {pg}; the Postgres configurations are skipped")
            else:
                pg_info = await pg.info()
        for rep in range(args.repeats):
            for kind, n in configs:
                name = f"{kind}_{n}w"
                note(
                    f"workers: {name} repeat {rep + 1}/{args.repeats} "
                    f"({args.runs} runs x {args.steps} steps)"
                )
                try:
                    if isinstance(pg, str) and kind == "postgres":
                        raise RuntimeError(pg)
                    side = pg if isinstance(pg, _Postgres) else None
                    res = await _one(kind, n, rep, args, folder, side, profile)
                except Exception as exc:
                    failed = True
                    note(f"workers: {name} failed: {type(exc).__name__}: {exc}")
                    results[name]["repeats"].append(
                        {"repeat": rep, "error": f"{type(exc).__name__}: {exc}"}
                    )
                    continue
                note(
                    f"  busy {res['busy_s']:.2f} s: {res['steps_per_s_busy']:.0f} steps/s, "
                    f"{res['runs_per_s_busy']:.0f} runs/s; wall {res['wall_s']:.2f} s; "
                    f"other load {res['cpu'].get('other_cores', '?')} cores"
                )
                results[name]["repeats"].append(res)
    for r in results.values():
        ok = [x for x in r["repeats"] if "error" not in x]
        if ok:
            r["median"] = _median_of(ok)
            r["steps_per_s_busy_min_max"] = [
                min(x["steps_per_s_busy"] for x in ok),
                max(x["steps_per_s_busy"] for x in ok),
            ]
    return results, pg_info, failed


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=None, help="runs per configuration (default 2000)")
    p.add_argument("--steps", type=int, default=None, help="sequential steps per run (default 5)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=100,
        help="runs each worker drives at once (default %(default)s, the CLI's)",
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="timed runs per configuration (default 3)"
    )
    p.add_argument(
        "--dsn",
        default=os.environ.get("CONTINUUM_TEST_PG_DSN", DEFAULT_DSN),
        help="Postgres server (default $CONTINUUM_TEST_PG_DSN or %(default)s); "
        "each configuration gets its own schema, dropped afterwards",
    )
    p.add_argument(
        "--configs",
        nargs="+",
        default=DEFAULT_CONFIGS,
        help="JOURNAL:WORKERS pairs, JOURNAL sqlite or postgres (default: %(default)s)",
    )
    p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before a configuration is abandoned"
    )
    p.add_argument("--profile", action="store_true", help="cProfile the workers (slows them)")
    args = p.parse_args()
    for c in args.configs:
        kind, _, n = c.partition(":")
        if kind not in ("sqlite", "postgres") or not n.isdigit() or int(n) < 1:
            p.error(f"bad configuration {c!r}; expected sqlite:N or postgres:N")
    args.runs = args.runs or (60 if args.quick else 2000)
    args.steps = args.steps if args.steps is not None else (3 if args.quick else 5)
    args.repeats = args.repeats or (1 if args.quick or args.profile else 3)
    with workdir(args.dir, keep=args.keep) as folder:
        results, pg_info, failed = asyncio.run(run(args, folder))
        info = meta(folder)
    info["asyncpg"] = dist_version("asyncpg")
    if pg_info is not None:
        info["postgres"] = pg_info
    doc = {
        "benchmark": "workers",
        "question": "how many runs and steps per second do worker processes get through, "
        "on SQLite and on Postgres?",
        "meta": info,
        "params": {
            "runs": args.runs,
            "steps_per_run": args.steps,
            "events_per_run": 2 + 2 * args.steps,
            "concurrency_per_worker": args.concurrency,
            "repeats": args.repeats,
            "configs": args.configs,
            "poll_interval_s": POLL_S,
            "quick": args.quick,
            "profiled": args.profile,
            "step_body": "async def bench_step(i: int) -> int: return i",
            "worker_command": "python -m continuum_py worker --url URL --import bench_workers "
            f"--concurrency {args.concurrency} --worker-id ID",
            "same_machine": "the workers, the Postgres server and this client all run on this "
            f"machine and share its {os.cpu_count()} CPUs",
        },
        "summary": {
            name: {**r["median"], "steps_per_s_busy_min_max": r["steps_per_s_busy_min_max"]}
            if "median" in r
            else None
            for name, r in results.items()
        },
        "results": results,
    }
    emit(doc)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
