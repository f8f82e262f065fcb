"""The SQLite journal sizes its WAL when it opens, so commits overwrite it instead of growing it.

The sizing writes zeros past the WAL's end: it must never touch a frame (of this
process, of another one, or of one that was killed), never wait for another
process's write lock, and leave a WAL that SQLite recovers whole after a crash.
"""

from __future__ import annotations

import os
import shutil
import sqlite3

from helpers import new_run

from continuum_py.adapters import _sqlite_writes
from continuum_py.adapters.sqlite import SQLiteJournal

_FRAME = 4096 + 24


def _wal_size(path: str) -> int:
    return os.path.getsize(f"{path}-wal")


async def test_commits_overwrite_a_wal_sized_when_the_journal_opened(tmp_path):
    path = str(tmp_path / "j.db")
    async with SQLiteJournal(path) as j:
        await j.start_run(new_run("r0"))  # waits for the sizing
        sized = _wal_size(path)
        assert sized >= 32 + _sqlite_writes.PRESIZE_FRAMES * _FRAME
        sizes = set()
        for i in range(1, 400):  # one at a time, on the loop's thread; checkpoints between
            await j.start_run(new_run(f"r{i}"))
            sizes.add(_wal_size(path))
        assert sizes == {sized}  # no commit made the file longer
        assert len(await j.list_runs(limit=1000)) == 400
    # SQLite deleted the WAL when the journal closed; opened again, it is sized again.
    assert not os.path.exists(f"{path}-wal")  # noqa: ASYNC240 - one stat in a test
    async with SQLiteJournal(path) as j:
        await j.start_run(new_run("again"))
        assert _wal_size(path) == sized


async def test_a_crashed_wal_shorter_than_the_size_keeps_every_commit(tmp_path, monkeypatch):
    # A process that sized nothing (an older continuum_py, or killed before its
    # sizing) leaves a WAL of frames only; the next journal to open the file
    # sizes it while those frames are not yet in the file: they must all survive.
    first = tmp_path / "a"
    first.mkdir()
    path = str(first / "j.db")
    monkeypatch.setattr(_sqlite_writes, "PRESIZE_FRAMES", 0)
    monkeypatch.setattr(_sqlite_writes, "CHECKPOINT_EVERY", 100_000)  # keep every frame
    async with SQLiteJournal(path) as j:
        for i in range(30):
            await j.start_run(new_run(f"r{i}"))
        # What a SIGKILL leaves: the file and its WAL as they are now, unclosed.
        crashed = tmp_path / "b"
        crashed.mkdir()
        shutil.copy(path, crashed / "j.db")
        shutil.copy(f"{path}-wal", crashed / "j.db-wal")
    framed = _wal_size(str(crashed / "j.db"))
    monkeypatch.undo()
    copy = str(crashed / "j.db")
    async with SQLiteJournal(copy) as j:
        await j.start_run(new_run("after"))
        assert _wal_size(copy) > framed  # sized past the frames it found
        runs = {r.run_id for r in await j.list_runs(limit=1000)}
        assert runs == {f"r{i}" for i in range(30)} | {"after"}
    with sqlite3.connect(copy) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_sizing_never_waits_for_another_process(tmp_path):
    # Another connection writing when the journal opens: the sizing gives up at
    # once (it would have to write past frames that connection is adding), and
    # the journal's first write waits for that connection as it always did.
    path = str(tmp_path / "j.db")
    async with SQLiteJournal(path):
        pass
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode = WAL")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO queues (name) VALUES ('q')")
    before = _wal_size(path)
    async with SQLiteJournal(path) as j:
        await j._wc.call(lambda raw: None)  # queued after the sizing: it has run
        assert _wal_size(path) == before
        other.execute("COMMIT")
        await j.start_run(new_run("r1"))
        assert (await j.get_run("r1")) is not None
    other.close()
