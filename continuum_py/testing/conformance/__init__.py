"""The journal conformance suite, for adapters written inside this repository or outside it.

Subclass :class:`JournalConformance` in a test module of your own and say how
to make your journal; pytest collects every check for it::

    from continuum_py.testing.conformance import JournalConformance

    class TestMyJournal(JournalConformance):
        async def make_journal(self):
            return MyJournal(self.tmp_path / "journal.db")

Each test gets a journal from :meth:`~JournalCase.make_journal` on empty
storage of its own (``self.tmp_path`` is the test's temporary folder); the suite
connects it if it is :class:`~continuum_py.journal.Connectable` and closes it
after the test. To get other pytest fixtures onto ``self`` first, define an
``autouse`` fixture method in the subclass. The checks use ``find_runnable``
(:class:`~continuum_py.journal.JournalAdmin`) to see what a claim would take
without claiming it, and skip the ``transaction()`` checks for a journal that is
not a :class:`~continuum_py.journal.TransactionalJournal`.

The parts can be taken one by one (``WriteTests``, ``InboxTests``, ...), and
the model-based check runs with ``ModelTests.model_settings``, which a subclass
may replace (fewer examples for a slow database, for instance).

Importing this module imports pytest, pytest-asyncio and hypothesis (it is test
code); ``import continuum_py.testing`` does not.
"""

from __future__ import annotations

from continuum_py.testing.conformance._base import JournalCase
from continuum_py.testing.conformance._inbox import InboxTests
from continuum_py.testing.conformance._listing import ListingTests
from continuum_py.testing.conformance._liveness import LivenessTests
from continuum_py.testing.conformance._model import ModelTests
from continuum_py.testing.conformance._queue_model import QueueModelTests
from continuum_py.testing.conformance._queues import QueueTests
from continuum_py.testing.conformance._schedules import ScheduleTests
from continuum_py.testing.conformance._seize import SeizeTests
from continuum_py.testing.conformance._transactions import TransactionTests
from continuum_py.testing.conformance._whole_runs import WholeRunTests
from continuum_py.testing.conformance._writes import WriteTests

__all__ = [
    "InboxTests",
    "JournalCase",
    "JournalConformance",
    "ListingTests",
    "LivenessTests",
    "ModelTests",
    "QueueModelTests",
    "QueueTests",
    "ScheduleTests",
    "SeizeTests",
    "TransactionTests",
    "WholeRunTests",
    "WriteTests",
]


class JournalConformance(
    WriteTests,
    SeizeTests,
    InboxTests,
    TransactionTests,
    ListingTests,
    WholeRunTests,
    LivenessTests,
    ModelTests,
    ScheduleTests,
    QueueTests,
    QueueModelTests,
):
    """Every conformance check; a subclass defines ``make_journal``."""
