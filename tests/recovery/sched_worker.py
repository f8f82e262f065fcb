"""A worker process for the multi-process schedule test: declares its schedule, then fires it.

Usage: ``python sched_worker.py URL WORKER_ID LOG``. Each fire's run has one
step that appends ``run_id worker_id`` to LOG (O_APPEND, one write and fsync
per line), and once its schedule is declared, ``worker_id`` to LOG.ready.
Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys

from continuum_py import Context, Engine, Registry, step, workflow

reg = Registry()
SCHEDULE = {"cron": "* * * * *", "catchup": 86400.0, "overlap": "allow"}


def append_line(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@step
async def record(log: str, run_id: str) -> None:
    append_line(log, f"{run_id} {os.environ['SCHED_WORKER_ID']}\n")


@workflow(registry=reg)
async def minutely(ctx: Context, log: str, at: dt.datetime) -> None:
    await record(log, ctx.run_id)


async def main(url: str, worker_id: str, log: str) -> None:
    os.environ["SCHED_WORKER_ID"] = worker_id
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Engine(url, registry=reg, worker_id=worker_id, poll_interval=0.05) as eng:
        await eng.schedule("mp", minutely, log, **SCHEDULE)
        append_line(f"{log}.ready", f"{worker_id}\n")
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
