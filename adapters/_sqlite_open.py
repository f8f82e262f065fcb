"""How the SQLite journal opens its file: URLs, modes, permission checks, read-only opens.

Everything here runs at connect only. It turns a ``sqlite:`` URL into a path
and a mode, refuses a file this process cannot use before SQLite touches it
(naming the cause), and opens the writer and reader connections, each on a
thread of its own, with the pragmas the journal relies on.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from continuum_py.adapters._sqlite_schema import check_readable, migrate, version
from continuum_py.adapters._sqlite_thread import SQLiteThread
from continuum_py.errors import (
    ConfigurationError,
    ContinuumError,
    JournalCorrupt,
    JournalUnavailable,
)

__all__ = ["MODES", "URL_OPTIONS", "open_file", "options_from_url", "path_from_url"]

MODES = ("rwc", "rw", "ro")
"""How a journal opens its file: ``rwc`` read-write, created if missing (the
default); ``rw`` read-write, the file must exist; ``ro`` read-only, the file
must exist and nothing is ever written to it. The names are SQLite's own."""

URL_OPTIONS = {"mode": "mode=rwc (default), rw or ro"}
"""The query options a ``sqlite:`` URL may carry, with what each accepts."""


def path_from_url(url: str) -> str:
    """The file path of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"not a SQLite URL: {url!r}")
    if parts.netloc:
        raise ConfigurationError(
            f"SQLite URL {url!r} has a host part; use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not path:
        raise ConfigurationError(f"SQLite URL {url!r} names no file; e.g. sqlite:///runs.db")
    return path


def options_from_url(url: str) -> dict[str, str]:
    """The query options of a ``sqlite:`` URL, checked against :data:`URL_OPTIONS`.

    Raises:
        ConfigurationError: an unknown option, one given twice, or a bad value.
    """
    supported = "; ".join(URL_OPTIONS.values())
    options: dict[str, str] = {}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name not in URL_OPTIONS:
            raise ConfigurationError(
                f"SQLite URL option {name!r} is not supported; supported: {supported}"
            )
        if name in options:
            raise ConfigurationError(f"SQLite URL option {name!r} is given twice")
        options[name] = value
    if options.get("mode", "rwc") not in MODES:
        raise ConfigurationError(
            f"SQLite URL option mode={options['mode']!r} is not supported; supported: {supported}"
        )
    return options


def _file_uri(path: str, mode: str, *, immutable: bool = False) -> str:
    # SQLite reads the open mode only from a file: URI; quote the path so a
    # ?, # or % in a file name stays part of it.
    extra = "&immutable=1" if immutable else ""
    return f"file:{quote(os.path.abspath(path))}?mode={mode}{extra}"


def _permission_problem(path: str, *, write: bool) -> str | None:
    """What this process may not do to the journal file, its folder or its side files."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path):
        if not os.access(path, os.R_OK):
            return "the file is not readable by this user"
        if write and not os.access(path, os.W_OK):
            return "the file is read-only for this user"
    if write and not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"its folder {folder!r} is not writable by this user "
            "(SQLite creates the file and its -wal and -shm files there)"
        )
    for side in (f"{path}-wal", f"{path}-shm"):
        if os.path.exists(side) and not os.access(side, os.R_OK | (os.W_OK if write else 0)):
            return f"{side!r} is not {'writable' if write else 'readable'} by this user"
    return None


def _check_file(path: str, mode: str) -> None:
    """Refuse, before SQLite touches anything, a file this open cannot use."""
    # One stat or access() call each, at connect only: no need for a thread.
    read_only = mode == "ro"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigurationError(
            f"cannot open SQLite journal {path!r}: folder {folder!r} does not exist"
        )
    if mode != "rwc" and not os.path.exists(path):
        raise ConfigurationError(
            f"SQLite journal {os.path.abspath(path)!r} does not exist; nothing was "
            + ("created (a read-only open)" if read_only else "created (mode=rw)")
        )
    # SQLite opens a file it may only read without complaint and fails at
    # the first write, long after connect: say so now, naming the cause.
    if os.path.exists(path):
        wanted = os.R_OK if read_only else os.R_OK | os.W_OK
        if not os.access(path, wanted):
            raise _permission_error(
                path,
                read_only,
                _permission_problem(path, write=not read_only) or "access denied",
            )


def _permission_error(path: str, read_only: bool, problem: str) -> ConfigurationError:
    if read_only:
        return ConfigurationError(
            f"cannot read SQLite journal {path!r}: permission denied: {problem}"
        )
    readable = os.access(path, os.R_OK)
    return ConfigurationError(
        f"cannot open SQLite journal {path!r} for writing: permission denied: "
        f"{problem}" + (". Fix the permissions, or read it with ?mode=ro" if readable else "")
    )


def _open_error(path: str, read_only: bool, exc: sqlite3.Error) -> ContinuumError:
    """What a failed open becomes: a permission problem, an unusable path, or corruption."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        problem = _permission_problem(path, write=not read_only)
        if problem is not None:
            return _permission_error(path, read_only, problem)
        if code == sqlite3.SQLITE_READONLY:
            # Permissions allow it, yet SQLite may not write: a read-only mount.
            return _permission_error(path, read_only, f"SQLite may not write here ({exc})")
        return ConfigurationError(f"cannot open SQLite journal {path!r}: {exc}")
    return JournalCorrupt(None, None, f"{path!r} is not a usable SQLite database ({exc})")


async def _open(
    target: str, name: str, *, uri: bool, isolation_level: Literal["IMMEDIATE"] | None
) -> SQLiteThread:
    """A connection to ``target`` (with ``uri``, a ``file:`` URI) on a thread of its own.

    The writer (``isolation_level="IMMEDIATE"``) may also be used from the
    event loop's thread (:meth:`SQLiteThread.run_here`), never at the same
    time as from its own: the journal's write lock orders every use.
    """
    conn = SQLiteThread(name)
    shared = isolation_level is not None
    await conn.open(
        lambda: sqlite3.connect(
            target, uri=uri, isolation_level=isolation_level, check_same_thread=not shared
        )
    )
    return conn


async def open_file(
    path: str, mode: str, busy_ms: int
) -> tuple[SQLiteThread | None, SQLiteThread | None]:
    """The journal's writer and reader connections to ``path``, the tables made or upgraded.

    A read-only open (``mode="ro"``) has no writer; ``":memory:"`` has no reader
    (its writer reads too). On failure nothing is left open.

    Raises:
        ConfigurationError, JournalCorrupt, SchemaTooNew: as
            :meth:`~continuum_py.adapters.sqlite.SQLiteJournal.connect` says.
        JournalUnavailable: another process holds the file "locked" or "busy".
    """
    read_only = mode == "ro"
    if path != ":memory:":
        _check_file(path, mode)
    opened: list[SQLiteThread] = []
    try:
        if read_only:
            return None, await _connect_read_only(path, busy_ms)
        # rw: SQLite's own mode=rw, so a file removed since the check above
        # is still not created.
        target, uri = (path, False) if mode == "rwc" else (_file_uri(path, "rw"), True)
        writer = await _open(
            target, "continuum-sqlite-writer", uri=uri, isolation_level="IMMEDIATE"
        )
        opened.append(writer)
        # Refuse a newer layout before anything writes to the file (switching to
        # WAL rewrites its header), so such a file is left byte-for-byte untouched.
        await writer.call(lambda c: c.execute(f"PRAGMA busy_timeout = {busy_ms}"))
        await version(writer)
        await _setup(writer, path, busy_ms)
        await migrate(writer)
        reader = None
        if path != ":memory:":
            reader = await _open(target, "continuum-sqlite-reader", uri=uri, isolation_level=None)
            opened.append(reader)
            await _setup(reader, path, busy_ms)
        return writer, reader
    except sqlite3.OperationalError as exc:
        await _close(opened)
        if "locked" in str(exc) or "busy" in str(exc):
            raise JournalUnavailable(f"SQLite file {path!r} is busy: {exc}") from exc
        raise _open_error(path, read_only, exc) from exc
    except sqlite3.DatabaseError as exc:
        await _close(opened)
        raise JournalCorrupt(
            None, None, f"{path!r} is not a usable SQLite database ({exc})"
        ) from exc
    except BaseException:
        await _close(opened)
        raise


async def _close(conns: list[SQLiteThread]) -> None:
    for conn in reversed(conns):
        with contextlib.suppress(Exception):
            await conn.close()


async def _connect_read_only(path: str, busy_ms: int) -> SQLiteThread:
    """One connection that never writes (``mode=ro``); no tables are created or upgraded."""
    try:
        return await _open_read_only(path, busy_ms, immutable=False)
    except sqlite3.OperationalError as exc:
        # A file in WAL mode needs its -shm file to be read; SQLite creates it
        # if missing, which a folder we may not write forbids. With no -wal
        # file beside it no process has the journal open for writing, and
        # every commit is in the file itself: read it as immutable then.
        wal = os.path.exists(f"{path}-wal")  # noqa: ASYNC240 - one stat
        if exc.sqlite_errorcode != sqlite3.SQLITE_READONLY_DIRECTORY or wal:
            raise
        return await _open_read_only(path, busy_ms, immutable=True)


async def _open_read_only(path: str, busy_ms: int, *, immutable: bool) -> SQLiteThread:
    uri = _file_uri(path, "ro", immutable=immutable)
    conn = await _open(uri, "continuum-sqlite-reader", uri=True, isolation_level=None)
    try:

        def pragmas(c: sqlite3.Connection) -> None:
            c.execute(f"PRAGMA busy_timeout = {busy_ms}")
            c.execute("PRAGMA query_only = ON")

        await conn.call(pragmas)
        await check_readable(conn, path)
    except BaseException:
        await conn.close()
        raise
    return conn


async def _setup(conn: SQLiteThread, path: str, busy_ms: int) -> None:
    def pragmas(c: sqlite3.Connection) -> None:
        c.execute(f"PRAGMA busy_timeout = {busy_ms}")
        if path != ":memory:":
            c.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk when it returns (WAL's NORMAL may lose the last ones).
        c.execute("PRAGMA synchronous = FULL")

    await conn.call(pragmas)
