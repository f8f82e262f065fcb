"""The Engine's queue methods (a mixin of :class:`~continuum_py.Engine`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from continuum_py._queueing import queue_journal, queue_place, queue_states
from continuum_py.journal import QueueJournal
from continuum_py.queues import Queue, QueuePlace, QueueState

if TYPE_CHECKING:
    from continuum_py._clock import Clock
    from continuum_py.journal import Journal

__all__ = ["QueueMethods"]


class QueueMethods:
    """Store queue definitions, and tell how queues and queued runs stand."""

    if TYPE_CHECKING:
        _journal_obj: Journal
        _declared: dict[str, Queue]
        clock: Clock

        def _check_open(self) -> None: ...

    async def _declare(self, q: Queue) -> None:
        """Store ``q``'s definition unless this engine already stored this very one."""
        if self._declared.get(q.name) != q:
            await queue_journal(self._journal_obj).declare_queue(q)
            self._declared[q.name] = q

    async def queues(self) -> list[QueueState]:
        """How every queue stored in the journal stands: running, waiting, its limits.

        Raises:
            ConfigurationError: the journal keeps no queues.
        """
        self._check_open()
        loads = await queue_journal(self._journal_obj).queue_loads(now=self.clock.now())
        return queue_states(loads)

    async def queue_place(self, run_id: str) -> QueuePlace | None:
        """Where a queued run stands (position and why it waits), or ``None`` if not queued."""
        self._check_open()
        qj = self._journal_obj
        if not isinstance(qj, QueueJournal):
            return None  # a journal without queues has no queued runs
        entry = await qj.queue_entry(run_id)
        if entry is None:
            return None
        return queue_place(entry, run_id, await qj.queue_loads(now=self.clock.now()))
