from __future__ import annotations

import pytest

from continuum_py._schemes import journal_from_url


@pytest.fixture
async def journal(journal_url):
    j = journal_from_url(journal_url)
    connect = getattr(j, "connect", None)
    if connect is not None:
        await connect()
    try:
        yield j
    finally:
        await j.aclose()
