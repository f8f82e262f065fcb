"""Cron schedule storage (:class:`~continuum_py.journal.ScheduleStore`) for each bundled journal.

Mixins: each journal class inherits the one for its storage. The engine
computes fires; these keep rows and make each advance a compare-and-set on
the stored ``last_fire`` and ``buffered``, so two workers advance a fire once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from continuum_py.errors import JournalUnavailable
from continuum_py.journal import ScheduleProgress, ScheduleRecord

__all__ = ["MemorySchedules", "PostgresSchedules", "SQLiteSchedules"]

T = TypeVar("T")

_COLUMNS = (
    "name, workflow, args, cron, tz, overlap, catchup, created_at, paused, "
    "last_fire, buffered, last_run_id, fired, skipped, last_skipped"
)
_DEFINITION_SET = (
    "workflow = excluded.workflow, args = excluded.args, cron = excluded.cron, "
    "tz = excluded.tz, overlap = excluded.overlap, catchup = excluded.catchup"
)
_PROGRESS_SET = (
    "last_fire = {}, buffered = {}, last_run_id = {}, fired = {}, skipped = {}, last_skipped = {}"
)


def _row(s: ScheduleRecord) -> tuple[Any, ...]:
    p = s.progress
    return (
        s.name,
        s.workflow,
        bytes(s.args),
        s.cron,
        s.tz,
        s.overlap,
        s.catchup,
        s.created_at,
        s.paused,
        p.last_fire,
        p.buffered,
        p.last_run_id,
        p.fired,
        p.skipped,
        p.last_skipped,
    )


def _progress(p: ScheduleProgress) -> tuple[Any, ...]:
    return (p.last_fire, p.buffered, p.last_run_id, p.fired, p.skipped, p.last_skipped)


def _record(row: Sequence[Any]) -> ScheduleRecord:
    return ScheduleRecord(
        name=row[0],
        workflow=row[1],
        args=bytes(row[2]),
        cron=row[3],
        tz=row[4],
        overlap=row[5],
        catchup=float(row[6]),
        created_at=float(row[7]),
        paused=bool(row[8]),
        progress=ScheduleProgress(
            last_fire=float(row[9]),
            buffered=None if row[10] is None else float(row[10]),
            last_run_id=row[11],
            fired=int(row[12]),
            skipped=int(row[13]),
            last_skipped=None if row[14] is None else float(row[14]),
        ),
    )


class MemorySchedules:
    """Schedules in a dictionary (the memory journal)."""

    _schedule_rows: dict[str, ScheduleRecord]

    def _schedule_table(self) -> dict[str, ScheduleRecord]:
        try:
            return self._schedule_rows
        except AttributeError:
            self._schedule_rows = {}
            return self._schedule_rows

    async def put_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        table = self._schedule_table()
        old = table.get(schedule.name)
        if old is not None:
            schedule = msgspec.structs.replace(
                old,
                workflow=schedule.workflow,
                args=schedule.args,
                cron=schedule.cron,
                tz=schedule.tz,
                overlap=schedule.overlap,
                catchup=schedule.catchup,
            )
        table[schedule.name] = schedule
        return schedule

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        return self._schedule_table().get(name)

    async def list_schedules(self) -> list[ScheduleRecord]:
        return [s for _, s in sorted(self._schedule_table().items())]

    async def advance_schedule(
        self, name: str, expected: ScheduleProgress, new: ScheduleProgress
    ) -> bool:
        table = self._schedule_table()
        cur = table.get(name)
        if (
            cur is None
            or cur.progress.last_fire != expected.last_fire
            or cur.progress.buffered != expected.buffered
        ):
            return False
        table[name] = msgspec.structs.replace(cur, progress=new)
        return True

    async def pause_schedule(self, name: str, paused: bool, *, now: float) -> bool:
        table = self._schedule_table()
        cur = table.get(name)
        if cur is None:
            return False
        progress = cur.progress
        if cur.paused and not paused and progress.last_fire < now:
            progress = msgspec.structs.replace(progress, last_fire=now)
        table[name] = msgspec.structs.replace(cur, paused=paused, progress=progress)
        return True

    async def delete_schedule(self, name: str) -> bool:
        return self._schedule_table().pop(name, None) is not None


def _no_table(exc: BaseException) -> bool:
    """A journal file of a layout older than the schedules table (read-only open)."""
    return "no such table" in str(exc)


class SQLiteSchedules:
    """Schedules in the ``schedules`` table of a SQLite journal (layout 5)."""

    if TYPE_CHECKING:  # the SQLite journal provides these

        async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _fetchall(self, sql: str, params: Any = ()) -> list[Any]: ...

    async def put_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        def tx(conn: sqlite3.Connection) -> ScheduleRecord:
            conn.execute(
                f"INSERT INTO schedules ({_COLUMNS}) VALUES ({', '.join('?' * 15)}) "
                f"ON CONFLICT (name) DO UPDATE SET {_DEFINITION_SET}",
                _row(schedule),
            )
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM schedules WHERE name = ?", (schedule.name,)
            ).fetchone()
            return _record(row)

        return await self._tx(tx)

    async def _select_schedules(self, where: str, params: tuple[Any, ...]) -> list[ScheduleRecord]:
        try:
            rows = await self._fetchall(
                f"SELECT {_COLUMNS} FROM schedules{where} ORDER BY name", params
            )
        except JournalUnavailable as exc:
            if _no_table(exc):
                return []
            raise
        return [_record(r) for r in rows]

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        found = await self._select_schedules(" WHERE name = ?", (name,))
        return found[0] if found else None

    async def list_schedules(self) -> list[ScheduleRecord]:
        return await self._select_schedules("", ())

    async def advance_schedule(
        self, name: str, expected: ScheduleProgress, new: ScheduleProgress
    ) -> bool:
        sql = (
            f"UPDATE schedules SET {_PROGRESS_SET.format(*'??????')} "
            "WHERE name = ? AND last_fire = ? AND buffered IS ?"
        )
        params = (*_progress(new), name, expected.last_fire, expected.buffered)
        return await self._tx(lambda conn: conn.execute(sql, params).rowcount == 1)

    async def pause_schedule(self, name: str, paused: bool, *, now: float) -> bool:
        sql = (
            "UPDATE schedules SET last_fire = CASE WHEN paused = 1 AND ? = 0 AND last_fire < ? "
            "THEN ? ELSE last_fire END, paused = ? WHERE name = ?"
        )
        params = (int(paused), now, now, int(paused), name)
        return await self._tx(lambda conn: conn.execute(sql, params).rowcount == 1)

    async def delete_schedule(self, name: str) -> bool:
        return await self._tx(
            lambda conn: conn.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount == 1
        )


class PostgresSchedules:
    """Schedules in the ``schedules`` table of a Postgres journal's schema (layout 5)."""

    schema: str

    if TYPE_CHECKING:  # the Postgres journal provides these

        async def _fetch(self, what: str, sql: str, *args: Any) -> list[Any]: ...

        def _write(self, what: str, fn: Callable[[Any], Awaitable[T]]) -> Awaitable[T]: ...

    @property
    def _schedules_table(self) -> str:
        return f'"{self.schema}".schedules'

    async def put_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        marks = ", ".join(f"${i}" for i in range(1, 16))
        sql = (
            f"INSERT INTO {self._schedules_table} ({_COLUMNS}) VALUES ({marks}) "
            f"ON CONFLICT (name) DO UPDATE SET {_DEFINITION_SET} RETURNING {_COLUMNS}"
        )

        async def tx(conn: Any) -> ScheduleRecord:
            return _record(await conn.fetchrow(sql, *_row(schedule)))

        return await self._write("put_schedule", tx)

    async def _select_schedules(self, what: str, where: str, *args: Any) -> list[ScheduleRecord]:
        sql = f"SELECT {_COLUMNS} FROM {self._schedules_table}{where} ORDER BY name"
        try:
            rows = await self._fetch(what, sql, *args)
        except Exception as exc:
            # A schema of an older layout, opened read-only (it is never upgraded then).
            if type(exc).__name__ == "UndefinedTableError":
                return []
            raise
        return [_record(r) for r in rows]

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        found = await self._select_schedules("get_schedule", " WHERE name = $1", name)
        return found[0] if found else None

    async def list_schedules(self) -> list[ScheduleRecord]:
        return await self._select_schedules("list_schedules", "")

    async def _update(self, what: str, sql: str, *args: Any) -> bool:
        async def tx(conn: Any) -> bool:
            status: str = await conn.execute(sql, *args)
            return status.endswith(" 1")

        return await self._write(what, tx)

    async def advance_schedule(
        self, name: str, expected: ScheduleProgress, new: ScheduleProgress
    ) -> bool:
        sets = _PROGRESS_SET.format(
            "$1::float8", "$2::float8", "$3::text", "$4::bigint", "$5::bigint", "$6::float8"
        )
        sql = (
            f"UPDATE {self._schedules_table} SET {sets} WHERE name = $7 "
            "AND last_fire = $8::float8 AND buffered IS NOT DISTINCT FROM $9::float8"
        )
        return await self._update(
            "advance_schedule", sql, *_progress(new), name, expected.last_fire, expected.buffered
        )

    async def pause_schedule(self, name: str, paused: bool, *, now: float) -> bool:
        sql = (
            f"UPDATE {self._schedules_table} SET last_fire = CASE WHEN paused AND NOT $1 "
            "THEN greatest(last_fire, $2::float8) ELSE last_fire END, paused = $1 WHERE name = $3"
        )
        return await self._update("pause_schedule", sql, paused, now, name)

    async def delete_schedule(self, name: str) -> bool:
        return await self._update(
            "delete_schedule", f"DELETE FROM {self._schedules_table} WHERE name = $1", name
        )


SQLITE_TABLE = """CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    args BLOB NOT NULL,
    cron TEXT NOT NULL,
    tz TEXT NOT NULL,
    overlap TEXT NOT NULL,
    catchup REAL NOT NULL,
    created_at REAL NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    last_fire REAL NOT NULL,
    buffered REAL,
    last_run_id TEXT,
    fired INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    last_skipped REAL
)"""
"""The SQLite journal's schedules table (layout 5)."""

POSTGRES_TABLE = """
CREATE TABLE {s}.schedules (
    name text PRIMARY KEY,
    workflow text NOT NULL,
    args bytea NOT NULL,
    cron text NOT NULL,
    tz text NOT NULL,
    overlap text NOT NULL,
    catchup double precision NOT NULL,
    created_at double precision NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    last_fire double precision NOT NULL,
    buffered double precision,
    last_run_id text,
    fired bigint NOT NULL DEFAULT 0,
    skipped bigint NOT NULL DEFAULT 0,
    last_skipped double precision
);
"""
"""The Postgres journal's schedules table (layout 5)."""
