"""Shared test helpers (imported as `helpers` thanks to pytest's rootdir insertion)."""

from __future__ import annotations

# The rows and leases the shipped conformance suite builds, for the tests here too.
from continuum_py.testing._journal_helpers import (
    claim_all,
    claim_run,
    new_run,
    step_batch,
    step_events,
    suspend_batch,
)

__all__ = [
    "claim_all",
    "claim_run",
    "journal_maker",
    "journal_state",
    "new_run",
    "step_batch",
    "step_events",
    "suspend_batch",
    "wait_until",
]


async def wait_until(predicate, *, timeout: float = 5.0, interval: float = 0.005):
    """Poll the async ``predicate`` until it returns something truthy; fail after ``timeout``."""
    import asyncio

    async with asyncio.timeout(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(interval)


def journal_maker(url: str):
    """A function giving a fresh journal object on the same storage each call (a "restart")."""
    from continuum_py._schemes import journal_from_url

    if url.startswith("memory"):
        shared = journal_from_url(url)
        return lambda: shared
    return lambda: journal_from_url(url)


async def journal_state(engine) -> dict:
    """Every run's row and decoded history, to compare before and after an operation."""
    return {r.run_id: (r, await engine.history(r.run_id)) for r in await engine.list_runs()}
