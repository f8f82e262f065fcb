"""Record the golden histories of ``golden_workflows.GOLDEN_RUNS`` into ``histories/``.

Run from the repository root::

    .venv/bin/python tests/replay/make_golden.py [NAME ...]

With no names it records every golden; an existing file is overwritten only
when named explicitly or with ``--force``, so a golden recorded by an older
version stays as it was (that is its point). Hand-written goldens (such as
``nondeterministic_renamed_step.json``) are never touched. The tests never
run this script: goldens are committed files.

Timestamps are zeroed and tracebacks dropped, so recording twice gives the
same bytes and files do not carry the recording machine's paths.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

import msgspec
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))

import golden_workflows as golden

from continuum_py import Engine, RunFailed
from continuum_py.events import ErrorInfo, StepFailed
from continuum_py.events import RunFailed as RunFailedEvent
from continuum_py.testing import dump_history

HISTORIES = Path(__file__).resolve().parent / "histories"


def _portable(event: msgspec.Struct) -> msgspec.Struct:
    changes: dict[str, object] = {"at": 0.0}
    if isinstance(event, StepFailed | RunFailedEvent):
        err: ErrorInfo = event.error
        changes["error"] = msgspec.structs.replace(err, traceback="")
    return msgspec.structs.replace(event, **changes)


async def record(name: str) -> bytes:
    workflow, args = golden.GOLDEN_RUNS[name]
    async with Engine("memory://", registry=golden.registry, worker_id="golden") as engine:
        handle = await engine.start(workflow, *args, run_id=f"golden-{name}")
        with contextlib.suppress(RunFailed):  # a failed run is a golden too
            await handle.result(timeout=30)
        events = await engine.history(handle.run_id)
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
        path.write_bytes(asyncio.run(record(name)))
        print(f"recorded {path.name}")


if __name__ == "__main__":
    main()
