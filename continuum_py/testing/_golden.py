"""Golden histories: a folder of recorded runs that the current code must still replay.

Run it in the test suite before deploying a workflow change: a history the new
code no longer replays is a run in production that the change would park.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from continuum_py.errors import ContinuumError, NonDeterminismError
from continuum_py.events import AnyEvent

if TYPE_CHECKING:
    from continuum_py.testing._replayer import Divergence, Replayer

_history_decoder = msgspec.json.Decoder(list[AnyEvent])


def read_history_file(data: bytes) -> list[AnyEvent]:
    """The events of a history file, as ``continuum history --json`` (``dump_history``) writes it."""
    events: list[AnyEvent] = _history_decoder.decode(data)
    return events


@dataclass
class HistoryCheck:
    """One golden history and whether the current code replays it.

    Attributes:
        path: the file.
        ok: the code replays it to its end.
        run_id: the run it records ("" when the file could not be read).
        workflow: its workflow name ("" when the file could not be read).
        problem: why it does not replay, in one line ("" when ``ok``).
        divergence: where code and history part, for a non-determinism.
    """

    path: Path
    ok: bool
    run_id: str = ""
    workflow: str = ""
    problem: str = ""
    divergence: Divergence | None = None

    def __str__(self) -> str:
        what = f" (run {self.run_id}, {self.workflow})" if self.run_id else ""
        return f"{self.path}{what}: {'ok' if self.ok else self.problem}"


@dataclass
class HistoriesReport:
    """What :meth:`Replayer.check_histories` found, one :class:`HistoryCheck` per file.

    Attributes:
        checks: every file checked, in path order.
    """

    checks: list[HistoryCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every history replays (and there was at least one)."""
        return bool(self.checks) and not self.failures

    @property
    def failures(self) -> list[HistoryCheck]:
        """The histories the current code no longer replays."""
        return [c for c in self.checks if not c.ok]

    def __str__(self) -> str:
        n = len(self.checks)
        head = (
            f"{n} histor{'y' if n == 1 else 'ies'} checked: {n - len(self.failures)} replay, "
            f"{len(self.failures)} no longer replay"
        )
        return "\n".join([head, *(f"  {c}" for c in self.failures)])


def check_histories(
    replayer: Replayer,
    folder: str | Path,
    pattern: str,
    load: Callable[[bytes], list[AnyEvent]],
) -> HistoriesReport:
    root = Path(folder)
    if not root.is_dir():
        raise ContinuumError(f"no folder of histories at {str(root)!r}")
    report = HistoriesReport()
    for path in sorted(p for p in root.glob(pattern) if p.is_file()):
        report.checks.append(_check(replayer, path, load))
    return report


def _check(replayer: Replayer, path: Path, load: Callable[[bytes], list[AnyEvent]]) -> HistoryCheck:
    try:
        events = load(path.read_bytes())
    except OSError as exc:
        return HistoryCheck(path, False, problem=f"cannot read it: {exc.strerror}")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return HistoryCheck(
            path, False, problem=f"not a history written by `continuum history`: {exc}"
        )
    first = events[0] if events else None
    run_id = getattr(first, "run_id", "")
    workflow = getattr(first, "workflow", "")
    try:
        result = replayer.replay(events, raise_on_divergence=False)
    except (ContinuumError, ValueError) as exc:
        return HistoryCheck(path, False, run_id, workflow, f"{type(exc).__name__}: {exc}")
    div = result.divergence
    if div is not None:
        problem = f"{NonDeterminismError.__name__} at {div}"
        return HistoryCheck(path, False, run_id, workflow, problem, div)
    return HistoryCheck(path, True, run_id, workflow)
