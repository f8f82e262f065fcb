"""The offline replay: a recorded history against the current workflow code, nothing live.

It runs the workflow code on the replay core with every step's recorded outcome
(no step body, timer or signal touches the outside world), and can stop at a
``seq``, call a hook after each event, change one recorded result (what if?),
and say where code and history part, down to the source line that asked.
"""

from __future__ import annotations

import bdb
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import Any

import msgspec

from continuum_py import _codec
from continuum_py._calls import Call, ChildCall, StepCall, describe
from continuum_py._client import decode_all
from continuum_py._replay import ReplayCore
from continuum_py.errors import ContinuumError, NonDeterminismError
from continuum_py.events import (
    AnyEvent,
    ChildCompleted,
    RunStarted,
    SideEffectRecorded,
    StepCompleted,
    StepFailed,
)
from continuum_py.journal import StoredEvent
from continuum_py.testing import _frames, _golden
from continuum_py.testing._frames import SourceLine
from continuum_py.testing._golden import HistoriesReport, read_history_file
from continuum_py.workflow import Registry, default_registry


@dataclass(frozen=True)
class Divergence:
    """Where workflow code and its history part.

    Attributes:
        run_id: the run.
        position: the call-order position where they part.
        seq: the history event being replayed when it was found.
        recorded: what history holds at ``position`` (``StepScheduled(charge)``).
        requested: what the code asked for there (``nothing at this point`` if nothing).
        event: the recorded event at ``position`` (or the one being replayed).
        source: the workflow line that asked; when the code asked for nothing
            there, the line it waits at (``None`` once it has returned).
    """

    run_id: str
    position: int
    seq: int
    recorded: str
    requested: str
    event: AnyEvent | None = None
    source: SourceLine | None = None

    def __str__(self) -> str:
        at = f" at {self.source}" if self.source is not None else ""
        return (
            f"position {self.position} (seq {self.seq}): history has {self.recorded}, "
            f"code asked for {self.requested}{at}"
        )


@dataclass(frozen=True)
class Ask:
    """A call the code made that history (as far as it was replayed) does not hold.

    Attributes:
        position: its call-order position.
        what: the event it calls for (``StepScheduled(ship)``, ``TimerStarted``, ...).
        args: a step's or child run's arguments, shortened ``repr`` ("" for other calls).
        source: the workflow line that asked.
    """

    position: int
    what: str
    args: str = ""
    source: SourceLine | None = None

    def __str__(self) -> str:
        args = f" with {self.args}" if self.args else ""
        at = f" at {self.source}" if self.source is not None else ""
        return f"{self.what}{args} (position {self.position}){at}"


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
        waiting_on: what the code was still waiting on when history ended: step
            names, and for other waits the event that records them
            (``TimerStarted``, ``SignalWaitStarted(name)``, ``ChildStarted(workflow)``).
        stopped_at: the ``seq`` the replay stopped after (``until=``, or a hook
            returning ``False``); ``None`` when it replayed the whole history.
        locals: the workflow function's local variables where the code waits
            (empty once it has returned or raised).
        where: the workflow lines the code waits at, outermost first.
        asks: calls the code made that the replayed history does not hold: the
            work a live run would do next.
        divergence: where code and history part, when the replay was told not
            to raise (``raise_on_divergence=False``) or a ``what_if`` change led
            the code elsewhere.
    """

    run_id: str
    workflow: str
    events: int
    finished: bool
    result: Any = None
    error: BaseException | None = None
    waiting_on: list[str] = field(default_factory=list)
    stopped_at: int | None = None
    locals: dict[str, Any] = field(default_factory=dict)
    where: list[SourceLine] = field(default_factory=list)
    asks: list[Ask] = field(default_factory=list)
    divergence: Divergence | None = None


class ReplayView:
    """The replay as it stands after one event: what the ``on_event`` hook is given.

    Read it during the hook; the replay moves on when the hook returns.

    Attributes:
        event: the event just replayed.
        index: its index in the history (0 for ``RunStarted``).
    """

    def __init__(self, replay: _Replay, event: AnyEvent, index: int) -> None:
        self._replay = replay
        self.event = event
        self.index = index

    @property
    def finished(self) -> bool:
        """Whether the workflow code has returned or raised."""
        return self._replay.core.finished

    @property
    def locals(self) -> dict[str, Any]:
        """The workflow function's local variables now (empty once it has finished)."""
        return self._replay.locals()

    @property
    def where(self) -> list[SourceLine]:
        """The workflow lines the code waits at now, outermost first."""
        return _frames.where(self._replay.frames())

    @property
    def waiting_on(self) -> list[str]:
        """The recorded calls the code waits on now (as :attr:`ReplayResult.waiting_on`)."""
        return self._replay.waiting_on()

    @property
    def asks(self) -> list[Ask]:
        """Calls the code made that history, replayed this far, does not hold yet."""
        return self._replay.asks()


OnEvent = Callable[[ReplayView], "bool | None"]
"""A hook called after each replayed event; returning ``False`` stops the replay there."""


class Replayer:
    """Replays histories against the workflow code registered in ``registry``.

    A replay runs no step body and touches nothing outside: every step, timer,
    signal and child run gets its recorded outcome, and ``ctx.now()`` its
    recorded time. It runs synchronously in the calling thread, so a
    ``breakpoint()`` in workflow code stops it for as long as you like.

    Args:
        registry: where workflows are looked up (default: the ``@workflow`` registry).
        log: let ``ctx.logger`` lines through during the replay, to watch what
            the run did (a live worker keeps them quiet).
    """

    def __init__(self, registry: Registry | None = None, *, log: bool = False) -> None:
        self.registry = registry or default_registry
        self.log = log

    def replay(
        self,
        history: Sequence[AnyEvent] | Sequence[StoredEvent],
        *,
        until: int | None = None,
        on_event: OnEvent | None = None,
        what_if: Mapping[int, Any] | None = None,
        raise_on_divergence: bool = True,
    ) -> ReplayResult:
        """Replay one run's history.

        Args:
            history: the run's events (``engine.history``, :func:`load_history`)
                or stored events (``journal.load``).
            until: stop after the event with this ``seq``; the result's
                ``locals`` and ``where`` show the code there.
            on_event: called after each event is replayed (the code has run to
                its next wait) with a :class:`ReplayView`; return ``False`` to stop.
            what_if: ``{position: value}``: replay as if the step (or child run,
                or ``ctx.now``/``random``/``uuid4``) at that position had given
                ``value``. Where the code then leaves the recorded path is the
                result's ``divergence`` (not raised), and ``asks`` says what it
                asks for instead.
            raise_on_divergence: raise ``NonDeterminismError`` where code and
                history part; with ``False`` it is the result's ``divergence``.

        Raises:
            NonDeterminismError: the code asks for something the history does not
                hold (with ``offline=True``: a replay parks no run); its
                ``where`` names the workflow line that asked.
            WorkflowNotRegistered: the history's workflow is not in the registry.
            ValueError: ``until`` outside the history, or a ``what_if`` position
                that holds no result, or a value that does not fit it.
        """
        events = _events(history)
        started = events[0] if events else None
        if not isinstance(started, RunStarted):
            raise ContinuumError("a history must start with a RunStarted event")
        if until is not None and not 1 <= until <= events[-1].seq:
            raise ValueError(
                f"until={until} is outside the history of run {started.run_id}, "
                f"which holds seq 1 to {events[-1].seq}"
            )
        changed: dict[int, int] = {}
        if what_if:
            events, changed = _changed(events, what_if)
        # Noting the source line of every call costs a stack walk per call, so
        # a plain replay (a deploy check over many runs) goes without, and
        # replays again to name the line only when it has something to show.
        track = until is not None or on_event is not None or bool(what_if)
        run_id = started.run_id
        out = self._once(run_id, events, until, on_event, track=track, log=self.log)
        if not track and (out.divergence is not None or out.asks):
            out = self._once(run_id, events, None, None, track=True, log=False)
        div = out.divergence
        if div is not None and changed.get(div.seq) == div.position:
            raise ValueError(
                f"the value given for position {div.position} does not fit: {div.requested}"
            )
        first_change = min(changed, default=math.inf)
        if div is not None and div.seq < first_change and raise_on_divergence:
            # The replay core words it for a worker, which parks the run; no run
            # is parked here, so say that instead.
            raise NonDeterminismError(
                div.run_id,
                div.position,
                div.recorded,
                div.requested,
                offline=True,
                where=None if div.source is None else str(div.source),
            ) from None
        if div is not None and div.seq >= first_change:
            return self._branch(events, div)
        return out

    def _branch(self, events: list[AnyEvent], div: Divergence) -> ReplayResult:
        """Where a ``what_if`` change led: the code run on from the history before it parted.

        The history is cut where code and history part, so the code runs on as a
        live run would: its new calls (and ``ctx.now``/``random``/``uuid4``) are
        answered by nothing recorded, and ``asks`` lists them.
        """
        cut = [
            ev
            for ev in events
            if ev.seq < div.seq
            # The outcome that set the code on its new path is fed; the
            # mismatching command it then met is not.
            or (ev.seq == div.seq and getattr(ev, "position", None) not in (None, div.position))
        ]
        out = self._once(div.run_id, cut, None, None, track=True, log=self.log)
        out.divergence = div
        return out

    def _once(
        self,
        run_id: str,
        events: list[AnyEvent],
        until: int | None,
        on_event: OnEvent | None,
        *,
        track: bool,
        log: bool,
    ) -> ReplayResult:
        replay = _Replay(run_id, self.registry, log=log, track=track)
        try:
            return replay.run(events, until, on_event)
        finally:
            replay.core.close()

    def check_histories(
        self,
        folder: str | Path,
        pattern: str = "**/*.json",
        *,
        load: Callable[[bytes], list[AnyEvent]] = read_history_file,
    ) -> HistoriesReport:
        """Replay every history file in ``folder``; report each one the code no longer replays.

        Golden histories, saved with ``continuum history RUN > file.json`` (or
        :func:`dump_history`), are runs the current code must still replay: a
        file that diverges is a run in flight that deploying this code would park.

        Args:
            folder: the folder holding the files.
            pattern: which files, as a ``Path.glob`` pattern (default: every
                ``.json`` file, in subfolders too).
            load: how a file's bytes become events (default: the format
                ``continuum history --json`` writes).

        Returns:
            One :class:`HistoryCheck` per file: ``ok``, or the ``problem`` (a
            divergence with its position and source line, an unregistered
            workflow, an unreadable file).

        Raises:
            ContinuumError: ``folder`` is not a folder.
        """
        return _golden.check_histories(self, folder, pattern, load)

    def assert_histories_replay(
        self,
        folder: str | Path,
        pattern: str = "**/*.json",
        *,
        load: Callable[[bytes], list[AnyEvent]] = read_history_file,
    ) -> HistoriesReport:
        """:meth:`check_histories`, for a test: fails unless every history replays.

        Raises:
            AssertionError: a history the code no longer replays (each one is
                listed), or no history found at all.
        """
        report = self.check_histories(folder, pattern, load=load)
        if not report.checks:
            raise AssertionError(f"no history matches {pattern!r} in {str(folder)!r}")
        if report.failures:
            raise AssertionError(str(report))
        return report


class _Replay:
    """One replay: the core, the source line of each call, and what the hook sees."""

    def __init__(self, run_id: str, registry: Registry, *, log: bool, track: bool) -> None:
        self.core = ReplayCore(run_id, registry)
        self.core.log_during_replay = log
        self.asked: dict[int, tuple[CodeType, int]] = {}
        if track:
            self.core.on_ask = self._on_ask
        self.now = 0.0
        # Time stands still at the recorded time: ctx.now() beyond the history
        # (and while a debugger holds the replay) reads the last event's time.
        self.core.clock = lambda: self.now

    def _on_ask(self, position: int) -> None:
        where = _frames.caller()
        if where is not None:
            self.asked[position] = where

    def source(self, position: int) -> SourceLine | None:
        asked = self.asked.get(position)
        return None if asked is None else _frames.source_line(*asked)

    def frames(self) -> list[Any]:
        return _frames.coroutine_frames(self.core.main_task)

    def locals(self) -> dict[str, Any]:
        wf = self.core.workflow
        frames = self.frames()
        if wf is None or not frames:
            return {}
        return _frames.frame_locals(_frames.workflow_frame(frames, wf.fn))

    def waiting_on(self) -> list[str]:
        if self.core.finished:
            return []
        return [c.step.name if isinstance(c, StepCall) else c.describe for c in self.core.waiting()]

    def asks(self) -> list[Ask]:
        return [
            Ask(c.position, describe(c), _args(c), self.source(c.position))
            for c in self.core.new_calls()
        ]

    def debugger_quit(self) -> bool:
        """Whether the workflow code ended because ``q`` was typed at a pdb prompt in it."""
        task = self.core.main_task
        return (
            task is not None
            and task.done()
            and not task.cancelled()
            and isinstance(task.exception(), bdb.BdbQuit)
        )

    def run(
        self,
        events: list[AnyEvent],
        until: int | None,
        on_event: OnEvent | None,
    ) -> ReplayResult:
        core = self.core
        core.index(events)
        started = events[0]
        assert isinstance(started, RunStarted)
        out = ReplayResult(
            run_id=started.run_id, workflow=started.workflow, events=0, finished=False
        )
        for i, ev in enumerate(events):
            self.now = ev.at
            try:
                core.apply(ev)
            except NonDeterminismError as exc:
                if self.debugger_quit():
                    out.stopped_at = events[i - 1].seq if i else None
                else:
                    out.divergence = self._divergence(exc, ev)
                break
            out.events = i + 1
            # `q` at a pdb prompt in workflow code ends the replay there, not in a divergence.
            stop = self.debugger_quit() or (until is not None and ev.seq >= until)
            if on_event is not None and on_event(ReplayView(self, ev, i)) is False:
                stop = True
            if stop:
                out.stopped_at = ev.seq
                break
        out.finished = core.finished
        if core.finished:
            ok, value = core.outcome()
            if ok:
                out.result = value
            else:
                out.error = value
        out.waiting_on = self.waiting_on()
        frames = self.frames()
        out.where = _frames.where(frames)
        out.locals = self.locals()
        out.asks = self.asks()
        return out

    def _divergence(self, exc: NonDeterminismError, applying: AnyEvent) -> Divergence:
        held = self.core.ahead.get(exc.position)
        source = self.source(exc.position) if exc.position in self.core.calls else None
        if source is None:
            here = _frames.where(self.frames())
            source = here[-1] if here else None
        return Divergence(
            run_id=exc.run_id,
            position=exc.position,
            seq=applying.seq,
            recorded=exc.recorded,
            requested=exc.requested,
            event=held if held is not None and held.seq > applying.seq else applying,
            source=source,
        )


def _args(call: Call) -> str:
    if isinstance(call, StepCall):
        shown = [_frames.short_repr(a) for a in call.args]
        shown += [f"{k}={_frames.short_repr(v)}" for k, v in call.kwargs.items()]
        return f"({', '.join(shown)})"
    if isinstance(call, ChildCall):
        return _frames.short_repr(bytes(call.encoded_args).decode(errors="replace"))
    return ""


def _changed(
    events: list[AnyEvent], what_if: Mapping[int, Any]
) -> tuple[list[AnyEvent], dict[int, int]]:
    """``events`` with the result at each ``what_if`` position replaced; ``{seq: position}`` changed."""
    out = list(events)
    changed: dict[int, int] = {}
    for position, value in what_if.items():
        raw = _codec.encode_value(value, what=f"what_if[{position}]", kind="value")
        for i, ev in enumerate(out):
            new: AnyEvent | None = None
            if getattr(ev, "position", None) != position:
                continue
            if isinstance(ev, StepCompleted):
                new = msgspec.structs.replace(ev, result=raw)
            elif isinstance(ev, StepFailed) and ev.final:
                new = StepCompleted(
                    seq=ev.seq,
                    at=ev.at,
                    position=ev.position,
                    step=ev.step,
                    attempt=ev.attempt,
                    result=raw,
                )
            elif isinstance(ev, ChildCompleted):
                new = msgspec.structs.replace(ev, ok=True, result=raw, error=None)
            elif isinstance(ev, SideEffectRecorded):
                new = msgspec.structs.replace(ev, value=raw)
            if new is not None:
                out[i] = new
                changed[ev.seq] = position
                break
        else:
            held = [type(ev).__name__ for ev in out if getattr(ev, "position", None) == position]
            raise ValueError(
                f"what_if position {position} holds no step, child run or ctx.now/random/uuid4 "
                f"result (history has {', '.join(held) or 'nothing'} there)"
            )
    return out, changed


def _events(history: Sequence[AnyEvent] | Sequence[StoredEvent]) -> list[AnyEvent]:
    """The decoded events of a history of either kind."""
    events: list[AnyEvent] = []
    stored: list[StoredEvent] = []
    for item in history:
        if isinstance(item, StoredEvent):
            stored.append(item)
        else:
            events.append(item)
    if stored and events:
        raise ContinuumError("a history holds events or stored events, not both")
    return decode_all(stored) if stored else events
