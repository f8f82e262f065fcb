"""`Replayer` as a debugging tool: until=, locals, the event hook, what_if, the source line
of a divergence, and a folder of golden histories checked in one call.

Runs are recorded on every journal (memory, SQLite, Postgres), then replayed offline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import os
from pathlib import Path

import pytest

from continuum_py import (
    Context,
    ContinuumError,
    Engine,
    NonDeterminismError,
    Registry,
    WorkflowNotRegistered,
    step,
    workflow,
)
from continuum_py.testing import (
    HistoriesReport,
    Replayer,
    ReplayView,
    VirtualClock,
    dump_history,
)

v1 = Registry()
v2 = Registry()


@step(name="dbg_price")
async def price(item: str) -> int:
    return {"book": 1200, "pen": 300}[item]


@step(name="dbg_charge")
async def charge(item: str, cents: int) -> str:
    return "declined" if cents > 1000 else "paid"


@step(name="dbg_ship")
async def ship(item: str) -> str:
    return f"shipped {item}"


@step(name="dbg_refund")
async def refund(item: str) -> str:
    return f"refunded {item}"


@workflow(name="dbg_order", registry=v1)
async def order(ctx: Context, item: str) -> str:
    cents = await price(item)
    status = await charge(item, cents)
    if status == "paid":
        when = ctx.now()
        await ctx.sleep(60)
        return await ship(f"{item} {when.year > 2000}")
    return await refund(item)


@workflow(name="dbg_order", registry=v2)
async def order_v2(ctx: Context, item: str) -> str:
    cents = await price(item)
    status = await charge(item, cents)
    if status == "paid":
        await ship(item)  # shipped before the wait now
        await ctx.sleep(60)
        return "shipped"
    return await refund(item)


def _line(fn, text: str) -> int:
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


async def _record(url: str, *items: str) -> dict[str, list]:
    async with Engine(url, registry=v1, clock=VirtualClock()) as engine:
        for item in items:
            await (await engine.start(order, item, run_id=f"dbg-{item}")).result(timeout=30)
        return {item: await engine.history(f"dbg-{item}") for item in items}


@pytest.fixture
def histories(journal_url) -> dict[str, list]:
    return asyncio.run(_record(journal_url, "pen", "book"))


def test_until_stops_there_with_the_workflows_locals_and_what_it_waits_on(histories):
    pen = histories["pen"]
    # seq 3: price's result; the code has asked for charge and waits on it.
    result = Replayer(v1).replay(pen, until=3)
    assert (result.stopped_at, result.events, result.finished) == (3, 3, False)
    assert {k: v for k, v in result.locals.items() if k != "ctx"} == {"item": "pen", "cents": 300}
    assert [(w.function, w.line) for w in result.where] == [
        ("order", _line(order, "await charge("))
    ]
    assert [(a.what, a.args) for a in result.asks] == [
        ("StepScheduled(dbg_charge)", "('pen', 300)")
    ]
    # seq 4 records charge: now it is what the code waits on.
    assert Replayer(v1).replay(pen, until=4).waiting_on == ["dbg_charge"]
    finished = Replayer(v1).replay(pen)
    assert finished.finished and finished.locals == {} and finished.where == []
    assert finished.result == "shipped pen True"


def test_until_outside_the_history_is_refused(histories):
    pen = histories["pen"]
    for until in (0, pen[-1].seq + 1):
        with pytest.raises(ValueError, match="outside the history"):
            Replayer(v1).replay(pen, until=until)


def test_the_hook_sees_every_event_in_order_and_can_stop_the_replay(histories):
    pen = histories["pen"]
    seen: list[tuple[int, dict]] = []

    def hook(view: ReplayView) -> None:
        seen.append((view.event.seq, {k: v for k, v in view.locals.items() if k != "ctx"}))

    Replayer(v1).replay(pen, on_event=hook)
    assert [seq for seq, _ in seen] == [ev.seq for ev in pen]
    assert seen[0][1] == {"item": "pen"}
    assert seen[2][1] == {"item": "pen", "cents": 300}
    assert seen[-1][1] == {}  # returned: no frame left

    stopped = Replayer(v1).replay(pen, on_event=lambda view: view.event.seq < 5)
    assert stopped.stopped_at == 5 and not stopped.finished


def test_a_divergence_names_the_source_line_that_asked(histories):
    with pytest.raises(NonDeterminismError) as ei:
        Replayer(v2).replay(histories["pen"])
    err = ei.value
    assert err.offline and err.position == 3
    assert (err.recorded, err.requested) == ("SideEffectRecorded(now)", "StepScheduled(dbg_ship)")
    assert err.where is not None
    here = os.path.relpath(__file__)  # shown relative to the current folder, when inside it
    assert err.where.startswith(f"{here}:{_line(order_v2, 'await ship(item)')} in order_v2")
    assert f"at {err.where}" in str(err)

    result = Replayer(v2).replay(histories["pen"], raise_on_divergence=False)
    div = result.divergence
    assert div is not None and (div.position, div.seq) == (3, 6)
    assert (
        div.source is not None
        and div.source.text == "await ship(item)  # shipped before the wait now"
    )
    assert type(div.event).__name__ == "SideEffectRecorded"
    # The path the code took up to there still replays.
    assert Replayer(v2).replay(histories["book"]).result == "refunded book"


def test_what_if_a_step_had_returned_otherwise(histories):
    # The book was declined; had it been paid, the code would read the time and sleep.
    result = Replayer(v1).replay(histories["book"], what_if={2: "paid"})
    assert result.divergence is not None
    assert (result.divergence.position, result.divergence.recorded) == (
        3,
        "StepScheduled(dbg_refund)",
    )
    assert [a.what for a in result.asks] == ["SideEffectRecorded(now)", "TimerStarted"]
    assert result.where[-1].text == "await ctx.sleep(60)"
    # Beyond the history, time stands at the last recorded event's time.
    changed = next(ev for ev in histories["book"] if ev.seq == 5)
    assert result.locals["when"] == dt.datetime.fromtimestamp(changed.at, dt.UTC)
    assert result.locals["status"] == "paid"

    # The pen was paid; declined, it would have been refunded.
    declined = Replayer(v1).replay(histories["pen"], what_if={2: "declined"})
    assert [(a.what, a.args) for a in declined.asks] == [("StepScheduled(dbg_refund)", "('pen')")]

    # A change that keeps the path replays to the end, with what the code then returns.
    same = Replayer(v1).replay(histories["pen"], what_if={1: 200})
    assert same.divergence is None and same.finished and same.result == "shipped pen True"


def test_what_if_refuses_a_position_without_a_result_and_a_value_that_does_not_fit(histories):
    with pytest.raises(ValueError, match="position 4 holds no step"):
        Replayer(v1).replay(histories["pen"], what_if={4: 1})
    with pytest.raises(ValueError, match="does not fit"):
        Replayer(v1).replay(histories["pen"], what_if={2: 5})


# ---- golden histories: a folder the current code must still replay ----


def _write(folder: Path, histories: dict[str, list]) -> None:
    folder.mkdir(exist_ok=True)
    for item, events in histories.items():
        (folder / f"order-{item}.json").write_bytes(dump_history(events))


def test_a_folder_of_histories_that_still_replays_passes(histories, tmp_path):
    _write(tmp_path / "golden", histories)
    report = Replayer(v1).assert_histories_replay(tmp_path / "golden")
    assert report.ok and [c.path.name for c in report.checks] == [
        "order-book.json",
        "order-pen.json",
    ]
    assert all(c.ok and c.workflow == "dbg_order" for c in report.checks)


def test_the_report_names_every_history_the_code_no_longer_replays(histories, tmp_path):
    golden = tmp_path / "golden"
    _write(golden, histories)
    (golden / "nested").mkdir()
    (golden / "nested" / "truncated.json").write_text('[{"kind": "RunStarted"')
    other = Registry()

    @workflow(name="dbg_other", registry=other)
    async def other_flow(ctx: Context) -> int:
        return 1

    async def record_other() -> list:
        async with Engine("memory://", registry=other) as engine:
            await (await engine.start(other_flow, run_id="o")).result(timeout=30)
            return await engine.history("o")

    (golden / "unknown.json").write_bytes(dump_history(asyncio.run(record_other())))

    report = Replayer(v2).check_histories(golden)
    assert isinstance(report, HistoriesReport) and not report.ok
    by_name = {c.path.name: c for c in report.checks}
    assert by_name["order-book.json"].ok
    pen = by_name["order-pen.json"]
    assert not pen.ok and pen.divergence is not None and pen.divergence.position == 3
    assert "NonDeterminismError at position 3 (seq 6)" in pen.problem
    assert "not a history written by `continuum history`" in by_name["truncated.json"].problem
    assert WorkflowNotRegistered.__name__ in by_name["unknown.json"].problem
    assert {c.path.name for c in report.failures} == {
        "truncated.json",
        "order-pen.json",
        "unknown.json",
    }

    with pytest.raises(AssertionError) as ei:
        Replayer(v2).assert_histories_replay(golden)
    text = str(ei.value)
    assert text.splitlines()[0] == "4 histories checked: 1 replay, 3 no longer replay"
    assert "order-pen.json (run dbg-pen, dbg_order): NonDeterminismError at position 3" in text
    assert "await ship(item)" in text


def test_an_empty_or_missing_folder_is_not_a_pass(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssertionError, match="no history matches"):
        Replayer(v1).assert_histories_replay(tmp_path / "empty")
    with pytest.raises(ContinuumError, match="no folder of histories"):
        Replayer(v1).check_histories(tmp_path / "missing")
