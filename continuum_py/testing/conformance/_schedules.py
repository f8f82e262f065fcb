"""Cron schedule storage (:class:`~continuum_py.journal.ScheduleStore`): rows and their compare-and-set."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from continuum_py.journal import ScheduleProgress, ScheduleRecord, ScheduleStore
from continuum_py.testing.conformance._base import JournalCase, asyncio_tests


def _schedule(name: str = "nightly", **kw: Any) -> ScheduleRecord:
    fields: dict[str, Any] = {
        "workflow": "report",
        "args": b'["eu"]',
        "cron": "0 3 * * *",
        "tz": "UTC",
        "overlap": "skip",
        "catchup": 3600.0,
        "created_at": 1000.0,
        "progress": ScheduleProgress(last_fire=1000.0),
    }
    fields.update(kw)
    return ScheduleRecord(name=name, **fields)


@asyncio_tests
class ScheduleTests(JournalCase):
    """``ScheduleStore``: skipped for a journal that keeps no schedules."""

    @pytest.fixture
    def store(self, journal: Any) -> Any:
        if not isinstance(journal, ScheduleStore):
            pytest.skip("this journal keeps no schedules")
        return journal

    async def test_a_stored_schedule_reads_back_whole(self, store: Any) -> None:
        journal = store
        s = _schedule(
            progress=ScheduleProgress(
                last_fire=1200.5, buffered=1300.0, last_run_id="nightly@x", fired=3, skipped=2
            )
        )
        assert await journal.put_schedule(s) == s
        assert await journal.get_schedule("nightly") == s
        assert await journal.list_schedules() == [s]
        assert await journal.get_schedule("other") is None

    async def test_declaring_again_replaces_the_definition_and_keeps_progress(
        self, store: Any
    ) -> None:
        journal = store
        first = _schedule()
        await journal.put_schedule(first)
        moved = ScheduleProgress(last_fire=5000.0, fired=4, last_run_id="nightly@y")
        assert await journal.advance_schedule("nightly", first.progress, moved)
        await journal.pause_schedule("nightly", True, now=5000.0)
        again = _schedule(cron="0 4 * * *", args=b'["us"]', created_at=9000.0)
        stored = await journal.put_schedule(again)
        assert (stored.cron, stored.args, stored.created_at) == ("0 4 * * *", b'["us"]', 1000.0)
        assert stored.progress == moved and stored.paused
        assert await journal.list_schedules() == [stored]

    async def test_advance_is_a_compare_and_set_on_the_last_fire(self, store: Any) -> None:
        journal = store
        s = _schedule()
        await journal.put_schedule(s)
        a = msgspec.structs.replace(s.progress, last_fire=1060.0, fired=1)
        b = msgspec.structs.replace(s.progress, last_fire=1060.0, skipped=1)
        assert await journal.advance_schedule("nightly", s.progress, a)
        assert not await journal.advance_schedule("nightly", s.progress, b)
        assert (await journal.get_schedule("nightly")).progress == a
        assert not await journal.advance_schedule("missing", s.progress, a)

    async def test_advance_compares_the_buffered_fire_too(self, store: Any) -> None:
        journal = store
        s = _schedule()
        await journal.put_schedule(s)
        buffered = msgspec.structs.replace(s.progress, buffered=1060.0, last_fire=1060.0)
        assert await journal.advance_schedule("nightly", s.progress, buffered)
        started = msgspec.structs.replace(buffered, buffered=None, fired=1)
        stale = msgspec.structs.replace(buffered, buffered=None)
        assert not await journal.advance_schedule("nightly", stale, started)
        assert await journal.advance_schedule("nightly", buffered, started)
        assert (await journal.get_schedule("nightly")).progress == started

    async def test_racing_advances_from_one_state_land_once(self, store: Any) -> None:
        journal = store
        s = _schedule()
        await journal.put_schedule(s)
        news = [msgspec.structs.replace(s.progress, last_fire=1060.0, fired=i) for i in range(8)]
        won = await asyncio.gather(
            *(journal.advance_schedule("nightly", s.progress, n) for n in news)
        )
        assert sum(won) == 1
        assert (await journal.get_schedule("nightly")).progress == news[won.index(True)]

    async def test_resume_moves_the_last_fire_to_now_and_pause_keeps_it(self, store: Any) -> None:
        journal = store
        await journal.put_schedule(_schedule())
        assert await journal.pause_schedule("nightly", True, now=2000.0)
        rec = await journal.get_schedule("nightly")
        assert rec.paused and rec.progress.last_fire == 1000.0
        assert await journal.pause_schedule("nightly", False, now=3000.0)
        rec = await journal.get_schedule("nightly")
        assert not rec.paused and rec.progress.last_fire == 3000.0
        # Resuming a schedule that is not paused moves nothing.
        assert await journal.pause_schedule("nightly", False, now=4000.0)
        assert (await journal.get_schedule("nightly")).progress.last_fire == 3000.0
        assert not await journal.pause_schedule("missing", True, now=1.0)

    async def test_delete_removes_only_that_schedule(self, store: Any) -> None:
        journal = store
        await journal.put_schedule(_schedule("a"))
        await journal.put_schedule(_schedule("b"))
        assert await journal.delete_schedule("a")
        assert not await journal.delete_schedule("a")
        assert [s.name for s in await journal.list_schedules()] == ["b"]
