"""``continuum runs``: list runs, newest first, as a table for people or JSON for machines.

The JSON form is stable: ``{"runs": [...], "next_cursor": ...}``, each run a
``RunRecord``'s fields but ``outcome``; scripts read that, never the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from continuum_py import _cli_inspect
from continuum_py import _cli_render as out
from continuum_py.journal import RunRecord, RunStatus

__all__ = ["add_parser", "parse_time", "runs"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def add_parser(
    sub: Any, add_url: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """Register ``continuum runs``."""
    p: argparse.ArgumentParser = sub.add_parser("runs", help="list runs, newest first")
    add_url(p)
    p.add_argument("--status", choices=[s.value for s in RunStatus])
    p.add_argument("--workflow", help="only runs of this workflow name")
    p.add_argument(
        "--id-prefix",
        "--prefix",
        dest="prefix",
        metavar="TEXT",
        help="only runs whose run_id starts with TEXT",
    )
    p.add_argument(
        "--since",
        metavar="TIME",
        help="only runs created at or after TIME: a time ago (30s, 15m, 2h, 7d, 1w, 1h30m) "
        "or an ISO 8601 time (UTC if no offset)",
    )
    p.add_argument("--until", metavar="TIME", help="only runs created before TIME (as --since)")
    p.add_argument("--limit", default="100", metavar="N", help="runs per page (default 100)")
    p.add_argument(
        "--cursor", help="the next page: the cursor the previous page printed (same filters)"
    )
    p.add_argument("--oldest-first", action="store_true", help="oldest first (default newest)")
    p.add_argument(
        "--json", action="store_true", help='print {"runs": [...], "next_cursor": ...} as JSON'
    )
    p.set_defaults(command_fn=runs)
    return p


def parse_time(flag: str, text: str | None, now: float | None = None) -> dt.datetime | None:
    """``--since``/``--until``: a time ago (``2h``, ``1h30m``) or an ISO 8601 time."""
    if text is None:
        return None
    spec = text.strip().lower()
    parts = _AGO.findall(spec)
    if parts and "".join(n + u for n, u in parts) == spec:
        secs = sum(float(n) * _UNITS[u] for n, u in parts)
        return dt.datetime.fromtimestamp((time.time() if now is None else now) - secs, dt.UTC)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{flag} takes a time ago such as 2h, 30m or 7d, or an ISO 8601 time such as "
            f"2025-01-31T12:00Z, got {text!r}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


async def runs(args: argparse.Namespace) -> int:
    """List one page of runs."""
    try:
        options: dict[str, Any] = {
            "status": args.status,
            "workflow": args.workflow,
            "run_id_prefix": args.prefix,
            "created_after": parse_time("--since", args.since),
            "created_before": parse_time("--until", args.until),
            "cursor": args.cursor,
            "oldest_first": args.oldest_first,
        }
        try:
            options["limit"] = int(args.limit)
        except ValueError:
            raise ValueError(f"--limit takes a whole number >= 1, got {args.limit!r}") from None
        async with _cli_inspect.reader(args.url) as engine:
            page = await engine.list_runs(**options)
    except ValueError as exc:
        # A bad option, named in the message; one line, no traceback.
        sys.stderr.write(f"continuum runs: {exc}\n")
        return 2
    if args.json:
        out.write_json({"runs": [_run_json(r) for r in page], "next_cursor": page.next_cursor})
        return 0
    if page:
        out.table(
            ["run", "workflow", "status", "created", "events", "note"],
            [_row(r) for r in page],
        )
    else:
        sys.stderr.write("no runs match\n")
    if page.next_cursor is not None:
        # On stderr, so stdout holds only the table.
        sys.stderr.write(f"more runs: add --cursor {page.next_cursor}\n")
    return 0


def _run_json(rec: RunRecord) -> dict[str, Any]:
    return {k: v for k, v in msgspec.to_builtins(rec).items() if k != "outcome"}


def _row(rec: RunRecord) -> list[Any]:
    note = rec.reason or ""
    if rec.forked_from:
        note = f"fork of {rec.forked_from}" + (f"; {note}" if note else "")
    if rec.parent_run_id:
        note = f"child of {rec.parent_run_id}" + (f"; {note}" if note else "")
    return [
        rec.run_id,
        rec.workflow,
        out.status(rec.status.value),
        out.iso(rec.created_at),
        str(rec.last_seq),
        out.short(note, 80),
    ]
