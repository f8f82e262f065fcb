"""The SQLite journal checkpoints its WAL itself, on the writer's thread, and keeps it small.

SQLite alone checkpoints when the WAL reaches 1,000 pages (about 4 MB), inside
the commit that crosses the mark, which may run on the event loop's thread.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

from helpers import new_run

from continuum_py.adapters import _sqlite_writes
from continuum_py.adapters.sqlite import SQLiteJournal

# SQLite's own automatic checkpoint lets the WAL reach 1,000 frames of 4 KiB + 24 bytes.
_SQLITE_OWN_BOUND = 1000 * (4096 + 24)


def _record_threads(monkeypatch) -> list[str]:
    """The name of the thread each journal checkpoint ran on."""
    threads: list[str] = []
    real = _sqlite_writes._passive_checkpoint

    def recorded(raw: sqlite3.Connection) -> int:
        threads.append(threading.current_thread().name)
        return real(raw)

    monkeypatch.setattr(_sqlite_writes, "_passive_checkpoint", recorded)
    return threads


async def test_the_wal_stays_small_and_checkpoints_run_on_the_writer_thread(tmp_path, monkeypatch):
    threads = _record_threads(monkeypatch)
    path = str(tmp_path / "j.db")
    async with SQLiteJournal(path) as j:
        # One at a time: each commit runs on the loop's thread (nothing else waits).
        for i in range(1500):
            await j.start_run(new_run(f"r{i}"))
        wal = os.path.getsize(f"{path}-wal")  # noqa: ASYNC240 - one stat in a test
        assert threads and set(threads) == {"continuum-sqlite-writer"}
        # Each start writes a few pages; SQLite alone would have let the WAL
        # grow to its own bound before starting it over.
        assert wal < _SQLITE_OWN_BOUND / 2, wal
        assert len(await j.list_runs(limit=10_000)) == 1500
    # Closing still checkpoints everything into the file and removes the WAL.
    assert not os.path.exists(f"{path}-wal")  # noqa: ASYNC240 - one stat in a test
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM runs").fetchone() == (1500,)


async def test_a_failing_checkpoint_is_logged_and_fails_no_write(tmp_path, monkeypatch, caplog):
    def broken(raw: sqlite3.Connection) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(_sqlite_writes, "_passive_checkpoint", broken)
    path = str(tmp_path / "j.db")
    with caplog.at_level(logging.WARNING, logger="continuum_py"):
        async with SQLiteJournal(path) as j:
            for i in range(300):
                _, _, created = await j.start_run(new_run(f"r{i}"))
                assert created
    assert any("journal.checkpoint_failed" in r.getMessage() for r in caplog.records)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM runs").fetchone() == (300,)
