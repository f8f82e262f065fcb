"""``continuum queues`` (how each queue stands) and ``continuum worker --queue`` (which ones to serve)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from continuum_py import _cli_inspect
from continuum_py import _cli_render as out
from continuum_py.errors import ConfigurationError
from continuum_py.queues import Queue, QueueState

__all__ = ["add_parser", "queue_json", "served"]


def add_parser(sub: Any, add_url: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``continuum queues``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "queues", help="each queue: runs holding a slot, waiting, its limit and rate window"
    )
    add_url(p)
    p.add_argument("--json", action="store_true", help='print {"queues": [...]} as JSON')
    p.set_defaults(command_fn=_queues)


def _limit(q: Queue) -> str:
    parts = [f"{q.concurrency}" if q.concurrency is not None else "-"]
    if q.per_worker is not None:
        parts.append(f"{q.per_worker}/worker")
    return " ".join(parts)


def _rate(s: QueueState) -> str:
    rate = s.queue.rate
    return "-" if rate is None else f"{s.started_in_window}/{rate[0]} per {rate[1]:g}s"


def queue_json(s: QueueState) -> dict[str, Any]:
    """One queue's state as JSON."""
    q = s.queue
    return {
        "name": q.name,
        "running": s.running,
        "waiting": s.waiting,
        "concurrency": q.concurrency,
        "per_worker": q.per_worker,
        "rate": None if q.rate is None else {"n": q.rate[0], "seconds": q.rate[1]},
        "started_in_window": s.started_in_window,
    }


async def _queues(args: argparse.Namespace) -> int:
    async with _cli_inspect.reader(args.url) as engine:
        states = await engine.queues()
    if args.json:
        out.write_json({"queues": [queue_json(s) for s in states]})
        return 0
    if not states:
        sys.stdout.write("no queues\n")  # as `continuum schedules` says it
        return 0
    out.table(
        ["queue", "running", "waiting", "limit", "rate window"],
        [[s.queue.name, str(s.running), str(s.waiting), _limit(s.queue), _rate(s)] for s in states],
    )
    return 0


async def served(url: str, names: Sequence[str]) -> list[Queue] | None:
    """The stored queues ``continuum worker --queue NAME ...`` serves (``None``: every queue).

    Raises:
        ConfigurationError: a name no stored queue has (a queue is stored when a
            run is first started in it, or an Engine declares it).
    """
    if not names:
        return None
    async with _cli_inspect.reader(url) as engine:
        stored = {s.queue.name: s.queue for s in await engine.queues()}
    unknown = [n for n in names if n not in stored]
    if unknown:
        known = ", ".join(sorted(stored)) or "none"
        raise ConfigurationError(
            f"unknown queue {unknown[0]!r} for --queue (queues in the journal: {known})"
        )
    return [stored[n] for n in dict.fromkeys(names)]
