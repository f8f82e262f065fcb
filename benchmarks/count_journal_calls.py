"""How many journal calls a 3-step workflow costs, counted (not timed), per journal.

Usage: python benchmarks/count_journal_calls.py [--quick] [--configs memory sqlite postgres]

Each journal method of the engine's journal object is wrapped to count its calls;
then ``--workflows`` 3-step workflows run one after another (start, 3 steps,
``handle.result()``), and as many again 50 at a time, after a warm-up. The counts
are per workflow and by method; for Postgres each call is at least one round trip
(``head_to_head.py`` counts the wire). Untimed: the figures do not depend on the
machine's load. Postgres: a fresh database on the server of ``--pg-dsn`` or
``$CONTINUUM_TEST_PG_DSN``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from pathlib import Path
from typing import Any

from _common import emit, meta, note, parser, workdir
from head_to_head import on_each_journal

from continuum_py import Context, Engine, step, workflow

METHODS = [
    *("start_run", "append", "get_run", "list_runs", "load", "load_with_snapshot", "claim"),
    *("renew", "release", "seize", "send", "inbox", "unseen_inbox", "next_wake_at", "set_status"),
]


@step
async def noop(i: int) -> int:
    return i


@workflow(name="count.three")
async def three(ctx: Context, x: int) -> int:
    return await noop(x) + await noop(x) + await noop(x)


def _instrument(journal: Any, counts: collections.Counter[str]) -> None:
    for name in METHODS:
        method = getattr(journal, name, None)
        if method is None:
            continue

        @functools.wraps(method)
        def counted(*args: Any, _m: Any = method, _n: str = name, **kw: Any) -> Any:
            counts[_n] += 1
            return _m(*args, **kw)

        setattr(journal, name, counted)


async def _measure(url: str, n: int) -> dict[str, Any]:
    counts: collections.Counter[str] = collections.Counter()
    async with Engine(url, worker_id="count-worker", concurrency=100) as engine:
        _instrument(engine.journal, counts)
        for i in range(5):  # warm-up: first claims, connections
            await (await engine.start(three, i)).result()
        await asyncio.sleep(0.3)
        out: dict[str, Any] = {}
        for mode in ("sequential", "50_at_a_time"):
            counts.clear()
            await _workflows(engine, n, 1 if mode == "sequential" else 50)
            per = {k: round(v / n, 2) for k, v in sorted(counts.items()) if v}
            per["total"] = round(sum(counts.values()) / n, 2)
            out[mode] = per
        return out


async def _workflows(engine: Engine, n: int, at_a_time: int) -> None:
    sem = asyncio.Semaphore(at_a_time)

    async def one(i: int) -> None:
        async with sem:
            await (await engine.start(three, i)).result()

    await asyncio.gather(*(one(i) for i in range(n)))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["memory", "sqlite", "postgres"])
    p.add_argument("--workflows", type=int, default=None, help="per mode (200; --quick 50)")
    p.add_argument("--pg-dsn", default=None)
    a = p.parse_args()
    n = a.workflows or (50 if a.quick else 200)
    with workdir(a.dir, keep=a.keep) as folder:

        def measure(config: str, url: str) -> Any:
            note(f"counting on {config}" + (" (a fresh database)" if config == "postgres" else ""))
            return asyncio.run(_measure(url, n))

        results = on_each_journal(a.configs, Path(folder), a.pg_dsn, measure)
        info = meta(folder)
    emit(
        {
            "benchmark": "count_journal_calls",
            "meta": info,
            "params": {"workflows_per_mode": n},
            "calls_per_3_step_workflow": results,
        }
    )


if __name__ == "__main__":
    main()
