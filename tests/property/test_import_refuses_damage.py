"""Any damage to an export is refused with nothing written, or changes nothing that is imported.

A hypothesis property over the bytes of a real export (a run with a child): cut
it anywhere, or change any byte to any value. Either the import raises
``ExportCorrupt`` (or its ``ExportTooNew``) and the journal stays empty, or it
succeeds and every run, row and event it wrote is exactly the original's (a
change in whitespace between values, or in a header field nothing reads).
"""

from __future__ import annotations

import asyncio
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from continuum_py import Context, Engine, ExportCorrupt, Registry, step, workflow
from continuum_py._transfer import import_runs
from continuum_py.adapters.memory import MemoryJournal

reg = Registry()


@step(name="dmg_add")
async def add(n: int, label: str) -> dict:
    return {"n": n + 1, "label": label}


@workflow(registry=reg, name="dmg_leaf")
async def leaf(ctx: Context, n: int) -> dict:
    return await add(n, "leaf")


@workflow(registry=reg, name="dmg_root")
async def root(ctx: Context, n: int) -> list:
    first = await add(n, "root")
    return [first, await leaf(first["n"]), ctx.random()]


@cache
def original() -> tuple[bytes, dict]:
    """An export of a finished run with a child, and what the journal held: rows and events."""

    async def make() -> tuple[bytes, dict]:
        journal = MemoryJournal()
        async with Engine(journal=journal, registry=reg) as engine:
            await (await engine.start(root, 1, run_id="r")).result(timeout=10)
            data = await engine.export_run("r")
        return data, await contents(journal)

    return asyncio.run(make())


async def contents(journal: MemoryJournal) -> dict:
    out = {}
    for rec in await journal.list_runs():
        row = (rec.run_id, rec.workflow, rec.status, rec.parent_run_id, rec.inbox_seen)
        events = [(e.seq, e.kind, e.schema, e.data) for e in await journal.load(rec.run_id)]
        out[rec.run_id] = (row, events)
    return out


def import_into_fresh(data: bytes) -> tuple[Exception | None, dict]:
    async def go() -> tuple[Exception | None, dict]:
        journal = MemoryJournal()
        try:
            await import_runs(journal, data)
        except ExportCorrupt as exc:
            return exc, await contents(journal)
        return None, await contents(journal)

    return asyncio.run(go())


def check(damaged: bytes) -> None:
    _, before = original()
    error, after = import_into_fresh(damaged)
    if error is not None:
        assert after == {}, "a refused import wrote something"
    else:
        assert after == before, "an import of a damaged file wrote something else"


def test_the_undamaged_export_imports_exactly():
    data, before = original()
    assert import_into_fresh(data) == (None, before)
    assert set(before) == {"r", "r.2"}  # the run and its child


@settings(max_examples=200, deadline=None)
@given(cut=st.data())
def test_every_cut_is_refused(cut):
    data, _ = original()
    end = cut.draw(st.integers(min_value=0, max_value=len(data) - 2))  # keep less than the JSON
    error, after = import_into_fresh(data[:end])
    assert isinstance(error, ExportCorrupt) and after == {}


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_a_changed_byte_is_refused_or_changes_nothing_imported(draw):
    data, _ = original()
    at = draw.draw(st.integers(min_value=0, max_value=len(data) - 1))
    value = draw.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != data[at]))
    check(data[:at] + bytes([value]) + data[at + 1 :])
