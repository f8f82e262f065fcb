"""What a journal stores of cron schedules: their rows and the optional ``ScheduleStore``.

Re-exported by :mod:`continuum_py.journal`, where the journal protocols live.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import msgspec

__all__ = ["SCHEDULE_DEFINITION", "ScheduleProgress", "ScheduleRecord", "ScheduleStore"]


class ScheduleProgress(msgspec.Struct, frozen=True, kw_only=True):
    """Where a schedule stands: what its next fire is computed from.

    Attributes:
        last_fire: the newest fire time handled (started, skipped or
            buffered), seconds since the epoch; before the first fire, the
            time the schedule was declared (or resumed).
        buffered: a fire waiting for the previous fire's run to end (``overlap="buffer_one"``).
        last_run_id: the run of the newest started fire.
        fired: how many fires were started.
        skipped: how many fires were skipped (too old for ``catchup``, or an overlap).
        last_skipped: the newest skipped fire time.
    """

    last_fire: float
    buffered: float | None = None
    last_run_id: str | None = None
    fired: int = 0
    skipped: int = 0
    last_skipped: float | None = None


class ScheduleRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The journal's row for a cron schedule: its definition and its progress.

    Attributes:
        name: the schedule's name (unique in a journal).
        workflow: the workflow name each fire starts.
        args: the encoded arguments (a JSON array) given before the fire time.
        cron: the cron expression (5 fields, ``@hourly``-style names expanded).
        tz: the IANA time zone the expression is read in.
        overlap: ``"skip"``, ``"buffer_one"`` or ``"allow"``.
        catchup: seconds: a missed fire older than this is skipped, not started.
        created_at: when it was first declared.
        paused: a paused schedule fires nothing.
        progress: where it stands.
    """

    name: str
    workflow: str
    args: bytes
    cron: str
    tz: str
    overlap: str
    catchup: float
    created_at: float
    paused: bool = False
    progress: ScheduleProgress


SCHEDULE_DEFINITION: tuple[str, ...] = ("workflow", "args", "cron", "tz", "overlap", "catchup")
"""The fields of a :class:`ScheduleRecord` a new declaration replaces; the rest is kept."""


@runtime_checkable
class ScheduleStore(Protocol):
    """Optional: a journal that keeps cron schedules, shared by every worker on it.

    The engine computes fires; the journal only keeps rows and makes each
    advance a compare-and-set, so two workers racing to handle a fire
    advance the schedule once.
    """

    async def put_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        """Store a new schedule, or replace the definition of the one of that name.

        Replacing keeps its ``created_at``, ``paused`` and progress; declaring
        the same definition again changes nothing. Returns the stored row.
        """
        ...

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        """The schedule ``name``, or None."""
        ...

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""
        ...

    async def advance_schedule(
        self, name: str, expected: ScheduleProgress, new: ScheduleProgress
    ) -> bool:
        """Set the progress of ``name`` to ``new``, if it still is ``expected`` (compare-and-set).

        Compares ``last_fire`` and ``buffered`` in the same statement as the
        write. False when they differ: another worker advanced it first, or
        it was resumed or deleted.
        """
        ...

    async def pause_schedule(self, name: str, paused: bool, *, now: float) -> bool:
        """Pause or resume ``name``; False if there is no such schedule.

        Resuming a paused schedule moves its ``last_fire`` to ``now`` (when
        later), so the fires it missed while paused are neither started nor
        counted as skipped.
        """
        ...

    async def delete_schedule(self, name: str) -> bool:
        """Remove ``name``; False if there is no such schedule."""
