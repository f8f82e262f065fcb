"""``engine.export_run`` and ``engine.import_run``: one file, checked whole, written all or nothing.

Every journal exports; the import goes into another journal (a SQLite file),
and back into the first kind.
"""

from __future__ import annotations

import msgspec
import pytest
from helpers import journal_state, wait_until

from continuum_py import (
    Context,
    Engine,
    ExportCorrupt,
    ExportTooNew,
    Registry,
    RunIdTaken,
    RunStatus,
    step,
    workflow,
)
from continuum_py.testing import Replayer

reg = Registry()
calls: list[str] = []


@step(name="xfer_double")
async def double(n: int) -> int:
    calls.append(f"double {n}")
    return n * 2


@workflow(registry=reg, name="xfer_leaf")
async def leaf(ctx: Context, n: int) -> int:
    return await double(n)


@workflow(registry=reg, name="xfer_root")
async def root(ctx: Context, n: int) -> dict:
    a = await leaf(n)
    b = await double(a)
    return {"a": a, "b": b, "id": str(ctx.uuid4())}


@workflow(registry=reg, name="xfer_waits")
async def waits(ctx: Context) -> int:
    first = await double(1)
    got: int = await ctx.wait_for_signal("go")
    return await double(first + got)


async def exported(url: str) -> tuple[bytes, dict, dict, bytes]:
    """The export of a finished run with a child, its result, the histories, the root alone."""
    async with Engine(url, registry=reg) as engine:
        result = await (await engine.start(root, 3, run_id="r")).result(timeout=10)
        histories = {rid: await engine.history(rid) for rid in ("r", "r.1")}
        alone = await engine.export_run("r", children=False)
        return await engine.export_run("r"), result, histories, alone


async def test_a_finished_run_and_its_child_move_to_another_journal_and_replay_alike(
    journal_url, tmp_path
):
    data, result, before, alone = await exported(journal_url)
    doc = msgspec.json.decode(data)
    assert (doc["format"], doc["version"], doc["run_id"]) == ("continuum-export", 1, "r")
    assert [r["run_id"] for r in doc["runs"]] == ["r", "r.1"]
    assert all(len(r["sha256"]) == 64 for r in doc["runs"])
    assert [r["run_id"] for r in msgspec.json.decode(alone)["runs"]] == ["r"]
    calls.clear()
    async with Engine(f"sqlite:///{tmp_path}/other.db", registry=reg) as target:
        assert await target.import_run(data) == ["r", "r.1"]
        for rid in ("r", "r.1"):
            assert await target.history(rid) == before[rid]
        rec = await (await target.get("r")).record()
        assert rec.status == RunStatus.COMPLETED
        assert await (await target.get("r")).result(timeout=5) == result
        assert (await (await target.get("r.1")).record()).parent_run_id == "r"
        replay = Replayer(reg).replay(await target.history("r"))
        assert replay.finished and replay.result == result
        again = await target.export_run("r")
    assert calls == []  # nothing ran again
    # Exported again from the other journal: the same runs, byte for byte.
    assert msgspec.json.decode(again)["runs"] == doc["runs"]


async def test_an_unfinished_run_arrives_parked_and_runs_on_after_resume(journal_url, tmp_path):
    async with Engine(journal_url, registry=reg) as engine:
        await engine.start(waits, run_id="w")

        async def suspended() -> bool:
            return await (await engine.get("w")).status() == RunStatus.SUSPENDED

        await wait_until(suspended, timeout=10)
        data = await engine.export_run("w")
    calls.clear()
    async with Engine(f"sqlite:///{tmp_path}/other.db", registry=reg) as target:
        await target.import_run(data)
        rec = await (await target.get("w")).record()
        assert rec.status == RunStatus.PARKED
        assert rec.reason == "imported while suspended; resume it to run it"
        await target.signal("w", "go", 5)
        assert calls == []  # parked: nobody runs it by surprise
        await target.resume("w")
        assert await (await target.get("w")).result(timeout=10) == 14  # (2 + 5) * 2
        assert calls == ["double 7"]  # the first step came from history


def _reseal(data: bytes, change) -> bytes:
    """``data`` with ``change(doc)`` applied and each run's checksum made right again."""
    from continuum_py._transfer import ExportFile, _checksum

    doc = msgspec.json.decode(data, type=ExportFile)
    doc = change(doc)
    runs = [msgspec.structs.replace(r, sha256=_checksum(r)) for r in doc.runs]
    return msgspec.json.encode(msgspec.structs.replace(doc, runs=runs))


async def test_bad_files_and_taken_ids_are_refused_and_the_journal_is_untouched(
    journal_url, tmp_path
):
    data, *_ = await exported(f"sqlite:///{tmp_path}/source.db")
    cut = data.index(b'"run_id":"r.1","workflow"')  # the leaf run's part: change its result
    flipped = data[:cut] + data[cut:].replace(b'"result":6', b'"result":7', 1)
    assert flipped != data
    altered = data.replace(b'"workflow":"xfer_leaf"', b'"workflow":"xfer_lesf"', 1)
    assert altered != data
    newer_format = data.replace(b'"version":1', b'"version":2', 1)

    def newer_schema(doc):
        ev = msgspec.structs.replace(doc.runs[1].events[-1], schema=99)
        leaf_run = msgspec.structs.replace(doc.runs[1], events=[*doc.runs[1].events[:-1], ev])
        return msgspec.structs.replace(doc, runs=[doc.runs[0], leaf_run])

    async with Engine(journal_url, registry=reg) as engine:
        await engine.start(leaf, 1, run_id="r.1")  # the child's id is taken here
        await (await engine.get("r.1")).result(timeout=10)
        before = await journal_state(engine)
        cases = [
            (data[: len(data) // 2], ExportCorrupt, "not a whole continuum export"),
            (b"", ExportCorrupt, "not a whole continuum export"),
            (b'{"format": "zip", "version": 1}', ExportCorrupt, "its format is 'zip'"),
            (altered, ExportCorrupt, "run 'r'.*checksum does not match"),
            (flipped, ExportCorrupt, "run 'r.1'.*checksum does not match"),
            (newer_format, ExportTooNew, "format version 2, this continuum_py reads up to 1"),
            (_reseal(data, newer_schema), ExportTooNew, "event schema version 99"),
            (data, RunIdTaken, "'r.1' exists already"),
        ]
        for bad, error, message in cases:
            with pytest.raises(error, match=message):
                await engine.import_run(bad)
        assert await journal_state(engine) == before
