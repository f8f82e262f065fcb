"""`continuum show` and `steps` show a saga's compensations: SQLite and Postgres, real console script."""

from __future__ import annotations

import asyncio
import json

import pytest
from test_cli_inspect import continuum, url  # noqa: F401 - the journal fixture

from continuum_py import Context, Engine, Registry, RetryPolicy, RunFailed, step, workflow

reg = Registry()


@step(name="cli_unbook", retry=RetryPolicy(max_attempts=2, initial_interval=0.0))
async def unbook(booking: str, what: str) -> None:
    if what == "hotel":
        raise RuntimeError("hotel unreachable")


@step(name="cli_book", compensate=unbook)
async def book(what: str) -> str:
    return f"{what}-1"


@step(name="cli_pay", retry=RetryPolicy(max_attempts=1))
async def pay() -> None:
    raise ValueError("declined")


@workflow(registry=reg, name="cli_trip")
async def trip(ctx: Context) -> None:
    await book("flight")
    await book("hotel")
    await pay()


def test_show_and_steps_list_compensations(url, tmp_path):  # noqa: F811
    async def make() -> None:
        async with Engine(url, registry=reg) as engine:
            handle = await engine.start(trip, run_id="trip-1")
            with pytest.raises(RunFailed):
                await handle.result(timeout=10)

    asyncio.run(make())

    shown = continuum("show", "trip-1", "--url", url, "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    comps = json.loads(shown.stdout)["compensations"]
    assert [
        (c["step"], c["position"], c["compensates"], c["compensated_step"], c["status"])
        for c in comps
    ] == [("cli_unbook", 5, 2, "cli_book", "failed"), ("cli_unbook", 6, 1, "cli_book", "completed")]
    assert all(c["reason"] == "failed" for c in comps)
    assert comps[0]["attempts"] == 2
    assert "hotel unreachable" in comps[0]["error"]["message"]

    text = continuum("show", "trip-1", "--url", url, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert (
        "cli_unbook@5 undoes cli_book@2: failed (RuntimeError: hotel unreachable) [run failed]"
        in text.stdout
    )
    assert "cli_unbook@6 undoes cli_book@1: completed [run failed]" in text.stdout

    table = continuum("steps", "trip-1", "--url", url, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    header, _, *rows = table.stdout.splitlines()
    assert header.split() == [
        "position",
        "step",
        "status",
        "attempts",
        "duration",
        "last",
        "error",
        "undoes",
    ]
    undoes = {row.split()[0]: row.split()[-1] for row in rows}
    assert (undoes["5"], undoes["6"]) == ("2", "1")

    steps = json.loads(continuum("steps", "trip-1", "--url", url, "--json", cwd=tmp_path).stdout)
    assert [s["compensates"] for s in steps["steps"]] == [None, None, None, 2, 1]
