"""Child process of test_grouped_writes_kill.py: starts runs on a SQLite journal, 50 at a time.

``python group_writer.py DB PREFIX`` starts runs ``PREFIX0``, ``PREFIX1``, ... forever, 50 in
flight at a time (so their transactions group), plus one at a time between the
waves (so some commit on the event loop's thread), and prints each run's id on
stdout the moment its start returned. The parent kills it with SIGKILL.
``python group_writer.py DB PREFIX EVERY`` also has the journal checkpoint its WAL
after the first EVERY commits (instead of the default count), so kills land
around checkpoints too.
"""

from __future__ import annotations

import asyncio
import sys

from continuum_py.adapters import _sqlite_writes
from continuum_py.adapters.sqlite import SQLiteJournal
from continuum_py.journal import NewRun, StoredEvent


def new_run(run_id: str) -> NewRun:
    first = StoredEvent(run_id=run_id, seq=1, kind="RunStarted", schema=1, data=b"{}")
    return NewRun(run_id=run_id, workflow="w", first_event=first)


async def main(path: str, prefix: str) -> None:
    async with SQLiteJournal(path) as j:
        n = 0

        async def start(run_id: str) -> None:
            await j.start_run(new_run(run_id))
            sys.stdout.write(run_id + "\n")
            sys.stdout.flush()

        while True:
            await asyncio.gather(*(start(f"{prefix}{n + i}") for i in range(50)))
            n += 50
            await start(f"{prefix}{n}")  # alone: on the loop's thread
            n += 1


if __name__ == "__main__":
    if len(sys.argv) > 3:
        _sqlite_writes.CHECKPOINT_EVERY = int(sys.argv[3])
    asyncio.run(main(sys.argv[1], sys.argv[2]))
