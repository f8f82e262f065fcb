"""continuum_py against DBOS Transact, the same workloads in one run.

Usage: python benchmarks/head_to_head.py [--quick] [--rounds N] [--out FILE] [--configs ...]

Runs the same workflows on continuum_py (memory://, SQLite, Postgres) and on DBOS
Transact (SQLite, Postgres; ``pip install -e '.[bench]'``), each measurement in a fresh
process against a fresh database (a new SQLite file; a new Postgres database made with
CREATE DATABASE and dropped afterwards). The configurations take turns within each
workload, and the order is reversed every other round, so drift of this machine's speed
hits them alike. Workloads (step bodies return their argument):

- per-step overhead: one workflow of 1,000 sequential steps;
- 3-step workflows per second, one after another, and 50 in flight at a time;
- replay: a run with 4,999 completed steps and the 5,000th in flight (10,000 events in
  continuum_py's history) is SIGKILLed; a fresh process opens the runtime, and the time
  from the open to the first new step body is "open + replay"; on memory:// (nothing
  survives a kill) a fresh runner replays the history in the process instead;
- resume after kill -9: the same, from spawning the fresh process (interpreter start-up
  and imports included) to the first new step body;
- peak RSS of each measurement's process;
- Postgres round trips per step, counted at the wire through a proxy (an untimed pass);
- yardsticks measured in the same run: the fsync floor (overwrite 200 bytes + fdatasync,
  in the folder that holds the SQLite files), one asyncio task round trip
  (``await create_task(coro)``), one Postgres round trip (``SELECT 1``) and one
  one-row INSERT committing on its own (asyncpg, same server).

Both sides run with their default settings as a user gets them, and the durability
settings each side's own connection reports are printed: continuum_py's SQLite journal
uses WAL with synchronous=FULL, DBOS's SQLite uses SQLite's default rollback journal
with synchronous=FULL; both commit to disk before a step counts as done, and on
Postgres both run with the server's synchronous_commit=on.

Ratios taken within one run (to the yardsticks, and continuum_py over DBOS) are the
headline; absolute times drift on a shared machine. The JSON goes to stdout (and to
--out), the table to stderr. Postgres: --pg-dsn, else $CONTINUUM_TEST_PG_DSN, else
postgresql://postgres@127.0.0.1:5432/test; the role must be allowed to CREATE DATABASE.
Postgres and DBOS are skipped, with a line saying so, when not available.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import bench_fsync
from _common import DEFAULT_DSN, dist_version, emit, meta, note, parser, workdir

HERE = Path(__file__).resolve().parent
CHILD = HERE / "_h2h_child.py"
CONFIGS = [
    "continuum:memory",
    "continuum:sqlite",
    "dbos:sqlite",
    "continuum:postgres",
    "dbos:postgres",
]
WORKLOADS = ["step", "seq", "conc", "resume"]


# --- yardsticks ---


async def _task_round_trip(n: int) -> float:
    async def nothing() -> None:
        return None

    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await asyncio.create_task(nothing())
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples[n // 10 :])


async def _pg_yardsticks(dsn: str, n: int) -> dict[str, float]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rt = []
        for _ in range(n):
            t0 = time.perf_counter()
            await conn.fetchval("SELECT 1")
            rt.append(time.perf_counter() - t0)
        await conn.execute("CREATE TABLE yardstick (id bigserial PRIMARY KEY, data bytea)")
        commit = []
        payload = b"x" * 200
        for _ in range(n // 2):
            t0 = time.perf_counter()
            await conn.execute("INSERT INTO yardstick (data) VALUES ($1)", payload)
            commit.append(time.perf_counter() - t0)
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return {
        "pg_round_trip_us": round(statistics.median(rt[n // 10 :]) * 1e6, 2),
        "pg_insert_commit_us": round(statistics.median(commit[n // 20 :]) * 1e6, 2),
        "pg_server_version": version,
    }


def yardsticks(folder: Path, pg: PgAdmin | None, quick: bool) -> dict[str, Any]:
    n = 300 if quick else 1000
    floor = bench_fsync.sync_samples(folder, n, 200, sync="fdatasync", mode="overwrite")
    out: dict[str, Any] = {
        "fsync_floor_us": round(statistics.median(floor) * 1e6, 2),
        "task_round_trip_us": round(asyncio.run(_task_round_trip(n * 10)) * 1e6, 3),
    }
    if pg is not None:
        with pg.fresh() as dsn:
            out |= asyncio.run(_pg_yardsticks(dsn, n))
    return out


# --- fresh Postgres databases ---


class PgAdmin:
    """Creates a fresh database per measurement on the server of ``dsn`` and drops it after."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def _with_db(self, name: str) -> str:
        p = urlsplit(self.dsn)
        return urlunsplit((p.scheme, p.netloc, f"/{name}", p.query, ""))

    async def _admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def check(self) -> str | None:
        """None if usable, else why not."""
        if importlib.util.find_spec("asyncpg") is None:
            return "asyncpg is not installed"
        try:
            with self.fresh():
                pass
        except Exception as exc:  # any failure means: measure without Postgres
            return f"{type(exc).__name__}: {exc}"
        return None

    class _Fresh:
        def __init__(self, admin: PgAdmin) -> None:
            self.admin = admin
            self.name = f"h2h_{os.getpid()}_{uuid.uuid4().hex[:8]}"

        def __enter__(self) -> str:
            asyncio.run(self.admin._admin(f"CREATE DATABASE {self.name}"))
            return self.admin._with_db(self.name)

        def __exit__(self, *exc: Any) -> None:
            asyncio.run(self.admin._admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)"))

    def fresh(self) -> PgAdmin._Fresh:
        return PgAdmin._Fresh(self)


def on_each_journal(
    configs: list[str], folder: Path, pg_dsn: str | None, measure: Callable[[str, str], Any]
) -> dict[str, Any]:
    """``measure(config, url)`` for each of "memory", "sqlite" (a file in ``folder``) and
    "postgres" (a fresh database, dropped after; skipped with a note when not usable)."""
    results: dict[str, Any] = {}
    for config in configs:
        if config != "postgres":
            url = "memory://" if config == "memory" else f"sqlite:///{folder / f'{config}.db'}"
            results[config] = measure(config, url)
            continue
        pg = PgAdmin(pg_dsn or os.environ.get("CONTINUUM_TEST_PG_DSN") or DEFAULT_DSN)
        if (why := pg.check()) is not None:
            note(f"Postgres not usable ({why}): skipping it")
            continue
        with pg.fresh() as dsn:
            results[config] = measure(config, dsn)
    return results


# --- one measurement ---


def _backend(url: str) -> str:
    return url.split(":", 1)[0].removesuffix("ql")


class Runner:
    def __init__(
        self, folder: Path, pg: PgAdmin | None, sizes: dict[str, int], profile: Path | None
    ) -> None:
        self.folder = folder
        self.profile = profile
        self.pg = pg
        self.sizes = sizes
        self.count = 0

    def _child(self, args: list[str], **kw: Any) -> subprocess.Popen[str]:
        self.count += 1
        log = open(self.folder / f"child-{self.count}.log", "w")  # noqa: SIM115 - closed by the OS
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        if self.profile is not None and args[1] in ("step", "seq", "conc"):
            # One pyinstrument profile of the timed part, per side, journal and workload.
            name = f"{args[0]}-{_backend(args[2])}-{args[1]}-{self.count}.txt"
            env["H2H_PROFILE"] = str(self.profile / name)
        return subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            cwd=self.folder,
            **kw,
        )

    def _result(self, proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        out, _ = proc.communicate(timeout=timeout)
        if proc.returncode != 0 or not out.strip():
            log = self.folder / f"child-{self.count}.log"
            tail = log.read_text()[-1500:] if log.exists() else ""
            raise RuntimeError(f"child failed ({proc.returncode}): {proc.args}\n{tail}")
        doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return doc

    def _url(self, backend: str, tag: str) -> Any:
        """A context manager giving a fresh database's URL."""
        import contextlib

        if backend == "postgres":
            assert self.pg is not None
            return self.pg.fresh()
        if backend == "memory":
            return contextlib.nullcontext("memory://")
        self.count += 1
        return contextlib.nullcontext(f"sqlite:///{self.folder / f'{tag}-{self.count}.db'}")

    def measure(self, config: str, workload: str) -> dict[str, Any]:
        side, backend = config.split(":")
        s = self.sizes
        if workload == "resume":
            return self._resume(side, backend)
        n = {"step": s["steps"], "seq": s["seq"], "conc": s["conc"], "rtt": s["rtt"]}[workload]
        with self._url(backend, f"{side}-{workload}") as url:
            args = [side, workload, url, "--n", str(n), "--concurrency", str(s["concurrency"])]
            return self._result(self._child(args), timeout=900)

    def _resume(self, side: str, backend: str) -> dict[str, Any]:
        hold = self.sizes["history_steps"]
        if backend == "memory":
            args = [side, "replay", "memory://", "--hold", str(hold), "--repeats", "5"]
            return self._result(self._child(args), timeout=900)
        with self._url(backend, f"{side}-resume") as url:
            progress = self.folder / f"progress-{self.count}"
            build = self._child(
                [side, "build", url, "--hold", str(hold), "--progress", str(progress)]
            )
            t0 = time.monotonic()
            try:
                while not progress.exists():
                    if build.poll() is not None:
                        self._result(build, 1)  # raises with the log
                    if time.monotonic() - t0 > 900:
                        raise RuntimeError("the build did not reach its last step in 900 s")
                    time.sleep(0.01)
                build_s = time.monotonic() - t0
            finally:
                os.kill(build.pid, signal.SIGKILL)
                build.communicate()
            time.sleep(0.2)
            t_spawn = time.monotonic()
            r = self._result(self._child([side, "resume", url, "--hold", str(hold)]), 600)
        return {
            "result": {
                "history_steps": hold,
                "build_s": round(build_s, 2),
                "kill9_to_first_step_ms": round((r["t_first_step"] - t_spawn) * 1e3, 2),
                "open_replay_ms": round((r["t_first_step"] - r["t_open"]) * 1e3, 2),
                "split_ms": {
                    "interpreter": round((r["t_main"] - t_spawn) * 1e3, 2),
                    "imports": round((r["t_imported"] - r["t_main"]) * 1e3, 2),
                    "open_to_first_step": round((r["t_first_step"] - r["t_open"]) * 1e3, 2),
                },
            },
            "peak_rss_mb": r["peak_rss_mb"],
        }


# --- the report ---

_FIGURE = {
    "step": ("us_per_step", "µs per step, 1,000 sequential steps", False),
    "seq": ("per_s", "3-step workflows/s, sequential", True),
    "conc": ("per_s", "3-step workflows/s, 50 at a time", True),
    "open_replay": ("open_replay_ms", "open + replay of the history to the next step, ms", False),
    "replay_memory": ("replay_us_per_event", "replay, µs per event (memory, in process)", False),
    "resume": ("kill9_to_first_step_ms", "kill -9, spawn to first new step, ms", False),
}


def _med(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def summarize(rounds: list[dict[str, Any]], configs: list[str]) -> dict[str, Any]:
    """Medians over rounds of every figure and of every ratio taken within one round."""
    fig: dict[str, dict[str, float | None]] = {}
    rss: dict[str, float | None] = {}

    def values(config: str, workload: str, key: str) -> list[float]:
        got = []
        for rnd in rounds:
            r = rnd["results"].get(config, {}).get(workload)
            if r is not None and key in r["result"]:
                got.append(r["result"][key])
        return got

    for c in configs:
        fig[c] = {
            "us_per_step": _med(values(c, "step", "us_per_step")),
            "seq_per_s": _med(values(c, "seq", "per_s")),
            "conc_per_s": _med(values(c, "conc", "per_s")),
            "open_replay_ms": _med(values(c, "resume", "open_replay_ms")),
            "kill9_to_first_step_ms": _med(values(c, "resume", "kill9_to_first_step_ms")),
            "replay_memory_us_per_event": _med(values(c, "resume", "replay_us_per_event")),
        }
        peaks = [
            r["peak_rss_mb"]
            for rnd in rounds
            for r in rnd["results"].get(c, {}).values()
            if "peak_rss_mb" in r
        ]
        rss[c] = max(peaks) if peaks else None

    def ratio(fn: Any) -> float | None:
        per = []
        for rnd in rounds:
            try:
                v = fn(rnd)
            except (KeyError, TypeError, ZeroDivisionError):
                continue
            if v is not None:
                per.append(v)
        return _med(per)

    def r(rnd: dict[str, Any], c: str, w: str, k: str) -> float:
        return float(rnd["results"][c][w]["result"][k])

    def y(rnd: dict[str, Any], k: str) -> float:
        return float(rnd["yardsticks"][k])

    ratios: dict[str, float | None] = {
        "memory_step_over_task_round_trip": ratio(
            lambda d: r(d, "continuum:memory", "step", "us_per_step") / y(d, "task_round_trip_us")
        ),
        "memory_replay_per_event_over_task_round_trip": ratio(
            lambda d: (
                r(d, "continuum:memory", "resume", "replay_us_per_event")
                / y(d, "task_round_trip_us")
            )
        ),
    }
    for side in ("continuum", "dbos"):
        ratios[f"{side}_sqlite_step_over_fsync_floor"] = ratio(
            lambda d, s=side: r(d, f"{s}:sqlite", "step", "us_per_step") / y(d, "fsync_floor_us")
        )
        ratios[f"{side}_postgres_step_over_round_trip_plus_commit"] = ratio(
            lambda d, s=side: (
                r(d, f"{s}:postgres", "step", "us_per_step")
                / (y(d, "pg_round_trip_us") + y(d, "pg_insert_commit_us"))
            )
        )
    for backend in ("sqlite", "postgres"):
        c, d_ = f"continuum:{backend}", f"dbos:{backend}"
        ratios[f"{backend}_step_dbos_over_continuum"] = ratio(
            lambda d, c=c, d_=d_: r(d, d_, "step", "us_per_step") / r(d, c, "step", "us_per_step")
        )
        for w in ("seq", "conc"):
            ratios[f"{backend}_{w}_continuum_over_dbos"] = ratio(
                lambda d, c=c, d_=d_, w=w: r(d, c, w, "per_s") / r(d, d_, w, "per_s")
            )
        for k in ("open_replay_ms", "kill9_to_first_step_ms"):
            ratios[f"{backend}_{k.removesuffix('_ms')}_dbos_over_continuum"] = ratio(
                lambda d, c=c, d_=d_, k=k: r(d, d_, "resume", k) / r(d, c, "resume", k)
            )
    yard = {
        k: _med([rnd["yardsticks"][k] for rnd in rounds if k in rnd["yardsticks"]])
        for k in ("fsync_floor_us", "task_round_trip_us", "pg_round_trip_us", "pg_insert_commit_us")
    }
    return {"figures": fig, "peak_rss_mb": rss, "ratios": ratios, "yardsticks": yard}


def targets(summary: dict[str, Any], conc_sqlite: float | None) -> dict[str, Any]:
    """Issue 13's targets (points 2 and 3), against this run's ratios."""
    q = summary["ratios"]

    def t(measured: float | None, op: str, bound: float) -> dict[str, Any]:
        met = None if measured is None else (measured <= bound if op == "<=" else measured >= bound)
        return {"target": f"{op} {bound}", "measured": measured, "met": met}

    return {
        "sqlite_step_over_fsync_floor": t(q["continuum_sqlite_step_over_fsync_floor"], "<=", 3),
        "sqlite_step_dbos_over_continuum": t(q["sqlite_step_dbos_over_continuum"], ">=", 5),
        "sqlite_conc_workflows_per_s": t(conc_sqlite, ">=", 1000),
        "sqlite_conc_continuum_over_dbos": t(q["sqlite_conc_continuum_over_dbos"], ">=", 16),
        "sqlite_seq_continuum_over_dbos": t(q["sqlite_seq_continuum_over_dbos"], ">=", 5),
        "memory_step_over_task_round_trip": t(q["memory_step_over_task_round_trip"], "<=", 3),
        "memory_replay_per_event_over_task_round_trip": t(
            q["memory_replay_per_event_over_task_round_trip"], "<=", 0.3
        ),
        "postgres_step_over_round_trip_plus_commit": t(
            q["continuum_postgres_step_over_round_trip_plus_commit"], "<=", 1
        ),
    }


def table(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    configs = doc["params"]["configs"]
    sizes = doc["params"]["sizes"]
    head = ["", *configs]
    rows = []
    labels = {
        "us_per_step": f"step, µs ({sizes['steps']:,} sequential)",
        "seq_per_s": "3-step workflows/s, sequential",
        "conc_per_s": "3-step workflows/s, 50 at a time",
        "open_replay_ms": f"open + replay {2 * sizes['history_steps'] + 2:,}-event history, ms",
        "replay_memory_us_per_event": "replay, µs/event (memory, in process)",
        "kill9_to_first_step_ms": "kill -9: spawn to next step, ms",
    }
    for key, label in labels.items():
        rows.append([label, *(_fmt(s["figures"][c][key]) for c in configs)])
    rows.append(
        ["peak RSS, MB (largest measurement)", *(_fmt(s["peak_rss_mb"][c]) for c in configs)]
    )
    rtt = doc.get("round_trips_per_step", {})
    rows.append(["Postgres round trips per step", *(_fmt(rtt.get(c)) for c in configs)])
    rtt = doc.get("round_trips_per_3_step_workflow", {})
    rows.append(["  per 3-step workflow, sequential", *(_fmt(rtt.get(c)) for c in configs)])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(
            str(x).rjust(w) if i else str(x).ljust(w)
            for i, (x, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    out = [
        "",
        *lines,
        "",
        "yardsticks (median over rounds): "
        + ", ".join(f"{k} {v}" for k, v in s["yardsticks"].items() if v is not None),
        "",
    ]
    out.append("durability:")
    for c, d in doc["durability"].items():
        out.append(f"  {c}: {d}")
    out.append("")
    out.append("ratios (each taken within one round, median over rounds):")
    for k, v in s["ratios"].items():
        if v is not None:
            out.append(f"  {k}: {v}")
    out.append("")
    out.append("issue 13 targets:")
    for k, v in doc["targets"].items():
        verdict = {True: "met", False: "NOT met", None: "not measured"}[v["met"]]
        out.append(f"  {k}: {v['measured']} (target {v['target']}): {verdict}")
    return "\n".join(out) + "\n"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if v >= 10 else f"{v:.2f}"
    return str(v)


def _dbos_missing() -> str | None:
    """None if DBOS Transact imports, else why not."""
    try:
        import dbos  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick: 1)")
    p.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS)
    p.add_argument("--pg-dsn", default=None)
    p.add_argument("--steps", type=int, default=None, help="steps in the chain (1000)")
    p.add_argument("--workflows", type=int, default=None, help="sequential workflows (200)")
    p.add_argument(
        "--concurrent-workflows", type=int, default=None, help="in the 50-at-a-time run (600)"
    )
    p.add_argument(
        "--history-steps", type=int, default=None, help="completed steps before kill -9 (4999)"
    )
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument(
        "--profile",
        type=Path,
        help="write a pyinstrument profile of each step/seq/conc measurement's timed part "
        "into this folder (needs pyinstrument, in the bench extra; slows what it profiles)",
    )
    a = p.parse_args()
    q = a.quick
    sizes = {
        "steps": a.steps or (300 if q else 1000),
        "seq": a.workflows or (40 if q else 200),
        "conc": a.concurrent_workflows or (150 if q else 600),
        "concurrency": 50,
        "history_steps": a.history_steps or (499 if q else 4999),
        "rtt": 200,
    }
    rounds = a.rounds or (1 if q else 3)
    configs = list(a.configs)
    skipped: dict[str, str] = {}
    if any(c.startswith("dbos") for c in configs) and (err := _dbos_missing()) is not None:
        why = f"DBOS Transact is not importable ({err}; pip install -e '.[bench]')"
        note(f"{why}: measuring continuum_py only")
        skipped |= {c: why for c in configs if c.startswith("dbos")}
    pg: PgAdmin | None = None
    if any(c.endswith("postgres") for c in configs):
        dsn = a.pg_dsn or os.environ.get("CONTINUUM_TEST_PG_DSN") or DEFAULT_DSN
        pg = PgAdmin(dsn)
        why_not = pg.check()
        if why_not is not None:
            note(f"Postgres at {dsn} is not usable ({why_not}): skipping it")
            skipped |= {
                c: f"Postgres not usable: {why_not}" for c in configs if c.endswith("postgres")
            }
            pg = None
    configs = [c for c in configs if c not in skipped]
    docs: list[dict[str, Any]] = []
    durability: dict[str, Any] = {}
    rtt: dict[str, Any] = {}
    with workdir(a.dir, keep=a.keep) as folder:
        if a.profile is not None:
            a.profile.mkdir(parents=True, exist_ok=True)
        run = Runner(folder, pg, sizes, a.profile.resolve() if a.profile else None)
        for i in range(rounds):
            note(f"round {i + 1}/{rounds}: yardsticks")
            rnd: dict[str, Any] = {"yardsticks": yardsticks(folder, pg, q), "results": {}}
            order = configs if i % 2 == 0 else configs[::-1]
            for w in WORKLOADS:
                for c in order:
                    note(f"round {i + 1}/{rounds}: {w} on {c}")
                    got = run.measure(c, w)
                    rnd["results"].setdefault(c, {})[w] = got
                    if "durability" in got:
                        durability[c] = got["durability"]
            docs.append(rnd)
        for c in configs:
            if c.endswith("postgres"):
                note(f"round trips per step on {c} (through a counting proxy, untimed)")
                rtt[c] = run.measure(c, "rtt")["result"]
        info = meta(folder)
    info["versions"] = {
        d: dist_version(d) for d in ("dbos", "sqlalchemy", "psycopg", "asyncpg", "pyinstrument")
    }
    summary = summarize(docs, configs)
    doc = {
        "benchmark": "head_to_head",
        "question": "continuum_py against DBOS Transact, the same workloads in one run",
        "meta": info,
        "params": {
            "sizes": sizes,
            "rounds": rounds,
            "configs": configs,
            "quick": q,
            "skipped": skipped,
        },
        "durability": durability,
        "round_trips_per_step": {c: v["per_step"].get("round_trips") for c, v in rtt.items()},
        "round_trips_per_3_step_workflow": {
            c: v["per_3_step_workflow"].get("round_trips") for c, v in rtt.items()
        },
        "wire_counts_per_step": rtt,
        "summary": summary,
        "targets": targets(
            summary, summary["figures"].get("continuum:sqlite", {}).get("conc_per_s")
        ),
        "rounds": docs,
    }
    if a.out:
        Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    emit(doc)
    sys.stderr.write(table(doc))


if __name__ == "__main__":
    main()
