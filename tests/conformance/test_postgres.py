"""The conformance suite on the Postgres journal (needs CONTINUUM_TEST_PG_DSN)."""

from __future__ import annotations

import pytest
from conftest import empty_tables
from hypothesis import settings

from continuum_py._schemes import journal_from_url
from continuum_py.journal import Journal
from continuum_py.testing.conformance import JournalConformance

pytestmark = pytest.mark.postgres


class TestPostgresJournal(JournalConformance):
    # Every example empties the tables and opens a pool: fewer examples than on
    # the in-process journals (as many as the Postgres model ran before it came here).
    model_settings = settings(JournalConformance.model_settings, max_examples=40)

    @pytest.fixture(autouse=True)
    def _schema(self, pg_conformance: tuple[str, str, str]) -> None:
        self.pg = pg_conformance

    async def make_journal(self) -> Journal:
        # One schema for the whole session, emptied for each journal.
        await empty_tables(*self.pg)
        return journal_from_url(self.pg[2])
