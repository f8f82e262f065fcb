"""``RetryPolicy``: how a failing step is retried (the delays, and which errors are final)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from continuum_py import _validate
from continuum_py.errors import ConfigurationError


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing step is retried.

    The delay before attempt ``n + 1`` is
    ``min(initial_interval * backoff ** (n - 1), max_interval)``, spread by up to
    ``jitter`` (a fraction) either way. Retrying stops at the first success.

    Args:
        max_attempts: attempts in all, the first included; 1 means no retry.
        initial_interval: seconds before the second attempt.
        backoff: factor by which the delay grows after each failure.
        max_interval: upper bound of a delay, in seconds.
        jitter: random spread of each delay, as a fraction (0.1 = ±10%).
        non_retryable: exception types (or qualified type names) that fail the
            step at once, whatever attempts are left.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.1
    non_retryable: tuple[type[BaseException] | str, ...] = ()

    def __post_init__(self) -> None:
        _validate.integer("RetryPolicy.max_attempts", self.max_attempts, minimum=1)
        _validate.number("RetryPolicy.initial_interval", self.initial_interval, unit=" (seconds)")
        _validate.number("RetryPolicy.backoff", self.backoff, minimum=1)
        _validate.number("RetryPolicy.max_interval", self.max_interval, unit=" (seconds)")
        _validate.number("RetryPolicy.jitter", self.jitter, maximum=1)
        nr = self.non_retryable
        if isinstance(nr, list):
            # A list reads naturally here; keep the frozen policy hashable all the same.
            nr = tuple(nr)
            object.__setattr__(self, "non_retryable", nr)
        if not isinstance(nr, tuple):
            raise ConfigurationError(
                "RetryPolicy.non_retryable must be a tuple of exception types or qualified "
                f"type names, got {nr!r}" + (" (wrap it: (X,))" if _error_like(nr) else "")
            )
        for item in nr:
            if not _error_like(item):
                raise ConfigurationError(
                    "RetryPolicy.non_retryable must hold exception types (subclasses of "
                    "BaseException) or non-empty qualified type names such as "
                    f"'httpx.ConnectError', got {item!r} in {nr!r}"
                )

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt."""
        base = min(self.initial_interval * self.backoff ** max(failures - 1, 0), self.max_interval)
        if self.jitter and base:
            base *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return max(base, 0.0)

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` may be retried under this policy (attempts aside)."""
        for t in self.non_retryable:
            if isinstance(t, str):
                for klass in type(exc).__mro__:
                    if t in (klass.__qualname__, f"{klass.__module__}.{klass.__qualname__}"):
                        return False
            elif isinstance(exc, t):
                return False
        return True


def _error_like(item: object) -> bool:
    if isinstance(item, str):
        return bool(item.strip())
    return isinstance(item, type) and issubclass(item, BaseException)
