from __future__ import annotations

import pytest
import structlog


@pytest.fixture(autouse=True)
def _quiet_logs():
    # Library logs go to structlog; keep test output clean unless a test captures them.
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.KeyValueRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(40),
        cache_logger_on_first_use=False,
    )
    yield
    structlog.reset_defaults()


@pytest.fixture(params=["memory", "sqlite"])
def journal_url(request, tmp_path) -> str:
    """One URL per adapter; every test using it runs against each journal."""
    return {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/journal.db"}[request.param]
