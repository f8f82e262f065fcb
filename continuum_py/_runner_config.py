"""What every run driver of one engine shares (its journal client, registry, clock, hooks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from continuum_py._client import JournalClient
from continuum_py._clock import Clock, SystemClock
from continuum_py.interceptors import Interceptor
from continuum_py.journal import Lease
from continuum_py.workflow import Registry

__all__ = ["RunnerConfig"]


@dataclass(frozen=True)
class RunnerConfig:
    """What every driver of one engine shares."""

    client: JournalClient
    registry: Registry
    worker_id: str
    snapshot_every: int
    clock: Clock = field(default_factory=SystemClock)
    hold: float = 2.0
    """Wait in process for a timer due within this many seconds; suspend for later ones."""
    on_child: Callable[[Lease | None], None] = lambda lease: None
    """Called after a child run is created (with its lease if it was claimed here)."""
    ttl: float = 30.0
    poll: float = 1.0
    """Seconds between looks at the inbox while a run waits in process for a timer."""
    interceptors: tuple[Interceptor, ...] = ()
    """Wrap every step attempt and see every run start and end (live only)."""
