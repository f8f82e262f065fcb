"""An unexpected journal error (a statement timeout, say) does not end the worker loop for good."""

from __future__ import annotations

from continuum_py import (
    Context,
    Engine,
    Registry,
    step,
    workflow,
)
from continuum_py.adapters.memory import MemoryJournal

reg = Registry()


@step
async def one() -> int:
    return 1


@workflow(registry=reg)
async def just_one(ctx: Context) -> int:
    return await one()


class FlakyClaims(MemoryJournal):
    fail = 0

    async def claim(self, *args, **kwargs):
        if self.fail:
            self.fail -= 1
            raise RuntimeError("canceling statement due to statement timeout")
        return await super().claim(*args, **kwargs)


async def test_the_worker_loop_survives_an_unexpected_journal_error():
    journal = FlakyClaims()
    async with Engine(journal=journal, registry=reg, worker_id="a", poll_interval=0.02) as eng:
        journal.fail = 2
        async with Engine(journal=journal, registry=reg, worker=False) as client:
            h = await client.start(just_one)
            assert await h.result(timeout=5) == 1
        assert not eng._worker.claim_loop.done()
