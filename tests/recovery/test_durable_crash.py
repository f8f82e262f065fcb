"""Kill -9 a worker while a run sleeps, waits for a signal, waits on a child, or cleans up.

Each test drives a workflow of durable_worker.py in a worker process on a
SQLite file, watches the journal (or the side-effect log) from here until the
run reaches the moment under test, SIGKILLs the process, and starts a fresh
one on the same file. The fresh process has the same worker id, so it takes
its runs back at once. Then:

- the run finishes with the right result;
- what the journal held at the kill is a prefix of what it holds at the end;
- a step recorded as completed before the kill never ran again, and every
  step is recorded as completed exactly once. A step in flight at the kill
  runs again, with the next attempt number.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import durable_worker
import pytest

from continuum_py import (
    Context,
    Engine,
    JournalUnavailable,
    Registry,
    RunCancelled,
    RunStatus,
    workflow,
)
from continuum_py.adapters.sqlite import SQLiteJournal
from continuum_py.events import (
    AnyEvent,
    CancelRequested,
    ChildCompleted,
    ChildStarted,
    RunCancelledEvent,
    RunCompleted,
    RunSuspended,
    SignalReceived,
    SignalWaitStarted,
    StepCompleted,
    StepScheduled,
    TimerFired,
    TimerStarted,
)

WORKER = Path(__file__).with_name("durable_worker.py")
RUN = "durable-run"

pytestmark = pytest.mark.slow

LogLine = tuple[str, int, int, str]  # run_id, position, attempt, step label


class Env:
    """A SQLite journal, a side-effect log, a gate file, worker processes and a client."""

    def __init__(self, tmp: Path, client: Engine) -> None:
        self.tmp = tmp
        self.db = tmp / "journal.db"
        self.log = tmp / "effects.log"
        self.gate = tmp / "gate"
        self.client = client
        self.procs: list[subprocess.Popen[bytes]] = []

    # ---- worker processes ----
    def spawn(self, workflow: str, *extra: object) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        argv = [sys.executable, str(WORKER), workflow, str(self.db), str(self.log)]
        argv += [str(self.gate), RUN, *map(str, extra)]
        with (
            (self.tmp / f"gen{n}.out").open("wb") as out,
            (self.tmp / f"gen{n}.err").open("wb") as err,
        ):
            proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=self.tmp)
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> tuple[str, str]:
        n = self.procs.index(proc)
        return (self.tmp / f"gen{n}.out").read_text(), (self.tmp / f"gen{n}.err").read_text()

    async def kill(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.poll() is None, f"the worker ended before the kill: {self.output(proc)}"
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(proc.wait, 10) == -signal.SIGKILL

    async def finish(self, proc: subprocess.Popen[bytes]) -> Any:
        rc = await asyncio.to_thread(proc.wait, 30)
        out, err = self.output(proc)
        assert rc == 0, (rc, out, err)
        return json.loads(out)

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)

    # ---- what happened ----
    def read_log(self) -> list[LogLine]:
        if not self.log.exists():
            return []
        text = self.log.read_text()
        assert text == "" or text.endswith("\n"), f"torn side-effect line: {text[-40:]!r}"
        lines = [line.split() for line in text.splitlines()]
        return [(run, int(pos), int(attempt), name) for run, pos, attempt, name in lines]

    async def history(self, run_id: str = RUN) -> list[AnyEvent]:
        return await self.client.history(run_id)

    async def status(self, run_id: str = RUN) -> RunStatus | None:
        runs = {r.run_id: r.status for r in await self.client.list_runs()}
        return runs.get(run_id)

    async def until(
        self, proc: subprocess.Popen[bytes], what: str, check: Callable[[], Awaitable[bool]]
    ) -> None:
        """Poll ``check`` until it holds; fail if the worker exits first or after 20 s."""
        try:
            async with asyncio.timeout(20):
                while not await check():
                    assert proc.poll() is None, (
                        f"the worker ended before {what}: {self.output(proc)}"
                    )
                    await asyncio.sleep(0.005)
        except TimeoutError:
            pytest.fail(f"never saw {what}; worker output: {self.output(proc)}")

    def logged(self, name: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return any(n == name for *_, n in self.read_log())

        return check

    def in_status(self, status: RunStatus, run_id: str = RUN) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await self.status(run_id) == status

        return check


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with Engine(
        f"sqlite:///{tmp_path / 'journal.db'}", worker=False, registry=durable_worker.REG
    ) as client:
        e = Env(tmp_path, client)
        try:
            yield e
        finally:
            e.cleanup()


async def check_recovery(
    env: Env, before: dict[str, list[AnyEvent]], log_at_kill: list[LogLine]
) -> dict[str, list[AnyEvent]]:
    """The guarantees after a kill; returns each run's final history."""
    after = {run_id: await env.history(run_id) for run_id in before}
    lines = env.read_log()
    assert lines[: len(log_at_kill)] == log_at_kill
    for run_id, old in before.items():
        new = after[run_id]
        # Nothing recorded was lost or changed.
        assert new[: len(old)] == old, f"{run_id}: history before the kill is not a prefix"
        assert [e.seq for e in new] == list(range(1, len(new) + 1))
        # Every step completed exactly once, with the attempt that ran last.
        completed = collections.Counter(e.position for e in new if isinstance(e, StepCompleted))
        assert set(completed.values()) <= {1}, f"{run_id}: a step was completed twice"
        done_before = {e.position for e in old if isinstance(e, StepCompleted)}
        in_flight = {
            e.position: e.attempt
            for e in old
            if isinstance(e, StepScheduled) and e.position not in done_before
        }
        for _, position, attempt, name in (
            ln for ln in lines[len(log_at_kill) :] if ln[0] == run_id
        ):
            assert position not in done_before, f"{run_id}: {name} completed, then ran again"
            assert attempt == in_flight.get(position, 0) + 1, (run_id, name, attempt)
        ran_last = {(p, a) for r, p, a, _ in lines if r == run_id}
        for e in new:
            if isinstance(e, StepCompleted):
                assert (e.position, e.attempt) in ran_last
    return after


def steps_ran(lines: list[LogLine], run_id: str = RUN) -> dict[str, list[int]]:
    """Attempts each step body ran, by step label, from the side-effect log."""
    out: dict[str, list[int]] = collections.defaultdict(list)
    for r, _, attempt, name in lines:
        if r == run_id:
            out[name].append(attempt)
    return dict(out)


def kinds(history: list[AnyEvent]) -> list[str]:
    return [type(e).__name__ for e in history]


# ---- a: crash while sleeping ----


async def test_crash_while_sleeping_resumes_when_the_timer_is_due(env: Env):
    env.gate.touch()
    first = env.spawn("sleeper", 1.5)
    await env.until(first, "the run suspended", env.in_status(RunStatus.SUSPENDED))
    await env.kill(first)
    before = {RUN: await env.history()}
    log_at_kill = env.read_log()
    timer = before[RUN][-2]
    assert isinstance(timer, TimerStarted) and isinstance(before[RUN][-1], RunSuspended)
    record = await (await env.client.get(RUN)).record()
    assert (record.status, record.wake_at) == (RunStatus.SUSPENDED, timer.fire_at)

    second = env.spawn("sleeper", 1.5)
    assert await env.finish(second) == ["before@1", "after@3"]

    after = await check_recovery(env, before, log_at_kill)
    fired = [e for e in after[RUN] if isinstance(e, TimerFired)]
    assert len(fired) == 1 and fired[0].position == timer.position
    assert fired[0].at >= timer.fire_at  # not before it was due
    assert isinstance(after[RUN][-1], RunCompleted)
    assert steps_ran(env.read_log()) == {"before": [1], "after": [1]}


# ---- b: crash while waiting for a signal ----


async def test_signal_sent_while_no_worker_runs_is_delivered_after_restart(env: Env):
    env.gate.touch()
    first = env.spawn("approver")
    await env.until(first, "the run suspended", env.in_status(RunStatus.SUSPENDED))
    await env.kill(first)
    before = {RUN: await env.history()}
    log_at_kill = env.read_log()
    assert kinds(before[RUN])[-2:] == ["SignalWaitStarted", "RunSuspended"]

    # No worker runs: the signal is durable in the run's inbox.
    await env.client.signal(RUN, "approve", {"by": "test", "ok": True})
    record = await (await env.client.get(RUN)).record()
    assert record.status == RunStatus.SUSPENDED
    assert record.inbox_last > record.inbox_seen

    second = env.spawn("approver")
    result = await env.finish(second)
    assert result == {
        "prepared": "prepare@1",
        "decision": {"by": "test", "ok": True},
        "done": "finish@3",
    }
    after = await check_recovery(env, before, log_at_kill)
    received = [e for e in after[RUN] if isinstance(e, SignalReceived)]
    assert len(received) == 1 and received[0].name == "approve"
    assert steps_ran(env.read_log()) == {"prepare": [1], "finish": [1]}


async def test_signal_sent_before_the_wait_begins_is_kept_across_a_crash(env: Env):
    # The gate is shut: the worker is killed inside the step before the wait.
    first = env.spawn("approver")
    await env.until(first, "the prepare step running", env.logged("prepare"))
    await env.kill(first)
    before = {RUN: await env.history()}
    log_at_kill = env.read_log()
    assert not any(isinstance(e, SignalWaitStarted) for e in before[RUN])

    await env.client.signal(RUN, "approve", "early")
    env.gate.touch()
    second = env.spawn("approver")
    result = await env.finish(second)
    assert result == {"prepared": "prepare@1", "decision": "early", "done": "finish@3"}
    after = await check_recovery(env, before, log_at_kill)
    received = next(e for e in after[RUN] if isinstance(e, SignalReceived))
    wait = next(e for e in after[RUN] if isinstance(e, SignalWaitStarted))
    assert received.seq < wait.seq  # recorded before the code asked for it
    # The step in flight at the kill ran again, with attempt 2; the others once.
    assert steps_ran(env.read_log()) == {"prepare": [1, 2], "finish": [1]}


# ---- c: crash during a child run ----


async def test_crash_while_the_child_runs_a_step_completes_parent_and_child(env: Env):
    child = f"{RUN}.2"  # the parent's position 2 starts it
    first = env.spawn("shipper")
    await env.until(first, "the child's pack step running", env.logged("pack"))
    await env.kill(first)
    before = {RUN: await env.history(), child: await env.history(child)}
    log_at_kill = env.read_log()
    assert any(isinstance(e, ChildStarted) for e in before[RUN])
    assert kinds(before[child])[-1] == "StepScheduled"

    env.gate.touch()
    second = env.spawn("shipper")
    result = await env.finish(second)
    assert result == {
        "order": "order@1",
        "packed": ["pick@1", "pack@2", "label@3"],
        "shipped": "ship@3",
    }
    after = await check_recovery(env, before, log_at_kill)
    assert isinstance(after[child][-1], RunCompleted)
    completions = [e for e in after[RUN] if isinstance(e, ChildCompleted)]
    assert len(completions) == 1 and completions[0].ok and completions[0].child_run_id == child
    assert [e.step for e in after[child] if isinstance(e, StepCompleted)] == [
        "work",
        "gated_work",
        "work",
    ]
    lines = env.read_log()
    assert steps_ran(lines, child) == {"pick": [1], "pack": [1, 2], "label": [1]}
    assert steps_ran(lines, RUN) == {"order": [1], "ship": [1]}


# ---- d: crash during cancellation ----


async def test_crash_during_cleanup_after_cancel_ends_cancelled_with_cleanup_once(env: Env):
    first = env.spawn("holder")
    await env.until(first, "the run suspended", env.in_status(RunStatus.SUSPENDED))
    await env.client.cancel(RUN)
    await env.until(first, "the cleanup step running", env.logged("cleanup"))
    await env.kill(first)
    before = {RUN: await env.history()}
    log_at_kill = env.read_log()
    assert any(isinstance(e, CancelRequested) for e in before[RUN])
    assert kinds(before[RUN])[-1] == "StepScheduled"

    env.gate.touch()
    second = env.spawn("holder")
    assert await env.finish(second) == {"cancelled": "cancel", "compensations": []}
    after = await check_recovery(env, before, log_at_kill)
    history = after[RUN]
    assert await env.status() == RunStatus.CANCELLED
    assert isinstance(history[-1], RunCancelledEvent)
    assert sum(isinstance(e, CancelRequested) for e in history) == 1
    cleanups = [e for e in history if isinstance(e, StepCompleted) and e.step == "gated_work"]
    assert len(cleanups) == 1 and cleanups[0].attempt == 2
    assert steps_ran(env.read_log()) == {"hold": [1], "cleanup": [1, 2]}
    with pytest.raises(RunCancelled):
        await (await env.client.get(RUN)).result(timeout=5)


# ---- a known gap: a parent's cancel lost on its way to the child ----

lost = Registry()


@workflow(name="napper", registry=lost)
async def napper(ctx: Context) -> str:
    await ctx.sleep(3600)
    return "woke"


@workflow(name="nap_parent", registry=lost)
async def nap_parent(ctx: Context) -> str:
    return await napper()


class DiesBeforeChildCancel(SQLiteJournal):
    """Refuses the cancel a parent sends its child, as if the worker died just before it."""

    async def send(self, run_id: str, kind: str, name: str, data: bytes) -> int:
        if kind == "cancel" and run_id == "p.1":
            raise JournalUnavailable("the worker died before the child's cancel was sent")
        return await super().send(run_id, kind, name, data)


async def test_a_cancel_lost_between_parent_end_and_child_is_still_delivered(tmp_path: Path):
    db = tmp_path / "journal.db"
    opts: dict[str, Any] = {"worker_id": "w", "registry": lost, "hold": 0.0, "poll_interval": 0.05}
    async with Engine(journal=DiesBeforeChildCancel(str(db)), **opts) as first:
        parent = await first.start("nap_parent", run_id="p")
        async with asyncio.timeout(10):
            while {r.status for r in await first.list_runs()} != {RunStatus.SUSPENDED}:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        await first.cancel("p")
        # The child's cancel cannot be sent, so the parent must not end yet.
        with pytest.raises(TimeoutError):
            await parent.result(timeout=0.5)
        assert not (await parent.status()).terminal
    # A fresh worker on the same journal sends it: both end cancelled.
    async with Engine(f"sqlite:///{db}", **opts) as second:
        with pytest.raises(RunCancelled):
            await (await second.get("p")).result(timeout=5)
        with pytest.raises(RunCancelled):
            await (await second.get("p.1")).result(timeout=5)
