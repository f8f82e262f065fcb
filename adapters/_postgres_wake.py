"""One worker woken per queued start, the others a moment later if still needed.

A queued start's notification goes out on the journal's wake channel and names
one registered worker (in turn, from the ids the starting journal read at most
:data:`NAMES_TTL` seconds before; ``""`` names every worker). Waking every worker
for each start made each of them claim, and with a queue all but one of those
claims ran an admission that found the queue taken or nothing left to admit.

The named worker looks at once. Each other worker looks
:data:`NAMED_WAKE_DELAY` seconds later, unless a claim of its own started after
the notification arrived (that claim's snapshot saw the run): so a run named to
a worker that is full, does not serve that queue, stopped listening or died
waits that moment for another worker with room, never for the poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["NAMED_WAKE_DELAY", "WakeOne"]

NAMED_WAKE_DELAY = 0.05
"""Seconds a worker not named by a queued start's notification waits before it looks."""

NAMES_TTL = 1.0
"""Seconds a starting journal names workers from the registered ids it read, before reading again."""


class WakeOne:
    """What a journal does with the notifications of its wake channel.

    Args:
        ours: whether a worker id is one this journal's process runs (holds its liveness).
        wake: makes the journal's listeners look for work now.
        delay: seconds before a look for a start that named another worker.
    """

    def __init__(
        self, ours: Callable[[str], bool], wake: Callable[[], None], delay: float = NAMED_WAKE_DELAY
    ) -> None:
        self._ours = ours
        self._wake = wake
        self.delay = delay
        self._claimed = float("-inf")  # when the newest claim here started (loop time)
        self._named_away = float("-inf")  # when the newest start named another worker
        self._timer: asyncio.TimerHandle | None = None

    def claiming(self) -> None:
        """A claim starts here: it sees every run started before now."""
        self._claimed = asyncio.get_running_loop().time()

    def on_notify(self, payload: str) -> None:
        """A queued start named ``payload`` (a worker id; ``""``: every worker)."""
        if not payload or self._ours(payload):
            self._wake()
            return
        loop = asyncio.get_running_loop()
        self._named_away = loop.time()
        if self._timer is None:  # one pending look covers every start until it fires
            self._timer = loop.call_later(self.delay, self._look)

    def _look(self) -> None:
        self._timer = None
        if self._claimed < self._named_away:
            self._wake()  # no claim here since that start: look now

    def close(self) -> None:
        """Drop a pending look."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
