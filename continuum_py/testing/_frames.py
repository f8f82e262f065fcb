"""Where workflow code is: the source line that asked for a call, the frames it waits in.

Read from the live interpreter during an offline replay: the caller's frames when
the code asks for something, and the suspended coroutine's ``cr_frame`` /
``cr_await`` chain when it waits. Frames of continuum_py and asyncio are skipped,
so what is shown is the user's code.
"""

from __future__ import annotations

import asyncio
import inspect
import linecache
import os
import reprlib
import sys
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

import continuum_py

_SKIP = (
    os.path.dirname(os.path.abspath(continuum_py.__file__)) + os.sep,
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
)

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 10
_repr.maxlevel = 3


@dataclass(frozen=True)
class SourceLine:
    """A line of workflow code.

    Attributes:
        file: the file's path.
        line: the line number.
        function: the function the line is in.
        text: the line's source, stripped ("" when the file cannot be read).
    """

    file: str
    line: int
    function: str
    text: str

    def __str__(self) -> str:
        here = f"{_shown(self.file)}:{self.line} in {self.function}"
        return f"{here}: {self.text}" if self.text else here


def _shown(path: str) -> str:
    """``path`` relative to the current folder when it is inside it (as people type it)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def source_line(code: CodeType, lineno: int) -> SourceLine:
    """The :class:`SourceLine` of line ``lineno`` of ``code``."""
    text = linecache.getline(code.co_filename, lineno).strip()
    return SourceLine(file=code.co_filename, line=lineno, function=code.co_name, text=text)


def _line(frame: FrameType) -> SourceLine:
    return source_line(frame.f_code, frame.f_lineno)


def _is_user(frame: FrameType) -> bool:
    return not frame.f_code.co_filename.startswith(_SKIP)


def caller() -> tuple[CodeType, int] | None:
    """The code and line of the innermost user frame on the current stack (what asked).

    Cheap enough to take at every call of a replay: the line is formatted only
    when it is shown (:func:`source_line`).
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and not _is_user(frame):
        frame = frame.f_back
    return None if frame is None else (frame.f_code, frame.f_lineno)


def coroutine_frames(task: asyncio.Task[Any] | None) -> list[FrameType]:
    """The frames of a suspended task's coroutine chain, outermost first (user code only)."""
    frames: list[FrameType] = []
    aw: Any = task.get_coro() if task is not None and not task.done() else None
    while aw is not None:
        frame = getattr(aw, "cr_frame", None) or getattr(aw, "gi_frame", None)
        if frame is None:
            break
        if _is_user(frame):
            frames.append(frame)
        aw = getattr(aw, "cr_await", None) or getattr(aw, "gi_yieldfrom", None)
    return frames


def where(frames: list[FrameType]) -> list[SourceLine]:
    """The lines the frames are suspended at, outermost first."""
    return [_line(f) for f in frames]


def workflow_frame(frames: list[FrameType], fn: Any) -> FrameType | None:
    """The frame running the workflow function ``fn`` (decorators unwrapped), if suspended."""
    code: CodeType | None = getattr(inspect.unwrap(fn), "__code__", None)
    for frame in frames:
        if frame.f_code is code:
            return frame
    return frames[0] if frames else None


def frame_locals(frame: FrameType | None) -> dict[str, Any]:
    """A copy of the frame's local variables (empty when there is no frame)."""
    return {} if frame is None else dict(frame.f_locals)


def short_repr(value: Any) -> str:
    """``repr(value)``, shortened for a terminal (long strings and containers cut)."""
    try:
        return _repr.repr(value)
    except Exception as exc:  # a user __repr__ that raises must not end the replay
        return f"<{type(value).__name__}: repr raised {type(exc).__name__}>"
