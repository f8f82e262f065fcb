"""Tools for tests and debugging: replay a recorded history against workflow code.

Typical use: save a run's history where it went wrong, then on your laptop::

    events = await engine.history("order-o-1")
    Path("order-o-1.json").write_bytes(dump_history(events))
    ...
    result = Replayer(log=True).replay(load_history(Path("order-o-1.json").read_bytes()))

A replay runs the workflow code with every step's recorded outcome, runs no
step body, and raises :class:`~continuum_py.errors.NonDeterminismError` where
code and history part. Golden histories checked into a test suite catch code
changes that would strand in-flight runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from continuum_py._client import decode_all
from continuum_py._replay import ReplayCore
from continuum_py.errors import ContinuumError
from continuum_py.events import AnyEvent, Event, RunStarted
from continuum_py.journal import StoredEvent
from continuum_py.workflow import Registry, default_registry

__all__ = ["ReplayResult", "Replayer", "dump_history", "load_history"]

_history_decoder = msgspec.json.Decoder(list[AnyEvent])


def dump_history(events: Sequence[Event]) -> bytes:
    """Encode events (from ``engine.history``) as a JSON array, for files and golden tests."""
    return msgspec.json.format(msgspec.json.encode(list(events)), indent=1)


def load_history(data: bytes | str) -> list[AnyEvent]:
    """Decode what :func:`dump_history` wrote."""
    events: list[AnyEvent] = _history_decoder.decode(data)
    return events


@dataclass
class ReplayResult:
    """What a replay found.

    Attributes:
        run_id: the run replayed.
        workflow: its workflow name.
        events: how many events were replayed.
        finished: whether the workflow code returned or raised within the history.
        result: the value it returned (when finished without error).
        error: the exception it raised (when finished with one).
        waiting_on: names of steps the code was still waiting on when history ended.
    """

    run_id: str
    workflow: str
    events: int
    finished: bool
    result: Any = None
    error: BaseException | None = None
    waiting_on: list[str] = field(default_factory=list)


class Replayer:
    """Replays histories against the workflow code registered in ``registry``.

    Args:
        registry: where workflows are looked up (default: the ``@workflow`` registry).
        log: let ``ctx.logger`` lines through during the replay, to watch what
            the run did (a live worker keeps them quiet).
    """

    def __init__(self, registry: Registry | None = None, *, log: bool = False) -> None:
        self.registry = registry or default_registry
        self.log = log

    def replay(self, history: Sequence[AnyEvent] | Sequence[StoredEvent]) -> ReplayResult:
        """Replay one run's history.

        Raises:
            NonDeterminismError: the code asks for something the history does not hold.
            WorkflowNotRegistered: the history's workflow is not in the registry.
        """
        events: list[AnyEvent] = (
            decode_all(history)  # type: ignore[arg-type]
            if history and isinstance(history[0], StoredEvent)
            else list(history)  # type: ignore[arg-type]
        )
        if not events or not isinstance(events[0], RunStarted):
            raise ContinuumError("a history must start with a RunStarted event")
        run_id = events[0].run_id
        core = ReplayCore(run_id, self.registry)
        core.log_during_replay = self.log
        try:
            for ev in events:
                core.apply(ev)
            out = ReplayResult(
                run_id=run_id,
                workflow=events[0].workflow,
                events=len(events),
                finished=core.finished,
                waiting_on=[]
                if core.finished
                else [c.step.name for c in core.calls.values() if not c.done],
            )
            if core.finished:
                ok, value = core.outcome()
                if ok:
                    out.result = value
                else:
                    out.error = value
            return out
        finally:
            core.close()
