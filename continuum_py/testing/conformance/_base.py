"""What every conformance test class shares: the journal under test, opened and closed per test."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from hypothesis.stateful import RuleBasedStateMachine

from continuum_py.journal import Connectable, Journal

_C = TypeVar("_C", bound=type)


class JournalCase:
    """Base of the conformance test classes: subclasses say how to make the journal under test.

    Attributes:
        tmp_path: the test's own temporary folder (pytest's ``tmp_path``), set
            before :meth:`make_journal` is called, for journals kept in files.
    """

    tmp_path: Path

    async def make_journal(self) -> Journal:
        """A new journal on empty storage, not yet connected.

        Called once per test (and once per example of the model check), each
        time for storage no other call sees. The suite connects the journal if it
        is :class:`~continuum_py.journal.Connectable` and closes it after the
        test, as an ``Engine`` given ``journal=`` does.
        """
        raise NotImplementedError(f"{type(self).__name__} must define make_journal()")

    @pytest.fixture(autouse=True)
    def _conformance_tmp_path(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    @pytest_asyncio.fixture
    async def journal(self) -> AsyncIterator[Journal]:
        """The journal under test, connected; closed after the test."""
        journal = await self.make_journal()
        if isinstance(journal, Connectable):
            await journal.connect()
        try:
            yield journal
        finally:
            await journal.aclose()


def asyncio_tests(cls: _C) -> _C:
    """Mark the class's coroutine tests for pytest-asyncio, whatever its mode.

    In ``strict`` mode (pytest-asyncio's default) an unmarked ``async def``
    test is not run; a class-wide mark would also land on the sync model test.
    """
    for name, value in list(vars(cls).items()):
        if name.startswith("test") and inspect.iscoroutinefunction(value):
            setattr(cls, name, pytest.mark.asyncio(value))
    return cls


class AsyncJournalMachine(RuleBasedStateMachine):
    """A hypothesis state machine over the journal ``case`` makes, on an event loop of its own.

    State machines are synchronous: the machine owns an ``asyncio.Runner``,
    runs each journal call on it with :meth:`run`, and closes both in teardown.
    """

    def __init__(self, case: JournalCase) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.journal: Any = self.runner.run(self._open(case))

    @staticmethod
    async def _open(case: JournalCase) -> Any:
        journal = await case.make_journal()
        if isinstance(journal, Connectable):
            await journal.connect()
        return journal

    def teardown(self) -> None:
        try:
            self.runner.run(self.journal.aclose())
        finally:
            self.runner.close()

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)
