"""Transactional steps in a gather (together or with a plain step) run one at a time and
commit their SQL; a graceful shutdown during one commits it.
"""

from __future__ import annotations

import asyncio

from continuum_py import (
    Context,
    Engine,
    Registry,
    step,
    step_connection,
    workflow,
)
from continuum_py.events import StepCompleted

reg = Registry()


@step(transactional=True)
async def book(amount: int) -> int:
    await step_connection().execute("INSERT INTO ledger (amount) VALUES (?)", (amount,))
    return amount


@step
async def plain(x: int) -> int:
    await asyncio.sleep(0.01)
    return x


@workflow(registry=reg)
async def mixed(ctx: Context) -> list[int]:
    a = list(await asyncio.gather(book(1), plain(2)))
    b = list(await asyncio.gather(book(3), book(4)))
    return a + b


async def test_transactional_steps_in_a_gather_run_one_at_a_time_and_commit(tmp_path):
    import sqlite3

    db = tmp_path / "j.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE ledger (amount INTEGER)")
    async with Engine(f"sqlite:///{db}", registry=reg, worker_id="a") as eng:
        h = await eng.start(mixed)
        assert await h.result(timeout=10) == [1, 2, 3, 4]
        completed = [e for e in await eng.history(h.run_id) if isinstance(e, StepCompleted)]
    assert len(completed) == 4
    with sqlite3.connect(db) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT amount FROM ledger")) == [1, 3, 4]


@workflow(registry=reg)
async def one_book(ctx: Context) -> int:
    return await book(7)


async def test_graceful_shutdown_during_a_transactional_step_commits_it(tmp_path):
    import sqlite3

    db = tmp_path / "j.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE ledger (amount INTEGER)")
    eng = Engine(f"sqlite:///{db}", registry=reg, worker_id="a")
    await eng.open()
    h = await eng.start(one_book)
    await eng.aclose(grace=5)
    async with Engine(f"sqlite:///{db}", registry=reg, worker_id="a") as again:
        assert await (await again.get(h.run_id)).result(timeout=5) == 7
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT amount FROM ledger")] == [7]
