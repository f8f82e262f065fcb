"""Replaying a list of history events at once, without a loop pass per step.

Fed one event at a time (:meth:`ReplayCore.apply`), each completed step costs a
suspension of the code awaiting it, a wakeup callback and a pass of the
workflow loop. Fed a list (:meth:`ReplayCore.apply_all`, :meth:`ReplayCore.restore`),
the core knows what comes next: when the code awaits a step whose schedule and
completion are the next events, and nothing else is ready to run, it applies
them right at the await and the code carries on without suspending.

That is the same replay, in the same order: had the code suspended, the loop
would have had nothing else to run, the same handlers would have applied the
same events, and the same task would have resumed with the same result. The
shortcut is only taken when no handler can fail on those events, so a history
that does not fit raises the same :class:`NonDeterminismError` at the same event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from continuum_py import _codec
from continuum_py._calls import StepCall
from continuum_py.events import AnyEvent, StepCompleted, StepScheduled
from continuum_py.workflow import StepDef

if TYPE_CHECKING:
    from continuum_py._replay import ReplayCore


class Batch:
    """The events being fed, the next one's index, and how each is fed."""

    __slots__ = ("decoders", "events", "feed", "next")

    def __init__(self, events: list[AnyEvent], feed: Callable[[AnyEvent], None]) -> None:
        self.events = events
        self.next = 0
        self.feed = feed
        self.decoders: dict[StepDef[Any, Any], Callable[[msgspec.Raw | bytes], Any]] = {}
        """Each step's result decoder, looked up once per list."""


def feed_all(core: ReplayCore, events: list[AnyEvent], feed: Callable[[AnyEvent], None]) -> None:
    """Feed ``events`` in order with ``feed`` (one event each), letting awaits take theirs."""
    outer_batch = core.batch
    batch = core.batch = Batch(events, feed)
    # One switch of the running loop for the whole list, not one per event.
    loop = core.loop
    outer = None if loop.entered else loop.enter()
    try:
        n = len(events)
        while batch.next < n:
            i = batch.next
            batch.next += 1
            feed(events[i])
            if batch.next > i + 1:
                # Awaits took the events after it: feeding it set an older seq.
                core.last_seq = events[batch.next - 1].seq
    finally:
        core.batch = outer_batch
        if outer is not None:
            loop.leave(outer)


async def await_step(core: ReplayCore, call: StepCall) -> Any:
    """What the code awaits for a step call: its recorded result (or error)."""
    batch = core.batch
    if batch is not None and not call.future.done() and _take_outcome(core, call, batch):
        return call.result
    return await call.future


def _take_outcome(core: ReplayCore, call: StepCall, batch: Batch) -> bool:
    """Apply the step's schedule and completion now if they come next and cannot fail.

    Returns whether it did (the call's result is then set).
    """
    if (
        # A divergence found in the code (and swallowed there) ends the replay first.
        core.nd_error is not None
        or core.loop.ready
        or call.settled is not None
        or call.done
        # Cancelled while running (by itself): it must see that at this await.
        or getattr(asyncio.current_task(core.loop), "_must_cancel", True)
    ):
        return False
    events = batch.events
    i = batch.next
    n = len(events)
    position = call.position
    step = call.step
    name = step.name
    scheduled = None
    ev = events[i] if i < n else None
    if type(ev) is StepScheduled:
        if ev.position != position or ev.step != name:
            return False
        scheduled = ev
        i += 1
        ev = events[i] if i < n else None
    if type(ev) is not StepCompleted or ev.position != position or ev.step != name:
        return False
    if scheduled is None and not (call.recorded or core.restoring):
        return False
    decode = batch.decoders.get(step)
    if decode is None:
        decode = batch.decoders[step] = _codec.value_decoder(step.return_type)
    try:
        result = decode(ev.result)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return False  # the ordinary path reports it, at that event
    if scheduled is not None:
        batch.next += 1
        batch.feed(scheduled)
    batch.next += 1
    core.take_completion(call, ev, result)
    return True
