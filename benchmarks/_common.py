"""Helpers shared by the benchmark scripts (not a benchmark itself).

Every script prints exactly one JSON document on stdout; anything else goes to
stderr. The library runs with its logging defaults, as a user gets them: nothing
configured, so it is silent below WARNING and writes warnings to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
"""The Postgres of this machine and CI's, when neither --dsn nor $CONTINUUM_TEST_PG_DSN says."""


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick", action="store_true", help="a small smoke run (numbers not meaningful)"
    )
    p.add_argument(
        "--dir",
        default=None,
        help="folder for the benchmark's files (default: a temp folder under the current one); "
        "the fsync and SQLite measurements share it, so they see the same filesystem",
    )
    p.add_argument("--keep", action="store_true", help="keep the working folder afterwards")
    return p


@contextlib.contextmanager
def workdir(base: str | None, *, keep: bool = False) -> Iterator[Path]:
    """A fresh folder under ``base`` (default: the current folder), removed afterwards."""
    root = Path(base) if base else Path.cwd()
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="continuum-bench-", dir=root))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def dist_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    return _version(dist)


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_cpu_s(path: str) -> float | None:
    """User + system CPU seconds from a /proc ``stat`` file, or None if it is gone."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used so far, from /proc (Linux only)."""
    return _stat_cpu_s(f"/proc/{pid}/stat")


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each live thread of process ``pid``, by thread id."""
    try:
        tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return {}
    cpu = {tid: _stat_cpu_s(f"/proc/{pid}/task/{tid}/stat") for tid in tids}
    return {tid: c for tid, c in cpu.items() if c is not None}


def machine_cpu_s() -> tuple[float, float] | None:
    """(busy, total) CPU seconds summed over all CPUs since boot, from /proc/stat (Linux only).

    Busy is everything but idle and iowait; take two readings and divide the
    differences to get how busy the machine was in between.
    """
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    ticks = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(ticks)
    idle = ticks[3] + ticks[4]
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


def _filesystem(path: Path) -> dict[str, str] | None:
    """The mount (device, type) that holds ``path``, from /proc/mounts (Linux only)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best: tuple[str, str, str] | None = None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        dev, mnt, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
        if inside and (best is None or len(mnt) > len(best[1])):
            best = (dev, mnt, fstype)
    if best is None:
        return None
    return {"device": best[0], "mount": best[1], "type": best[2]}


def _git() -> dict[str, Any]:
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "--no-optional-locks", *args],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    changed = run("status", "--porcelain", "--", "continuum_py", "adapters")
    return {
        "commit": run("rev-parse", "--short", "HEAD"),
        "engine_code_modified": bool(changed) if changed is not None else None,
    }


def _loadavg() -> list[float] | None:
    # Other work on the machine skews timings; record how busy it was.
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def meta(workdir_path: Path | None = None) -> dict[str, Any]:
    """Versions and machine facts every result carries."""
    import continuum_py

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "continuum_py": continuum_py.__version__,
        "msgspec": _version("msgspec"),
        "aiosqlite": _version("aiosqlite"),
        "structlog": _version("structlog"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "git": _git(),
        "load_average_1_5_15": _loadavg(),
        "argv": sys.argv[1:],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with contextlib.suppress(ImportError):
        import sqlite3

        info["sqlite"] = sqlite3.sqlite_version
    if workdir_path is not None:
        info["workdir_filesystem"] = _filesystem(workdir_path)
    return info


def stats_us(seconds: Sequence[float]) -> dict[str, float | int]:
    """Median, p90, p99, mean, min and max of durations given in seconds, in microseconds."""
    us = sorted(s * 1e6 for s in seconds)
    n = len(us)

    def pct(p: float) -> float:
        return us[min(n - 1, max(0, round(p * (n - 1))))]

    return {
        "n": n,
        "median_us": round(statistics.median(us), 2),
        "p90_us": round(pct(0.90), 2),
        "p99_us": round(pct(0.99), 2),
        "mean_us": round(statistics.fmean(us), 2),
        "min_us": round(us[0], 2),
        "max_us": round(us[-1], 2),
    }


def emit(doc: dict[str, Any]) -> None:
    """Print the one JSON document this script produces."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def note(msg: str) -> None:
    """Progress for humans, on stderr (stdout carries only the JSON)."""
    print(msg, file=sys.stderr, flush=True)
