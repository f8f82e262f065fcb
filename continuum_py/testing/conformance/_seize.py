"""``seize``: taking an unfinished run's lease from outside, fencing out its runner."""

from __future__ import annotations

from typing import Any

import pytest

from continuum_py.errors import LeaseLost, RunNotFound
from continuum_py.journal import AppendBatch, RunStatus
from continuum_py.testing._journal_helpers import claim_run, new_run, step_events
from continuum_py.testing.conformance._base import JournalCase, asyncio_tests


@asyncio_tests
class SeizeTests(JournalCase):
    """``seize``: taking an unfinished run's lease from outside, fencing out its runner."""

    async def test_seize_fences_out_the_runner_and_keeps_the_status(self, journal: Any) -> None:
        await journal.start_run(new_run("r1"))
        held = await claim_run(journal, "r1")
        seized = await journal.seize("r1", "ops", ttl=30.0)
        assert seized is not None and seized.token > held.token and seized.worker_id == "ops"
        rec = await journal.get_run("r1")
        assert (rec.status, rec.lease_owner, rec.lease_token) == (
            RunStatus.RUNNING,
            "ops",
            seized.token,
        )
        # The old runner's write is refused and writes nothing.
        [err] = await journal.append(
            [AppendBatch(lease=held, expected_seq=1, events=step_events("r1", 2, 1))]
        )
        assert isinstance(err, LeaseLost)
        assert len(await journal.load("r1")) == 1
        # The new holder writes.
        [ok] = await journal.append(
            [AppendBatch(lease=seized, expected_seq=1, events=step_events("r1", 2, 1))]
        )
        assert ok is None

    async def test_seize_a_run_nobody_holds_then_a_finished_and_an_unknown_one(
        self, journal: Any
    ) -> None:
        await journal.start_run(new_run("r1", wake_at=4_000_000_000.0))
        lease = await journal.seize("r1", "ops", ttl=30.0)
        assert lease is not None
        assert (await journal.get_run("r1")).status == RunStatus.PENDING
        end = AppendBatch(
            lease=lease, expected_seq=1, events=[], status=RunStatus.CANCELLED, outcome=b"x"
        )
        assert await journal.append([end]) == [None]
        assert await journal.seize("r1", "ops", ttl=30.0) is None
        assert (await journal.get_run("r1")).status == RunStatus.CANCELLED
        with pytest.raises(RunNotFound):
            await journal.seize("ghost", "ops", ttl=30.0)
