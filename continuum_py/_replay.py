"""The replay core: history in, commands out. No journal, no clock, no I/O.

Workflow code runs on :class:`_WorkflowLoop`, a minimal deterministic asyncio
loop: a FIFO of callbacks and nothing else (no timers, no sockets). A step
call takes the next call-order *position* and a future; the core resolves
futures only when it is fed a recorded outcome, then runs the loop until the
code blocks again. Feeding the same events in the same order therefore makes
the same calls at the same positions, whatever order steps finished in live:
the live runner records outcomes in exactly the order it feeds them.

History events play two roles. ``StepScheduled`` is checked against what the
code asked for at that position (a mismatch is a ``NonDeterminismError``);
outcomes (``StepCompleted``, final ``StepFailed``) are fed to the code.
What the code asks for beyond the history is the live work: ``pending_steps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec

from continuum_py import _codec
from continuum_py._log import WorkflowLogger
from continuum_py.errors import NonDeterminismError, StepError
from continuum_py.events import (
    AnyEvent,
    ErrorInfo,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
)
from continuum_py.workflow import Context, Registry, StepDef, WorkflowDef


class _WorkflowLoop(asyncio.AbstractEventLoop):
    """Just enough of an event loop for Tasks, Futures and ``asyncio.gather``.

    Callbacks run in the order they were scheduled; there is no clock, so code
    that needs one (``asyncio.sleep``, ``asyncio.timeout``) gets a clear error.
    """

    def __init__(self, core: ReplayCore) -> None:
        self.core = core
        self._ready: deque[asyncio.Handle] = deque()
        self._closed = False
        self.errors: list[dict[str, Any]] = []

    # -- what Tasks and Futures use --
    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return self._closed

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        if not self._closed:
            self.errors.append(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass

    # -- what workflow code must not use --
    def _no_clock(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "workflow code cannot use the wall clock or asyncio timers (asyncio.sleep, "
            "asyncio.timeout, loop.call_later): they are not replayable. Wait inside a step "
            "instead, and bound a step's time with @step(timeout=...)."
        )

    time = _no_clock
    call_later = _no_clock  # type: ignore[assignment]
    call_at = _no_clock  # type: ignore[assignment]

    def _no_io(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "workflow code cannot do I/O (sockets, files, subprocesses, executors): its "
            "effects would not be recorded or replayed. Move it into a @step."
        )

    for _name in [
        "run_in_executor",
        "getaddrinfo",
        "getnameinfo",
        "create_connection",
        "create_server",
        "create_unix_connection",
        "create_unix_server",
        "create_datagram_endpoint",
        "sock_recv",
        "sock_recv_into",
        "sock_sendall",
        "sock_connect",
        "sock_accept",
        "sock_sendfile",
        "sendfile",
        "start_tls",
        "connect_read_pipe",
        "connect_write_pipe",
        "subprocess_exec",
        "subprocess_shell",
        "add_reader",
        "remove_reader",
        "add_writer",
        "remove_writer",
        "add_signal_handler",
        "remove_signal_handler",
    ]:
        locals()[_name] = _no_io
    del _name

    def run_ready(self) -> None:
        """Run callbacks until none is left, with this loop as the running loop."""
        outer = asyncio._get_running_loop()
        asyncio._set_running_loop(self)
        try:
            ready = self._ready
            while ready:
                handle = ready.popleft()
                if not handle.cancelled():
                    handle._run()
        finally:
            asyncio._set_running_loop(outer)

    def close(self) -> None:
        self._closed = True
        self._ready.clear()


@dataclass(slots=True)
class StepCall:
    """A step the workflow asked for, at one call-order position."""

    position: int
    step: StepDef[Any, Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: asyncio.Future[Any]
    recorded: bool = False
    """History holds its ``StepScheduled``."""
    attempt: int = 0
    """The newest attempt recorded as scheduled."""
    failures: int = 0
    """Attempts recorded as failed (not final)."""
    last_failure: StepFailed | None = None
    """The last non-final failure, if it came after the newest scheduled attempt."""
    done: bool = False
    encoded_args: msgspec.Raw | None = field(default=None)


def describe(call: StepCall | None) -> str:
    return "nothing" if call is None else f"StepScheduled({call.step.name})"


class ReplayCore:
    """Drives one run's workflow code deterministically from its events.

    Args:
        run_id: the run.
        registry: where the run's workflow is looked up by name.
    """

    def __init__(self, run_id: str, registry: Registry) -> None:
        self.run_id = run_id
        self.registry = registry
        self.loop = _WorkflowLoop(self)  # type: ignore[abstract]  # unused loop APIs raise
        self.replaying = True
        self.log_during_replay = False
        self.logger = WorkflowLogger(
            lambda: self.replaying and not self.log_during_replay, run_id=run_id
        )
        self.last_seq = 0
        self.workflow: WorkflowDef[Any, Any] | None = None
        self.started: RunStarted | None = None
        self.calls: dict[int, StepCall] = {}
        self._next_position = 1
        self._unrecorded: dict[int, StepCall] = {}
        self._main: asyncio.Task[Any] | None = None
        self.history_end: RunCompleted | RunFailed | None = None
        # Outcome events in the order they were fed: with RunStarted, this is
        # everything a snapshot needs to rebuild the same state.
        self.fed: list[AnyEvent] = []
        self._restoring = False

    # ---- code side ----
    def call_step(
        self, step: StepDef[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, Any]:
        position = self._next_position
        self._next_position += 1
        fut = self.loop.create_future()
        call = StepCall(position, step, args, kwargs, fut)
        self.calls[position] = call
        self._unrecorded[position] = call
        return _await(fut)

    # ---- history side ----
    def apply(self, event: AnyEvent) -> None:
        """Apply one history event (in seq order); raises ``NonDeterminismError``."""
        if isinstance(event, StepCompleted):
            self._on_outcome(event)
        elif isinstance(event, StepScheduled):
            self._on_scheduled(event)
        elif isinstance(event, StepFailed):
            if event.final:
                self._on_outcome(event)
            else:
                call = self._recorded_call(event.position, f"StepFailed({event.step})")
                call.failures += 1
                call.last_failure = event
        elif isinstance(event, RunStarted):
            self._on_started(event)
        elif isinstance(event, RunCompleted | RunFailed):
            self._on_end(event)
        self.last_seq = event.seq

    def _on_started(self, event: RunStarted) -> None:
        if self.started is not None:
            raise NonDeterminismError(self.run_id, 0, "a second RunStarted", "nothing")
        self.started = event
        self.fed.append(event)
        wf = self.registry.get(event.workflow)
        self.workflow = wf
        try:
            args = _codec.decode_args(event.args, wf.arg_types)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise NonDeterminismError(
                self.run_id,
                0,
                f"RunStarted({wf.name}) with arguments {bytes(event.args)[:200]!r}",
                f"arguments that fit the workflow's signature ({exc})",
            ) from exc
        ctx = Context(run_id=self.run_id, workflow=wf.name, _core=self)
        coro = wf.fn(ctx, *args)
        self._main = self.loop.create_task(coro, context=contextvars.Context())
        self.loop.run_ready()

    def _recorded_call(self, position: int, what: str) -> StepCall:
        call = self.calls.get(position)
        if call is None or not (call.recorded or self._restoring):
            raise NonDeterminismError(self.run_id, position, what, self._asked_at(position))
        return call

    def _asked_at(self, position: int) -> str:
        call = self.calls.get(position)
        if call is not None:
            return describe(call)
        if self.finished:
            return "nothing (the workflow has returned)"
        return "nothing at this point"

    def _on_scheduled(self, event: StepScheduled) -> None:
        call = self.calls.get(event.position)
        if call is None:
            raise NonDeterminismError(
                self.run_id,
                event.position,
                f"StepScheduled({event.step})",
                self._asked_at(event.position),
            )
        if call.step.name != event.step:
            raise NonDeterminismError(
                self.run_id, event.position, f"StepScheduled({event.step})", describe(call)
            )
        call.recorded = True
        call.attempt = event.attempt
        call.last_failure = None
        self._unrecorded.pop(event.position, None)

    def _on_outcome(self, event: StepCompleted | StepFailed) -> None:
        kind = type(event).__name__
        call = self._recorded_call(event.position, f"{kind}({event.step})")
        if call.step.name != event.step:
            raise NonDeterminismError(
                self.run_id, event.position, f"{kind}({event.step})", describe(call)
            )
        if call.done:
            raise NonDeterminismError(
                self.run_id,
                event.position,
                f"a second {kind}({event.step})",
                "one outcome per step",
            )
        call.done = True
        call.recorded = True
        self._unrecorded.pop(event.position, None)
        self.fed.append(event)
        if isinstance(event, StepCompleted):
            try:
                value = _codec.decode_value(event.result, call.step.return_type)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise NonDeterminismError(
                    self.run_id,
                    event.position,
                    f"StepCompleted({event.step}) with result {bytes(event.result)[:200]!r}",
                    f"a result of the step's return type ({exc})",
                ) from exc
            call.future.set_result(value)
        else:
            err = event.error
            call.future.set_exception(
                StepError(
                    event.step, event.position, err.type, err.message, err.traceback, event.attempt
                )
            )
        self.loop.run_ready()

    def _on_end(self, event: RunCompleted | RunFailed) -> None:
        self.history_end = event
        if not self.finished:
            waiting = [c for c in self.calls.values() if not c.done]
            raise NonDeterminismError(
                self.run_id,
                self._next_position,
                type(event).__name__,
                f"the workflow still waiting on {describe(waiting[0]) if waiting else 'something else'}",
            )
        ok = self.outcome()[0]
        if ok != isinstance(event, RunCompleted):
            raise NonDeterminismError(
                self.run_id,
                self._next_position,
                type(event).__name__,
                "RunCompleted" if ok else "RunFailed",
            )

    # ---- results ----
    @property
    def finished(self) -> bool:
        """Whether the workflow code has returned or raised."""
        return self._main is not None and self._main.done()

    def outcome(self) -> tuple[bool, Any]:
        """``(True, value)`` if the workflow returned, ``(False, exception)`` if it raised."""
        assert self._main is not None
        assert self._main.done()
        if self._main.cancelled():
            return False, asyncio.CancelledError("the workflow was cancelled")
        exc = self._main.exception()
        if exc is not None:
            return False, exc
        return True, self._main.result()

    def new_calls(self) -> list[StepCall]:
        """Steps the code asked for that history does not hold yet, in call order."""
        return list(self._unrecorded.values())

    def pending_steps(self) -> list[StepCall]:
        """Steps recorded as scheduled with no outcome yet (in flight when history ends)."""
        return [c for c in self.calls.values() if c.recorded and not c.done]

    # ---- snapshots ----
    def snapshot_events(self) -> list[AnyEvent]:
        """A compact event list that rebuilds this state.

        Outcomes in fed order, then the newest schedule (and failure) of each
        step still in flight.
        """
        out = list(self.fed)
        for call in self.pending_steps():
            out.append(
                StepScheduled(
                    seq=0,
                    position=call.position,
                    step=call.step.name,
                    attempt=call.attempt,
                    args=call.encoded_args or msgspec.Raw(b"[]"),
                )
            )
            if call.last_failure is not None:
                out.append(call.last_failure)
        return out

    def failure_counts(self) -> dict[int, int]:
        return {c.position: c.failures for c in self.pending_steps() if c.failures}

    def restore(self, events: list[AnyEvent], failures: dict[int, int], last_seq: int) -> None:
        """Rebuild from :meth:`snapshot_events` output."""
        self._restoring = True
        try:
            for ev in events:
                if isinstance(ev, StepScheduled):
                    self._on_scheduled(ev)
                    self.calls[ev.position].encoded_args = ev.args
                else:
                    self.apply(ev)
        finally:
            self._restoring = False
        for position, n in failures.items():
            if position in self.calls:
                self.calls[position].failures = n
        self.last_seq = last_seq

    def close(self) -> None:
        """Drop the workflow's coroutines without running more workflow code."""
        self.loop.close()
        tasks = list(asyncio.all_tasks(self.loop)) if self._main else []
        for t in tasks:
            coro = t.get_coro()
            if coro is not None and hasattr(coro, "close"):
                with contextlib.suppress(RuntimeError):
                    coro.close()


async def _await(fut: asyncio.Future[Any]) -> Any:
    return await fut


def error_info(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, StepError):
        return ErrorInfo(type=exc.error_type, message=str(exc), traceback=exc.traceback_text)
    return _codec.error_info(exc)
