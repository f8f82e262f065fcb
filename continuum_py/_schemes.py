"""Journal URL schemes, resolved lazily so a driver is imported only when used."""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from continuum_py.errors import ConfigurationError

SCHEMES: dict[str, tuple[str, str, str | None]] = {
    # scheme: (module, class, pip extra that provides its driver)
    "memory": ("continuum_py.adapters.memory", "MemoryJournal", None),
    "sqlite": ("continuum_py.adapters.sqlite", "SQLiteJournal", None),
    "postgresql": ("continuum_py.adapters.postgres", "PostgresJournal", "postgres"),
    "postgres": ("continuum_py.adapters.postgres", "PostgresJournal", "postgres"),
}

DEFAULT_URL = "sqlite:///continuum.db"


def journal_from_url(url: str) -> Any:
    """An unconnected journal for ``url``; raises ``ConfigurationError`` for a bad URL."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"journal URL {url!r} has no scheme; expected memory://, sqlite:///path.db "
            "or postgresql://..."
        )
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise ConfigurationError(f"cannot parse journal URL: {exc}") from None
    if scheme not in SCHEMES:
        known = ", ".join(sorted(s for s in SCHEMES if s != "postgres"))
        raise ConfigurationError(f"unknown journal URL scheme {scheme!r}; expected {known}")
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
    return getattr(module, cls_name).from_url(url)
