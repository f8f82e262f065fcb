"""``_log.level_check``: the runner asks it before building a per-step debug line.

It is asked per line, so a level changed while a run goes on takes effect at
once; a structlog logger that filters says what it drops.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import structlog

from continuum_py._log import get_logger, level_check


def test_stdlib_check_follows_the_level_as_it_changes(caplog: pytest.LogCaptureFixture) -> None:
    structlog.reset_defaults()  # unconfigured: the engine logs through stdlib
    debug = level_check(get_logger(run_id="r").bind(), "debug")
    caplog.set_level(logging.INFO, logger="continuum_py")
    assert not debug()
    caplog.set_level(logging.DEBUG, logger="continuum_py")
    assert debug()


def test_a_filtering_structlog_logger_says_what_it_drops() -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=False,
    )
    try:
        log = get_logger(run_id="r").bind()
        assert not level_check(log, "debug")()
        assert level_check(log, "info")()
    finally:
        structlog.reset_defaults()


def test_a_logger_that_cannot_say_is_asked_to_emit() -> None:
    class Plain:
        def debug(self, event: str, **kw: Any) -> None: ...

    assert level_check(Plain(), "debug")()  # type: ignore[arg-type]
