"""The Postgres journal's appends: how batches become statements.

One batch is one statement (:meth:`Appender.one`); a group commit of several
runs' batches is one statement per round (:meth:`Appender.rounds`), a round
holding at most one batch per run (:func:`plan`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from continuum_py.adapters._postgres_append_sql import SCALAR_EVENTS, append_many, append_one
from continuum_py.adapters._postgres_lend import Lender
from continuum_py.adapters._postgres_sql import Statements
from continuum_py.adapters._rules import bad_seqs, why_refused
from continuum_py.errors import JournalError
from continuum_py.journal import NOTIFY_PARENT_STATUSES, AppendBatch, RunStatus, record_from_row

__all__ = ["Appender", "one_statement", "plan"]


class Appender:
    """Writes batches with the statements of one schema, on a connection the caller holds."""

    def __init__(self, sql: Statements, schema: str, channel: str) -> None:
        self._sql = sql
        self.channel = channel
        self.lender: Lender | None = None
        """The journal's lender, once connected: its kept connection's statements are prepared."""
        s = f'"{schema}"'
        self._many = append_many(s)
        # By (status, snapshot, ending, events): each leaves out what it does not need.
        self._one = {
            (st, snap, end, k): append_one(s, status=st, snapshot=snap, ending=end, events=k)
            for st in (False, True)
            for snap in (False, True)
            for end in ((False, True) if st else (False,))
            for k in (*range(SCALAR_EVENTS + 1), None)
        }
        self._step = self._one[(False, False, False, 2)]

    async def one(self, conn: Any, b: AppendBatch) -> JournalError | None:
        """Write one batch with one statement (see :func:`one_statement`); why it was refused."""
        evs = b.events  # their run_ids and seqs were checked by plan
        if b.status is None and b.snapshot is None and len(evs) == 2:
            # A sequential step's batch (its completion, the next one's scheduling):
            # every step, so its arguments are built without the general case's steps.
            e, f = evs
            x = b.expected_seq
            sql = self._step
            args: Sequence[Any] = (
                b.lease.run_id,
                b.lease.token,
                x,
                x + 2,
                b.inbox_seen,
                e.seq,
                e.kind,
                e.schema,
                e.data,
                f.seq,
                f.kind,
                f.schema,
                f.data,
            )
        else:
            sql, args = self._statement(b)
        # fetch, not fetchrow: a portal stopped after one row would leave the
        # statement's other inserts for whenever the portal is dropped.
        lend = self.lender
        stmt = None if lend is None else lend.statement(conn, sql) or await lend.prepare(conn, sql)
        if await (conn.fetch(sql, *args) if stmt is None else stmt.fetch(*args)):
            return None
        row = await conn.fetchrow(self._sql.get_run, b.lease.run_id)
        return why_refused(b, None if row is None else record_from_row(row))

    def _statement(self, b: AppendBatch) -> tuple[str, list[Any]]:
        """:meth:`one`'s statement for ``b`` and its arguments, in general."""
        evs = b.events
        st = b.status
        if st is None:  # a step's: the heads row only
            args: list[Any] = [
                b.lease.run_id,
                b.lease.token,
                b.expected_seq,
                b.expected_seq + len(evs),
                b.inbox_seen,
            ]
        else:
            args = [
                b.lease.run_id,
                b.lease.token,
                b.expected_seq,
                b.expected_seq + len(evs),
                st.value,
                b.outcome,
                b.reason,
                b.wake_at,
                b.inbox_seen,
                self.channel,
            ]
        sn = b.snapshot
        if sn is not None:
            args += (sn.seq, sn.schema, sn.data)
        if len(evs) <= SCALAR_EVENTS:
            shape: int | None = len(evs)
            for e in evs:
                args += (e.seq, e.kind, e.schema, e.data)
        else:
            shape = None
            args += (
                [e.seq for e in evs],
                [e.kind for e in evs],
                [e.schema for e in evs],
                [e.data for e in evs],
            )
        return self._one[
            (st is not None, sn is not None, st in NOTIFY_PARENT_STATUSES, shape)
        ], args

    async def rounds(
        self,
        conn: Any,
        batches: Sequence[AppendBatch],
        rounds: list[list[int]],
        out: list[JournalError | None],
    ) -> None:
        """Write ``rounds`` of ``batches``, a statement each, and each one's result in ``out``."""
        forwards: list[tuple[str, str, str]] = []
        for idxs in rounds:
            bs = [batches[i] for i in idxs]
            evs = [e for b in bs for e in b.events]  # their run_ids were checked by plan
            snaps = [(b.lease.run_id, b.snapshot) for b in bs if b.snapshot is not None]
            rows = await conn.fetch(
                self._many,
                [b.lease.run_id for b in bs],
                [b.lease.token for b in bs],
                [b.expected_seq for b in bs],
                [b.expected_seq + len(b.events) for b in bs],
                [b.status.value if b.status is not None else None for b in bs],
                [b.outcome for b in bs],
                [b.reason for b in bs],
                [b.wake_at for b in bs],
                [b.inbox_seen for b in bs],
                [e.run_id for e in evs],
                [e.seq for e in evs],
                [e.kind for e in evs],
                [e.schema for e in evs],
                [e.data for e in evs],
                [run_id for run_id, _ in snaps],
                [sn.seq for _, sn in snaps],
                [sn.schema for _, sn in snaps],
                [sn.data for _, sn in snaps],
                self.channel,
            )
            landed = {r[0]: r for r in rows}
            refused = []
            for i in idxs:
                if batches[i].lease.run_id in landed:
                    continue
                if batches[i].status in NOTIFY_PARENT_STATUSES:
                    # Held back if the run has a parent (or refused): on its own.
                    out[i] = await self.one(conn, batches[i])
                else:
                    refused.append(i)
            if refused:
                why = {
                    r[0]: r
                    for r in await conn.fetch(
                        self._sql.why, [batches[i].lease.run_id for i in refused]
                    )
                }
                for i in refused:
                    row = why.get(batches[i].lease.run_id)
                    out[i] = why_refused(batches[i], None if row is None else record_from_row(row))
            for i in idxs:
                row = landed.get(batches[i].lease.run_id)
                target = batches[i].continued_to
                if row is not None and target is not None and row[1] == RunStatus.CONTINUED.value:
                    forwards.append((row[0], target, self.channel))
        for args in forwards:
            await conn.fetch(self._sql.forward_unseen, *args)


def one_statement(batch: AppendBatch) -> bool:
    """Whether :meth:`Appender.one` writes ``batch`` whole, in one statement.

    A continue-as-new also moves the old run's unread messages: a second statement.
    """
    return batch.continued_to is None


def plan(batches: Sequence[AppendBatch]) -> tuple[list[JournalError | None], list[list[int]]]:
    """Results so far (bad seqs refused up front) and rounds of batch indexes.

    A round holds at most one batch per run, so one statement can write it;
    a run's later batches go in later rounds, checked against what landed before.
    """
    results: list[JournalError | None] = [None] * len(batches)
    rounds: list[list[int]] = []
    depth: dict[str, int] = {}
    for i, b in enumerate(batches):
        bad = bad_seqs(b)
        if bad is not None:
            results[i] = bad
            continue
        k = depth.get(b.lease.run_id, 0)
        depth[b.lease.run_id] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(i)
    return results, rounds
