"""What the Postgres driver's errors become in the journal's terms.

A lost or refused connection is ``JournalUnavailable`` (the engine retries
it); a bad URL, an unknown database or a refused login is
``ConfigurationError``; a duplicate key in the journal's own write is
``JournalCorrupt``; a deadlock or serialization failure is retried by the
caller (:data:`RETRY`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]

from continuum_py.adapters._postgres_connect import OWN_PARAMS
from continuum_py.adapters._rules import duplicate_row
from continuum_py.errors import ConfigurationError, JournalUnavailable

__all__ = ["RETRY", "UNAVAILABLE", "connect_error", "translate", "translated"]

# Connection trouble: the server is down, restarting, or ended our backend.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # Raised when a pool returns a connection the server has just ended.
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    OSError,
    TimeoutError,
)
RETRY = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
"""Errors that rolled a write back whole: running it again is safe."""


def connect_error(
    exc: BaseException, where: str, database: str
) -> ConfigurationError | JournalUnavailable:
    """The error a failed connection attempt becomes."""
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return ConfigurationError(
            f"Postgres at {where} has no database {database!r}; create it or fix the URL"
        )
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return ConfigurationError(f"Postgres at {where} refused the login: {exc}")
    if isinstance(exc, asyncpg.UndefinedObjectError):
        # asyncpg sends URL options it does not know to the server as settings.
        return ConfigurationError(
            f"Postgres at {where} refused a URL option: {exc}. The journal's own options "
            f"are {', '.join(sorted(OWN_PARAMS))}; any other must be a libpq connection "
            "parameter or a Postgres setting"
        )
    if isinstance(exc, (asyncpg.ClientConfigurationError, ValueError)):
        return ConfigurationError(f"bad Postgres URL for {where}: {exc}")
    if isinstance(exc, UNAVAILABLE):
        detail = str(exc) or type(exc).__name__
        return JournalUnavailable(f"cannot reach Postgres at {where}: {detail}")
    return ConfigurationError(f"cannot connect to Postgres at {where}: {exc}")


def translate(exc: BaseException, where: str, what: str) -> BaseException | None:
    """What a driver error becomes (raise it ``from exc``), or ``None``: raise it as it is."""
    if isinstance(exc, asyncpg.exceptions.DataError):
        return None  # our bug (a badly typed argument), not the network
    if isinstance(exc, asyncpg.UniqueViolationError):
        return duplicate_row(exc)
    if isinstance(exc, UNAVAILABLE):
        detail = str(exc) or type(exc).__name__
        return JournalUnavailable(f"Postgres journal at {where}: {what} failed: {detail}")
    return None


@contextlib.contextmanager
def translated(where: str, what: str) -> Iterator[None]:
    """Translate driver errors (:func:`translate`): a lost connection is ``JournalUnavailable``."""
    try:
        yield
    except Exception as exc:
        new = translate(exc, where, what)
        if new is None:
            raise
        raise new from exc
