"""The engine's loggers: quiet unless the application asks for its lines.

A library must not print. Each line goes one of two ways, chosen when a logger
is bound (a run's logger is bound when a worker picks the run up):

* structlog is configured (``structlog.is_configured()``): through the
  application's structlog pipeline, under the logger name ``continuum_py``, as a
  structured event bound to ``run_id`` and ``worker_id``, with ``seq`` where known.
* otherwise: to the standard library logger ``logging.getLogger("continuum_py")``,
  as ``event key=value ...``. With no logging configured, stdlib shows WARNING and
  above on stderr (``logging.lastResort``) and nothing below; a line below the
  logger's effective level costs one ``isEnabledFor`` call and builds nothing.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any, Literal, Protocol

import structlog

LOGGER_NAME = "continuum_py"

Level = Literal["debug", "info", "warning", "error", "exception", "critical"]
"""A logger method name; ``exception`` logs at error level with the current exception."""


class Logger(Protocol):
    """What the engine's loggers offer: a structlog bound logger or the stdlib fallback."""

    def bind(self, **kw: Any) -> Logger:
        """A logger with more context bound."""
        ...

    def debug(self, event: str, **kw: Any) -> Any:
        """Log at debug level."""
        ...

    def info(self, event: str, **kw: Any) -> Any:
        """Log at info level."""
        ...

    def warning(self, event: str, **kw: Any) -> Any:
        """Log at warning level."""
        ...

    def error(self, event: str, **kw: Any) -> Any:
        """Log at error level."""
        ...

    def exception(self, event: str, **kw: Any) -> Any:
        """Log at error level with the current exception."""
        ...

    def critical(self, event: str, **kw: Any) -> Any:
        """Log at critical level."""
        ...


_stdlib = logging.getLogger(LOGGER_NAME)

_PLAIN = re.compile(r"[^\s=\"']+\Z")


def _value(v: Any) -> str:
    return v if isinstance(v, str) and _PLAIN.match(v) else repr(v)


def _emit_stdlib(
    level: int, event: str, bound: dict[str, Any], kw: dict[str, Any], depth: int, exc: bool
) -> None:
    """Hand one line to stdlib logging; the caller has checked ``isEnabledFor``."""
    # As structlog's merge_contextvars does: context variables first, bound and
    # call-site keys win.
    fields = {**structlog.contextvars.get_contextvars(), **bound, **kw}
    exc_info = fields.pop("exc_info", None) or exc
    message = " ".join([event, *(f"{k}={_value(v)}" for k, v in fields.items())])
    _stdlib.log(
        level,
        message,
        exc_info=exc_info,
        # One attribute for handlers that want the fields, not the text (a JSON
        # formatter): named keys could clash with LogRecord's own attributes.
        extra={"continuum": {"event": event, **fields}},
        stacklevel=depth + 1,
    )


class _StdlibLogger:
    """A bound logger over stdlib logging (structlog unconfigured)."""

    __slots__ = ("_bound",)

    def __init__(self, bound: dict[str, Any]) -> None:
        self._bound = bound

    def bind(self, **kw: Any) -> _StdlibLogger:
        return _StdlibLogger({**self._bound, **kw})

    # Each method checks the level first, so a line nobody wants builds nothing.
    def debug(self, event: str, **kw: Any) -> None:
        if _stdlib.isEnabledFor(logging.DEBUG):
            _emit_stdlib(logging.DEBUG, event, self._bound, kw, 2, False)

    def info(self, event: str, **kw: Any) -> None:
        if _stdlib.isEnabledFor(logging.INFO):
            _emit_stdlib(logging.INFO, event, self._bound, kw, 2, False)

    def warning(self, event: str, **kw: Any) -> None:
        if _stdlib.isEnabledFor(logging.WARNING):
            _emit_stdlib(logging.WARNING, event, self._bound, kw, 2, False)

    def error(self, event: str, **kw: Any) -> None:
        if _stdlib.isEnabledFor(logging.ERROR):
            _emit_stdlib(logging.ERROR, event, self._bound, kw, 2, False)

    def exception(self, event: str, **kw: Any) -> None:
        if _stdlib.isEnabledFor(logging.ERROR):
            _emit_stdlib(logging.ERROR, event, self._bound, kw, 2, True)

    def critical(self, event: str, **kw: Any) -> None:
        if _stdlib.isEnabledFor(logging.CRITICAL):
            _emit_stdlib(logging.CRITICAL, event, self._bound, kw, 2, False)


_LEVELS: dict[Level, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _LazyLogger:
    """Chooses structlog or stdlib on every line; ``bind()`` chooses once.

    Module-level and engine-level loggers are made at import or ``Engine()``
    time, often before the application configures anything, so they look again
    each time. A run's logger is bound once when the run is picked up.
    """

    __slots__ = ("_bound",)

    def __init__(self, bound: dict[str, Any]) -> None:
        self._bound = bound

    def bind(self, **kw: Any) -> Logger:
        bound = {**self._bound, **kw}
        if structlog.is_configured():
            log: Logger = structlog.get_logger(LOGGER_NAME).bind(**bound)
            return log
        return _StdlibLogger(bound)

    def _emit(self, method: Level, event: str, kw: dict[str, Any], depth: int) -> None:
        if structlog.is_configured():
            getattr(structlog.get_logger(LOGGER_NAME, **self._bound), method)(event, **kw)
            return
        level = _LEVELS[method]
        if _stdlib.isEnabledFor(level):
            _emit_stdlib(level, event, self._bound, kw, depth + 1, method == "exception")

    def debug(self, event: str, **kw: Any) -> None:
        self._emit("debug", event, kw, 2)

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", event, kw, 2)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", event, kw, 2)

    def error(self, event: str, **kw: Any) -> None:
        self._emit("error", event, kw, 2)

    def exception(self, event: str, **kw: Any) -> None:
        self._emit("exception", event, kw, 2)

    def critical(self, event: str, **kw: Any) -> None:
        self._emit("critical", event, kw, 2)


def level_check(log: Logger, method: Level) -> Callable[[], bool]:
    """Whether ``log`` emits at level ``method`` now, as one cheap call, for a hot path's line.

    Asked before the line's fields are built, a line filtered out costs this call
    only; a logger that cannot say is asked to emit, and filters the line itself.
    """
    level = _LEVELS[method]
    if isinstance(log, _StdlibLogger):
        return functools.partial(_stdlib.isEnabledFor, level)
    for name in ("is_enabled_for", "isEnabledFor"):  # structlog's filtering and stdlib loggers
        check = getattr(log, name, None)
        if callable(check):
            return functools.partial(check, level)
    return functools.partial(bool, True)


def get_logger(**bound: Any) -> Logger:
    """The engine's logger with ``bound`` context (see the module docstring)."""
    return _LazyLogger(bound)


class WorkflowLogger:
    """A logger for workflow code that stays quiet while the run replays.

    Without this, every line a workflow logs would appear again on each replay.
    It goes where the engine's own lines go: the application's structlog
    configuration if there is one, else the stdlib ``continuum_py`` logger.
    """

    def __init__(self, is_replaying: Callable[[], bool], **bound: Any) -> None:
        self._is_replaying = is_replaying
        self._log: Logger = get_logger(**bound)

    def bind(self, **kw: Any) -> WorkflowLogger:
        """A copy with more context bound."""
        new = WorkflowLogger(self._is_replaying)
        new._log = self._log.bind(**kw)
        return new

    def _emit(self, level: Level, event: str, kw: dict[str, Any]) -> None:
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
