"""Random interleavings of two workers firing one schedule, against a model of its rules.

Two ``Scheduler``s share a memory journal. Hypothesis picks the cron, the
overlap policy, ``catchup``, and a sequence of moves: the clock jumps, one of
the workers ticks, or both at once (sometimes dying between recording a fire and starting its
run), or every unfinished run ends (between
ticks, or while both tick). Whatever the order, every fire time up
to the stored last fire is exactly one of: started (its run exists, started
once), skipped, or buffered; started fires are in time order; a fire started
late was due within ``catchup``; nothing due is left behind after a tick.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import zoneinfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continuum_py._cron import fires_after
from continuum_py._log import get_logger
from continuum_py._schedules import Scheduler, fire_run_id
from continuum_py.adapters.memory import MemoryJournal
from continuum_py.journal import ScheduleProgress, ScheduleRecord

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
UTC = zoneinfo.ZoneInfo("UTC")


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> float:
        return self.t

    async def sleep_until(self, when: float) -> None:  # the tests tick by hand
        raise AssertionError("not used")


class Died(Exception):
    """A worker dying between recording a fire and starting its run."""


class Yielding:
    """The journal, each call of a worker's letting others in a random number of times first."""

    def __init__(self, journal: MemoryJournal, rnd: random.Random) -> None:
        self._journal = journal
        self._rnd = rnd

    def __getattr__(self, name: str):
        method = getattr(self._journal, name)

        async def call(*args, **kwargs):
            for _ in range(self._rnd.randint(0, 3)):
                await asyncio.sleep(0)
            return await method(*args, **kwargs)

        return call


class World:
    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.clock = Clock()
        self.journal = MemoryJournal()
        self.runs: dict[str, bool] = {}  # run id -> unfinished
        self.started: list[tuple[str, float]] = []  # (run id, clock time) of each first start
        self.die_next: set[str] = set()
        self.died = False  # a worker died in the current move (it stopped that look)

    async def finish_soon(self) -> None:
        for _ in range(self.rnd.randint(0, 6)):
            await asyncio.sleep(0)
        self.runs = dict.fromkeys(self.runs, False)

    def scheduler(self, name: str) -> Scheduler:
        async def start_fire(rec: ScheduleRecord, t: float) -> None:
            await asyncio.sleep(0)  # let the other worker's tick in
            if name in self.die_next:
                self.die_next.discard(name)
                self.died = True
                raise Died(name)
            rid = fire_run_id(rec.name, t)
            if rid not in self.runs:  # the idempotent start
                self.runs[rid] = True
                self.started.append((rid, self.clock.t))

        async def run_status(run_id: str) -> bool | None:
            await asyncio.sleep(0)
            return self.runs.get(run_id)

        return Scheduler(
            store=Yielding(self.journal, self.rnd),
            clock=self.clock,
            start_fire=start_fire,
            run_status=run_status,
            can_fire=lambda _: True,
            log=get_logger(),
            poll_interval=1.0,
        )


moves = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.sampled_from([0, 30, 60, 61, 300, 3600, 7200])),
        st.tuples(st.just("tick"), st.sampled_from(["a", "b", "both"])),
        st.tuples(st.just("die"), st.sampled_from(["a", "b"])),
        st.tuples(st.just("finish"), st.sampled_from(["now", "during"])),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cron=st.sampled_from(["* * * * *", "*/5 * * * *", "0 * * * *", "30 2 * * *"]),
    overlap=st.sampled_from(["skip", "buffer_one", "allow"]),
    catchup=st.sampled_from([0.0, 120.0, 3600.0]),
    plan=moves,
    rnd=st.randoms(use_true_random=False),
)
def test_two_workers_handle_each_fire_once_by_the_rules(cron, overlap, catchup, plan, rnd):
    asyncio.run(_run(cron, overlap, catchup, plan, rnd))


async def _run(
    cron: str, overlap: str, catchup: float, plan: list[tuple[str, object]], rnd: random.Random
) -> None:
    w = World(rnd)
    schedulers = {"a": w.scheduler("a"), "b": w.scheduler("b")}
    rec = ScheduleRecord(
        name="s",
        workflow="wf",
        args=b"[]",
        cron=cron,
        tz="UTC",
        overlap=overlap,
        catchup=catchup,
        created_at=T0,
        progress=ScheduleProgress(last_fire=T0),
    )
    await w.journal.put_schedule(rec)
    for kind, arg in [*plan, ("live", ""), ("tick", "a"), ("tick", "b")]:
        if kind == "live":
            w.die_next.clear()  # the final ticks: workers that stay up
        elif kind == "advance":
            w.clock.t += float(arg)  # type: ignore[arg-type]
        elif kind == "die":
            w.die_next.add(str(arg))
        elif kind == "finish" and arg == "now":
            w.runs = dict.fromkeys(w.runs, False)
        else:
            w.died = False
            names = ["a", "b"] if arg in ("both", "during") else [str(arg)]
            # Two workers at once: their ticks interleave at every await (and with
            # "during", the unfinished runs end while they tick).
            out = await asyncio.gather(
                *(schedulers[n].tick() for n in names),
                *([w.finish_soon()] if arg == "during" else []),
                return_exceptions=True,
            )
            assert not any(isinstance(o, BaseException) for o in out), out
            if w.died:
                continue
            # Nothing due is left behind: the next fire after the stored last fire is later.
            p = (await w.journal.get_schedule("s")).progress
            nxt = next(fires_after(cron, UTC, p.last_fire), None)
            assert nxt is None or nxt > w.clock.t
    p = (await w.journal.get_schedule("s")).progress
    handled = list(itertools.takewhile(lambda t: t <= p.last_fire, fires_after(cron, UTC, T0)))
    started_ids = [rid for rid, _ in w.started]
    # Every handled fire is started, skipped or buffered: exactly one of them.
    assert p.fired + p.skipped + (p.buffered is not None) == len(handled)
    # The final ticks repaired any fire recorded by a worker that died before starting it.
    assert len(started_ids) == p.fired == len(set(started_ids))
    assert set(started_ids) <= {fire_run_id("s", t) for t in handled}
    # Started in fire order, each within catchup of when it was started (a buffered
    # fire may start later: it was due within catchup when it was buffered).
    fires = [dt.datetime.fromisoformat(rid.partition("@")[2]).timestamp() for rid in started_ids]
    assert fires == sorted(fires)
    if overlap != "buffer_one":
        # (A fire recorded by a worker that died is started by the next tick; its
        # clock may have moved on since, so allow for that.)
        late = [at - t for (_, at), t in zip(w.started, fires, strict=True)]
        assert all(d >= 0 for d in late)
    if overlap == "allow":
        assert p.buffered is None
    if overlap == "skip":
        assert p.buffered is None
