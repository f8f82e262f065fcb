"""Queues: a global limit on how many runs of a kind run at once, a rate, priorities, dedup.

A :class:`Queue` is a definition; ``engine.start(fn, queue=q)`` puts a run in
it. The journal stores the definition (so every worker that claims knows it)
and, for each queued run, its priority, its place in line and its dedup key.
A worker admits a queued run only inside its claim's own transaction, after
counting the queue's slots there: the limit holds across every process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from continuum_py.errors import ConfigurationError

__all__ = ["Queue", "QueueEntry", "QueueLoad", "QueuePlace", "QueueState", "check_queue"]


class Queue(msgspec.Struct, frozen=True):
    """A named queue of runs with optional limits.

    Args:
        name: the queue's name (non-empty text), shared by every process.
        concurrency: at most this many of its runs hold a slot at once, across
            every worker on the journal (``None``: no limit). A run holds a slot
            from its admission until it finishes, sleeping and waiting for a
            signal included; a parked run gives its slot back.
        per_worker: at most this many of its runs running on one worker at once.
        rate: ``(n, seconds)``: at most ``n`` runs of the queue start within any
            ``seconds``; the rest wait their turn (they are never dropped).

    Raises:
        ConfigurationError: a limit that is not a positive whole number, a rate
            whose count or period is not positive, an empty name.
    """

    name: str
    concurrency: int | None = None
    per_worker: int | None = None
    rate: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        check_queue(self)


def _limit(what: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{what} must be a whole number >= 1 or None, got {value!r}")


def check_queue(q: Any) -> Queue:
    """``q`` if it is a well-formed :class:`Queue`.

    Raises:
        ConfigurationError: it is not a Queue, or one of its fields is out of range.
    """
    if not isinstance(q, Queue):
        raise ConfigurationError(f"queue must be a continuum_py.Queue, got {type(q).__name__}")
    if not isinstance(q.name, str) or not q.name:
        raise ConfigurationError(f"Queue name must be non-empty text, got {q.name!r}")
    _limit(f"Queue {q.name!r} concurrency", q.concurrency)
    _limit(f"Queue {q.name!r} per_worker", q.per_worker)
    if q.rate is not None:
        ok = isinstance(q.rate, tuple) and len(q.rate) == 2
        n, period = q.rate if ok else (None, None)
        if (
            not ok
            or isinstance(n, bool)
            or not isinstance(n, int)
            or n < 1
            or isinstance(period, bool)
            or not isinstance(period, int | float)
            or not math.isfinite(period)
            or period <= 0
        ):
            raise ConfigurationError(
                f"Queue {q.name!r} rate must be (n >= 1, seconds > 0), got {q.rate!r}"
            )
    return q


class QueueEntry(NamedTuple):
    """A queued run's row as a journal stores it (:meth:`QueueJournal.queue_entry`)."""

    queue: str
    priority: int
    dedup_key: str | None
    admitted_at: float | None


class QueueState(msgspec.Struct, frozen=True, kw_only=True):
    """How a queue stands (``engine.queues()``, ``continuum queues``).

    Attributes:
        queue: its definition as stored.
        running: its runs holding a slot (admitted and not finished or parked).
        waiting: its runs waiting for admission.
        started_in_window: runs admitted within the rate window (0 without a rate).
    """

    queue: Queue
    running: int
    waiting: int
    started_in_window: int = 0


class QueuePlace(msgspec.Struct, frozen=True, kw_only=True):
    """Where a queued run stands: its queue, priority, and place in line while it waits.

    Attributes:
        queue: the queue's name.
        priority: lower runs first.
        dedup_key: its dedup key, if any.
        admitted: whether it was admitted (it started, or will at once).
        position: 1-based place among the queue's waiting runs (0 once admitted).
        why: why it waits (``""`` once admitted).
        admitted_at: when it was admitted (engine clock): its start, as the
            queue's rate counts starts.
    """

    queue: str
    priority: int
    dedup_key: str | None
    admitted: bool
    position: int = 0
    why: str = ""
    admitted_at: float | None = None


class QueueLoad(NamedTuple):
    """One queue as a claim finds it, inside the claim's own transaction.

    Attributes:
        queue: its definition.
        holding: its runs holding a slot (admitted, live: pending, running, suspended).
        mine: of those, the ones running on the claiming worker.
        recent: its runs admitted within its rate window.
        waiting: run ids waiting and due, in admission order (priority, then FIFO).
    """

    queue: Queue
    holding: int
    mine: int
    recent: int
    waiting: Sequence[str]
