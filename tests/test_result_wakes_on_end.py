"""`handle.result()` returns as soon as the run ends, even when it ends during result()'s own read.

result() reads the run's record, and when the run is still going it waits for the
engine's "run done" wake-up. A run that ended while that read was in flight used to
be missed: the waiter was made after the read, so nothing set it, and result() slept
out its poll delay (20 ms and up) before reading again; a sequential caller paid that
on a good share of its runs. The tests stop the event loop's clock once the run has
ended, so only the wake-up can make result() read again: no timer can fire.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from continuum_py import Context, Engine, Registry, step, workflow

reg = Registry()
_gate: dict[str, asyncio.Event] = {}


@step
async def held() -> int:
    await _gate["open"].wait()
    return 7


@workflow(registry=reg, name="wake.held")
async def held_flow(ctx: Context) -> int:
    return await held() + 1


async def test_a_run_ending_during_results_read_wakes_it(
    journal_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _gate["open"] = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with Engine(journal_url, registry=reg, worker_id="w") as engine:
        worker: Any = engine._worker
        ended = asyncio.Event()
        on_done = worker._on_run_done

        def note_done(run_id: str, outcome: bytes | None = None) -> None:
            on_done(run_id, outcome)
            ended.set()

        worker._on_run_done = note_done
        handle = await engine.start(held_flow)
        read = engine._record
        stale_returned = asyncio.Event()
        calls = 0

        async def read_while_the_run_ends(run_id: str) -> Any:
            nonlocal calls
            calls += 1
            rec = await read(run_id)
            if calls == 1:  # the run ends between this read and its answer
                assert not rec.status.terminal
                _gate["open"].set()
                await ended.wait()
                stale_returned.set()
            return rec

        monkeypatch.setattr(engine, "_record", read_while_the_run_ends)
        # result() reads only a run it cannot count on this process's driver to
        # report (one driven elsewhere): make it read this one.
        monkeypatch.setattr(engine, "_driving", lambda run_id: False)
        waiting = asyncio.create_task(handle.result())
        await stale_returned.wait()
        frozen = loop.time()
        monkeypatch.setattr(loop, "time", lambda: frozen)  # from here on, no timer fires
        # Woken, result() takes the end the driver handed over (or reads the run again)
        # at once; missing the end, it would sit on its poll timer, which cannot fire now.
        for _ in range(1000):
            if waiting.done() or calls >= 2:
                break
            await asyncio.sleep(0)
        monkeypatch.undo()
        assert waiting.done() or calls >= 2, (
            "result() missed the run's end and waits for its poll timer"
        )
        assert await asyncio.wait_for(waiting, 30) == 8
        assert engine._waiters == {}


async def test_result_of_an_already_finished_run_leaves_no_waiter(journal_url: str) -> None:
    _gate["open"] = asyncio.Event()
    _gate["open"].set()
    async with Engine(journal_url, registry=reg, worker_id="w") as engine:
        handle = await engine.start(held_flow)
        assert await handle.result(timeout=30) == 8
        for _ in range(3):
            assert await handle.result(timeout=30) == 8
        assert engine._waiters == {}


async def test_result_takes_the_end_of_a_run_that_ended_here_without_reading_it_again(
    journal_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _gate["open"] = asyncio.Event()
    async with Engine(journal_url, registry=reg, worker_id="w") as engine:
        handle = await engine.start(held_flow)
        read = engine._record
        reads = 0

        async def counted(run_id: str) -> Any:
            nonlocal reads
            reads += 1
            return await read(run_id)

        monkeypatch.setattr(engine, "_record", counted)
        waiting = asyncio.create_task(handle.result(timeout=30))
        for _ in range(5):
            await asyncio.sleep(0)
        _gate["open"].set()  # the run ends once result() waits for it
        assert await waiting == 8
        # The run was driven here: its end came from the driver that wrote it,
        # with no read of the journal at all.
        assert reads == 0
        assert engine._waiters == {}
