"""Whole runs written at once (``JournalImport``): all or nothing, and a run's forks found."""

from __future__ import annotations

from typing import Any

import pytest

from continuum_py.errors import RunIdTaken
from continuum_py.journal import JournalImport, RunStatus, StoredEvent, WholeRun
from continuum_py.testing._journal_helpers import claim_all, new_run, step_events
from continuum_py.testing.conformance._base import JournalCase, asyncio_tests


def whole(run_id: str, steps: int = 1, **fields: Any) -> WholeRun:
    """A run of ``steps`` completed steps, its events numbered 1..n."""
    events: list[StoredEvent] = [new_run(run_id).first_event]
    for position in range(1, steps + 1):
        events += step_events(run_id, len(events) + 1, position)
    return WholeRun(
        run_id=run_id, workflow="wf", status=fields.pop("status", RunStatus.PARKED), events=events,
        **fields,
    )  # fmt: skip


def _needs_import(journal: Any) -> JournalImport:
    if not isinstance(journal, JournalImport):
        pytest.skip("the journal does not implement JournalImport (optional)")
    return journal


@asyncio_tests
class WholeRunTests(JournalCase):
    """``put_runs`` and ``forks``; skipped for a journal without :class:`JournalImport`."""

    async def test_whole_runs_land_with_their_histories_and_row(self, journal: Any) -> None:
        j = _needs_import(journal)
        child_run = whole("a.2", steps=1, status=RunStatus.COMPLETED, outcome=b"end",
                          parent_run_id="a", parent_position=2, created_at=100.0)  # fmt: skip
        await j.put_runs(
            [
                whole("a", steps=2, status=RunStatus.PARKED, reason="imported", inbox_seen=3),
                child_run,
            ]
        )
        a = await journal.get_run("a")
        assert (a.status, a.reason, a.last_seq, a.lease_owner) == ("parked", "imported", 5, None)
        assert (a.inbox_last, a.inbox_seen, a.forked_from) == (3, 3, None)
        child = await journal.get_run("a.2")
        assert (child.status, child.outcome, child.parent_run_id) == ("completed", b"end", "a")
        assert child.created_at == 100.0
        assert [e.seq for e in await journal.load("a")] == [1, 2, 3, 4, 5]
        assert await journal.load("a.2") == list(child_run.events)
        # Nothing runs a parked or finished run until someone resumes it.
        assert await journal.claim("w1", ttl=30, limit=10) == []

    async def test_a_taken_run_id_refuses_every_run_and_writes_nothing(self, journal: Any) -> None:
        j = _needs_import(journal)
        await journal.start_run(new_run("taken"))
        before = await journal.get_run("taken")
        with pytest.raises(RunIdTaken) as ei:
            await j.put_runs([whole("fresh", steps=3), whole("taken")])
        assert ei.value.run_id == "taken"
        assert await journal.get_run("fresh") is None
        assert await journal.get_run("taken") == before
        assert [e.seq for e in await journal.load("taken")] == [1]
        assert [r.run_id for r in await journal.list_runs()] == ["taken"]

    async def test_bad_whole_runs_are_refused_before_any_write(self, journal: Any) -> None:
        j = _needs_import(journal)
        gap = whole("gap", steps=2)
        bad = [e for e in gap.events if e.seq != 2]
        for runs in (
            [WholeRun(run_id="gap", workflow="wf", status=RunStatus.PENDING, events=bad)],
            [whole("ok"), whole("run", status=RunStatus.RUNNING)],
            [whole("twice"), whole("twice")],
        ):
            with pytest.raises((ValueError, RunIdTaken)):
                await j.put_runs(runs)
        assert await journal.list_runs() == []

    async def test_a_pending_whole_run_is_claimed_and_carries_on_after_its_history(
        self, journal: Any
    ) -> None:
        j = _needs_import(journal)
        await j.put_runs([whole("fork", steps=1, status=RunStatus.PENDING, forked_from="orig")])
        leases = await claim_all(journal)
        assert list(leases) == ["fork"]
        from continuum_py.journal import AppendBatch

        more = step_events("fork", 4, 2)
        assert await journal.append([AppendBatch(lease=leases["fork"], expected_seq=3, events=more)]) == [None]  # fmt: skip
        assert [e.seq for e in await journal.load("fork")] == [1, 2, 3, 4, 5]
        # Its first message follows the ids its history records.
        await j.put_runs([whole("seen", status=RunStatus.SUSPENDED, inbox_seen=4)])
        assert await journal.send("seen", "signal", "go", b"1") == 5
        assert [m.id for m in await journal.inbox("seen", after_id=4)] == [5]
        assert await journal.unseen_inbox(["seen", "fork"]) == ["seen"]

    async def test_forks_lists_the_runs_forked_from_a_run_oldest_first(self, journal: Any) -> None:
        j = _needs_import(journal)
        await journal.start_run(new_run("orig"))
        await j.put_runs([whole("f2", forked_from="orig", created_at=20.0)])
        await j.put_runs([whole("f1", forked_from="orig", created_at=10.0), whole("other")])
        assert [r.run_id for r in await j.forks("orig")] == ["f1", "f2"]
        assert (await journal.get_run("f1")).forked_from == "orig"
        assert await j.forks("f1") == []
        assert (await journal.get_run("orig")).forked_from is None
