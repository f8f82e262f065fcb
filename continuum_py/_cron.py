"""Cron expressions and time zones: checking them, and the fire times they give.

Parsing and matching is cronsim's (zero dependencies; the Debian cron rules,
DST included, with a large test suite); this module adds the ``@hourly``-style
names, refuses what is not a 5-field expression, and works in seconds since
the epoch.

Daylight saving time, as Debian cron does it (and cronsim follows):

* An expression with a fixed minute and hour (``30 2 * * *``) names a wall
  clock time. On a spring-forward day when 02:30 does not exist, it fires at
  the first minute that exists after it (03:00 local time), once. On a
  fall-back day when 01:30 happens twice, it fires once, at the first 01:30
  (the one before the clocks go back).
* An expression whose minute or hour is a wildcard or a step (``*/15 * * * *``,
  ``0 * * * *``) counts elapsed time: it fires in both copies of a repeated
  hour and not in a skipped one.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import zoneinfo
from collections.abc import Iterator

from cronsim import CronSim, CronSimError

from continuum_py.errors import ConfigurationError

__all__ = ["NAMED", "check_cron", "check_tz", "fire_time", "fires_after"]

NAMED: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The named expressions and the 5 fields each stands for."""


def check_tz(tz: object) -> zoneinfo.ZoneInfo:
    """The zone of the IANA name ``tz``.

    Raises:
        ConfigurationError: ``tz`` is not a known IANA time zone name.
    """
    if not isinstance(tz, str) or not tz:
        raise ConfigurationError(f"schedule tz must be an IANA time zone name, got {tz!r}")
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(
            f"schedule tz {tz!r} is not a known IANA time zone (e.g. 'UTC', 'Europe/Paris')"
        ) from exc


def check_cron(cron: object) -> str:
    """The 5-field form of ``cron`` (a named one expanded).

    Raises:
        ConfigurationError: not a 5-field cron expression or a known ``@name``,
            or one that never fires; the message names the problem.
    """
    if not isinstance(cron, str):
        raise ConfigurationError(f"schedule cron must be a string, got {cron!r}")
    expr = " ".join(cron.split())
    if expr.startswith("@"):
        named = NAMED.get(expr.lower())
        if named is None:
            raise ConfigurationError(
                f"cron expression {cron!r}: unknown name; use one of {', '.join(NAMED)}"
            )
        return named
    if len(expr.split()) != 5:
        raise ConfigurationError(
            f"cron expression {cron!r} has {len(expr.split())} fields; expected 5 "
            "(minute hour day-of-month month day-of-week) or a name such as @hourly"
        )
    start = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    try:
        next(CronSim(expr, start))
    except CronSimError as exc:
        raise ConfigurationError(f"cron expression {cron!r}: {exc}") from exc
    except StopIteration:
        raise ConfigurationError(f"cron expression {cron!r} never fires") from None
    return expr


def fires_after(cron: str, zone: dt.tzinfo, after: float) -> Iterator[float]:
    """The fire times of ``cron`` read in ``zone``, strictly after ``after``, in order.

    Seconds since the epoch; ``cron`` is a checked 5-field expression.
    """
    # Start from the whole second at or after ``after``: a fire exactly there is not "after".
    start = dt.datetime.fromtimestamp(math.floor(after), tz=zone)
    for fire in CronSim(cron, start):
        t = fire.timestamp()
        if t > after:
            yield t


def next_fires(cron: str, zone: dt.tzinfo, after: float, n: int) -> list[float]:
    """The first ``n`` fire times after ``after``."""
    return list(itertools.islice(fires_after(cron, zone, after), n))


def fire_time(t: float, zone: dt.tzinfo) -> dt.datetime:
    """The fire time ``t`` as an aware datetime in ``zone``."""
    return dt.datetime.fromtimestamp(t, tz=zone)
