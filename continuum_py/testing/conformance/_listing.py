"""Listing runs, on every journal: order, filters, keyset pages, and the engine's cursor."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio

from continuum_py import Engine, Registry, RunPage, RunStatus, workflow
from continuum_py.journal import AppendBatch, Lease, RunRecord
from continuum_py.testing._journal_helpers import new_run
from continuum_py.testing.conformance._base import JournalCase, asyncio_tests


def key(r: RunRecord) -> tuple[float, str]:
    return (r.created_at, r.run_id)


async def start_many(journal: Any, specs: Any) -> list[RunRecord]:
    """Start runs ``(run_id, workflow)``; their records, oldest first as the journal orders them.

    Each start comes 2 ms after the one before, so no two share a creation time
    (SQLite's clock counts milliseconds, and a start can commit in less): the
    tests take time windows from these records.
    """
    for run_id, wf in specs:
        await journal.start_run(new_run(run_id, workflow=wf))
        await asyncio.sleep(0.002)
    return sorted([await journal.get_run(run_id) for run_id, _ in specs], key=key)


def ids(runs: Any) -> list[str]:
    return [r.run_id for r in runs]


async def claim_run_any(journal: Any, run_id: str) -> Lease:
    """The lease of ``run_id``, claimed from among every pending run (the rest are handed back)."""
    leases: list[Lease] = await journal.claim("w1", ttl=30, limit=1000)
    mine: Lease | None = None
    for lease in leases:
        if lease.run_id == run_id:
            mine = lease
        else:
            assert await journal.release(lease)
    assert mine is not None
    return mine


async def start_named(engine: Engine, run_ids: Any, wf: str = "wf") -> None:
    for run_id in run_ids:
        await engine.start(wf, run_id=run_id)


async def everything(engine: Engine) -> list[RunRecord]:
    return list(await engine.list_runs(limit=10_000, oldest_first=True))


async def page_through(
    engine: Engine, between: Any = None, **options: Any
) -> list[list[RunRecord]]:
    pages: list[list[RunRecord]] = []
    cursor = None
    while True:
        page = await engine.list_runs(cursor=cursor, **options)
        assert isinstance(page, RunPage)
        pages.append(list(page))
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert isinstance(cursor, str) and len(page) == options["limit"]
        if between is not None:
            await between(len(pages))
        assert len(pages) < 100, "paging does not end"


@asyncio_tests
class ListingTests(JournalCase):
    """``list_runs``' order, filters and keyset, and the engine's pages over them."""

    async def test_runs_are_ordered_by_creation_then_run_id_either_way(self, journal: Any) -> None:
        # Started in an order that is neither the ids' order nor their reverse, so a
        # listing that sorted by run_id alone would not pass.
        runs = await start_many(journal, [(f"r{n}", "wf") for n in (5, 1, 9, 3, 7, 0, 8, 2, 6, 4)])
        assert ids(await journal.list_runs()) == ids(runs)
        assert ids(await journal.list_runs(newest_first=True)) == ids(runs)[::-1]
        assert ids(await journal.list_runs(limit=3)) == ids(runs)[:3]
        assert ids(await journal.list_runs(limit=3, newest_first=True)) == ids(runs)[::-1][:3]

    async def test_after_a_key_lists_only_what_follows_it_in_that_order(self, journal: Any) -> None:
        runs = await start_many(journal, [(f"r{n:02}", "wf") for n in range(12)])
        pivot = runs[4]
        later = await journal.list_runs(after=key(pivot))
        assert ids(later) == ids(runs[5:])
        earlier = await journal.list_runs(after=key(pivot), newest_first=True)
        assert ids(earlier) == ids(runs[:4])[::-1]
        # A key between two runs (no run has it) works as well.
        gap = (pivot.created_at, pivot.run_id + "!")
        assert ids(await journal.list_runs(after=gap)) == ids(runs[5:])

    async def test_each_filter_keeps_only_its_runs(self, journal: Any) -> None:
        runs = await start_many(
            journal,
            [
                ("order-1", "checkout"),
                ("order-10", "checkout"),
                ("order_2", "refund"),
                ("order%3", "checkout"),
                ("ordex-4", "refund"),
                ("Order-5", "checkout"),
                ("other", "refund"),
            ],
        )
        by_id = {r.run_id: r for r in runs}
        lease = await claim_run_any(journal, "order-10")
        assert await journal.append(
            [
                AppendBatch(
                    lease=lease, expected_seq=1, events=[], status=RunStatus.COMPLETED, outcome=b"x"
                )
            ]
        ) == [None]

        assert ids(await journal.list_runs(status=RunStatus.COMPLETED)) == ["order-10"]
        assert ids(await journal.list_runs(status=RunStatus.PENDING)) == [
            r for r in ids(runs) if r != "order-10"
        ]
        assert ids(await journal.list_runs(workflow="refund")) == [
            r.run_id for r in runs if r.workflow == "refund"
        ]
        assert await journal.list_runs(workflow="no-such-workflow") == []
        # A prefix is literal text, case-sensitive: % and _ match only themselves.
        for prefix in (
            "order",
            "order-1",
            "order_",
            "order%",
            "Order",
            "ordex",
            "o",
            "other",
            "zz",
        ):
            assert ids(await journal.list_runs(run_id_prefix=prefix)) == [
                r.run_id for r in runs if r.run_id.startswith(prefix)
            ], prefix
        assert ids(await journal.list_runs(run_id_prefix="")) == ids(runs)

        # A half-open window [created_after, created_before), bounds taken from the runs.
        lo, hi = runs[2].created_at, runs[5].created_at
        window = [r.run_id for r in runs if lo <= r.created_at < hi]
        assert "order_2" in window and "Order-5" not in window
        assert ids(await journal.list_runs(created_after=lo, created_before=hi)) == window
        assert ids(await journal.list_runs(created_after=lo)) == [
            r.run_id for r in runs if r.created_at >= lo
        ]
        assert ids(await journal.list_runs(created_before=hi)) == [
            r.run_id for r in runs if r.created_at < hi
        ]
        assert await journal.list_runs(created_after=hi, created_before=hi) == []
        assert by_id["order-1"].run_id in ids(await journal.list_runs(created_before=hi))

    async def test_filters_combine(self, journal: Any) -> None:
        specs = [(f"{wf}-{n:02}", wf) for n in range(8) for wf in ("alpha", "beta")]
        runs = await start_many(journal, specs)
        lease = await claim_run_any(journal, "alpha-03")
        await journal.append(
            [
                AppendBatch(
                    lease=lease, expected_seq=1, events=[], status=RunStatus.FAILED, outcome=b""
                )
            ]
        )
        lo, hi = runs[3].created_at, runs[12].created_at

        got = await journal.list_runs(
            workflow="beta",
            run_id_prefix="beta-0",
            created_after=lo,
            created_before=hi,
            status=RunStatus.PENDING,
            newest_first=True,
            limit=100,
        )
        want = [
            r.run_id
            for r in runs
            if r.workflow == "beta" and r.run_id.startswith("beta-0") and lo <= r.created_at < hi
        ][::-1]
        assert want and ids(got) == want
        # The keyset composes with the filters: the rest after the first two.
        rest = await journal.list_runs(
            workflow="beta",
            run_id_prefix="beta-0",
            created_after=lo,
            created_before=hi,
            status=RunStatus.PENDING,
            newest_first=True,
            after=key(got[1]),
        )
        assert ids(rest) == want[2:]
        assert ids(await journal.list_runs(workflow="alpha", status=RunStatus.FAILED)) == [
            "alpha-03"
        ]
        assert await journal.list_runs(workflow="beta", status=RunStatus.FAILED) == []

    @pytest_asyncio.fixture
    async def engine(self) -> AsyncIterator[Engine]:
        # The engine connects and closes a journal of its own.
        async with Engine(journal=await self.make_journal(), worker=False) as eng:
            yield eng

    async def test_engine_lists_newest_first_by_default(self, engine: Any) -> None:
        await start_named(engine, [f"run-{n}" for n in range(6)])
        oldest = ids(await everything(engine))
        assert ids(await engine.list_runs()) == oldest[::-1]
        assert ids(await engine.list_runs(oldest_first=True)) == oldest

    async def test_pages_cover_every_run_once_in_order(self, engine: Any) -> None:
        await start_named(engine, [f"run-{n:02}" for n in range(23)])
        expected = ids(await everything(engine))
        for oldest_first in (False, True):
            pages = await page_through(engine, limit=5, oldest_first=oldest_first)
            assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
            listed = [r.run_id for p in pages for r in p]
            assert listed == (expected if oldest_first else expected[::-1])

    async def test_a_last_page_that_is_exactly_full_has_no_next_cursor(self, engine: Any) -> None:
        await start_named(engine, [f"run-{n:02}" for n in range(8)])
        pages = await page_through(engine, limit=4)
        assert [len(p) for p in pages] == [4, 4]
        page = await engine.list_runs(limit=8)
        assert len(page) == 8 and page.next_cursor is None

    async def test_runs_started_between_pages_cause_no_duplicate_and_no_gap(
        self, engine: Any
    ) -> None:
        await start_named(engine, [f"old-{n:02}" for n in range(12)])
        existing = ids(await everything(engine))
        counter = iter(range(1000))

        async def start_more(_page: int) -> None:
            # "zz-" sorts after the old ids, so a run created in the same clock tick
            # as the cursor's run (SQLite's clock has millisecond steps) still sorts after it.
            await start_named(engine, [f"zz-new-{next(counter):03}" for _ in range(3)])

        newest = [r.run_id for p in await page_through(engine, start_more, limit=4) for r in p]
        assert len(newest) == len(set(newest))
        assert [r for r in newest if r.startswith("old-")] == existing[::-1]

        before = set(ids(await everything(engine)))
        oldest = [
            r.run_id
            for p in await page_through(engine, start_more, limit=4, oldest_first=True)
            for r in p
        ]
        assert len(oldest) == len(set(oldest))
        assert [r for r in oldest if r.startswith("old-")] == existing
        # Oldest first, runs started meanwhile come at the end, so paging reaches them.
        assert set(oldest) >= before
        assert oldest[: len(existing)] == existing
        assert len(oldest) > len(before)

    async def test_engine_filters(self, engine: Any) -> None:
        @workflow(name="beta", registry=Registry())
        async def beta(ctx: Any) -> None:
            pass

        await start_named(engine, ["a-1", "a-2", "shared-1"], "alpha")
        await start_named(engine, ["b-1", "shared-2", "b-2"], "beta")
        runs = await everything(engine)
        newest = ids(runs)[::-1]
        assert ids(await engine.list_runs(workflow="alpha")) == [
            r for r in newest if r.startswith(("a-", "shared-1"))
        ]
        assert ids(await engine.list_runs(workflow=beta)) == [
            r for r in newest if r.startswith(("b-", "shared-2"))
        ]
        assert ids(await engine.list_runs(run_id_prefix="shared-")) == [
            r for r in newest if r.startswith("shared-")
        ]
        assert ids(
            await engine.list_runs(status="pending", workflow="beta", run_id_prefix="b-")
        ) == [r for r in newest if r.startswith("b-")]
        assert await engine.list_runs(status=RunStatus.COMPLETED) == []

        # Times: seconds since the epoch, or timezone-aware datetimes (microseconds).
        lo, hi = runs[1].created_at, runs[4].created_at
        assert ids(
            await engine.list_runs(created_after=lo, created_before=hi, oldest_first=True)
        ) == [r.run_id for r in runs if lo <= r.created_at < hi]
        lo_dt = dt.datetime.fromtimestamp(lo, tz=dt.UTC)
        hi_dt = dt.datetime.fromtimestamp(hi, tz=dt.UTC).astimezone(
            dt.timezone(dt.timedelta(hours=-5))
        )
        assert ids(await engine.list_runs(created_after=lo_dt, created_before=hi_dt)) == [
            r.run_id for r in runs[::-1] if lo_dt.timestamp() <= r.created_at < hi_dt.timestamp()
        ]
        far = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
        assert await engine.list_runs(created_after=far) == []
        assert ids(await engine.list_runs(created_before=far)) == newest

    async def test_filtered_pages_cover_the_filtered_runs_once(self, engine: Any) -> None:
        await start_named(engine, [f"job-{n:02}" for n in range(9)], "alpha")
        await start_named(engine, [f"job-{n:02}-x" for n in range(9)], "beta")
        runs = await everything(engine)
        lo = runs[2].created_at
        options = {"workflow": "beta", "run_id_prefix": "job-0", "created_after": lo, "limit": 2}
        listed = [r.run_id for p in await page_through(engine, **options) for r in p]
        assert listed == [
            r.run_id
            for r in runs[::-1]
            if r.workflow == "beta" and r.run_id.startswith("job-0") and r.created_at >= lo
        ]

    @pytest.mark.parametrize(
        ("options", "names"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": -3}, "limit"),
            ({"limit": 2.5}, "limit"),
            ({"limit": True}, "limit"),
            ({"limit": "10"}, "limit"),
            ({"status": "finished"}, "status"),
            ({"workflow": ""}, "workflow"),
            ({"workflow": 3}, "workflow"),
            ({"workflow": SimpleNamespace(name="wf")}, "workflow"),
            ({"run_id_prefix": 7}, "run_id_prefix"),
            ({"created_after": dt.datetime(2025, 1, 1)}, "created_after"),
            ({"created_before": dt.datetime(2025, 1, 1)}, "created_before"),
            ({"created_after": "2025-01-01"}, "created_after"),
            ({"created_after": float("nan")}, "created_after"),
            ({"created_after": 200.0, "created_before": 100.0}, "created_after"),
            ({"oldest_first": "yes"}, "oldest_first"),
            ({"cursor": ""}, "cursor"),
            ({"cursor": 12}, "cursor"),
            ({"cursor": "not-a-cursor"}, "cursor"),
            ({"cursor": "WzEsMS4wLCJyIiwieCJd"}, "cursor"),  # a well-formed list, wrong digest
            ({"cursor": "é"}, "cursor"),
        ],
        ids=lambda v: v if isinstance(v, str) else None,
    )
    async def test_bad_options_are_refused_naming_the_option(
        self, engine: Any, options: Any, names: Any
    ) -> None:
        await start_named(engine, ["r1", "r2"])
        before = await everything(engine)
        with pytest.raises(ValueError, match=names):
            await engine.list_runs(**options)
        assert await everything(engine) == before

    async def test_a_cursor_only_fits_the_query_that_made_it(self, engine: Any) -> None:
        await start_named(engine, [f"r{n}" for n in range(5)], "alpha")
        page = await engine.list_runs(workflow="alpha", limit=2)
        assert page.next_cursor is not None
        for other in (
            {},
            {"workflow": "beta"},
            {"workflow": "alpha", "oldest_first": True},
            {"workflow": "alpha", "run_id_prefix": "r"},
            {"workflow": "alpha", "status": "pending"},
            {"workflow": "alpha", "created_after": 0.0},
        ):
            with pytest.raises(ValueError, match="cursor belongs to a list_runs call with other"):
                await engine.list_runs(cursor=page.next_cursor, **other)
        # The page size may change from page to page.
        rest = await engine.list_runs(workflow="alpha", limit=10, cursor=page.next_cursor)
        assert ids(page) + ids(rest) == ids(await engine.list_runs(workflow="alpha"))
        # A cursor tampered with is refused too.
        with pytest.raises(ValueError, match="cursor"):
            await engine.list_runs(workflow="alpha", cursor=page.next_cursor[:-3])

    async def test_the_page_is_a_list_for_existing_callers(self, engine: Any) -> None:
        await start_named(engine, ["r1", "r2", "r3"])
        page = await engine.list_runs(limit=2)
        # A RunPage is a list subclass: narrowed to list, it still has next_cursor.
        assert isinstance(page, list) and len(page) == 2 and page.next_cursor  # type: ignore[attr-defined]
        assert page == list(page) and [r.run_id for r in page] == ids(page)
        assert "next_cursor=" in repr(page)
        everything_page = await engine.list_runs()
        assert everything_page.next_cursor is None and len(everything_page) == 3
