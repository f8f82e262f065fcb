"""A worker's liveness: held while it lives, and a watch for workers that died.

On a :class:`~continuum_py.journal.LivenessJournal` a worker holds its liveness
(a lock the database or the OS lets go of when the process dies) from before its
first claim until it stops. Every :data:`WATCH_INTERVAL` seconds it looks for
registered workers that died still leasing runs, and wakes its claim loop when
there are: a claim takes such runs at once, without waiting for their leases to
expire. The same look checks its own liveness: while lost (its connection to
Postgres dropped) it claims nothing, since others would take those runs straight
away, and its runs' writes are fenced once another worker takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from continuum_py._log import Logger
from continuum_py.journal import LivenessJournal

WATCH_INTERVAL = 0.2
"""Seconds between looks for dead workers (and at this worker's own liveness)."""

MAX_PAUSE = 5.0
"""Longest pause, in seconds, between looks while they fail (the journal is away)."""

RETRY_HOLD_EVERY = 5
"""While another live process holds this worker's id, try to take it every this many looks."""


class LivenessWatch:
    """One worker's liveness, and its watch for dead workers.

    Args:
        journal: the journal, which keeps liveness.
        worker_id: this worker's id.
        log: the worker's logger.
        wake: makes the worker claim now.
    """

    def __init__(
        self, journal: LivenessJournal, worker_id: str, log: Logger, wake: Callable[[], None]
    ) -> None:
        self._journal = journal
        self.worker_id = worker_id
        self._log = log
        self._wake = wake
        self._ever_held = False
        self.lost = False
        """The liveness was held and is lost now: claim nothing until it is back."""

    async def hold(self) -> None:
        """Take this worker's liveness (before its first claim)."""
        try:
            self._ever_held = await self._journal.hold_liveness(self.worker_id)
        except Exception as exc:
            self._log.warning("worker.liveness_failed", error=str(exc))
            return
        if not self._ever_held:
            # Two live workers share this id (or a previous process of it is
            # not quite gone): its runs keep the lease rule until it is ours.
            self._log.warning("worker.id_in_use", worker_id=self.worker_id)

    async def run(self) -> None:
        """Look every :data:`WATCH_INTERVAL` seconds, until cancelled."""
        looks = 0
        pause = WATCH_INTERVAL
        while True:
            await asyncio.sleep(pause)
            looks += 1
            try:
                await self._look(looks)
                pause = WATCH_INTERVAL
            except Exception as exc:
                # Keep watching (leases still move runs meanwhile), less often
                # while the journal is away, as the claim loop does.
                self._log.warning("worker.liveness_watch_failed", error=str(exc))
                pause = min(pause * 2, MAX_PAUSE)

    async def _look(self, looks: int) -> None:
        if self._ever_held:
            held = await self._journal.liveness_held(self.worker_id)
            if held == self.lost:  # it changed
                self.lost = not held
                if held:
                    self._log.info("worker.liveness_regained")
                    self._wake()
                else:
                    self._log.warning("worker.liveness_lost")
        elif looks % RETRY_HOLD_EVERY == 0:
            self._ever_held = await self._journal.hold_liveness(self.worker_id)
            if self._ever_held:
                self._log.info("worker.liveness_held")
        dead = [w for w in await self._journal.dead_workers() if w != self.worker_id]
        if dead:
            self._wake()

    async def release(self, *, forget: bool) -> None:
        """Let go of the liveness as the worker stops.

        ``forget`` when every lease was given back: then it is unregistered too,
        leaving nothing behind; else its leftover runs move at once.
        """
        if not self._ever_held:
            return  # another process holds this id: not ours to let go of
        with contextlib.suppress(Exception):
            await self._journal.release_liveness(self.worker_id, forget=forget)
