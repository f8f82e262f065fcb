"""How the Postgres journal reaches its database: the URL, its options, the pool's connections.

A ``postgresql://`` URL carries the journal's own options (``schema``,
``pool_size``, ``application_name``, ``statement_cache_size``,
``connect_timeout``) beside asyncpg's; they are taken out here and checked,
and the rest is the DSN asyncpg gets.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from continuum_py.errors import ConfigurationError

__all__ = ["OWN_PARAMS", "Settings", "close", "connect_kwargs", "no_reset", "settings"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
OWN_PARAMS = frozenset(
    {"schema", "pool_size", "application_name", "statement_cache_size", "connect_timeout"}
)
"""The URL's query parameters the journal reads itself; asyncpg never sees them."""


class _Url(NamedTuple):
    dsn: str  # what asyncpg gets: our own query parameters removed
    where: str  # host:port, for messages (never the password)
    database: str
    params: dict[str, str]


class Settings(NamedTuple):
    """A journal's connection settings, from its URL and keyword arguments (these win)."""

    dsn: str
    where: str
    database: str
    schema: str
    pool_size: int
    application_name: str
    statement_cache_size: int
    connect_timeout: float
    channel: str
    wake_channel: str  # queued starts name one worker on it (_postgres_wake)


def _parse_url(url: str) -> _Url:
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise ConfigurationError(f"cannot parse the Postgres URL: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"not a Postgres URL (scheme {parts.scheme!r}); expected postgresql://..."
        )
    params = {k: v for k, v in query if k in OWN_PARAMS}
    rest = [(k, v) for k, v in query if k not in OWN_PARAMS]
    hosts = parts.netloc.rpartition("@")[2]
    extra = dict(rest)
    if not hosts:
        hosts = extra.get("host", "localhost")
    if ":" not in hosts.rpartition("]")[2]:
        hosts = f"{hosts}:{extra.get('port', '5432')}"
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    database = parts.path.lstrip("/") or extra.get("dbname", extra.get("database", user))
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    return _Url(dsn=dsn, where=hosts, database=database, params=params)


def _int_param(name: str, value: str | int, minimum: int) -> int:
    try:
        n = int(value)
    except ValueError:
        n = minimum - 1
    if n < minimum:
        raise ConfigurationError(f"Postgres journal {name} must be an integer >= {minimum}")
    return n


def _channel(schema: str, prefix: str = "continuum_") -> str:
    # A schema is a plain identifier: the wake channel's "-" keeps its name
    # apart from any schema's main channel.
    name = f"{prefix}{schema}"
    if len(name) <= 63:
        return name
    return prefix + hashlib.sha1(schema.encode()).hexdigest()[:20]


def settings(
    dsn: str,
    *,
    schema: str | None,
    pool_size: int | None,
    application_name: str | None,
    statement_cache_size: int | None,
    connect_timeout: float | None,
) -> Settings:
    """The settings of :class:`~continuum_py.adapters.postgres.PostgresJournal`'s arguments.

    Raises:
        ConfigurationError: a URL that cannot be parsed, a schema name that is
            not a plain identifier, or a bad number.
    """
    url = _parse_url(dsn)
    p = url.params
    schema = schema if schema is not None else p.get("schema", "continuum")
    if not _IDENT.fullmatch(schema):
        raise ConfigurationError(
            f"Postgres schema name {schema!r} is not a plain identifier "
            "(letters, digits and _, not starting with a digit, at most 63 characters)"
        )
    size = _int_param(
        "pool_size", pool_size if pool_size is not None else p.get("pool_size", "10"), 1
    )
    name = application_name or p.get("application_name", "continuum_py")
    cache = _int_param(
        "statement_cache_size",
        statement_cache_size
        if statement_cache_size is not None
        else p.get("statement_cache_size", "100"),
        0,
    )
    try:
        timeout = float(
            connect_timeout if connect_timeout is not None else p.get("connect_timeout", "10")
        )
    except ValueError:
        raise ConfigurationError("Postgres journal connect_timeout must be a number") from None
    return Settings(
        dsn=url.dsn,
        where=url.where,
        database=url.database,
        schema=schema,
        pool_size=size,
        application_name=name,
        statement_cache_size=cache,
        connect_timeout=timeout,
        channel=_channel(schema),
        wake_channel=_channel(schema, "continuum-wake_"),
    )


def connect_kwargs(s: Settings, *, read_only: bool) -> dict[str, Any]:
    """What every connection is opened with, pooled or listening."""
    server = {"application_name": s.application_name}
    if read_only:
        server["default_transaction_read_only"] = "on"
    return {
        "timeout": s.connect_timeout,
        "statement_cache_size": s.statement_cache_size,
        "server_settings": server,
    }


async def no_reset(conn: Any) -> None:
    """The pool's reset on release: nothing to do."""
    # asyncpg's default reset on every release (advisory unlocks, CLOSE ALL,
    # UNLISTEN, RESET ALL) is a round trip per query; the journal's own
    # statements leave no session state (a rollback of any open transaction
    # still happens first, in asyncpg). A connection lent to a transactional
    # step is reset by transaction() itself before it goes back.
    return None


async def close(what: Any, timeout: float) -> None:
    """Close a connection or pool gracefully, or end it at once if that fails or hangs."""
    if what is None:
        return
    try:
        async with asyncio.timeout(timeout):
            await what.close()
    except Exception:
        what.terminate()
