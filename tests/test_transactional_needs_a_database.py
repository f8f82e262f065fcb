"""A transactional step needs a journal with a database: on memory:// it fails, clearly.

The memory journal has a ``transaction()`` (the journal conformance tests use it)
but no database connection to lend a step. A transactional step there used to run
with ``step_connection()`` returning ``None``: its body failed with an
``AttributeError`` on every attempt, or, if it ran no SQL, "succeeded" without the
guarantee it asked for. It must fail at once with the documented
``ConfigurationError``, without running its body.
"""

from __future__ import annotations

import pytest

from continuum_py import (
    Context,
    Engine,
    Registry,
    RetryPolicy,
    RunFailed,
    step,
    step_connection,
    workflow,
)


async def test_a_transactional_step_on_memory_fails_with_a_configuration_error() -> None:
    bodies_run: list[str] = []
    registry = Registry()

    @step(transactional=True, retry=RetryPolicy(max_attempts=3, initial_interval=0))
    async def book(entry: str) -> str:
        bodies_run.append(entry)
        await step_connection().execute("INSERT INTO ledger (entry) VALUES (?)", (entry,))
        return entry

    @step(transactional=True, retry=RetryPolicy(max_attempts=3, initial_interval=0))
    async def no_sql(entry: str) -> str:
        bodies_run.append(entry)
        return entry

    @workflow(registry=registry)
    async def ledger(ctx: Context, which: str) -> str:
        return await (book if which == "book" else no_sql)(which)

    async with Engine("memory://", registry=registry) as engine:
        for which in ("book", "no_sql"):
            handle = await engine.start(ledger, which, run_id=f"ledger-{which}")
            with pytest.raises(RunFailed) as ei:
                await handle.result(timeout=10)
            assert ei.value.error_type.endswith("ConfigurationError"), ei.value
            assert "transactional" in ei.value.message
            assert "SQLite or Postgres" in ei.value.message
    assert bodies_run == []  # refused before the body ran, and not retried
