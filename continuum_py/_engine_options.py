"""The checks of ``Engine(...)``'s options: each bad one refused up front, by name, before any I/O."""

from __future__ import annotations

from typing import Any

from continuum_py import _validate
from continuum_py._clock import Clock
from continuum_py.errors import ConfigurationError
from continuum_py.interceptors import Interceptor
from continuum_py.workflow import Registry


def check_options(
    *,
    url: Any,
    worker_id: Any,
    lease_ttl: Any,
    snapshot_every: Any,
    concurrency: Any,
    registry: Any,
    worker: Any,
    poll_interval: Any,
    clock: Any,
    hold: Any,
    interceptors: Any,
) -> None:
    """Refuse a bad ``Engine(...)`` argument up front, naming it, before any I/O."""
    if url is not None and not isinstance(url, str):
        raise ConfigurationError(f"Engine url must be a journal URL string or None, got {url!r}")
    _validate.name("Engine worker_id", worker_id)
    # NaN passes every `<=` check and an infinite TTL or poll never fires: refuse both.
    _validate.number("Engine lease_ttl", lease_ttl, inclusive=False, unit=" (seconds)")
    _validate.integer("Engine snapshot_every", snapshot_every, minimum=0)
    _validate.integer("Engine concurrency", concurrency, minimum=1)
    if registry is not None and not isinstance(registry, Registry):
        raise ConfigurationError(f"Engine registry must be a Registry or None, got {registry!r}")
    _validate.flag("Engine worker", worker)
    _validate.number("Engine poll_interval", poll_interval, inclusive=False, unit=" (seconds)")
    if clock is not None and not isinstance(clock, Clock):
        raise ConfigurationError(
            f"Engine clock must have now() and sleep_until() (a Clock), got {clock!r}"
        )
    _validate.number("Engine hold", hold, unit=" (seconds)")
    if isinstance(interceptors, str | bytes) or not all(
        isinstance(i, Interceptor) for i in iterable(interceptors, "Engine interceptors")
    ):
        raise ConfigurationError(
            "Engine interceptors must be a list of continuum_py.Interceptor instances, "
            f"got {interceptors!r}"
        )


def iterable(value: Any, what: str) -> list[Any]:
    try:
        return list(value)
    except TypeError:
        raise ConfigurationError(f"{what} must be a list, got {value!r}") from None
