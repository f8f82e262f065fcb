"""Worker liveness kept by the operating system: one file lock per worker beside a SQLite journal.

A worker holds an exclusive ``flock`` on ``<journal>-workers/<hash of its id>.lock``
for as long as it lives, and writes its id into the file. The kernel drops the
lock the moment the process dies, however it dies. The file's existence is the
worker's registration: a claimer that can take a shared lock on a registered
worker's file knows that worker is dead and treats its leases as expired (see
:class:`~continuum_py.journal.LivenessJournal`); an owner with no file (a tool,
an older version) keeps the lease rule.

``flock`` locks belong to an open file, not to a process, so two journals in one
process (two engines, as tests make them) see each other as they would across
processes. They need a local file system, as SQLite's WAL mode does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileLiveness", "dead_workers", "hold", "sql_function"]


class FileLiveness:
    """The liveness locks of the workers of one SQLite journal file.

    Args:
        folder: where the lock files live (created on first hold).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._held: dict[str, int] = {}  # worker id -> the descriptor holding its lock
        self.memo: dict[str, bool] | None = None
        """Answers of :meth:`dead` for the writer's current claim (only the writer thread uses it)."""

    @staticmethod
    def supported() -> bool:
        """Whether this platform has ``flock``."""
        return fcntl is not None

    def path(self, worker_id: str) -> Path:
        """The lock file of ``worker_id``: any text is a worker id, so its name is a digest."""
        return self.folder / f"{hashlib.sha256(worker_id.encode()).hexdigest()[:32]}.lock"

    def try_hold(self, worker_id: str) -> bool:
        """Take ``worker_id``'s lock if no other open file holds it (``True`` if held now)."""
        if worker_id in self._held:
            return True
        path = self.path(worker_id)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # no folder yet, or the last worker just removed it
                self.folder.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            # A prune may have removed the file between our open and our lock:
            # a lock on a removed file registers nothing, so take a new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, worker_id.encode())
        self._held[worker_id] = fd
        return True

    def holds(self, worker_id: str) -> bool:
        """Whether this object holds ``worker_id``'s lock."""
        return worker_id in self._held

    def release(self, worker_id: str, *, forget: bool = False) -> None:
        """Drop ``worker_id``'s lock; the file stays (registered) unless ``forget``."""
        fd = self._held.pop(worker_id, None)
        if fd is not None:
            if forget:
                # Removed while still locked, so no prober sees it half gone;
                # the folder goes too once no worker is left in it.
                with contextlib.suppress(OSError):
                    self.path(worker_id).unlink()
                with contextlib.suppress(OSError):
                    self.folder.rmdir()
            with contextlib.suppress(OSError):
                os.close(fd)

    def release_all(self) -> None:
        """Drop every lock this object holds."""
        for worker_id in list(self._held):
            self.release(worker_id)

    def dead(self, worker_id: str, memo: dict[str, bool] | None = None) -> bool:
        """Whether ``worker_id`` registered liveness and no process holds it now.

        ``memo`` keeps answers (one claim's worth: :attr:`memo`).
        """
        if memo is not None and worker_id in memo:
            return memo[worker_id]
        answer = False
        if worker_id not in self._held:
            try:
                fd = os.open(self.path(worker_id), os.O_RDONLY)
            except OSError:
                fd = -1  # not registered (or not readable): the lease rule applies
            if fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    answer = True
                except OSError:
                    answer = False
                finally:
                    os.close(fd)
        if memo is not None:
            memo[worker_id] = answer
        return answer

    def probe_all(self) -> dict[str, tuple[Path, int]]:
        """Every registered worker that is dead now: id -> (its file, a descriptor locking it).

        The caller closes the descriptors; while open, the dead worker cannot take
        its lock back, so a file can be removed safely. A file with no id in it
        (its worker died while registering) is listed under ``""``-prefixed keys.
        """
        out: dict[str, tuple[Path, int]] = {}
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            return out
        for name in names:
            if not name.endswith(".lock"):
                continue
            path = self.folder / name
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                worker_id = os.read(fd, 65536).decode(errors="replace")
            except OSError:
                os.close(fd)
                continue
            if worker_id in self._held:
                os.close(fd)
                continue
            out[worker_id or f"\0{name}"] = (path, fd)
        return out


async def hold(liveness: FileLiveness | None, worker_id: str) -> bool:
    """``liveness.try_hold``, riding over another process's probe holding the lock an instant."""
    if liveness is None:
        return False
    for _ in range(5):
        if liveness.try_hold(worker_id):
            return True
        await asyncio.sleep(0.02)
    return False


async def dead_workers(
    liveness: FileLiveness | None,
    leasing: Callable[[list[str]], Awaitable[set[str]]],
) -> list[str]:
    """The dead registered workers that still lease running runs; the others are forgotten.

    Args:
        liveness: the journal's locks (``None``: no liveness, nobody is dead).
        leasing: which of the given worker ids lease a running run.
    """
    if liveness is None:
        return []
    found = liveness.probe_all()
    try:
        ids = [w for w in found if not w.startswith("\0")]
        busy = await leasing(ids) if ids else set()
        for worker_id, (path, _fd) in found.items():
            if worker_id not in busy:
                # Still locked by us: its worker cannot come back in between.
                with contextlib.suppress(OSError):
                    path.unlink()
        return sorted(busy)
    finally:
        for _path, fd in found.values():
            os.close(fd)


def sql_function(live: FileLiveness | None, *, memo: bool) -> Callable[[sqlite3.Connection], None]:
    """Registers ``continuum_dead(owner)`` on a connection: 1 when the owner's process is gone.

    The claim statement calls it. Only the writer keeps answers for the length
    of a claim (``memo``); the reader runs on another thread. With no
    liveness (``:memory:``) nobody is dead.
    """

    def dead(owner: str | None) -> int:
        if live is None or owner is None:
            return 0
        return int(live.dead(owner, live.memo if memo else None))

    return lambda c: c.create_function("continuum_dead", 1, dead)
