"""A SQLite worker notices runs started by another process without waiting for its poll.

The worker below polls every 600 s: only the journal's change watch
(``PRAGMA data_version`` on its writer connection) can make it look sooner.
Two journals on one file are two connections, as two processes would be.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers import wait_until

from continuum_py import Context, Engine, Registry, RunStatus, step, workflow
from continuum_py.adapters._sqlite_watch import ChangeWatch
from continuum_py.adapters.sqlite import SQLiteJournal

reg = Registry()


@step
async def double(x: int) -> int:
    return x * 2


@workflow(registry=reg)
async def doubled(ctx: Context, x: int) -> int:
    return await double(x)


@workflow(registry=reg)
async def napping(ctx: Context, x: int) -> int:
    await ctx.sleep(0.2)
    return await double(x)


async def test_a_run_started_by_another_connection_starts_before_the_poll(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with Engine(url, registry=reg, poll_interval=600) as worker_side:
        await asyncio.sleep(0.1)  # the worker's first claim found nothing and it sleeps
        async with Engine(url, registry=reg, worker=False) as client:
            handles = [await client.start(doubled, i) for i in range(5)]
            handles.append(await client.start(napping, 21))
            results = [await asyncio.wait_for(h.result(), 30) for h in handles]
        assert results == [0, 2, 4, 6, 8, 42]
        listed = await worker_side.list_runs(status=RunStatus.COMPLETED, limit=10)
        assert len(listed) == 6


async def test_the_watch_ignores_its_own_commits_and_sees_another_connections(
    tmp_path: Path,
) -> None:
    path = tmp_path / "watched.db"
    mine = SQLiteJournal(str(path))
    async with Engine(journal=mine, registry=reg, worker=False) as own:
        seen: list[int] = []
        watch = ChangeWatch(mine._wc, interval=0.01)
        await watch.add(lambda: seen.append(1))
        try:
            await own.start(doubled, 1)
            await own.start(doubled, 2)
            await asyncio.sleep(0.1)  # ten looks
            assert seen == []
            async with Engine(f"sqlite:///{path}", registry=reg, worker=False) as theirs:
                await theirs.start(doubled, 3)

            async def noticed() -> bool:
                return bool(seen)

            await wait_until(noticed, timeout=10)
        finally:
            await watch.close()


async def test_a_memory_database_has_nothing_to_watch() -> None:
    async with SQLiteJournal(":memory:") as j:
        calls: list[int] = []
        await j.watch_changes(lambda: calls.append(1))
        assert j._watch is None


async def test_a_message_from_another_connection_reaches_a_suspended_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'signals.db'}"
    async with Engine(url, registry=reg, poll_interval=600) as worker_side:
        h = await worker_side.start(waiting_for_go)
        await wait_until_suspended(worker_side, h.run_id)
        async with Engine(url, registry=reg, worker=False) as client:
            await client.signal(h.run_id, "go", 5)
            handle = await client.get(h.run_id)
            assert await asyncio.wait_for(handle.result(), 30) == 10


@workflow(registry=reg)
async def waiting_for_go(ctx: Context) -> int:
    x: int = await ctx.wait_for_signal("go")
    return await double(x)


async def wait_until_suspended(engine: Engine, run_id: str) -> None:
    async def suspended() -> bool:
        runs = await engine.list_runs(status=RunStatus.SUSPENDED, limit=10)
        return any(r.run_id == run_id for r in runs)

    for _ in range(300):
        if await suspended():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the run never suspended")
