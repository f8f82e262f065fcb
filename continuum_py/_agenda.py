"""When a run must act next: its timers, its retry delays and its deadline.

Times are on the engine's clock (seconds since the epoch); positions are the
call-order positions of the calls each entry belongs to.
"""

from __future__ import annotations

import heapq


class Agenda:
    """The due times of one run, earliest first."""

    def __init__(self) -> None:
        self._timers: list[tuple[float, int]] = []
        self._retries: list[tuple[float, int]] = []
        self.deadline: float | None = None
        """When the run is stopped (``engine.start(timeout=...)``), if it has a deadline."""

    def add_timer(self, at: float, position: int) -> None:
        """A timer (``ctx.sleep``, a signal wait's timeout) fires at ``at``."""
        heapq.heappush(self._timers, (at, position))

    def add_retry(self, at: float, position: int) -> None:
        """A failed step's next attempt may start at ``at``."""
        heapq.heappush(self._retries, (at, position))

    @property
    def empty(self) -> bool:
        """Nothing is due, ever: no timer, no retry, no deadline."""
        return not self._timers and not self._retries and self.deadline is None

    def next_due(self) -> float | None:
        """The earliest due time, or ``None``."""
        dues = [h[0][0] for h in (self._timers, self._retries) if h]
        if self.deadline is not None:
            dues.append(self.deadline)
        return min(dues) if dues else None

    def due_timers(self, now: float) -> list[int]:
        """Take the positions of the timers due by ``now``, earliest first."""
        return _take_due(self._timers, now)

    def due_retries(self, now: float) -> list[int]:
        """Take the positions of the steps whose retry is due by ``now``, earliest first."""
        return _take_due(self._retries, now)

    def deadline_passed(self, now: float) -> bool:
        """Whether the deadline has passed by ``now``; it is then taken off the agenda."""
        if self.deadline is not None and self.deadline <= now:
            self.deadline = None
            return True
        return False

    def drop_work(self) -> None:
        """Forget the timers and retries (the workflow has returned)."""
        self._timers.clear()
        self._retries.clear()


def _take_due(heap: list[tuple[float, int]], now: float) -> list[int]:
    out = []
    while heap and heap[0][0] <= now:
        out.append(heapq.heappop(heap)[1])
    return out
