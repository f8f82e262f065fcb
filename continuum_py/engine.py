"""The Engine: the client users start and watch runs with.

Unless told otherwise it is also an in-process worker that runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import time
import uuid
from typing import Any, Generic, TypeVar

import msgspec

from continuum_py import _codec
from continuum_py._client import JournalClient, decode_all, stored
from continuum_py._log import get_logger
from continuum_py._runner import RunDriver, RunnerConfig
from continuum_py._schemes import DEFAULT_URL, journal_from_url
from continuum_py.errors import (
    ConfigurationError,
    ContinuumError,
    EncodingError,
    JournalUnavailable,
    RunAlreadyExists,
    RunFailed,
    RunNotFound,
)
from continuum_py.events import AnyEvent, RunCompleted, RunStarted
from continuum_py.events import RunFailed as RunFailedEvent
from continuum_py.journal import Journal, Lease, NewRun, RunRecord, RunStatus
from continuum_py.workflow import Registry, WorkflowDef, default_registry

__all__ = ["Engine", "RunHandle"]

R = TypeVar("R")


class RunHandle(Generic[R]):
    """A reference to one run; cheap to make, holds no resources.

    Attributes:
        run_id: the run's id.
        workflow: the workflow's name.
    """

    def __init__(self, engine: Engine, run_id: str, workflow: str, result_type: Any = Any) -> None:
        self._engine = engine
        self.run_id = run_id
        self.workflow = workflow
        self._result_type = result_type

    async def status(self) -> RunStatus:
        """Where the run stands now."""
        return (await self._engine._record(self.run_id)).status

    async def record(self) -> RunRecord:
        """The journal's full row for the run (status, lease, park reason, ...)."""
        return await self._engine._record(self.run_id)

    async def result(self, *, timeout: float | None = None) -> R:
        """Wait for the run to finish and return its result.

        Raises:
            RunFailed: the workflow raised (``error_type``, ``message``, ``traceback_text``).
            TimeoutError: ``timeout`` seconds passed first.
        """
        async with asyncio.timeout(timeout):
            delay = 0.02
            while True:
                rec = await self._engine._record(self.run_id)
                if rec.status.terminal and rec.outcome is not None:
                    return self._decode(rec)
                waiter = self._engine._waiter(self.run_id)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await waiter.wait()
                delay = min(delay * 2, 1.0)

    def _decode(self, rec: RunRecord) -> R:
        end = _codec.decode_event(rec.run_id, rec.last_seq, 0, rec.outcome or b"")
        if isinstance(end, RunCompleted):
            value: R = _codec.decode_value(end.result, self._result_type)
            return value
        if isinstance(end, RunFailedEvent):
            raise RunFailed(rec.run_id, end.error.type, end.error.message, end.error.traceback)
        raise ContinuumError(f"run {rec.run_id}: unexpected final event {type(end).__name__}")

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id} ({self.workflow})>"


class Engine:
    """The client for starting and watching runs, and an in-process worker.

    Use it as an async context manager::

        async with Engine("sqlite:///runs.db") as engine:
            handle = await engine.start(checkout, "o-1", 500, run_id="order-o-1")
            print(await handle.result())

    Args:
        url: the journal: ``memory://``, ``sqlite:///path.db`` (default
            ``sqlite:///continuum.db``, so runs survive a restart with no set-up).
        worker_id: this worker's name. A worker restarted with the same id takes
            its own unfinished runs back at once instead of waiting for their
            leases to expire. Default: the host name. Give each worker process
            that runs at the same time its own id.
        lease_ttl: seconds a lease lasts without a heartbeat; a crashed worker's
            runs move to another worker after this.
        snapshot_every: store a snapshot of replay state every N events (0: never).
        concurrency: runs this worker drives at once.
        registry: where workflows are looked up by name (default: the one
            ``@workflow`` fills).
        worker: run an in-process worker (``False``: a client only).
        poll_interval: seconds between looks for runnable runs when nothing
            wakes the worker.
        journal: an already made journal object, instead of ``url``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        worker_id: str | None = None,
        lease_ttl: float = 30.0,
        snapshot_every: int = 500,
        concurrency: int = 100,
        registry: Registry | None = None,
        worker: bool = True,
        poll_interval: float = 1.0,
        journal: Journal | None = None,
    ) -> None:
        if lease_ttl <= 0:
            raise ConfigurationError(f"lease_ttl must be > 0, got {lease_ttl}")
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
        if snapshot_every < 0:
            raise ConfigurationError(f"snapshot_every must be >= 0, got {snapshot_every}")
        self.url = url or DEFAULT_URL
        self._journal_obj: Any = journal if journal is not None else journal_from_url(self.url)
        self.worker_id = worker_id or socket.gethostname()
        self.lease_ttl = lease_ttl
        self.snapshot_every = snapshot_every
        self.concurrency = concurrency
        self.registry = registry or default_registry
        self.run_worker = worker
        self.poll_interval = poll_interval
        self._client = JournalClient(self._journal_obj)
        self._drivers: dict[str, tuple[asyncio.Task[None], Lease]] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._bg: list[asyncio.Task[None]] = []
        self._open = False
        self._log = get_logger(worker_id=self.worker_id)
        self._cfg = RunnerConfig(
            client=self._client,
            registry=self.registry,
            worker_id=self.worker_id,
            snapshot_every=snapshot_every,
        )

    @property
    def journal(self) -> Journal:
        """The journal this engine uses."""
        j: Journal = self._journal_obj
        return j

    async def __aenter__(self) -> Engine:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Connect to the journal and start the worker (unless ``worker=False``)."""
        if self._open:
            return
        connect = getattr(self._journal_obj, "connect", None)
        if connect is not None:
            await connect()
        self._open = True
        if self.run_worker:
            # Take back this worker's own unfinished runs before anything else.
            await self._claim(reclaim_own=True)
            self._bg.append(asyncio.create_task(self._worker_loop()))
            self._bg.append(asyncio.create_task(self._heartbeat_loop()))

    async def aclose(self) -> None:
        """Stop the worker (in-flight runs are released for others) and close the journal."""
        if not self._open:
            return
        self._open = False
        for t in self._bg:
            t.cancel()
        for task, _ in list(self._drivers.values()):
            task.cancel()
        pending = [t for t in self._bg] + [t for t, _ in self._drivers.values()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._bg.clear()
        await self._journal_obj.aclose()

    # ---- client API ----
    async def start(
        self,
        workflow: WorkflowDef[Any, R] | str,
        *args: Any,
        run_id: str | None = None,
    ) -> RunHandle[R]:
        """Start a run of ``workflow`` with ``args``, or return the existing run of ``run_id``.

        Args:
            workflow: a ``@workflow`` function, or a registered workflow name.
            *args: the workflow's arguments after ``ctx``; encoded with msgspec.
            run_id: the run's id (default: a random one). Starting an existing
                run_id returns that run, never a second one.

        Raises:
            WorkflowNotRegistered: ``workflow`` is a name no registry knows.
            EncodingError: an argument cannot be encoded; nothing is recorded.
            TypeError: the arguments do not fit the workflow's signature.
            RunAlreadyExists: ``run_id`` belongs to a run of another workflow.
        """
        self._check_open()
        wf = self._resolve(workflow)
        try:
            inspect.signature(wf.fn).bind(None, *args)
        except TypeError as exc:
            raise TypeError(f"workflow {wf.name!r}: {exc}") from None
        raw = _codec.encode_args(args, what=wf.name, kind="workflow")
        try:
            _codec.decode_args(raw, wf.arg_types)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise EncodingError(
                wf.name, "arguments", f"they do not fit the signature: {exc}", kind="workflow"
            ) from exc
        rid = run_id or uuid.uuid4().hex
        first = RunStarted(seq=1, at=time.time(), run_id=rid, workflow=wf.name, args=raw)
        claim = (
            self.worker_id if self.run_worker and len(self._drivers) < self.concurrency else None
        )
        rec, lease, created = await self._client.start_run(
            NewRun(run_id=rid, workflow=wf.name, first_event=stored(rid, first)),
            claim_for=claim,
            ttl=self.lease_ttl,
        )
        if not created and rec.workflow != wf.name:
            raise RunAlreadyExists(rid, rec.workflow, wf.name)
        if created:
            self._log.info("run.created", run_id=rid, workflow=wf.name)
        if lease is not None:
            self._spawn(lease)
        elif created:
            self._wake.set()
        return RunHandle(self, rid, wf.name, _result_type(wf))

    async def get(self, run_id: str) -> RunHandle[Any]:
        """A handle to an existing run; raises ``RunNotFound``."""
        rec = await self._record(run_id)
        try:
            rtype = _result_type(self.registry.get(rec.workflow))
        except ContinuumError:
            rtype = Any
        return RunHandle(self, run_id, rec.workflow, rtype)

    async def history(self, run_id: str) -> list[AnyEvent]:
        """Every recorded event of the run, decoded, in order."""
        self._check_open()
        return decode_all(await self._client.load(run_id))

    async def list_runs(
        self, *, status: RunStatus | str | None = None, limit: int = 1000
    ) -> list[RunRecord]:
        """Runs, oldest first, optionally only those in ``status``."""
        self._check_open()
        st = RunStatus(status) if status is not None else None
        return await self._client.list_runs(status=st, limit=limit)  # type: ignore[no-any-return]

    async def resume(self, run_id: str) -> None:
        """Make a parked run runnable again (after deploying code that matches its history)."""
        rec = await self._record(run_id)
        if rec.status != RunStatus.PARKED:
            raise ContinuumError(f"run {run_id} is {rec.status.value}, not parked")
        await self._client.set_status(run_id, RunStatus.PENDING, reason=None)
        self._wake.set()

    # ---- internals ----
    def _check_open(self) -> None:
        if not self._open:
            raise ConfigurationError(
                "the Engine is not open; use `async with Engine(...)` or await engine.open()"
            )

    def _resolve(self, workflow: WorkflowDef[Any, R] | str) -> WorkflowDef[Any, R]:
        if isinstance(workflow, str):
            return self.registry.get(workflow)
        if not isinstance(workflow, WorkflowDef):
            raise ConfigurationError(f"{workflow!r} is not a @workflow function")
        self.registry.add(workflow)
        return workflow

    async def _record(self, run_id: str) -> RunRecord:
        self._check_open()
        rec = await self._client.get_run(run_id)
        if rec is None:
            raise RunNotFound(run_id)
        return rec  # type: ignore[no-any-return]

    def _waiter(self, run_id: str) -> asyncio.Event:
        ev = self._waiters.get(run_id)
        if ev is None:
            ev = self._waiters[run_id] = asyncio.Event()
        return ev

    def _spawn(self, lease: Lease) -> None:
        old = self._drivers.get(lease.run_id)
        if old is not None:
            # Our own lease lapsed (a stalled loop) and we claimed the run anew: the old
            # driver's token is stale, so hand the run to a driver holding the new one.
            old[0].cancel()
        task: asyncio.Task[None] | None = None

        def done(run_id: str) -> None:
            if task is not None:
                self._driver_done(run_id, task)

        driver = RunDriver(self._cfg, lease, done)
        task = asyncio.create_task(driver.run(), name=f"continuum-run-{lease.run_id}")
        self._drivers[lease.run_id] = (task, lease)

    def _driver_done(self, run_id: str, task: asyncio.Task[None]) -> None:
        current = self._drivers.get(run_id)
        if current is not None and current[0] is not task:
            return  # a newer driver took over this run
        self._drivers.pop(run_id, None)
        ev = self._waiters.pop(run_id, None)
        if ev is not None:
            ev.set()
        self._wake.set()

    async def _claim(self, *, reclaim_own: bool = False) -> None:
        free = self.concurrency - len(self._drivers)
        if free <= 0:
            return
        leases = await self._client.claim(
            self.worker_id, ttl=self.lease_ttl, limit=free, reclaim_own=reclaim_own
        )
        for lease in leases:
            self._spawn(lease)

    async def _worker_loop(self) -> None:
        backoff = self.poll_interval
        while True:
            self._wake.clear()
            try:
                await self._claim()
                backoff = self.poll_interval
            except (JournalUnavailable, OSError) as exc:
                self._log.warning("worker.claim_failed", error=str(exc))
                backoff = min(backoff * 2, 30.0)
            # asyncio.timeout, not wait_for: 3.11's wait_for can lose a cancel that
            # races with the event being set, which hangs shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._wake.wait()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            items = list(self._drivers.items())
            if not items:
                continue
            try:
                renewed = await self._client.renew(
                    [lease for _, (_, lease) in items], ttl=self.lease_ttl
                )
            except (JournalUnavailable, OSError) as exc:
                self._log.warning("worker.heartbeat_failed", error=str(exc))
                continue
            for (run_id, (task, lease)), new in zip(items, renewed, strict=True):
                if new is None:
                    self._log.warning("run.lease_lost", run_id=run_id, token=lease.token)
                    task.cancel()
                elif run_id in self._drivers:
                    self._drivers[run_id] = (task, new)


def _result_type(wf: WorkflowDef[Any, Any]) -> Any:
    from continuum_py.workflow import _hint

    return _hint(wf.fn, "return")
