"""One measurement of head_to_head.py, in a fresh process (not a benchmark itself).

``python _h2h_child.py SIDE WORKLOAD URL [options]`` runs one workload on one side
(``continuum`` or ``dbos``) against one fresh database and prints one JSON line on
stdout. The workloads and the workflows are the same on both sides: steps whose body
returns its argument, a chain of N sequential steps, and a workflow of 3 steps.

Workloads:
  step    a chain of --n steps (after a short warm-up chain); microseconds per step
  seq     --n 3-step workflows one after another; workflows per second
  conc    --n 3-step workflows, --concurrency in flight at a time; workflows per second
  build   a chain whose step --hold never returns: writes --progress when it starts,
          then waits to be killed (the history then holds --hold completed steps)
  resume  open the runtime on a database a killed ``build`` left; report when the first
          new step body starts (the one that was in flight), then exit at once
  replay  continuum on memory:// only: a fresh runner loads and replays a --hold step
          history in this process (benchmarks/bench_replay.py's measurement)
  rtt     count Postgres round trips per step through a counting proxy (untimed)
Times are ``time.monotonic()`` (one clock for all processes on Linux).
"""

from __future__ import annotations

import time

T_MAIN = time.monotonic()

import argparse  # noqa: E402 - imports are timed on purpose, after T_MAIN
import asyncio  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

MODE: dict[str, Any] = {"hold": -1, "progress": None, "report": None}


def _rss_mb() -> float:
    # VmHWM: this process's own peak. ru_maxrss would also count the parent's RSS at the
    # fork that made this process (Linux keeps it across exec).
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _out(doc: dict[str, Any]) -> None:
    doc["peak_rss_mb"] = _rss_mb()
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def at_hold(i: int) -> None:
    """Called by the step body on both sides: the build holds here, a resume reports here."""
    if i != MODE["hold"]:
        return
    if MODE["report"] is not None:  # resume: the first new step body has started
        t = time.monotonic()
        _out({**MODE["report"], "t_first_step": t})
        os._exit(0)
    # build: the history is complete; say so, then wait for the kill
    Path(MODE["progress"]).write_text("held\n")  # noqa: ASYNC240 - once, a tiny file
    await asyncio.sleep(3600)


# --- the two sides: each gives open/close, chain(n), three(x) and the durability facts ---


class Side:
    async def open(self, url: str, *, recover: bool) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def chain(self, n: int, run_id: str | None = None) -> int:
        raise NotImplementedError

    async def start_chain(self, n: int, run_id: str) -> None:
        raise NotImplementedError

    async def three(self, x: int) -> int:
        raise NotImplementedError

    async def durability(self) -> dict[str, Any]:
        raise NotImplementedError


class ContinuumSide(Side):
    def __init__(self) -> None:
        from continuum_py import Context, Engine, step, workflow

        self.Engine = Engine

        @step
        async def noop(i: int) -> int:
            await at_hold(i)
            return i

        @workflow(name="h2h.chain")
        async def chain(ctx: Context, n: int) -> int:
            total = 0
            for i in range(n):
                total += await noop(i)
            return total

        @workflow(name="h2h.three")
        async def three(ctx: Context, x: int) -> int:
            return await noop(x) + await noop(x) + await noop(x)

        self._chain, self._three = chain, three
        self.engine: Any = None
        self.url = ""

    async def open(self, url: str, *, recover: bool) -> None:
        # One worker id for the build and the resume: the restarted process is the same
        # worker, as a restarted service is, so it takes its run back at once.
        self.url = url
        self.engine = self.Engine(url, worker_id="h2h-worker")
        await self.engine.open()

    async def close(self) -> None:
        await self.engine.aclose()

    async def chain(self, n: int, run_id: str | None = None) -> int:
        h = await self.engine.start(self._chain, n, run_id=run_id)
        return int(await h.result())

    async def start_chain(self, n: int, run_id: str) -> None:
        await self.engine.start(self._chain, n, run_id=run_id)

    async def three(self, x: int) -> int:
        h = await self.engine.start(self._three, x)
        return int(await h.result())

    async def durability(self) -> dict[str, Any]:
        j = self.engine.journal
        if self.url.startswith("sqlite"):

            def read(c: Any) -> tuple[Any, Any]:
                return (
                    c.execute("PRAGMA journal_mode").fetchone()[0],
                    c.execute("PRAGMA synchronous").fetchone()[0],
                )

            mode, sync = await j._w.call(read)
            return {"sqlite_journal_mode": mode, "sqlite_synchronous": _SYNC.get(sync, sync)}
        if self.url.startswith("postgres"):
            async with j._pool.acquire() as c:
                return {
                    "pg_synchronous_commit": await c.fetchval("SHOW synchronous_commit"),
                    "pg_fsync": await c.fetchval("SHOW fsync"),
                }
        return {"memory": "nothing on disk"}


_SYNC = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class DbosSide(Side):
    def __init__(self) -> None:
        from dbos import DBOS

        self.DBOS = DBOS

        @DBOS.step()
        async def noop(i: int) -> int:
            await at_hold(i)
            return i

        @DBOS.workflow()
        async def chain(n: int) -> int:
            total = 0
            for i in range(n):
                total += await noop(i)
            return total

        @DBOS.workflow()
        async def three(x: int) -> int:
            return await noop(x) + await noop(x) + await noop(x)

        self._chain, self._three = chain, three

    async def open(self, url: str, *, recover: bool) -> None:
        # Defaults as a user gets them: the URL and a name, nothing else. Launch recovers
        # this executor's ("local") pending workflows, as a restarted DBOS process does.
        self.url = url
        self.DBOS(config={"name": "h2h", "system_database_url": url})
        self.DBOS.launch()

    async def close(self) -> None:
        self.DBOS.destroy()

    async def chain(self, n: int, run_id: str | None = None) -> int:
        if run_id is None:
            return int(await self._chain(n))
        from dbos import SetWorkflowID

        with SetWorkflowID(run_id):
            return int(await self._chain(n))

    async def start_chain(self, n: int, run_id: str) -> None:
        from dbos import SetWorkflowID

        with SetWorkflowID(run_id):
            await self.DBOS.start_workflow_async(self._chain, n)

    async def three(self, x: int) -> int:
        return int(await self._three(x))

    async def durability(self) -> dict[str, Any]:
        import sqlalchemy as sa
        from dbos._dbos import _get_dbos_instance

        engine = _get_dbos_instance()._sys_db.engine
        with engine.connect() as c:
            if self.url.startswith("sqlite"):
                mode = c.execute(sa.text("PRAGMA journal_mode")).scalar()
                sync = c.execute(sa.text("PRAGMA synchronous")).scalar()
                return {"sqlite_journal_mode": mode, "sqlite_synchronous": _SYNC.get(sync, sync)}
            return {
                "pg_synchronous_commit": c.execute(sa.text("SHOW synchronous_commit")).scalar(),
                "pg_fsync": c.execute(sa.text("SHOW fsync")).scalar(),
            }


# --- workloads ---


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    gc.collect()
    where = os.environ.get("H2H_PROFILE")  # head_to_head.py --profile DIR
    profiler: Any = None
    if where:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005, async_mode="enabled")
        profiler.start()
    t0 = time.perf_counter()
    await fn()
    took = time.perf_counter() - t0
    if profiler is not None:
        profiler.stop()
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        Path(where).write_text(text)  # noqa: ASYNC240 - after the timed part
    return took


async def w_step(side: Side, a: argparse.Namespace) -> dict[str, Any]:
    assert await side.chain(20) == sum(range(20))  # warm-up: imports, caches, connections
    took = await _timed(lambda: side.chain(a.n))
    return {"steps": a.n, "us_per_step": round(took / a.n * 1e6, 2), "seconds": round(took, 4)}


async def w_seq(side: Side, a: argparse.Namespace) -> dict[str, Any]:
    for i in range(5):
        await side.three(i)

    async def go() -> None:
        for i in range(a.n):
            assert await side.three(i) == 3 * i

    took = await _timed(go)
    return {"workflows": a.n, "per_s": round(a.n / took, 1), "seconds": round(took, 4)}


async def w_conc(side: Side, a: argparse.Namespace) -> dict[str, Any]:
    sem = asyncio.Semaphore(a.concurrency)

    async def one(i: int) -> None:
        async with sem:
            assert await side.three(i) == 3 * i

    await asyncio.gather(*(one(i) for i in range(a.concurrency)))  # warm-up: fill the pools

    async def go() -> None:
        await asyncio.gather(*(one(i) for i in range(a.n)))

    took = await _timed(go)
    return {
        "workflows": a.n,
        "concurrency": a.concurrency,
        "per_s": round(a.n / took, 1),
        "seconds": round(took, 4),
    }


async def w_build(side: Side, a: argparse.Namespace) -> dict[str, Any]:
    await side.start_chain(a.hold + 1, "h2h-resume")
    await asyncio.sleep(3600)  # the held step writes --progress; the parent kills us
    return {}


async def w_rtt(side: Side, a: argparse.Namespace) -> dict[str, Any]:
    """Round trips per step: a chain of --n steps through the counting proxy."""
    counter = MODE["counter"]
    await side.chain(20)
    before = counter.snapshot()
    await side.chain(a.n)
    after = counter.snapshot()
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    per_step = {k: round(v / a.n, 2) for k, v in sorted(diff.items()) if v}
    # Whole 3-step workflows, one after another: start, run load, steps, end, result.
    workflows = 50
    before = counter.snapshot()
    for i in range(workflows):
        await side.three(i)
    after = counter.snapshot()
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    per_workflow = {k: round(v / workflows, 2) for k, v in sorted(diff.items()) if v}
    return {"steps": a.n, "per_step": per_step, "per_3_step_workflow": per_workflow}


async def w_replay_memory(a: argparse.Namespace) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    import bench_replay

    with tempfile.TemporaryDirectory() as d:
        r = await bench_replay._scenario("memory", Path(d), a.hold + 1, 500, a.repeats)
    return {
        "history_events": r["history_events"],
        "replay_us_per_event": r["us_per_history_event"],
        "load_and_replay_ms": r["load_and_replay_ms_median"],
        "snapshot_every": 500,
    }


WORKLOADS = {"step": w_step, "seq": w_seq, "conc": w_conc, "build": w_build, "rtt": w_rtt}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("side", choices=["continuum", "dbos"])
    p.add_argument("workload", choices=[*WORKLOADS, "resume", "replay"])
    p.add_argument("url")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--hold", type=int, default=4999)
    p.add_argument("--progress")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    if a.workload == "replay":
        _out({"result": await w_replay_memory(a)})
        return
    side: Side = ContinuumSide() if a.side == "continuum" else DbosSide()
    t_imported = time.monotonic()
    MODE["hold"] = a.hold if a.workload in ("build", "resume") else -1
    MODE["progress"] = a.progress
    url = a.url
    if a.workload == "rtt":
        from urllib.parse import urlsplit, urlunsplit

        from _pg_wire import WireCounter

        parts = urlsplit(url)
        counter = WireCounter(parts.hostname or "127.0.0.1", parts.port or 5432).__enter__()
        MODE["counter"] = counter
        netloc = f"{parts.username}@127.0.0.1:{counter.listen_port}"
        sep = "&" if parts.query else ""
        url = urlunsplit(
            (parts.scheme, netloc, parts.path, parts.query + sep + "sslmode=disable", "")
        )
    if a.workload == "resume":
        MODE["report"] = {"t_main": T_MAIN, "t_imported": t_imported, "t_open": time.monotonic()}
        await side.open(url, recover=True)
        MODE["report"]["t_opened"] = time.monotonic()
        await asyncio.sleep(600)  # the held step reports and exits
        raise SystemExit("the run was not resumed within 600 s")
    await side.open(url, recover=False)
    try:
        result = await WORKLOADS[a.workload](side, a)
        durability = await side.durability()
    finally:
        await side.close()
    _out({"result": result, "durability": durability})


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    asyncio.run(main())
