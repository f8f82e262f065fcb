"""The in-process worker of an Engine: claims runnable runs and drives each one.

It owns the drivers of the runs it holds (one :class:`RunDriver` each, with its
task and its lease), and three loops: claiming (woken by starts, notifications
and timers, else polling), heartbeats (renewing every lease at ``lease_ttl / 3``)
and, for journals that cannot notify, a look for messages to its runs every
:data:`INBOX_WATCH_INTERVAL` seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable

from continuum_py._client import JournalClient
from continuum_py._clock import Clock, wait_for_wake
from continuum_py._liveness import LivenessWatch
from continuum_py._log import Logger
from continuum_py._runner import RunDriver
from continuum_py._runner_config import RunnerConfig
from continuum_py.errors import JournalUnavailable
from continuum_py.journal import (
    Lease,
    LivenessJournal,
    NewRun,
    RunRecord,
    RunStatus,
    StoredEvent,
)

INBOX_WATCH_INTERVAL = 0.2
"""Seconds between looks for messages to runs held by a worker whose journal cannot notify."""
CLAIM_GATHER = 0.002
"""Seconds a busy worker lets more of its runs end before it claims for the slots freed."""


class Worker:
    """Claims and drives runs for one engine.

    Args:
        client: the engine's journal client.
        cfg: what every driver shares (its ``on_child`` should call :meth:`on_child`).
        concurrency: runs driven at once.
        lease_ttl: seconds a lease lasts without a heartbeat.
        poll_interval: seconds between claims when nothing wakes the worker.
        clock: the engine clock.
        log: the engine's logger.
        on_run_done: called with a run id when its driver stops (and its final event, encoded,
            if the run ended here).
        liveness: the journal, when it keeps worker liveness: this worker holds
            its own while it runs and takes dead workers' runs at once.
    """

    def __init__(
        self,
        *,
        client: JournalClient,
        cfg: RunnerConfig,
        concurrency: int,
        lease_ttl: float,
        poll_interval: float,
        clock: Clock,
        log: Logger,
        on_run_done: Callable[[str, bytes | None], None],
        liveness: LivenessJournal | None = None,
    ) -> None:
        self._client = client
        self.cfg = cfg
        self.worker_id = cfg.worker_id
        self.concurrency = concurrency
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.clock = clock
        self._log = log
        self._on_run_done = on_run_done
        self.drivers: dict[str, RunDriver] = {}
        """The runs this worker drives, each with its task and its (renewed) lease."""
        self._idle_loop = False
        # A run dropped because the journal was unreachable may still hold our lease:
        # take such runs back at the next claim instead of waiting for the lease to lapse.
        self._reclaim_own = False
        self._claiming: asyncio.Future[list[Lease]] | None = None
        self._wake = asyncio.Event()
        self._bg: list[asyncio.Task[None]] = []
        self._stopping = False
        self._starting: collections.Counter[str] = collections.Counter()
        """Runs being created and claimed here by :meth:`start_run` (no driver yet)."""
        self._poked_early: set[str] = set()
        """Those of them poked before their driver existed (a message may wait)."""
        self._fresh: set[RunDriver] = set()
        """Drivers of runs created by :meth:`start_run`, until they are done."""
        self._backlog = True
        """The last claim may have left runnable runs here for want of room."""
        self._liveness = (
            LivenessWatch(liveness, self.worker_id, log, self.wake)
            if liveness is not None
            else None
        )

    # ---- lifecycle ----
    async def start(self, *, watch_inbox: bool) -> None:
        """Hold this worker's liveness, take back its own unfinished runs, then start the loops."""
        if self._liveness is not None:
            await self._liveness.hold()  # first: a claim in a dead worker's name is taken at once
        await self.claim(reclaim_own=True)
        self._bg.append(asyncio.create_task(self._claim_loop()))
        self._bg.append(asyncio.create_task(self._heartbeat_loop()))
        if watch_inbox:
            self._bg.append(asyncio.create_task(self._inbox_watch_loop()))
        if self._liveness is not None:
            self._bg.append(asyncio.create_task(self._liveness.run()))

    @property
    def claim_loop(self) -> asyncio.Task[None] | None:
        """The task that claims runs (None before :meth:`start`)."""
        return self._bg[0] if self._bg else None

    async def stop(self, *, grace: float) -> None:
        """Stop claiming and driving: see ``Engine.aclose``."""
        if grace > 0 and self._bg:
            self._bg[0].cancel()  # the claim loop: claim nothing new; heartbeats go on
            for driver in list(self.drivers.values()):
                driver.stop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    while self.drivers:
                        await asyncio.gather(
                            *(d.task for d in list(self.drivers.values())), return_exceptions=True
                        )
        self._stopping = True  # a child created from now on is left to the lease sweep
        for t in self._bg:
            t.cancel()
        for driver in list(self.drivers.values()):
            driver.task.cancel()
        pending = [*self._bg, *(d.task for d in self.drivers.values())]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        claiming, self._claiming = self._claiming, None
        if claiming is not None:
            # Let a claim still in flight land first, so the sweep below sees its leases.
            await asyncio.gather(claiming, return_exceptions=True)
        gave_all_back = await self._release_leftovers()
        if self._liveness is not None:
            await self._liveness.release(forget=gave_all_back)
        self._bg.clear()

    async def _release_leftovers(self) -> bool:
        """Give back any lease still held in this worker's name; whether all were.

        A driver task cancelled before it first ran, or a claim whose reply the
        stopping worker never read, never reaches its own release; without this
        its run would wait for the lease to expire.
        """
        with contextlib.suppress(Exception):
            for rec in await self._client.list_runs(status=RunStatus.RUNNING, limit=10_000):
                if rec.lease_owner == self.worker_id:
                    lease = Lease(
                        run_id=rec.run_id,
                        worker_id=self.worker_id,
                        token=rec.lease_token,
                        expires_at=rec.lease_expires_at or 0.0,
                    )
                    await self._client.release(lease)
            return True
        return False

    # ---- what the engine asks of it ----
    @property
    def has_room(self) -> bool:
        """Whether it may take one more run now."""
        return len(self.drivers) < self.concurrency

    @property
    def idle(self) -> bool:
        """True when every run held waits only for time or a message."""
        return self._idle_loop and all(d.idle for d in self.drivers.values())

    def wake(self) -> None:
        """Look for runnable runs now."""
        self._wake.set()

    def poke(self, run_id: str, *, cancel: bool = False) -> None:
        """Something arrived for ``run_id`` (a message, a child's outcome)."""
        driver = self.drivers.get(run_id)
        if driver is not None:
            driver.poke(cancel=cancel)
        elif run_id in self._starting:
            self._poked_early.add(run_id)
        self._wake.set()

    async def start_run(self, run: NewRun, *, ttl: float) -> tuple[RunRecord, Lease | None, bool]:
        """Create ``run`` claimed by this worker (``Journal.start_run``) and drive it if created.

        Its first pass starts from memory: the history is ``run.first_event`` and the
        inbox was empty at the commit, so the driver reads neither. A message sent
        from then on reaches it as it reaches any driven run: a poke from this
        process (one that lands before the driver exists is kept here, and that
        driver reads its inbox as usual), a notification, or the inbox watch; and
        the journal refuses to end a run with unrecorded messages.
        """
        rid = run.run_id
        self._starting[rid] += 1
        try:
            rec, lease, created = await self._client.start_run(
                run, claim_for=self.worker_id, ttl=ttl
            )
        finally:
            self._starting[rid] -= 1
            poked = rid in self._poked_early
            if not self._starting[rid]:
                del self._starting[rid]
                self._poked_early.discard(rid)
        if lease is not None:
            self.spawn(lease, first=None if poked else run.first_event)
        return rec, lease, created

    def on_notify(self, run_id: str) -> None:
        """A journal notification: a run was started (``""``) or messaged."""
        if run_id:
            self.poke(run_id)
        else:
            self._wake.set()

    def on_child(self, lease: Lease | None) -> None:
        """A child run (or a continued run) was created, claimed here if ``lease``."""
        if lease is not None and not self._stopping:
            self.spawn(lease)
        else:
            self._wake.set()

    def stop_driver(self, run_id: str) -> None:
        """Cancel the driver of ``run_id`` (its lease was taken away)."""
        held = self.drivers.get(run_id)
        if held is not None:
            held.task.cancel()

    def spawn(self, lease: Lease, *, first: StoredEvent | None = None) -> None:
        """Drive the run of ``lease`` (whose history is only ``first``, if given)."""
        old = self.drivers.get(lease.run_id)
        if old is not None:
            # Our own lease lapsed (a stalled loop) and we claimed the run anew: the old
            # driver's token is stale, so hand the run to a driver holding the new one.
            old.task.cancel()
        driver = RunDriver(self.cfg, lease, self._driver_done, first)
        self.drivers[lease.run_id] = driver
        if first is not None:
            self._fresh.add(driver)
        driver.start()

    def _driver_done(self, driver: RunDriver) -> None:
        run_id = driver.run_id
        fresh = driver in self._fresh
        self._fresh.discard(driver)
        if self.drivers.get(run_id) is not driver:
            return  # a newer driver took over this run
        del self.drivers[run_id]
        if driver.journal_lost:
            self._reclaim_own = True
        self._on_run_done(run_id, driver.outcome)
        if driver.core is not None and driver.core.started is not None:
            parent = driver.core.started.parent_run_id
            if parent is not None:
                # A child that ended wrote its outcome to the parent's inbox.
                self.poke(parent)
        if fresh and driver.outcome is not None and not self._backlog and not self._claiming:
            # A run started here (no parent) ended here, and no runnable run waits for
            # its slot: nothing for a claim to find that the claim loop does not
            # already wait for (a start, a notification, a timer, the poll).
            return
        self._wake.set()

    # ---- the loops ----
    async def claim(self, *, reclaim_own: bool = False) -> None:
        """Claim as many runnable runs as there is room for, and drive them."""
        free = self.concurrency - len(self.drivers)
        if free <= 0 or (self._liveness is not None and self._liveness.lost):
            self._backlog = True
            return
        # Shielded and kept: if the worker stops mid-claim, stop() waits for the
        # claim to land before giving back what this worker still holds.
        self._claiming = asyncio.ensure_future(
            self._client.claim(
                self.worker_id,
                ttl=self.lease_ttl,
                limit=free,
                reclaim_own=reclaim_own,
                now=self.clock.now(),
            )
        )
        leases = await asyncio.shield(self._claiming)
        self._claiming = None
        self._backlog = len(leases) >= free
        for lease in leases:
            self.spawn(lease)

    async def _claim_loop(self) -> None:
        backoff = self.poll_interval
        while True:
            if self._backlog and self.concurrency - len(self.drivers) < self.concurrency // 4:
                # Runnable runs wait and only a few slots are free: a moment lets
                # more runs end, so one claim (on Postgres, a queue's admission
                # statement costs as much as several plain claims) fills them all.
                await asyncio.sleep(CLAIM_GATHER)
            self._wake.clear()
            next_wake: float | None = None
            try:
                reclaim, self._reclaim_own = self._reclaim_own, False
                await self.claim(reclaim_own=reclaim)
                next_wake = await self._client.next_wake_at()
                backoff = self.poll_interval
            except Exception as exc:
                # Never let the loop die: a worker that stops claiming strands its runs.
                if isinstance(exc, JournalUnavailable | OSError):
                    self._log.warning("worker.claim_failed", error=str(exc))
                else:
                    self._log.exception("worker.claim_failed", error=str(exc))
                self._reclaim_own = self._reclaim_own or reclaim
                backoff = min(backoff * 2, 30.0)
            await self._sleep(backoff, next_wake)

    async def _sleep(self, backoff: float, next_wake: float | None) -> None:
        """Wait for a wake-up, the poll interval, or the next timer (on the engine clock)."""
        # (A due one that was not claimed, e.g. concurrency is full, waits for the poll.)
        due = next_wake if next_wake is not None and next_wake > self.clock.now() else None
        self._idle_loop = True
        try:
            await wait_for_wake(self._wake, self.clock, due, backoff)
        finally:
            self._idle_loop = False

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            drivers = list(self.drivers.values())
            if not drivers:
                continue
            try:
                renewed = await self._client.renew([d.lease for d in drivers], ttl=self.lease_ttl)
            except Exception as exc:
                # Keep beating: leases lapse within lease_ttl if this loop stops.
                self._log.warning("worker.heartbeat_failed", error=str(exc))
                continue
            for driver, new in zip(drivers, renewed, strict=True):
                if new is None and (
                    driver.letting_go or self.drivers.get(driver.run_id) is not driver
                ):
                    continue  # the run gave its lease up itself (it ended, suspended, released)
                if new is None:
                    self._log.warning(
                        "run.lease_lost", run_id=driver.run_id, token=driver.lease.token
                    )
                    driver.task.cancel()
                else:
                    driver.lease = new
            # Messages sent by other processes to runs held here (a lost
            # notification, or a journal that does not notify).
            await self._poke_unseen([d.run_id for d in drivers])

    async def _inbox_watch_loop(self) -> None:
        """Poke the runs held here that have messages from other processes.

        For journals that cannot notify (SQLite, memory shared by engines): a
        signal or cancel sent by another process reaches a run busy in a step
        within ``INBOX_WATCH_INTERVAL`` seconds, not only at a heartbeat.
        """
        while True:
            await asyncio.sleep(INBOX_WATCH_INTERVAL)
            if self.drivers:
                await self._poke_unseen(list(self.drivers))

    async def _poke_unseen(self, run_ids: list[str]) -> None:
        """Poke each of ``run_ids`` held here whose inbox holds messages it has not recorded."""
        with contextlib.suppress(Exception):
            for run_id in await self._client.unseen_inbox(run_ids):
                driver = self.drivers.get(run_id)
                if driver is not None:
                    driver.poke()
