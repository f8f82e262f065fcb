"""The SQLite journal's writer thread: one hop across threads per write transaction."""

from __future__ import annotations

from helpers import claim_run, new_run, step_events

from continuum_py.adapters._sqlite_thread import SQLiteThread
from continuum_py.adapters.sqlite import SQLiteJournal
from continuum_py.journal import AppendBatch


async def test_an_append_is_one_call_to_the_writer_thread(tmp_path, monkeypatch):
    # Each hop costs about as much as the fsync: a durable step must cost one
    # call on the writer's thread (the whole transaction), not one per statement.
    calls: list[str] = []
    real = SQLiteThread.call

    async def counted(self, fn):
        calls.append(self._thread.name)
        return await real(self, fn)

    async with SQLiteJournal(str(tmp_path / "j.db")) as j:
        await j.start_run(new_run("r1"))
        lease = await claim_run(j, "r1")
        monkeypatch.setattr(SQLiteThread, "call", counted)
        batch = AppendBatch(lease=lease, expected_seq=1, events=step_events("r1", 2, 1))
        assert await j.append([batch]) == [None]
        assert calls == ["continuum-sqlite-writer"]
        monkeypatch.undo()
        assert [e.seq for e in await j.load("r1")] == [1, 2, 3]
