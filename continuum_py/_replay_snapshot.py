"""The replay core's snapshots: the compact event list that rebuilds a run's state, and back.

A mixin of :class:`~continuum_py._replay.ReplayCore`, which sets the attributes
declared here; kept apart so that module stays readable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import msgspec

from continuum_py._calls import Call, ChildCall, StepCall
from continuum_py._replay_batch import feed_all
from continuum_py.events import AnyEvent, StepScheduled

if TYPE_CHECKING:
    from continuum_py._replay import ReplayCore

__all__ = ["Snapshots"]


class Snapshots:
    """What a snapshot holds (:meth:`snapshot_events`) and how a run is rebuilt from it."""

    calls: dict[int, Call]
    fed: list[AnyEvent]
    restoring: bool
    last_seq: int
    _settled_to: int
    _next_position: int

    if TYPE_CHECKING:  # the replay core provides these

        def apply(self, event: AnyEvent) -> None: ...

        def _on_scheduled(self, event: StepScheduled) -> None: ...

    def snapshot_events(self) -> list[AnyEvent]:
        """A compact event list that rebuilds this state.

        Everything fed but step schedules and retryable failures, then the newest
        schedule (and failure) of each step still in flight.
        """
        return [*self.fed, *self.in_flight_events()]

    def in_flight_events(self) -> list[AnyEvent]:
        """The end of :meth:`snapshot_events`: what rebuilds the steps still in flight."""
        out: list[AnyEvent] = []
        for call in self.unfinished_steps():
            out.append(
                StepScheduled(
                    seq=0,
                    position=call.position,
                    step=call.step.name,
                    attempt=call.attempt,
                    args=call.encoded_args or msgspec.Raw(b"[]"),
                    compensates=call.compensates,
                )
            )
            if call.last_failure is not None:
                out.append(call.last_failure)
        return out

    def unawaited(self) -> list[Call]:
        """Steps and child runs the finished code started and never awaited to the end."""
        return [
            c
            for c in self.calls.values()
            if isinstance(c, StepCall | ChildCall) and not c.done and not c.future.done()
        ]

    def unfinished_steps(self) -> list[StepCall]:
        """Steps recorded as scheduled with no outcome yet, awaited or not.

        Also those the workflow stopped waiting for: their outcome may still come.
        """
        # Calls before _settled_to are settled for good (a step's outcome, or not
        # a step): each snapshot looks only from there, not at the whole history.
        calls, start, end = self.calls, self._settled_to, self._next_position
        while start < end:
            c = calls.get(start)
            if isinstance(c, StepCall) and not c.done:
                break
            start += 1
        self._settled_to = start
        out = []
        for position in range(start, end):
            c = calls.get(position)
            if isinstance(c, StepCall) and c.recorded and not c.done:
                out.append(c)
        return out

    def failure_counts(self) -> dict[int, int]:
        return {c.position: c.failures for c in self.unfinished_steps() if c.failures}

    def restore(self, events: list[AnyEvent], failures: dict[int, int], last_seq: int) -> None:
        """Rebuild from :meth:`snapshot_events` output."""
        self.restoring = True
        try:
            feed_all(cast("ReplayCore", self), events, self._restore_one)
        finally:
            self.restoring = False
        for position, n in failures.items():
            step_call = self.calls.get(position)
            if isinstance(step_call, StepCall):
                step_call.failures = n
        self.last_seq = last_seq

    def _restore_one(self, ev: AnyEvent) -> None:
        if isinstance(ev, StepScheduled):
            self._on_scheduled(ev)
            call = self.calls[ev.position]
            assert isinstance(call, StepCall)
            call.encoded_args = ev.args
        else:
            self.apply(ev)
