"""The event loop workflow code runs on: a FIFO of callbacks, no clock, no I/O.

Tasks, futures and ``asyncio.gather`` work on it; code that needs a clock
(``asyncio.sleep``, ``asyncio.timeout``) or I/O gets a clear error pointing to
the durable equivalent. The replay core drives it with :meth:`WorkflowLoop.run_ready`.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any


class _Entered(threading.local):
    loop: WorkflowLoop | None = None


ENTERED = _Entered()
"""``ENTERED.loop``: the workflow loop entered in this thread, hence its running loop, or None.

Cheaper to read than ``asyncio._get_running_loop()``, which makes a ``getpid()``
system call, and workflow code asks once per call it makes.
"""


class WorkflowLoop(asyncio.AbstractEventLoop):
    """Just enough of an event loop for Tasks, Futures and ``asyncio.gather``.

    Callbacks run in the order they were scheduled; there is no clock, so code
    that needs one (``asyncio.sleep``, ``asyncio.timeout``) gets a clear error.
    """

    def __init__(self) -> None:
        self.on_task: Callable[[asyncio.Task[Any], Coroutine[Any, Any, Any]], None] | None = None
        """Called with each new task and its coroutine (the core watches signal waits)."""
        self.ready: deque[asyncio.Handle] = deque()
        """Callbacks waiting to run, in order."""
        self._closed = False
        self.entered = False
        """Whether this is the running loop, between :meth:`enter` and :meth:`leave`."""
        self.host: asyncio.AbstractEventLoop | None = None
        """The loop running whoever drives this one, if it is always the same (a runner's).

        Entering then need not ask for the running loop (a ``getpid()`` system call).
        """
        self.errors: list[dict[str, Any]] = []
        # The workflow's tasks, so close() need not walk every task in the process.
        self.tasks: list[asyncio.Task[Any]] = []

    # -- what Tasks and Futures use --
    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self.ready.append(handle)
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
        task = asyncio.Task(coro, loop=self, name=name, context=context)
        if self.on_task is not None:
            self.on_task(task, coro)
        if len(self.tasks) >= 1024:
            self.tasks = [t for t in self.tasks if not t.done()]
        self.tasks.append(task)
        return task

    # Every Future and Handle made on this loop asks: a C callable (``bool()`` is
    # False) costs no Python frame, where a method did, twice per step.
    get_debug = staticmethod(bool)

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
            "asyncio.timeout, asyncio.wait(timeout=...), loop.call_later): they are not "
            "replayable. Use `await ctx.sleep(seconds)` for a durable timer, ctx.now() for the "
            "time, and `await ctx.wait_first(work, ctx.sleep(seconds))` to race with a timeout; "
            "bound a step's time with @step(timeout=...)."
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
        # A live step resumes the workflow here once: enter, the handle's run
        # and leave are written out in line (each a Python call otherwise).
        outer = None
        if not self.entered:
            outer = ENTERED.loop or self.host or asyncio._get_running_loop(), ENTERED.loop
            asyncio._set_running_loop(self)
            ENTERED.loop = self
            self.entered = True
        ready = self.ready
        try:
            while ready:
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()
        finally:
            if outer is not None:
                self.entered = False
                asyncio._set_running_loop(outer[0])
                ENTERED.loop = outer[1]

    def enter(self) -> tuple[asyncio.AbstractEventLoop | None, WorkflowLoop | None]:
        """Be the running loop until :meth:`leave` is given what this returns.

        Switching the running loop costs about as much as running a callback:
        the replay core switches once for a whole list of events, and each
        :meth:`run_ready` meanwhile skips it.
        """
        outer = ENTERED.loop or self.host or asyncio._get_running_loop(), ENTERED.loop
        asyncio._set_running_loop(self)
        ENTERED.loop = self
        self.entered = True
        return outer

    def leave(self, outer: tuple[asyncio.AbstractEventLoop | None, WorkflowLoop | None]) -> None:
        """Give the running loop back to ``outer`` (what :meth:`enter` returned)."""
        self.entered = False
        asyncio._set_running_loop(outer[0])
        ENTERED.loop = outer[1]

    def close(self) -> None:
        self._closed = True
        self.ready.clear()
