"""The ``continuum`` command: look at runs and replay them.

Examples::

    continuum runs --url sqlite:///continuum.db
    continuum history quickstart --url sqlite:///continuum.db > quickstart.json
    continuum replay quickstart.json --import docs.quickstart
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from continuum_py._schemes import DEFAULT_URL
from continuum_py.engine import Engine
from continuum_py.errors import ContinuumError
from continuum_py.journal import RunStatus
from continuum_py.testing import Replayer, dump_history, load_history


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="continuum", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--url", default=DEFAULT_URL, help="journal URL (default %(default)s)")
    runs.add_argument("--status", choices=[s.value for s in RunStatus])
    hist = sub.add_parser("history", help="print a run's history as JSON")
    hist.add_argument("run_id")
    hist.add_argument("--url", default=DEFAULT_URL, help="journal URL (default %(default)s)")
    rep = sub.add_parser("replay", help="replay a history against workflow code, running no step")
    rep.add_argument("source", help="a JSON file written by `continuum history`, or a run_id")
    rep.add_argument("--url", default=DEFAULT_URL, help="journal to read a run_id from")
    rep.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="module defining the workflows (repeatable)",
    )
    return p


async def _runs(url: str, status: str | None) -> int:
    async with Engine(url, worker=False) as engine:
        for r in await engine.list_runs(status=status):
            reason = f"  ({r.reason})" if r.reason else ""
            sys.stdout.write(f"{r.run_id}\t{r.workflow}\t{r.status.value}\t{r.last_seq}{reason}\n")
    return 0


async def _history(url: str, run_id: str) -> int:
    async with Engine(url, worker=False) as engine:
        sys.stdout.write(dump_history(await engine.history(run_id)).decode() + "\n")
    return 0


async def _replay(source: str, url: str, imports: list[str]) -> int:
    sys.path.insert(0, str(Path.cwd()))
    for module in imports:
        importlib.import_module(module)
    events: Any
    if source.endswith(".json"):
        events = load_history(_read(source))
    else:
        async with Engine(url, worker=False) as engine:
            events = await engine.history(source)
    result = Replayer(log=True).replay(events)
    state = "finished" if result.finished else f"waiting on {', '.join(result.waiting_on) or '-'}"
    sys.stdout.write(f"run {result.run_id} ({result.workflow}): {result.events} events, {state}\n")
    if result.error is not None:
        sys.stdout.write(f"raised {type(result.error).__name__}: {result.error}\n")
    elif result.finished:
        sys.stdout.write(f"returned {result.result!r}\n")
    return 0


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``continuum`` command."""
    args = _parser().parse_args(argv)
    if not structlog.is_configured():
        # stdout carries the command's output (JSON histories); logs go to stderr.
        structlog.configure(
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        )
    try:
        if args.command == "runs":
            return asyncio.run(_runs(args.url, args.status))
        if args.command == "history":
            return asyncio.run(_history(args.url, args.run_id))
        return asyncio.run(_replay(args.source, args.url, args.imports))
    except ContinuumError as exc:
        sys.stderr.write(f"continuum: {type(exc).__name__}: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
