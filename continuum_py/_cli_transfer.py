"""``continuum export``, ``import`` and ``fork``: move runs between journals, fork a run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from continuum_py import _cli_inspect
from continuum_py import _cli_render as out
from continuum_py.engine import Engine

__all__ = ["add_parsers"]

CommandError = _cli_inspect.CommandError


def add_parsers(sub: Any, add_url: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``continuum export``, ``import`` and ``fork``."""
    exp = sub.add_parser("export", help="write a run (and its children) to one file")
    exp.add_argument("run_id")
    exp.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    exp.add_argument(
        "--children", action="store_true", help="include the runs it started, and theirs"
    )
    add_url(exp)
    exp.set_defaults(command_fn=export)
    imp = sub.add_parser("import", help="add the runs of an exported file to a journal")
    imp.add_argument("file", help="a file written by `continuum export` (- for stdin)")
    add_url(imp)
    imp.add_argument("--json", action="store_true", help='print {"runs": [...]} as JSON')
    imp.set_defaults(command_fn=import_)
    fork = sub.add_parser(
        "fork", help="a new run reusing a run's outcomes before a point, live from there"
    )
    fork.add_argument("run_id")
    point = fork.add_mutually_exclusive_group(required=True)
    point.add_argument("--at", metavar="POSITION", help="a call-order position")
    point.add_argument("--step", metavar="NAME", help="the first call of the step NAME")
    point.add_argument("--failed", action="store_true", help="the last step that failed")
    fork.add_argument("--run-id", dest="new_run_id", metavar="ID", help="the new run's id")
    fork.add_argument(
        "--args",
        metavar="JSON",
        help="the workflow's arguments as a JSON array (default: the run's)",
    )
    fork.add_argument("--force", action="store_true", help="fork a run that is still in flight")
    add_url(fork)
    fork.add_argument("--json", action="store_true", help='print {"run_id", "forked_from"} as JSON')
    fork.set_defaults(command_fn=fork_)


def _read(name: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {name!r}: {exc.strerror}") from None


def _write(name: str, data: bytes) -> None:
    path = Path(name)
    tmp = path.with_name(path.name + ".part")
    try:
        # Whole or not at all: a crash mid-write leaves the .part file, never a short FILE.
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise CommandError(f"cannot write {name!r}: {exc.strerror}") from None


def _position(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise CommandError(f"--at takes a call-order position (1, 2, ...), got {text!r}") from None
    if value < 1:
        raise CommandError(f"--at takes a call-order position (1, 2, ...), got {value}")
    return value


async def export(args: argparse.Namespace) -> int:
    """``continuum export RUN [-o FILE] [--children]``."""
    async with _cli_inspect.reader(args.url) as engine:
        data = await engine.export_run(args.run_id, children=args.children)
    if args.output is None or args.output == "-":
        sys.stdout.buffer.write(data)
        return 0
    _write(args.output, data)
    count = data.count(b'"sha256":')
    out.text(f"exported run {args.run_id} ({count} run{'s' * (count != 1)}) to {args.output}")
    return 0


async def import_(args: argparse.Namespace) -> int:
    """``continuum import FILE``: everything or nothing."""
    data = _read(args.file)
    async with Engine(args.url, worker=False) as engine:
        ids = await engine.import_run(data)
        records = [await (await engine.get(rid)).record() for rid in ids]
    if args.json:
        out.write_json({"runs": [{"run_id": r.run_id, "status": r.status.value} for r in records]})
        return 0
    for rec in records:
        note = f"  ({rec.reason})" if rec.reason else ""
        out.text(f"imported run {rec.run_id}: {rec.status.value}{note}")
    return 0


async def fork_(args: argparse.Namespace) -> int:
    """``continuum fork RUN --at N | --step NAME | --failed``."""
    at = _position(args.at)
    fork_args = None
    if args.args is not None:
        try:
            fork_args = json.loads(args.args)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--args is not JSON ({exc})") from None
        if not isinstance(fork_args, list):
            raise CommandError(f"--args takes a JSON array of arguments, got {args.args!r}")
    async with _cli_inspect.reader(args.url) as check:
        await check.get(args.run_id)  # a missing journal or run: an error, nothing created
    async with Engine(args.url, worker=False) as engine:
        handle = await engine.fork(
            args.run_id,
            at=at,
            step=args.step,
            failed=args.failed,
            args=fork_args,
            run_id=args.new_run_id,
            force=args.force,
        )
    if args.json:
        out.write_json({"run_id": handle.run_id, "forked_from": args.run_id})
        return 0
    out.text(f"forked run {args.run_id} as {handle.run_id}: pending, for the next worker")
    return 0
