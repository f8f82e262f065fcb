"""The engine's clock: what durable time (timers, ``ctx.now``, deadlines) is measured by.

Injectable so a test can run a workflow that sleeps for 30 days in
milliseconds (``continuum_py.testing.VirtualClock``). Lease expiry is not
measured by it: leases use the journal's own clock, shared by every worker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

__all__ = ["AttachableClock", "Clock", "SystemClock", "Watched"]


@runtime_checkable
class Clock(Protocol):
    """Durable time for an engine."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return once ``now() >= when``."""
        ...


class Watched(Protocol):
    """What an :class:`AttachableClock` may ask of an engine that uses it."""

    @property
    def idle(self) -> bool:
        """True when every run the engine holds waits only for time or a message."""
        ...


@runtime_checkable
class AttachableClock(Clock, Protocol):
    """Optional: a clock that watches the engines using it (``VirtualClock`` skips idle time)."""

    def attach(self, engine: Watched) -> None:
        """Called by each engine made with this clock."""
        ...


class SystemClock:
    """The wall clock (``time.time``)."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    async def sleep_until(self, when: float) -> None:
        """Sleep until the wall clock reaches ``when``."""
        delay = when - time.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def wait_for_wake(
    wake: asyncio.Event, clock: Clock, until: float | None, timeout: float
) -> None:
    """Return once ``wake`` is set, ``clock`` reaches ``until``, or ``timeout`` seconds pass."""
    waits: list[asyncio.Future[object]] = [asyncio.ensure_future(wake.wait())]
    if until is not None:
        waits.append(asyncio.ensure_future(clock.sleep_until(until)))
    try:
        # asyncio.wait with a timeout, not wait_for: 3.11's wait_for can lose a
        # cancel that races with the event being set, which hangs shutdown.
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
