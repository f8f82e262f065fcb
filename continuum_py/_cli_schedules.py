"""``continuum schedules``: the cron schedules of a journal, and pausing, resuming, deleting one."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

import msgspec

from continuum_py import _cli_render as out
from continuum_py._cli_inspect import reader
from continuum_py._schedules import ScheduleInfo
from continuum_py.engine import Engine

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, add_url: Any) -> None:
    """Add ``schedules`` to the command's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "schedules",
        help="list cron schedules (fires started and skipped, next fire); pause, resume, delete",
    )
    add_url(p)
    act = p.add_mutually_exclusive_group()
    act.add_argument("--pause", metavar="NAME", help="pause the schedule NAME")
    act.add_argument(
        "--resume", metavar="NAME", help="resume NAME (fires missed while paused are not made up)"
    )
    act.add_argument("--delete", metavar="NAME", help="delete NAME (its runs go on)")
    p.add_argument("--json", action="store_true", help='print {"schedules": [...]} as JSON')


async def run(args: argparse.Namespace) -> int:
    """Run ``continuum schedules``."""
    async with reader(args.url) as engine:  # a missing journal is an error; nothing is created
        listed = await engine.schedules()
    name = args.pause or args.resume or args.delete
    if name is not None:
        async with Engine(args.url, worker=False) as engine:
            if args.pause:
                await engine.pause_schedule(name)
                done = "paused"
            elif args.resume:
                await engine.resume_schedule(name)
                done = "resumed"
            else:
                await engine.delete_schedule(name)
                done = "deleted"
        sys.stdout.write(f"schedule {name} {done}\n")
        return 0
    if args.json:
        out.write_json({"schedules": [msgspec.to_builtins(s) for s in listed]})
        return 0
    if not listed:
        sys.stdout.write("no schedules\n")
        return 0
    headers = [
        "name",
        "workflow",
        "cron",
        "tz",
        "overlap",
        "state",
        "next fire",
        "fired",
        "skipped",
    ]
    headers += ["last skipped", "last run"]
    out.table(headers, [_row(s) for s in listed])
    return 0


def _row(s: ScheduleInfo) -> list[str]:
    state = "paused" if s.paused else "active"
    if s.buffered is not None:
        state += f", {_iso(s.buffered)} waits"
    return [
        s.name,
        s.workflow,
        s.cron,
        s.tz,
        s.overlap,
        state,
        _iso(s.next_fire),
        str(s.fired),
        str(s.skipped),
        _iso(s.last_skipped),
        s.last_run_id or "-",
    ]


def _iso(when: dt.datetime | None) -> str:
    return "-" if when is None else when.isoformat()
