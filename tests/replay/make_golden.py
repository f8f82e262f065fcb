"""Record the golden histories of ``golden_workflows.GOLDEN_RUNS`` into ``histories/``.

Run from the repository root::

    .venv/bin/python tests/replay/make_golden.py [NAME ...]

With no names it records every golden; an existing file is overwritten only
when named explicitly or with ``--force``, so a golden recorded by an older
version stays as it was (that is its point). Hand-written goldens (such as
``nondeterministic_renamed_step.json``) are never touched. The tests never
run this script: goldens are committed files.

Timestamps are zeroed and tracebacks dropped, so recording twice gives the
same bytes and files do not carry the recording machine's paths. Durable time
is a :class:`~continuum_py.testing.VirtualClock` that starts at a fixed
instant, so timer deadlines come out the same each time; ``ctx.random`` and
``ctx.uuid4`` are seeded by the golden's name while recording (a replay reads
the recorded values back, whatever they are).

Most goldens are one run, started and waited for. Those in :data:`SCENARIOS`
are driven: a signal sent while the run waits, a cancel, a child run, ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import random
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))

import golden_workflows as golden

from continuum_py import Engine, RunCancelled, RunFailed, RunHandle, RunStatus
from continuum_py.events import ErrorInfo, RunCancelledEvent, RunFailedEvent, StepFailed
from continuum_py.testing import VirtualClock, dump_history

HISTORIES = Path(__file__).resolve().parent / "histories"
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
"""Where the virtual clock starts."""

Drive = Callable[[Engine, VirtualClock, str], Awaitable[str]]
"""Drives golden ``name``'s scenario; returns the id of the run to record."""


# ---- scenarios: how a golden's run is driven ----


async def start(engine: Engine, name: str, **kwargs: Any) -> RunHandle[Any]:
    """Start the run of golden ``name`` (id ``golden-NAME``)."""
    workflow, args = golden.GOLDEN_RUNS[name]
    return await engine.start(workflow, *args, run_id=f"golden-{name}", **kwargs)


async def until_status(handle: RunHandle[Any], status: RunStatus) -> None:
    async with asyncio.timeout(10):
        while await handle.status() != status:  # noqa: ASYNC110 - no event to await
            await asyncio.sleep(0.002)


async def started(engine: Engine, clock: VirtualClock, name: str) -> str:
    return (await start(engine, name)).run_id


def signal_while_waiting(signal: str, payload: object) -> Drive:
    async def drive(engine: Engine, clock: VirtualClock, name: str) -> str:
        handle = await start(engine, name)
        await until_status(handle, RunStatus.SUSPENDED)  # the wait is recorded
        await handle.signal(signal, payload)
        return handle.run_id

    return drive


async def signal_before_start(engine: Engine, clock: VirtualClock, name: str) -> str:
    # The run is not due yet: the signal waits in its inbox until it starts.
    handle = await start(engine, name, delay=60)
    await handle.signal("approve", "early")
    await clock.advance(60)
    return handle.run_id


async def cancel_while_sleeping(engine: Engine, clock: VirtualClock, name: str) -> str:
    handle = await start(engine, name)
    await until_status(handle, RunStatus.SUSPENDED)
    await handle.cancel()
    return handle.run_id


async def signals_before_start(engine: Engine, clock: VirtualClock, name: str) -> str:
    # All four are waiting when the run starts: each wait_first finds both of its
    # waits answered at once, and the losing "exit" wait gives its signal back.
    handle = await start(engine, name, delay=60)
    for name_, payload in [("item", "a"), ("item", "b"), ("exit", "bye")]:
        await handle.signal(name_, payload)
    await clock.advance(60)
    return handle.run_id


async def terminate_while_sleeping(engine: Engine, clock: VirtualClock, name: str) -> str:
    handle = await start(engine, name)
    await until_status(handle, RunStatus.SUSPENDED)
    await engine.terminate(handle.run_id, "no longer needed")
    return handle.run_id


async def child_of_parent(engine: Engine, clock: VirtualClock, name: str) -> str:
    # The child of the run the "child_parent" golden records.
    parent = await start(engine, "child_parent")
    await parent.result(timeout=30)
    return f"{parent.run_id}.1"


async def last_link(engine: Engine, clock: VirtualClock, name: str) -> str:
    # The run the "continued_as_new" golden's run continued as.
    first = await start(engine, "continued_as_new")
    await first.result(timeout=30)
    return f"{first.run_id}~2"


@dataclass(frozen=True)
class Scenario:
    """How a golden's run is recorded.

    Attributes:
        drive: starts and drives the run (default: start it).
        auto_advance: whether the virtual clock skips idle time by itself;
            ``False`` where a signal or a cancel must come before a timer fires.
    """

    drive: Drive = started
    auto_advance: bool = True


SCENARIOS: dict[str, Scenario] = {
    "signal_received": Scenario(signal_while_waiting("approve", "yes"), auto_advance=False),
    "signal_before_wait": Scenario(signal_before_start, auto_advance=False),
    "race_signal_wins": Scenario(signal_while_waiting("go", "now"), auto_advance=False),
    "cancelled_with_cleanup": Scenario(cancel_while_sleeping, auto_advance=False),
    "child_child": Scenario(child_of_parent),
    "continued_last_link": Scenario(last_link),
    "signals_given_back": Scenario(signals_before_start, auto_advance=False),
    "terminated_while_sleeping": Scenario(terminate_while_sleeping, auto_advance=False),
    "saga_cancelled": Scenario(cancel_while_sleeping, auto_advance=False),
}
"""Goldens recorded other than by starting the run and waiting for its end."""


# ---- recording ----


def _portable(event: msgspec.Struct) -> msgspec.Struct:
    changes: dict[str, object] = {"at": 0.0}
    if isinstance(event, StepFailed | RunFailedEvent):
        err: ErrorInfo = event.error
        changes["error"] = msgspec.structs.replace(err, traceback="")
    if isinstance(event, RunFailedEvent | RunCancelledEvent):
        changes["compensations"] = [
            msgspec.structs.replace(c, error=msgspec.structs.replace(c.error, traceback=""))
            if c.error
            else c
            for c in event.compensations
        ]
    return msgspec.structs.replace(event, **changes)


@contextlib.contextmanager
def _seeded(name: str) -> Iterator[None]:
    rng = random.Random(name)
    random.seed(name)
    real = uuid.uuid4
    uuid.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)  # ctx.uuid4 calls this
    try:
        yield
    finally:
        uuid.uuid4 = real


async def record(name: str) -> bytes:
    scenario = SCENARIOS.get(name, Scenario())
    registry = golden.RECORDED_BY.get(name, golden.registry)
    clock = VirtualClock(START, auto_advance=scenario.auto_advance)
    async with Engine("memory://", registry=registry, worker_id="golden", clock=clock) as engine:
        run_id = await scenario.drive(engine, clock, name)
        with contextlib.suppress(RunFailed, RunCancelled):  # these end goldens too
            await (await engine.get(run_id)).result(timeout=30)
        events = await engine.history(run_id)
    return dump_history([_portable(e) for e in events]) + b"\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(golden.GOLDEN_RUNS))
    parser.add_argument("--force", action="store_true", help="overwrite existing goldens")
    opts = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    unknown = sorted(set(opts.names) - set(golden.GOLDEN_RUNS))
    if unknown:
        parser.error(f"unknown golden(s): {', '.join(unknown)}")
    HISTORIES.mkdir(exist_ok=True)
    for name in opts.names or golden.GOLDEN_RUNS:
        path = HISTORIES / f"{name}.json"
        if path.exists() and not (opts.force or opts.names):
            print(f"kept     {path.name}")
            continue
        with _seeded(name):
            data = asyncio.run(record(name))
        path.write_bytes(data)
        print(f"recorded {path.name}")


if __name__ == "__main__":
    main()
