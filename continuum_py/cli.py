"""The ``continuum`` command: run a worker, look at runs and replay them.

Examples::

    continuum worker --url postgresql://app@db/app --import myapp.workflows --concurrency 50
    continuum runs --url sqlite:///continuum.db --since 2h
    continuum export order-7 --children -o order-7.json
    continuum import order-7.json --url sqlite:///debug.db
    continuum fork order-7 --failed
    continuum history quickstart --url sqlite:///continuum.db > quickstart.json
    continuum replay quickstart.json --import docs.quickstart
    continuum replay --run quickstart --url sqlite:///continuum.db --import docs.quickstart
    CONTINUUM_URL=sqlite:///continuum.db continuum show quickstart
    continuum schedules --url sqlite:///continuum.db

Every ``--url`` defaults to ``$CONTINUUM_URL``, else ``sqlite:///continuum.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import structlog

from continuum_py import (
    _cli_diff,
    _cli_inspect,
    _cli_queues,
    _cli_replay,
    _cli_runs,
    _cli_schedules,
    _cli_transfer,
)
from continuum_py._log import LOGGER_NAME
from continuum_py._schemes import DEFAULT_URL, redact_url
from continuum_py.engine import Engine
from continuum_py.errors import ContinuumError, WorkflowNotRegistered
from continuum_py.testing import dump_history


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="continuum", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    work = sub.add_parser("worker", help="run a worker until SIGTERM or Ctrl-C")
    _add_url(work)
    _add_imports(work, "module defining the workflows (repeatable; needed to run them)")
    work.add_argument("--concurrency", type=int, default=100, help="runs driven at once")
    work.add_argument(
        "--worker-id",
        help="this worker's id (default: host-N, the lowest slot of this host no live worker "
        "holds). A worker restarted with the same id takes its unfinished runs back at once "
        "instead of after the lease TTL",
    )
    work.add_argument("--lease-ttl", type=float, default=30.0, help="lease seconds")
    work.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between looks for runnable runs when nothing wakes the worker "
        "(Postgres wakes it at once with LISTEN/NOTIFY)",
    )
    work.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds to let running steps finish before releasing runs",
    )
    work.add_argument(
        "--queue",
        dest="queues",
        action="append",
        default=[],
        metavar="NAME",
        help="admit runs only from this queue (repeatable; default: every queue)",
    )
    _cli_queues.add_parser(sub, _add_url)
    _cli_runs.add_parser(sub, _add_url)
    show = sub.add_parser("show", help="one run: status, input, result or error, children, waits")
    show.add_argument("run_id")
    _add_url(show)
    _add_json(show, "print the run as one JSON object")
    steps = sub.add_parser("steps", help="a run's steps: status, attempts, duration, last error")
    steps.add_argument("run_id")
    _add_url(steps)
    _add_json(steps, 'print {"steps": [...]} as JSON')
    hist = sub.add_parser("history", help="print a run's history (JSON, or a timeline)")
    hist.add_argument("run_id")
    _add_url(hist)
    form = hist.add_mutually_exclusive_group()
    # JSON stays the default: `continuum history RUN > run.json` feeds `continuum replay`.
    form.add_argument(
        "--json",
        action="store_true",
        help="the history as JSON, as `dump_history` writes (default)",
    )
    form.add_argument(
        "--table", action="store_true", help="a timeline for people: one row per event, ISO times"
    )
    sig = sub.add_parser("signal", help="send a run a signal, with an optional JSON payload")
    sig.add_argument("run_id")
    sig.add_argument("name", help="the signal's name, as ctx.wait_for_signal(name) waits for it")
    sig.add_argument("payload", nargs="?", help="the payload as JSON (default null)")
    _add_url(sig)
    res = sub.add_parser("resume", help="make a parked run runnable again (engine.resume)")
    res.add_argument("run_id")
    _add_url(res)
    can = sub.add_parser(
        "cancel", help="cancel a run: the workflow sees CancelledError and may clean up"
    )
    can.add_argument("run_id")
    _add_url(can)
    term = sub.add_parser("terminate", help="end a run at once, running nothing (no cleanup)")
    term.add_argument("run_id")
    term.add_argument("--reason", default="terminated", help="recorded with the run's end")
    _add_url(term)
    _cli_replay.add_parsers(sub, _add_url, _add_imports)
    _cli_transfer.add_parsers(sub, _add_url)
    _cli_schedules.add_parser(sub, _add_url)
    return p


def _add_url(parser: argparse.ArgumentParser, what: str = "journal URL") -> None:
    # Read when the command runs, so `export CONTINUUM_URL=...` serves every command.
    default = os.environ.get("CONTINUUM_URL") or DEFAULT_URL
    parser.add_argument(
        "--url",
        default=default,
        help=f"{what} (default: $CONTINUUM_URL, else {DEFAULT_URL}; now {redact_url(default)})".replace(
            "%", "%%"
        ),
    )


def _add_json(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--json", action="store_true", help=help_text)


def _add_imports(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help=f"{help_text}; a dotted module name or a path to a .py file",
    )


async def _worker(args: argparse.Namespace) -> int:
    _import(args.imports)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    engine = Engine(
        args.url,
        worker_id=args.worker_id,
        concurrency=args.concurrency,
        lease_ttl=args.lease_ttl,
        poll_interval=args.poll_interval,
        queues=await _cli_queues.served(args.url, args.queues),
    )
    # A child of the library's logger, so its level and handlers govern these lines too.
    log = structlog.get_logger(f"{LOGGER_NAME}.worker").bind(worker_id=engine.worker_id)
    await engine.open()
    log.info(
        "worker.started",
        **_opened(args.url, engine),
        workflows=engine.registry.names(),
        concurrency=args.concurrency,
    )
    try:
        await stop.wait()
        log.info("worker.stopping", grace=args.grace)
    finally:
        await engine.aclose(grace=args.grace)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    log.info("worker.stopped")
    return 0


def _import(modules: list[str]) -> None:
    """Import each ``--import``: a dotted module name, or a path to a ``.py`` file."""
    sys.path.insert(0, str(Path.cwd()))
    for module in modules:
        if module.endswith(".py") or os.sep in module:
            _import_file(Path(module))
        else:
            importlib.import_module(module)


def _import_file(path: Path) -> None:
    # Loaded under its stem, not as __main__: a script's `if __name__ == "__main__"`
    # block (the quickstart's) does not run, only its definitions do.
    if not path.is_file():
        raise _CommandError(f"--import {str(path)!r}: no such file")
    name = path.stem
    if name in sys.modules:
        raise _CommandError(
            f"--import {str(path)!r}: a module named {name!r} is already loaded; "
            "rename the file or import it by its dotted module name"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise _CommandError(f"--import {str(path)!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))
    spec.loader.exec_module(module)


_reader = _cli_inspect.reader


async def _history(url: str, run_id: str, table: bool) -> int:
    async with _reader(url) as engine:
        events = await engine.history(run_id)
    if table:
        _cli_inspect.timeline(events)
    else:
        sys.stdout.write(dump_history(events).decode() + "\n")
    return 0


async def _end(url: str, run_id: str, reason: str | None) -> int:
    """``continuum cancel`` (reason None) or ``continuum terminate``; the journal must exist."""
    async with _reader(url) as reader:
        await reader.get(run_id)  # a missing journal or run: an error, nothing created
    async with Engine(url, worker=False) as engine:
        if reason is None:
            await engine.cancel(run_id)
            sys.stdout.write(f"cancel sent to run {run_id}\n")
        else:
            await engine.terminate(run_id, reason)
            sys.stdout.write(f"run {run_id} terminated: {reason}\n")
    return 0


def _opened(url: str, engine: Engine) -> dict[str, str]:
    """What the worker says it opened: the URL (password masked) and a SQLite file's path."""
    fields = {"url": redact_url(url)}
    path = getattr(engine.journal, "path", None)
    if isinstance(path, str):
        # A relative sqlite:/// path depends on the folder the worker runs in.
        fields["file"] = os.path.abspath(path)
    return fields


_CommandError = _cli_inspect.CommandError


def _configure_logging() -> None:
    """Info lines and above, as console lines on stderr, unless structlog is configured already.

    stdout carries the command's output (JSON histories), so logs go to stderr,
    coloured only when stderr itself is a terminal (structlog's default looks at
    stdout, which put escape codes in ``continuum worker 2>worker.log``).
    """
    if structlog.is_configured():
        return
    colors = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=colors),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``continuum`` command."""
    args = _parser().parse_args(argv)
    _configure_logging()
    try:
        if args.command == "worker":
            return asyncio.run(_worker(args))
        if getattr(args, "command_fn", None) is not None:
            # Commands kept in their own modules (runs, export, import, fork).
            return int(asyncio.run(args.command_fn(args)))
        if args.command == "history":
            return asyncio.run(_history(args.url, args.run_id, args.table))
        if args.command == "show":
            return asyncio.run(_cli_inspect.show(args.url, args.run_id, args.json))
        if args.command == "steps":
            return asyncio.run(_cli_inspect.steps(args.url, args.run_id, args.json))
        if args.command == "signal":
            return asyncio.run(_cli_inspect.signal(args.url, args.run_id, args.name, args.payload))
        if args.command == "resume":
            return asyncio.run(_cli_inspect.resume(args.url, args.run_id))
        if args.command == "schedules":
            return asyncio.run(_cli_schedules.run(args))
        if args.command in ("cancel", "terminate"):
            reason = args.reason if args.command == "terminate" else None
            return asyncio.run(_end(args.url, args.run_id, reason))
        if args.command == "diff":
            return asyncio.run(_cli_diff.diff(args))
        _import(args.imports)
        return asyncio.run(_cli_replay.replay(args))
    except WorkflowNotRegistered as exc:
        hint = " Name it with --import MODULE or --import path/to/file.py."
        if args.command not in ("worker", "replay"):
            hint = ""
        sys.stderr.write(f"continuum: {type(exc).__name__}: {exc}{hint}\n")
        return 2
    except ContinuumError as exc:
        sys.stderr.write(f"continuum: {type(exc).__name__}: {exc}\n")
        return 2
    except _CommandError as exc:
        sys.stderr.write(f"continuum: {exc}\n")
        return 2
    except ValueError as exc:
        # A bad argument the engine refused (an empty signal name, ...): one line.
        sys.stderr.write(f"continuum {args.command}: {exc}\n")
        return 2
    except ModuleNotFoundError as exc:
        sys.stderr.write(f"continuum: cannot import {exc.name!r}: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
