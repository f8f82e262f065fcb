"""Journal URL schemes, resolved lazily so a driver is imported only when used."""

from __future__ import annotations

import importlib
import re
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from continuum_py.errors import ConfigurationError
from continuum_py.journal import Journal

SCHEMES: dict[str, tuple[str, str, str | None]] = {
    # scheme: (module, class, pip extra that provides its driver)
    "memory": ("continuum_py.adapters.memory", "MemoryJournal", None),
    "sqlite": ("continuum_py.adapters.sqlite", "SQLiteJournal", None),
    "postgresql": ("continuum_py.adapters.postgres", "PostgresJournal", "postgres"),
    "postgres": ("continuum_py.adapters.postgres", "PostgresJournal", "postgres"),
}

DEFAULT_URL = "sqlite:///continuum.db"


class JournalFactory(Protocol):
    """What a URL scheme names: a journal class that makes itself from a URL.

    ``read_only`` is passed only when asked for, so a class of one's own that
    cannot open a journal only to read may leave it out.
    """

    def from_url(self, url: str, *, read_only: bool = ...) -> Journal:
        """An unconnected journal for ``url``."""
        ...


# What each scheme looks like, for a URL that lacks the // after the colon.
_FORMS = {
    "memory": "memory://",
    "sqlite": "sqlite:///relative.db or sqlite:////abs/path.db",
    "postgresql": "postgresql://user@host/database",
    "postgres": "postgres://user@host/database",
}


def journal_from_url(url: str, *, read_only: bool = False) -> Journal:
    """An unconnected journal for ``url``; raises ``ConfigurationError`` for a bad URL.

    With ``read_only`` the journal must already exist: it is opened to be read
    (SQLite's ``mode=ro``, a Postgres schema that is never created or
    upgraded) and refuses every write. ``memory://`` has nothing to read.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"journal URL {url!r} is not a string")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"cannot parse journal URL: {exc}") from None
    scheme = parts.scheme.lower()
    if "://" not in url:
        if scheme in _FORMS:
            raise ConfigurationError(
                f"journal URL {url!r} is missing the // after {scheme}:; expected {_FORMS[scheme]}"
            )
        raise ConfigurationError(
            f"journal URL {url!r} has no scheme; expected memory://, sqlite:///path.db "
            "or postgresql://..."
        )
    if scheme not in SCHEMES:
        known = ", ".join(sorted(s for s in SCHEMES if s != "postgres"))
        raise ConfigurationError(f"unknown journal URL scheme {scheme!r}; expected {known}")
    if scheme == "memory":
        # The memory journal takes no options; it lives and dies with its process.
        if parts.query:
            name = parse_qsl(parts.query, keep_blank_values=True)[0][0]
            raise ConfigurationError(
                f"memory:// URL option {name!r} is not supported; memory:// takes no options"
            )
        if read_only:
            raise ConfigurationError(
                "a memory:// journal lives only inside the process that made it; "
                "there is nothing to read"
            )
    module_name, cls_name, extra = SCHEMES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra and exc.name != module_name:
            raise ConfigurationError(
                f"the {scheme} journal needs {exc.name!r}, which is not installed; install it "
                f"(from a checkout of continuum_py: pip install -e '.[{extra}]')"
            ) from exc
        raise ConfigurationError(
            f"the {scheme} journal is not available in this version ({exc})"
        ) from exc
    factory: JournalFactory = getattr(module, cls_name)
    # Only pass read_only when asked, so an adapter of one's own without it
    # still opens for ordinary use.
    return factory.from_url(url, read_only=True) if read_only else factory.from_url(url)


def redact_url(url: str) -> str:
    """``url`` with any password (in the user part or a ``password=`` option) masked."""
    url = _USER_PASSWORD.sub(r"\1:***@", url, count=1)
    return _PASSWORD_OPTION.sub(r"\1***", url)


# scheme://user:password@ (a password holds no / or @ unescaped) and ?password=...
_USER_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^/@]*@")
_PASSWORD_OPTION = re.compile(r"([?&]password=)[^&#]*")
