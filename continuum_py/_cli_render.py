"""Output of the ``continuum`` command: tables for people (rich), JSON for machines.

rich is imported only here and only when a table is printed, so ``--json`` and
the worker do not pay for it. Colour is used only when stdout is a terminal
(and ``NO_COLOR`` is unset); piped output is plain text, not wrapped at 80
columns.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from rich.console import Console

# Piped output is read by people through `less` or saved to a file: a wide line
# beats cells wrapped at rich's default 80 columns.
_PIPE_WIDTH = 200
_CELL = 100  # characters of a value or error shown in a table cell


def write_json(value: Any) -> None:
    """``value`` as one line of JSON on stdout."""
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def iso(when: float | None) -> str:
    """Seconds since the epoch as an ISO 8601 UTC time, ``-`` for none."""
    if when is None:
        return "-"
    return dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="milliseconds")


def duration(start: float, end: float | None) -> str:
    """``end - start`` for people: ``850ms``, ``12.3s``, ``4m05s``; ``-`` while unfinished."""
    if end is None:
        return "-"
    secs = max(0.0, end - start)
    if secs < 1:
        return f"{secs * 1000:.0f}ms"
    if secs < 60:
        return f"{secs:.1f}s"
    minutes, rest = divmod(int(secs), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def short(text: str, limit: int = _CELL) -> str:
    """The first line of ``text``, cut to ``limit`` characters."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def raw_text(raw: msgspec.Raw | bytes) -> str:
    """A stored JSON value as compact JSON text."""
    return bytes(raw).decode()


def raw_value(raw: msgspec.Raw | bytes) -> Any:
    """A stored JSON value decoded to Python builtins."""
    return msgspec.json.decode(bytes(raw))


def console() -> Console:
    """A console on stdout: coloured only on a terminal, never interpreting markup."""
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(
        file=sys.stdout,
        width=None if tty else _PIPE_WIDTH,
        no_color=not tty or bool(os.environ.get("NO_COLOR")),
        markup=False,
        emoji=False,
        highlight=False,
    )


STATUS_STYLES = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "parked": "magenta",
    "running": "cyan",
}
"""How a run's status is coloured in a table (on a terminal only)."""


def status(value: str) -> Any:
    """A run status for a table cell, coloured by :data:`STATUS_STYLES` on a terminal."""
    from rich.text import Text

    return Text(value, style=STATUS_STYLES.get(value, ""))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print an aligned table with a header row."""
    from rich import box
    from rich.table import Table

    tbl = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for name in headers:
        tbl.add_column(name, overflow="fold")
    for row in rows:
        tbl.add_row(*row)
    _print(tbl)


def fields(rows: Sequence[tuple[str, str]]) -> None:
    """Print ``name  value`` lines, the names aligned and bold on a terminal."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in rows:
        grid.add_row(name, value)
    _print(grid)


def _print(renderable: Any) -> None:
    # rich pads every cell to its column's width; drop the trailing spaces.
    con = console()
    with con.capture() as captured:
        con.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def text(body: str) -> None:
    """Print plain text (a traceback) as it is."""
    sys.stdout.write(body if body.endswith("\n") else body + "\n")
