"""Guards on the driver internals the SQLite adapter relies on."""

from __future__ import annotations

import aiosqlite


def test_aiosqlite_still_runs_a_callable_in_its_thread():
    # adapters/sqlite.py runs each write transaction as one callable in
    # aiosqlite's thread (Connection._execute): one hop per commit instead of
    # one per statement. If an aiosqlite upgrade drops it, fail here, loudly.
    assert callable(getattr(aiosqlite.Connection, "_execute", None))
    assert isinstance(getattr(aiosqlite.Connection, "_conn", None), property)
