"""Journal URLs: each scheme maps to its adapter, loaded lazily; bad URLs say what to write."""

from __future__ import annotations

import pytest

from continuum_py import ConfigurationError
from continuum_py._schemes import DEFAULT_URL, SCHEMES, journal_from_url
from continuum_py.adapters.memory import MemoryJournal
from continuum_py.adapters.sqlite import SQLiteJournal


def test_memory_url():
    assert isinstance(journal_from_url("memory://"), MemoryJournal)


def test_memory_journals_from_one_url_do_not_share_runs():
    assert journal_from_url("memory://") is not journal_from_url("memory://")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///runs.db", "runs.db"),
        ("sqlite:///data/runs.db", "data/runs.db"),
        ("sqlite:////var/lib/runs.db", "/var/lib/runs.db"),
        ("sqlite:///my%20runs.db", "my runs.db"),
        ("SQLite:///runs.db", "runs.db"),
    ],
)
def test_sqlite_urls_give_the_file_path(url, path):
    journal = journal_from_url(url)  # not connected: nothing is opened yet
    assert isinstance(journal, SQLiteJournal)
    assert journal.path == path


def test_default_url_is_a_sqlite_file():
    journal = journal_from_url(DEFAULT_URL)
    assert isinstance(journal, SQLiteJournal) and journal.path.endswith(".db")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        (
            "sqlit:///x.db",
            "unknown journal URL scheme 'sqlit'; expected memory, postgresql, sqlite",
        ),
        ("mysql://host/db", "unknown journal URL scheme 'mysql'"),
        ("runs.db", "has no scheme"),
        ("", "has no scheme"),
        ("sqlite://host/x.db", "has a host part"),
        ("sqlite:///", "names no file"),
    ],
)
def test_bad_urls_say_what_is_wrong(url, match):
    with pytest.raises(ConfigurationError, match=match):
        journal_from_url(url)


def test_a_missing_driver_says_which_extra_to_install(tmp_path, monkeypatch):
    (tmp_path / "fake_adapter.py").write_text("import surely_not_installed_driver\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(SCHEMES, "fakedb", ("fake_adapter", "FakeJournal", "fakedb"))
    with pytest.raises(ConfigurationError) as ei:
        journal_from_url("fakedb://host/db")
    msg = str(ei.value)
    assert "'surely_not_installed_driver'" in msg
    # continuum-py is not on a package index: the advice must work from a checkout.
    assert "pip install -e '.[fakedb]'" in msg
    assert "continuum-py[" not in msg


def test_an_adapter_missing_from_this_version_is_named(monkeypatch):
    monkeypatch.setitem(SCHEMES, "fakedb", ("continuum_py.adapters.no_such", "X", "fakedb"))
    with pytest.raises(ConfigurationError, match="fakedb journal is not available"):
        journal_from_url("fakedb://host/db")
