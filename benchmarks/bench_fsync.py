"""How long does this disk take to make a small write durable?

Writes a small record (200 bytes by default) to a file and syncs it, many
times: the floor under any durable step. Variants: ``os.fdatasync`` and
``os.fsync`` after an append (the file grows, as SQLite's WAL does), and
``os.fdatasync`` after overwriting the same bytes (no size change). For
context it also times one-row commits through SQLite itself in WAL mode with
``synchronous=FULL`` (the settings of continuum_py's SQLite journal): with the
stdlib ``sqlite3`` driver, with ``aiosqlite``, and with ``sqlite3`` called
from asyncio through one thread hop per transaction. The cost of that hop
alone (no disk) is timed too.

Usage: python benchmarks/bench_fsync.py [--quick] [--dir DIR] [-n N] [--size BYTES]
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from _common import emit, meta, parser, stats_us, workdir

WARMUP = 20


def sync_loop(folder: Path, n: int, size: int, *, sync: str, mode: str) -> dict[str, Any]:
    """Time ``n`` write+sync pairs; ``sync`` is fdatasync|fsync, ``mode`` append|overwrite."""
    return stats_us(sync_samples(folder, n, size, sync=sync, mode=mode))


def sync_samples(folder: Path, n: int, size: int, *, sync: str, mode: str) -> list[float]:
    """The durations (seconds) of ``n`` write+sync pairs, after a short warm-up."""
    path = folder / f"fsync-{sync}-{mode}.dat"
    record = (b"x" * (size - 1)) + b"\n"
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "append" else 0)
    fd = os.open(path, flags, 0o644)
    do_sync = os.fdatasync if sync == "fdatasync" else os.fsync
    samples: list[float] = []
    try:
        if mode == "overwrite":
            os.pwrite(fd, record, 0)
            os.fsync(fd)
        for i in range(WARMUP + n):
            t0 = time.perf_counter()
            if mode == "append":
                os.write(fd, record)
            else:
                os.pwrite(fd, record, 0)
            do_sync(fd)
            t1 = time.perf_counter()
            if i >= WARMUP:
                samples.append(t1 - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return samples


def _sqlite_setup(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    conn.commit()


def sqlite_commit_loop(folder: Path, n: int, size: int) -> dict[str, Any]:
    """Time ``n`` one-row INSERT + COMMIT transactions with the stdlib driver (no thread hop)."""
    path = folder / "commit-sqlite3.db"
    conn = sqlite3.connect(path, isolation_level="IMMEDIATE")
    samples: list[float] = []
    record = b"x" * size
    try:
        _sqlite_setup(conn)
        for i in range(WARMUP + n):
            t0 = time.perf_counter()
            conn.execute("INSERT INTO t (data) VALUES (?)", (record,))
            conn.commit()
            t1 = time.perf_counter()
            if i >= WARMUP:
                samples.append(t1 - t0)
    finally:
        conn.close()
    return stats_us(samples)


async def aiosqlite_commit_loop(folder: Path, n: int, size: int) -> dict[str, Any]:
    """The same transactions through aiosqlite (each call hops to its thread and back)."""
    import aiosqlite

    path = folder / "commit-aiosqlite.db"
    samples: list[float] = []
    record = b"x" * size
    async with aiosqlite.connect(path, isolation_level="IMMEDIATE") as conn:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        await conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, data BLOB)")
        await conn.commit()
        for i in range(WARMUP + n):
            t0 = time.perf_counter()
            await conn.execute("INSERT INTO t (data) VALUES (?)", (record,))
            await conn.commit()
            t1 = time.perf_counter()
            if i >= WARMUP:
                samples.append(t1 - t0)
    return stats_us(samples)


async def thread_commit_loop(folder: Path, n: int, size: int) -> dict[str, Any]:
    """The same transactions from asyncio, each a single hop to one worker thread.

    This is what a journal could cost if a whole append ran in one thread call
    (aiosqlite makes one hop per execute/commit).
    """
    import concurrent.futures

    path = folder / "commit-thread.db"
    conn = sqlite3.connect(path, isolation_level="IMMEDIATE", check_same_thread=False)
    record = b"x" * size
    samples: list[float] = []

    def tx() -> None:
        conn.execute("INSERT INTO t (data) VALUES (?)", (record,))
        conn.commit()

    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            await loop.run_in_executor(pool, _sqlite_setup, conn)
            for i in range(WARMUP + n):
                t0 = time.perf_counter()
                await loop.run_in_executor(pool, tx)
                t1 = time.perf_counter()
                if i >= WARMUP:
                    samples.append(t1 - t0)
        finally:
            await loop.run_in_executor(pool, conn.close)
    return stats_us(samples)


async def thread_hop_loop(n: int) -> dict[str, Any]:
    """A round trip from asyncio to a worker thread and back, doing nothing (no disk)."""
    import concurrent.futures

    loop = asyncio.get_running_loop()
    samples: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        for i in range(WARMUP + n):
            t0 = time.perf_counter()
            await loop.run_in_executor(pool, int)
            t1 = time.perf_counter()
            if i >= WARMUP:
                samples.append(t1 - t0)
    return stats_us(samples)


def measure(folder: Path, n: int, size: int = 200, *, sqlite: bool = True) -> dict[str, Any]:
    """All variants; ``floor_us`` is the median of fdatasync after an append."""
    variants: dict[str, Any] = {
        "fdatasync_append": sync_loop(folder, n, size, sync="fdatasync", mode="append"),
        "fsync_append": sync_loop(folder, n, size, sync="fsync", mode="append"),
        "fdatasync_overwrite": sync_loop(folder, n, size, sync="fdatasync", mode="overwrite"),
    }
    if sqlite:
        variants["sqlite3_commit_wal_full"] = sqlite_commit_loop(folder, n, size)
        variants["aiosqlite_commit_wal_full"] = asyncio.run(aiosqlite_commit_loop(folder, n, size))
        variants["sqlite3_one_thread_hop_commit_wal_full"] = asyncio.run(
            thread_commit_loop(folder, n, size)
        )
        variants["thread_hop_noop"] = asyncio.run(thread_hop_loop(n))
    return {
        "record_bytes": size,
        "floor_us": variants["fdatasync_append"]["median_us"],
        "floor_definition": "median of write(200 B, O_APPEND) + os.fdatasync",
        "variants": variants,
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=None, help="syncs per variant (default 2000; quick 100)")
    p.add_argument("--size", type=int, default=200, help="record size in bytes")
    args = p.parse_args()
    n = args.n or (100 if args.quick else 2000)
    with workdir(args.dir, keep=args.keep) as folder:
        doc = {
            "benchmark": "fsync",
            "question": "how long does this disk take to make a small write durable?",
            "meta": meta(folder),
            "params": {"n": n, "size": args.size, "quick": args.quick},
            "results": measure(folder, n, args.size),
        }
    emit(doc)


if __name__ == "__main__":
    main()
