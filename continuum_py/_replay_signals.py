"""The replay core's signal waits: handing signals to waits, and back from abandoned ones.

A mixin of :class:`~continuum_py._replay.ReplayCore`, which sets the attributes
declared here; kept apart so that module stays readable.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from continuum_py._calls import WaitCall
from continuum_py._workflow_loop import WorkflowLoop
from continuum_py.events import AnyEvent, RunStarted, SignalReceived

__all__ = ["SignalWaits"]


class SignalWaits:
    """Signals buffered by name, the waits waiting for them, and what abandoned waits give back."""

    loop: WorkflowLoop
    started: RunStarted | None
    signals: dict[str, deque[SignalReceived]]
    _waiters: dict[str, list[WaitCall]]
    wait_of: weakref.WeakKeyDictionary[Any, WaitCall]

    if TYPE_CHECKING:  # the replay core provides it

        def _decode(self, raw: msgspec.Raw, type_: Any, position: int, event: AnyEvent) -> Any: ...

    def _deliver(self, call: WaitCall, event: SignalReceived) -> None:
        call.signal = event
        call.future.set_result(self._decode(event.payload, call.type, call.position, event))
        if call.recorded:
            call.done = True

    def give_back(self, call: WaitCall) -> None:
        """Return the signal handed to an abandoned wait, so the next wait of its name gets it.

        A wait that lost a race, or whose task was cancelled, consumed nothing:
        its signal goes to the first wait still waiting for that name, or back
        into the buffer in the order the signals arrived.
        """
        event, call.signal = call.signal, None
        if event is None or self.loop.is_closed():
            return
        waiters = self._waiters.get(call.name)
        while waiters and waiters[0].future.done():
            waiters.pop(0)
        if waiters:
            self._deliver(waiters.pop(0), event)
            return
        buffered = self.signals.setdefault(call.name, deque())
        key = self._arrival(event)
        index = next((i for i, ev in enumerate(buffered) if self._arrival(ev) > key), None)
        buffered.insert(len(buffered) if index is None else index, event)

    def withdraw(self, aw: Any) -> None:
        """Give back the signal of the wait ``aw`` (a coroutine or the task running it), if any."""
        call = self._wait_call(aw)
        if call is not None:
            self.give_back(call)

    def is_wait(self, aw: Any) -> bool:
        """Whether ``aw`` (a coroutine or the task running it) is a signal wait."""
        return self._wait_call(aw) is not None

    def _wait_call(self, aw: Any) -> WaitCall | None:
        return self.wait_of.get(aw.get_coro() if isinstance(aw, asyncio.Task) else aw)

    def _watch_task(self, task: asyncio.Task[Any], coro: Coroutine[Any, Any, Any]) -> None:
        wait = self.wait_of.get(coro)
        if wait is not None:
            # A signal wait run as a task (wait_first, gather, create_task): if the
            # task is cancelled before it ever ran, give back what it was handed.
            task.add_done_callback(functools.partial(self.on_wait_task_done, wait))

    def on_wait_task_done(self, call: WaitCall, task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            return
        self.give_back(call)
        if not call.future.done():
            # Cancelled before it ever ran, so its future was never cancelled: no
            # one waits on this wait any more.
            call.future.cancel()
            self._drop_waiter(call)

    def _arrival(self, event: SignalReceived) -> tuple[int, int]:
        # Signals carried over from an earlier run of the chain came first (their
        # seqs belong to its history); then this run's, in history order.
        started = self.started
        for i, carried in enumerate(started.carried_signals if started else []):
            if carried is event:
                return (0, i)
        return (1, event.seq)

    def _drop_waiter(self, call: WaitCall) -> None:
        waiters = self._waiters.get(call.name)
        if waiters and call in waiters:
            waiters.remove(call)
