"""The memory journal's appends skip a coroutine, unless its ``append`` was replaced.

``JournalClient`` calls ``MemoryJournal.append_now`` (no await) instead of
``append``; a subclass or an instance that replaced ``append`` (to count or to
fail writes) must still see every write.
"""

from __future__ import annotations

from typing import Any

from continuum_py import Context, Engine, step, workflow
from continuum_py._client import JournalClient
from continuum_py.adapters.memory import MemoryJournal
from continuum_py.workflow import Registry

reg = Registry()


@step
async def add_one(x: int) -> int:
    return x + 1


@workflow(registry=reg, name="append_now.chain")
async def chain(ctx: Context, n: int) -> int:
    for _ in range(n):
        n = await add_one(n)
    return n


class CountingJournal(MemoryJournal):
    def __init__(self) -> None:
        super().__init__()
        self.appends = 0

    async def append(self, batches: Any) -> Any:
        self.appends += len(batches)
        return await super().append(batches)


async def _run(journal: MemoryJournal) -> list[str]:
    async with Engine(journal=journal, registry=reg, worker_id="w1") as eng:
        h = await eng.start(chain, 3, run_id="r")
        assert await h.result(timeout=5) == 6
        return [type(e).__name__ for e in await eng.history("r")]


def test_only_the_plain_memory_journal_is_written_without_a_coroutine() -> None:
    assert JournalClient(MemoryJournal())._append_now is not None
    assert JournalClient(CountingJournal())._append_now is None
    patched = MemoryJournal()
    patched.append = patched.append  # type: ignore[method-assign]
    assert JournalClient(patched)._append_now is None


async def test_a_run_on_the_memory_journal_is_recorded_whole() -> None:
    kinds = await _run(MemoryJournal())
    assert kinds.count("StepScheduled") == kinds.count("StepCompleted") == 3
    assert kinds[-1] == "RunCompleted"


async def test_a_subclass_that_replaced_append_sees_every_write() -> None:
    journal = CountingJournal()
    kinds = await _run(journal)
    # One append per step (its completion with the next schedule), the first
    # schedule and the end: at least as many as there are steps, plus one.
    assert journal.appends >= 4
    assert kinds[-1] == "RunCompleted"


async def test_an_instance_whose_append_was_replaced_sees_every_write() -> None:
    journal = MemoryJournal()
    inner = journal.append
    seen: list[int] = []

    async def append(batches: Any) -> Any:
        seen.append(len(batches))
        return await inner(batches)

    journal.append = append  # type: ignore[method-assign]
    kinds = await _run(journal)
    assert sum(seen) >= 4
    assert kinds[-1] == "RunCompleted"


async def test_an_append_replaced_while_the_engine_runs_sees_every_later_write() -> None:
    journal = MemoryJournal()
    seen: list[int] = []
    async with Engine(journal=journal, registry=reg, worker_id="w1") as eng:
        inner = journal.append

        async def append(batches: Any) -> Any:
            seen.append(len(batches))
            return await inner(batches)

        journal.append = append  # type: ignore[method-assign]
        h = await eng.start(chain, 3, run_id="later")
        assert await h.result(timeout=5) == 6
    assert sum(seen) >= 4
