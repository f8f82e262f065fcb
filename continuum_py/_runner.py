"""Drives one leased run: load snapshot + tail, replay, run steps, append, finish.

The durability rule: a step attempt's ``StepScheduled`` is durable before its
body starts, and its outcome is durable before anything that depends on it
leaves the process. Both ride in the same append whenever possible: an
outcome, fed to the replay core, makes the workflow ask for its next step, and
``[StepCompleted(n), StepScheduled(n+1)]`` go out in one commit. So a
sequential workflow costs one commit per step.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

from continuum_py import _codec
from continuum_py._client import (
    JournalClient,
    SnapshotState,
    decode_all,
    decode_snapshot,
    encode_snapshot,
    stored,
)
from continuum_py._log import get_logger
from continuum_py._replay import ReplayCore, StepCall, error_info
from continuum_py.errors import (
    EncodingError,
    JournalCorrupt,
    JournalUnavailable,
    LeaseLost,
    NonDeterminismError,
    WorkflowNotRegistered,
)
from continuum_py.events import (
    SCHEMA_VERSION,
    AnyEvent,
    RunCompleted,
    RunFailed,
    StepCompleted,
    StepFailed,
    StepScheduled,
)
from continuum_py.journal import AppendBatch, Lease, RunStatus, Snapshot
from continuum_py.workflow import Registry, StepInfo, _current_step

_NULL = msgspec.Raw(b"null")


@dataclass(frozen=True)
class RunnerConfig:
    """What every driver of one engine shares."""

    client: JournalClient
    registry: Registry
    worker_id: str
    snapshot_every: int


@dataclass(slots=True)
class _Outcome:
    call: StepCall
    attempt: int
    ok: bool
    value: Any  # msgspec.Raw when ok, else the exception
    retryable: bool = True


class RunDriver:
    """Runs one run while holding its lease; stops cleanly when the lease is lost."""

    def __init__(self, cfg: RunnerConfig, lease: Lease, on_done: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.lease = lease
        self.run_id = lease.run_id
        self.on_done = on_done
        self.log = get_logger(run_id=self.run_id, worker_id=cfg.worker_id)
        self.core: ReplayCore | None = None
        self.seq = 0
        self._snap_seq = 0
        self._tasks: dict[int, asyncio.Task[_Outcome]] = {}
        self._reattempt: list[StepCall] = []
        self._retries: list[tuple[float, int]] = []

    async def run(self) -> None:
        """Drive the run until it finishes, parks, or the lease is lost."""
        structlog.contextvars.bind_contextvars(run_id=self.run_id)
        # Resolve the lazy logger once per run, not on every step's log call.
        self.log = self.log.bind()
        try:
            await self._drive()
        except LeaseLost as exc:
            self.log.warning("run.lease_lost", token=exc.token, current_token=exc.current_token)
        except (NonDeterminismError, WorkflowNotRegistered, JournalCorrupt) as exc:
            await self._park(exc)
        except (JournalUnavailable, OSError) as exc:
            self.log.warning("run.journal_unavailable", error=str(exc))
            await self._release()
        except asyncio.CancelledError:
            await self._release()
            raise
        except Exception:
            self.log.exception("run.driver_crashed")
            await self._release()
        finally:
            for t in self._tasks.values():
                t.cancel()
            if self.core is not None:
                self.core.close()
            self.on_done(self.run_id)

    async def _release(self) -> None:
        try:
            await asyncio.shield(self.cfg.client.release(self.lease))
        except Exception as exc:
            self.log.warning("run.release_failed", error=str(exc))

    async def _park(self, exc: Exception) -> None:
        self.log.error("run.parked", error_type=type(exc).__name__, reason=str(exc), seq=self.seq)
        try:
            await self._append([], status=RunStatus.PARKED, reason=f"{type(exc).__name__}: {exc}")
        except Exception as exc2:
            self.log.warning("run.park_failed", error=str(exc2))
            await self._release()

    async def _append(
        self,
        events: list[AnyEvent],
        *,
        status: RunStatus | None = None,
        outcome: bytes | None = None,
        reason: str | None = None,
        snapshot: Snapshot | None = None,
    ) -> None:
        batch = AppendBatch(
            lease=self.lease,
            expected_seq=self.seq,
            events=[stored(self.run_id, e) for e in events],
            status=status,
            outcome=outcome,
            reason=reason,
            snapshot=snapshot,
        )
        await self.cfg.client.append(batch)
        self.seq += len(events)

    # ---- replay ----
    async def _load(self) -> ReplayCore:
        snap, rows = await self.cfg.client.load_with_snapshot(self.run_id)
        # The stored tail, known before decoding: if decoding or replay fails
        # (corrupt row, unknown workflow), parking must still append at this seq.
        self.seq = rows[-1].seq if rows else (snap.seq if snap else 0)
        core = ReplayCore(self.run_id, self.cfg.registry)
        self.core = core
        # Every recorded event was already processed by some runner, so its code
        # ran live once: replay quietly. Only a run never driven yet (its history
        # is just RunStarted) runs its first lines live here.
        core.replaying = snap is not None or len(rows) > 1
        if snap is not None:
            state = decode_snapshot(snap)
            core.restore(state.events, state.failures, snap.seq)
            self._snap_seq = snap.seq
        for ev in decode_all(rows):
            core.apply(ev)
        core.replaying = False
        self.seq = core.last_seq
        self.log.info(
            "run.resumed" if core.last_seq > 1 else "run.started",
            seq=self.seq,
            snapshot_seq=snap.seq if snap else None,
            replayed_events=len(rows),
        )
        return core

    async def _drive(self) -> None:
        core = await self._load()
        if core.history_end is not None:
            # History already ends the run; make the run row agree with it.
            ok = isinstance(core.history_end, RunCompleted)
            await self._append(
                [],
                status=RunStatus.COMPLETED if ok else RunStatus.FAILED,
                outcome=_codec.encode_event(core.history_end),
            )
            return
        for call in core.pending_steps():
            if call.last_failure is not None:
                due = call.last_failure.at + call.last_failure.retry_delay
                heapq.heappush(self._retries, (due, call.position))
            else:
                # In flight when the last runner died: it runs again, with the next attempt number.
                self._reattempt.append(call)
        events: list[AnyEvent] = []
        while True:
            # A workflow that has returned (or raised) needs no more attempts: a
            # retry still due, or a step it called but never awaited, is not scheduled.
            to_start = [] if core.finished else self._schedule(core, events)
            status = outcome = None
            if core.finished:
                status, outcome = self._finish(core, events)
            snapshot = self._maybe_snapshot(core, events) if status is None else None
            if events or status is not None:
                await self._append(events, status=status, outcome=outcome, snapshot=snapshot)
                events = []
            if status is not None:
                self.log.info("run." + status.value, seq=self.seq)
                return
            if len(to_start) == 1 and not self._tasks and not self._retries:
                # Sequential fast path: run the only step inline, no task, no wait.
                call, attempt = to_start[0]
                outcomes = [await self._execute(call, attempt)]
            else:
                for call, attempt in to_start:
                    self._tasks[call.position] = asyncio.ensure_future(self._execute(call, attempt))
                outcomes = await self._wait()
            for out in sorted(outcomes, key=lambda o: o.call.position):
                self._record(core, out, events)
            now = time.time()
            while self._retries and self._retries[0][0] <= now:
                _, position = heapq.heappop(self._retries)
                self._reattempt.append(core.calls[position])

    async def _wait(self) -> list[_Outcome]:
        timeout = max(self._retries[0][0] - time.time(), 0.0) if self._retries else None
        if not self._tasks:
            if timeout is None:
                raise NonDeterminismError(
                    self.run_id,
                    0,
                    "a run with no step in flight",
                    "the workflow waiting on something that is not a durable step "
                    "(only steps may be awaited in workflow code)",
                )
            await asyncio.sleep(timeout)
            return []
        done, _ = await asyncio.wait(
            self._tasks.values(), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        out = []
        for t in done:
            o = t.result()
            del self._tasks[o.call.position]
            out.append(o)
        return out

    def _schedule(self, core: ReplayCore, events: list[AnyEvent]) -> list[tuple[StepCall, int]]:
        """Record StepScheduled for every attempt about to start; returns them."""
        to_start: list[tuple[StepCall, int]] = []
        while True:
            calls = self._reattempt + core.new_calls()
            self._reattempt = []
            if not calls:
                return to_start
            for call in calls:
                attempt = call.attempt + 1
                if call.encoded_args is None:
                    try:
                        call.encoded_args = _codec.encode_args(call.args, what=call.step.name)
                        if call.kwargs:
                            raise EncodingError(
                                call.step.name, "dict", "pass step arguments positionally"
                            )
                    except EncodingError as exc:
                        self._add(core, events, self._scheduled(call, attempt, _NULL, events))
                        self._add(
                            core, events, self._failed(call, attempt, exc, events, final=True)
                        )
                        continue
                self._add(core, events, self._scheduled(call, attempt, call.encoded_args, events))
                to_start.append((call, attempt))

    def _scheduled(
        self, call: StepCall, attempt: int, args: msgspec.Raw, events: list[AnyEvent]
    ) -> StepScheduled:
        return StepScheduled(
            seq=self._next_seq(events),
            at=time.time(),
            position=call.position,
            step=call.step.name,
            attempt=attempt,
            args=args,
        )

    def _failed(
        self,
        call: StepCall,
        attempt: int,
        exc: BaseException,
        events: list[AnyEvent],
        *,
        final: bool,
        delay: float = 0.0,
    ) -> StepFailed:
        return StepFailed(
            seq=self._next_seq(events),
            at=time.time(),
            position=call.position,
            step=call.step.name,
            attempt=attempt,
            error=error_info(exc),
            final=final,
            retry_delay=delay,
        )

    def _next_seq(self, events: list[AnyEvent]) -> int:
        """The seq of the next event: after the durable tail and the queued events."""
        return self.seq + len(events) + 1

    def _add(self, core: ReplayCore, events: list[AnyEvent], event: AnyEvent) -> None:
        """Feed a new event (numbered by its maker) to the replay core; queue it for append."""
        core.apply(event)
        events.append(event)

    def _record(self, core: ReplayCore, out: _Outcome, events: list[AnyEvent]) -> None:
        call = out.call
        if out.ok:
            self.log.debug(
                "step.completed",
                step=call.step.name,
                position=call.position,
                attempt=out.attempt,
                seq=self._next_seq(events),
            )
            self._add(
                core,
                events,
                StepCompleted(
                    seq=self._next_seq(events),
                    at=time.time(),
                    position=call.position,
                    step=call.step.name,
                    attempt=out.attempt,
                    result=out.value,
                ),
            )
            return
        exc = out.value
        policy = call.step.retry
        retry = (
            out.retryable and policy.is_retryable(exc) and call.failures + 1 < policy.max_attempts
        )
        delay = policy.delay(call.failures + 1) if retry else 0.0
        self.log.warning(
            "step.failed",
            step=call.step.name,
            position=call.position,
            attempt=out.attempt,
            error_type=type(exc).__name__,
            error=str(exc),
            retry_in=delay if retry else None,
            seq=self._next_seq(events),
        )
        self._add(
            core, events, self._failed(call, out.attempt, exc, events, final=not retry, delay=delay)
        )
        if retry:
            heapq.heappush(self._retries, (time.time() + delay, call.position))

    def _finish(self, core: ReplayCore, events: list[AnyEvent]) -> tuple[RunStatus, bytes]:
        for t in self._tasks.values():
            # The workflow returned without awaiting these; their outcomes no longer matter.
            t.cancel()
        self._tasks.clear()
        self._retries.clear()
        ok, value = core.outcome()
        end: RunCompleted | RunFailed
        seq = self._next_seq(events)
        if ok:
            wf = core.workflow
            try:
                raw = _codec.encode_value(value, what=wf.name if wf else None, kind="workflow")
                end = RunCompleted(seq=seq, at=time.time(), result=raw)
            except EncodingError as exc:
                end = RunFailed(seq=seq, at=time.time(), error=error_info(exc))
        else:
            info = error_info(value)
            end = RunFailed(seq=seq, at=time.time(), error=info)
        events.append(end)
        status = RunStatus.COMPLETED if isinstance(end, RunCompleted) else RunStatus.FAILED
        return status, _codec.encode_event(end)

    def _maybe_snapshot(self, core: ReplayCore, events: list[AnyEvent]) -> Snapshot | None:
        every = self.cfg.snapshot_every
        last = self.seq + len(events)
        if every <= 0 or last - self._snap_seq < every:
            return None
        state = SnapshotState(events=core.snapshot_events(), failures=core.failure_counts())
        self._snap_seq = last
        return Snapshot(
            run_id=self.run_id, seq=last, schema=SCHEMA_VERSION, data=encode_snapshot(state)
        )

    async def _execute(self, call: StepCall, attempt: int) -> _Outcome:
        step = call.step
        info = StepInfo(
            run_id=self.run_id,
            seq=call.position,
            attempt=attempt,
            idempotency_key=f"{self.run_id}:{call.position}",
            step=step.name,
        )
        token = _current_step.set(info)
        try:
            cm: asyncio.Timeout | None = None
            try:
                if step.timeout is None:
                    value = await step.fn(*call.args, **call.kwargs)
                else:
                    async with asyncio.timeout(step.timeout) as cm:
                        value = await step.fn(*call.args, **call.kwargs)
            except TimeoutError as exc:
                # Only our own deadline is "took longer than its timeout"; a TimeoutError
                # the step body raised itself is recorded as it is.
                if cm is not None and cm.expired():
                    err = TimeoutError(
                        f"step {step.name!r} took longer than its timeout of {step.timeout}s"
                    )
                    err.__cause__ = exc
                    return _Outcome(call, attempt, False, err)
                return _Outcome(call, attempt, False, exc)
            except Exception as exc:
                return _Outcome(call, attempt, False, exc)
            try:
                raw = _codec.encode_value(value, what=step.name)
                # Decode now, so a result that would not replay fails at record time.
                _codec.decode_value(raw, step.return_type)
            except EncodingError as exc:
                return _Outcome(call, attempt, False, exc, retryable=False)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                enc = EncodingError(
                    step.name,
                    _codec.type_name(value),
                    f"does not match the return annotation: {exc}",
                )
                return _Outcome(call, attempt, False, enc, retryable=False)
            return _Outcome(call, attempt, True, raw)
        finally:
            _current_step.reset(token)
