"""The engine's side of queues: checking what a start or an Engine names, and reporting.

The rules a claim follows live with the journals
(:func:`continuum_py.adapters._rules.admit`); this module checks arguments
before anything is recorded and turns stored loads into
:class:`~continuum_py.queues.QueueState` and :class:`~continuum_py.queues.QueuePlace`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from continuum_py.errors import ConfigurationError
from continuum_py.journal import Journal, QueueJournal
from continuum_py.queues import Queue, QueueEntry, QueueLoad, QueuePlace, QueueState, check_queue

__all__ = ["check_queues", "check_start", "queue_journal", "queue_place", "queue_states"]


def queue_journal(journal: Journal) -> QueueJournal:
    """``journal`` as a :class:`QueueJournal`.

    Raises:
        ConfigurationError: it keeps no queues.
    """
    # isinstance() on a runtime-checkable Protocol looks up each of its members
    # (~10 µs a call): on every queued start. A class that passed once passes.
    if type(journal) in _QUEUE_JOURNALS:
        return cast(QueueJournal, journal)
    if not isinstance(journal, QueueJournal):
        raise ConfigurationError(f"{type(journal).__name__} keeps no queues")
    _QUEUE_JOURNALS.add(type(journal))
    return journal


_QUEUE_JOURNALS: set[type] = set()  # classes whose instances passed queue_journal's check


def check_queues(queues: Any) -> tuple[Queue, ...] | None:
    """``Engine(queues=...)`` as a tuple of queues (``None``: serve every queue).

    Raises:
        ConfigurationError: not a sequence of :class:`Queue`, or a name given twice.
    """
    if queues is None:
        return None
    if isinstance(queues, Queue | str) or not isinstance(queues, Sequence):
        raise ConfigurationError(
            f"Engine queues must be a list of continuum_py.Queue, got {type(queues).__name__}"
        )
    out = tuple(check_queue(q) for q in queues)
    names = [q.name for q in out]
    for name in names:
        if names.count(name) > 1:
            raise ConfigurationError(f"Engine queues names queue {name!r} twice")
    return out


def check_start(queue: Any, priority: Any, dedup_key: Any) -> Queue | None:
    """The checked ``queue=``, ``priority=`` and ``dedup_key=`` of ``engine.start``.

    Raises:
        ConfigurationError: a queue that is not a :class:`Queue`; a priority
            that is not a whole number; a dedup key that is not non-empty text,
            or either given without a queue.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigurationError(f"priority must be a whole number, got {priority!r}")
    if dedup_key is not None and (not isinstance(dedup_key, str) or not dedup_key):
        raise ConfigurationError(f"dedup_key must be non-empty text or None, got {dedup_key!r}")
    if queue is None:
        if priority != 0 or dedup_key is not None:
            raise ConfigurationError("priority and dedup_key need a queue (queue=Queue(...))")
        return None
    return check_queue(queue)


def queue_states(loads: Sequence[QueueLoad]) -> list[QueueState]:
    """The states of ``loads``' queues, by name."""
    return [
        QueueState(
            queue=ld.queue,
            running=ld.holding,
            waiting=len(ld.waiting),
            started_in_window=ld.recent,
        )
        for ld in loads
    ]


def queue_place(entry: QueueEntry, run_id: str, loads: Sequence[QueueLoad]) -> QueuePlace:
    """Where the queued run ``run_id`` (its ``entry``) stands among ``loads``."""
    name, priority, key, admitted_at = entry
    place = QueuePlace(
        queue=name,
        priority=priority,
        dedup_key=key,
        admitted=admitted_at is not None,
        admitted_at=admitted_at,
    )
    if admitted_at is not None:
        return place
    load = next((ld for ld in loads if ld.queue.name == name), None)
    if load is None or run_id not in load.waiting:
        return QueuePlace(
            queue=name,
            priority=priority,
            dedup_key=key,
            admitted=False,
            why="not due yet (a start time in the future) or ended before its turn",
        )
    position = list(load.waiting).index(run_id) + 1
    why = why_waiting(load)
    if not why:
        ahead = position - 1
        why = f"{ahead} run(s) ahead of it" if ahead else "next: a worker claims it soon"
    return QueuePlace(
        queue=name, priority=priority, dedup_key=key, admitted=False, position=position, why=why
    )


def why_waiting(load: QueueLoad) -> str:
    """Why ``load``'s first waiting run is not admitted (``""``: it may be)."""
    q = load.queue
    if q.concurrency is not None and load.holding >= q.concurrency:
        return f"concurrency limit: {load.holding} of {q.concurrency} slots held"
    if q.rate is not None and load.recent >= q.rate[0]:
        return f"rate limit: {load.recent} of {q.rate[0]} starts in the last {q.rate[1]:g} s"
    return ""
