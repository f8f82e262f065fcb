"""structlog loggers of the engine; every line is bound to run_id (and seq where known)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog


def get_logger(**bound: Any) -> Any:
    # A lazy proxy: structlog's configuration is read when a line is logged, so
    # configuring structlog after an Engine was created still takes effect.
    return structlog.get_logger("continuum_py", **bound)


class WorkflowLogger:
    """A logger for workflow code that stays quiet while the run replays.

    Without this, every line a workflow logs would appear again on each replay.
    """

    def __init__(self, is_replaying: Callable[[], bool], **bound: Any) -> None:
        self._is_replaying = is_replaying
        self._log = get_logger(**bound)

    def bind(self, **kw: Any) -> WorkflowLogger:
        """A copy with more context bound."""
        new = WorkflowLogger(self._is_replaying)
        new._log = self._log.bind(**kw)
        return new

    def _emit(self, level: str, event: str, kw: dict[str, Any]) -> None:
        if not self._is_replaying():
            getattr(self._log, level)(event, **kw)

    def debug(self, event: str, **kw: Any) -> None:
        """Log at debug level (not during replay)."""
        self._emit("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        """Log at info level (not during replay)."""
        self._emit("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        """Log at warning level (not during replay)."""
        self._emit("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        """Log at error level (not during replay)."""
        self._emit("error", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        """Log an error with the current exception (not during replay)."""
        self._emit("exception", event, kw)
