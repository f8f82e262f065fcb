"""Checks of user-given options: each failure is a ConfigurationError naming the option.

``bool`` is refused wherever a number is expected: ``True`` is an ``int`` to
Python, but ``timeout=True`` is a mistake, not one second.
"""

from __future__ import annotations

import math
from typing import Any

from continuum_py.errors import ConfigurationError


def _bad(option: str, value: Any, want: str) -> ConfigurationError:
    return ConfigurationError(f"{option} must be {want}, got {value!r}")


def number(
    option: str,
    value: Any,
    *,
    minimum: float = 0.0,
    inclusive: bool = True,
    maximum: float | None = None,
    unit: str = "",
) -> float:
    """A finite int or float within ``minimum``..``maximum``; returned as given."""
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
    if maximum is not None:
        bound = f"within {minimum:g}..{maximum:g}"
    want = f"a finite number {bound}{unit}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(option, value, want)
    if not math.isfinite(value):
        raise _bad(option, value, want)
    if value < minimum or (not inclusive and value == minimum):
        raise _bad(option, value, want)
    if maximum is not None and value > maximum:
        raise _bad(option, value, want)
    return value


def integer(option: str, value: Any, *, minimum: int) -> int:
    """An int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(option, value, f"an int >= {minimum}")
    return value


def flag(option: str, value: Any) -> bool:
    """``True`` or ``False``: a truthy string such as ``"no"`` is refused, not guessed at."""
    if not isinstance(value, bool):
        raise _bad(option, value, "True or False")
    return value


def name(option: str, value: Any) -> str | None:
    """``None`` (the default) or a string that is not empty or only whitespace."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _bad(option, value, "a non-empty string (or None for the default)")
    return value
