"""A default worker id: unique among the live processes of a host, stable across restarts.

An engine that runs a worker and was given no ``worker_id`` takes the lowest free
*slot* on its host: ``"{host}-{n}"``, held by an exclusive ``flock`` on a small
file for as long as the engine lives. The kernel drops the lock when the process
dies, however it dies, so:

* two live processes never share an id (they would take each other's runs), and
* a process started after one died gets the dead one's id back and takes its
  unfinished runs at once, instead of waiting for their leases to expire: the
  lock proves their previous owner is gone.

The lock files live in ``$CONTINUUM_RUNTIME_DIR`` (default: a per-user folder
in the temporary directory). Where locking is not possible the id is
``"{host}-pid{pid}"``: unique, but not reclaimed at once after a restart.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

_SLOTS = 1024


def runtime_dir() -> Path:
    """Where the slot locks are kept."""
    explicit = os.environ.get("CONTINUUM_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"continuum-{uid}"


class WorkerSlot:
    """A held slot: its worker id, and the lock that keeps it this process's."""

    def __init__(self, worker_id: str, fd: int | None) -> None:
        self.worker_id = worker_id
        self._fd = fd  # a raw descriptor: dropping it never warns, whatever order GC takes

    def release(self) -> None:
        """Give the slot up (closing the descriptor drops the lock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        # An engine dropped without aclose(): free the slot quietly.
        self.release()


def take_slot() -> WorkerSlot:
    """The lowest free slot of this host, held until released or the process ends."""
    host = socket.gethostname()
    if fcntl is not None:
        try:
            folder = runtime_dir()
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            for n in range(_SLOTS):
                fd = os.open(folder / f"worker-{host}-{n}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                return WorkerSlot(f"{host}-{n}", fd)
        except OSError:
            pass  # an unwritable folder: fall back to an id unique to this process
    return WorkerSlot(f"{host}-pid{os.getpid()}", None)
