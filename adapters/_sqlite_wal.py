"""The SQLite journal's WAL, sized before the first commits need it.

SQLite writes the WAL again from its start after a checkpoint that copied
everything (the journal checkpoints at about ``CHECKPOINT_PAGES`` pages, see
``_sqlite_writes``), so once the WAL has its size every commit overwrites blocks
the file already has. Until then each commit appends to it, and on ext4 an
``fdatasync`` after an append also syncs the file's new size: about twice the
cost of one after an overwrite. SQLite deletes the WAL when the last connection
to the file closes, so every process that opens the journal alone starts with
an empty one and paid that for its first 80 or so commits.

:func:`presize` gives the WAL that size at once: zeros written past its end and
synced, as Postgres does with its WAL segments. It is safe because SQLite reads
a WAL only as far as its frames are valid: a frame must carry the salts of the
WAL's header and a checksum chained from the frames before it, so zeros after
the last valid frame (or a WAL header of zeros) end the log, exactly as the
stale frames SQLite itself leaves behind after starting the WAL again do. Only
bytes past the file's current end are written, and only while holding the
file's write lock (``BEGIN IMMEDIATE``), so no connection, in this process or
another, is appending frames meanwhile; a checkpoint never writes the WAL and
SQLite only truncates or deletes it holding locks that exclude this one.
"""

from __future__ import annotations

import os
import sqlite3

__all__ = ["presize"]

_WAL_HEADER = 32
_FRAME_HEADER = 24
_CHUNK = 1 << 20


def presize(raw: sqlite3.Connection, frames: int, busy_ms: int) -> int:
    """Extend the WAL of ``raw``'s file with zeros to ``frames`` frames; the bytes added.

    Adds nothing (returns 0) when the WAL is that large already, when the
    file is not in WAL mode, or when another connection holds the write lock
    at this moment (it does not wait: the WAL then grows as it always did).
    Runs on the writer's thread, with no transaction open there.
    """
    if raw.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        return 0
    path = raw.execute("PRAGMA database_list").fetchone()[2]  # the main file, absolute
    page_size = int(raw.execute("PRAGMA page_size").fetchone()[0])
    target = _WAL_HEADER + frames * (page_size + _FRAME_HEADER)
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return 0  # another connection is writing: never wait for it here
    finally:
        raw.execute(f"PRAGMA busy_timeout = {busy_ms}")
    try:
        wal = f"{path}-wal"
        try:
            size = os.path.getsize(wal)
        except FileNotFoundError:
            return 0
        if size >= target:
            return 0
        fd = os.open(wal, os.O_WRONLY)  # never created or truncated here
        try:
            zeros = bytes(min(target - size, _CHUNK))
            at = size
            while at < target:
                at += os.pwrite(fd, zeros[: target - at], at)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        return target - size
    finally:
        raw.rollback()  # nothing was written through SQLite: only the lock is let go
