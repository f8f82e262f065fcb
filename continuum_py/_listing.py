"""Pages of runs for ``Engine.list_runs``: the options checked, the cursor, the page.

The cursor is a keyset: the ``(created_at, run_id)`` of a page's last run, so
the next page starts right after it however many runs were added meanwhile
(an offset would skip or repeat runs then). It also carries a digest of the
query it belongs to, so it is refused with other filters or another order.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import math
from collections.abc import Iterable
from typing import Any

import msgspec

from continuum_py.journal import RunRecord, RunStatus
from continuum_py.workflow import WorkflowDef

__all__ = ["RunPage", "RunQuery", "decode_cursor", "encode_cursor", "run_query"]

_CURSOR_VERSION = 1


class RunPage(list[RunRecord]):
    """One page of ``engine.list_runs``: a list of ``RunRecord`` plus where the next page starts.

    It is a plain ``list`` in every other way, so code that iterates, indexes or
    counts the result needs no change.

    Attributes:
        next_cursor: pass it as ``cursor=`` (with the same filters and order) to
            get the next page; ``None`` when no run was left to list.

    .. versionadded:: 0.1
    """

    next_cursor: str | None

    def __init__(self, runs: Iterable[RunRecord] = (), next_cursor: str | None = None) -> None:
        super().__init__(runs)
        self.next_cursor = next_cursor

    def __repr__(self) -> str:
        return f"RunPage({list.__repr__(self)}, next_cursor={self.next_cursor!r})"


class RunQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The checked options of one ``list_runs`` call, in journal terms."""

    status: RunStatus | None
    workflow: str | None
    run_id_prefix: str | None
    created_after: float | None
    created_before: float | None
    limit: int
    oldest_first: bool

    def digest(self) -> str:
        """Names the query apart from its limit: a cursor fits only the query that made it."""
        key = msgspec.json.encode(
            [
                self.status.value if self.status else None,
                self.workflow,
                self.run_id_prefix,
                self.created_after,
                self.created_before,
                self.oldest_first,
            ]
        )
        return hashlib.blake2b(key, digest_size=8).hexdigest()


def _time(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(
                f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc)), "
                f"got naive {value!r}"
            )
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(
            f"{name} must be a timezone-aware datetime or seconds since the epoch, got {value!r}"
        )
    return float(value)


def run_query(
    *,
    status: Any,
    workflow: Any,
    run_id_prefix: Any,
    created_after: Any,
    created_before: Any,
    limit: Any,
    oldest_first: Any,
) -> RunQuery:
    """Check ``list_runs``'s options; a bad one is a ``ValueError`` naming it."""
    st: RunStatus | None = None
    if status is not None:
        try:
            st = RunStatus(status)
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            raise ValueError(f"status must be one of {known}; got {status!r}") from None
    name = workflow.name if isinstance(workflow, WorkflowDef) else workflow
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(
            f"workflow must be a @workflow function or a non-empty name, got {workflow!r}"
        )
    if run_id_prefix is not None and not isinstance(run_id_prefix, str):
        raise ValueError(f"run_id_prefix must be a string, got {run_id_prefix!r}")
    after = _time(created_after, "created_after")
    before = _time(created_before, "created_before")
    if after is not None and before is not None and after > before:
        raise ValueError(
            f"created_after ({created_after!r}) is later than created_before ({created_before!r})"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
    if not isinstance(oldest_first, bool):
        raise ValueError(f"oldest_first must be True or False, got {oldest_first!r}")
    return RunQuery(
        status=st,
        workflow=name,
        run_id_prefix=run_id_prefix or None,
        created_after=after,
        created_before=before,
        limit=limit,
        oldest_first=oldest_first,
    )


def encode_cursor(query: RunQuery, last: RunRecord) -> str:
    """The opaque cursor of the page after ``last`` (the page's last run)."""
    raw = msgspec.json.encode([_CURSOR_VERSION, last.created_at, last.run_id, query.digest()])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_Cursor = tuple[int, float, str, str]
_cursor_decoder = msgspec.json.Decoder(_Cursor)


def decode_cursor(cursor: Any, query: RunQuery) -> tuple[float, str]:
    """The ``(created_at, run_id)`` the page after ``cursor`` starts past.

    Raises:
        ValueError: ``cursor`` is not one ``list_runs`` returned, or it was
            made for other filters or another order.
    """
    if not isinstance(cursor, str) or not cursor:
        raise ValueError(
            f"cursor must be a page's next_cursor (a non-empty string), got {cursor!r}"
        )
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        version, created_at, run_id, digest = _cursor_decoder.decode(
            base64.urlsafe_b64decode(padded.encode("ascii"))
        )
    except (UnicodeEncodeError, binascii.Error, msgspec.DecodeError, ValueError):
        raise ValueError(
            f"cursor {cursor!r} is not one list_runs returned (pass a page's next_cursor as it is)"
        ) from None
    if version != _CURSOR_VERSION or not math.isfinite(created_at):
        raise ValueError(f"cursor {cursor!r} is not one this version of list_runs can read")
    if digest != query.digest():
        raise ValueError(
            "cursor belongs to a list_runs call with other filters or another order: "
            "pass the same status, workflow, run_id_prefix, created_after, created_before "
            "and oldest_first as the call that returned it"
        )
    return created_at, run_id
