"""A heartbeat whose renewal meets a run's own end is no lease loss.

The heartbeat renews the leases of the runs it saw a moment ago; a run that
ended (or suspended) meanwhile gave its lease up with its final write, so the
renewal finds none. That must not log ``run.lease_lost`` nor cancel a driver
that is still finishing its run: its ``run_ended`` hooks must run.
"""

from __future__ import annotations

import asyncio
import logging

from continuum_py import Context, Engine, Interceptor, Registry, RunStatus, step, workflow

reg = Registry()


@step
async def one() -> int:
    return 1


@workflow(registry=reg)
async def short(ctx: Context) -> int:
    return await one()


class Ends(Interceptor):
    def __init__(self) -> None:
        self.ended: list[tuple[str, RunStatus]] = []

    async def run_ended(self, run_id: str, workflow: str, status: RunStatus) -> None:
        self.ended.append((run_id, status))


async def test_a_renewal_racing_the_final_write_is_not_a_lost_lease(caplog):
    caplog.set_level(logging.WARNING, logger="continuum_py")
    hooks = Ends()
    async with Engine(
        "memory://", registry=reg, worker_id="w", lease_ttl=0.3, interceptors=[hooks]
    ) as engine:
        worker = engine._worker
        assert worker is not None
        client = worker._client
        real_append, real_renew = client.append, client.renew
        committed, renewed = asyncio.Event(), asyncio.Event()
        renewals_missed: list[str] = []

        async def append(batch):  # the run's final write: committed, then held
            result = await real_append(batch)
            if batch.status is RunStatus.COMPLETED:
                committed.set()
                await asyncio.wait_for(renewed.wait(), 5)
            return result

        async def renew(leases, ttl):  # a renewal sent with the run's lease in it
            if any(lease.run_id == "race" for lease in leases):
                await asyncio.wait_for(committed.wait(), 5)
                out = await real_renew(leases, ttl=ttl)
                renewals_missed.extend(
                    lease.run_id for lease, new in zip(leases, out, strict=True) if new is None
                )
                asyncio.get_running_loop().call_later(0.05, renewed.set)
                return out
            return await real_renew(leases, ttl=ttl)

        client.append, client.renew = append, renew
        handle = await engine.start(short, run_id="race")
        assert await handle.result(timeout=10) == 1
        await asyncio.sleep(0.1)  # the heartbeat has handled its renewal's answer
    assert renewals_missed == ["race"]  # the renewal did meet the ended run
    assert hooks.ended == [("race", RunStatus.COMPLETED)]
    lost = [r for r in caplog.records if "lease_lost" in r.getMessage()]
    assert not lost, [r.getMessage() for r in lost]
