"""The Postgres journal's wake-ups: ``LISTEN`` on a connection of its own, kept open.

A mixin of :class:`~continuum_py.adapters.postgres.PostgresJournal`, which sets
the attributes declared here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from continuum_py._log import get_logger
from continuum_py.adapters._postgres_errors import UNAVAILABLE, connect_error, translated
from continuum_py.adapters._postgres_wake import WakeOne
from continuum_py.errors import ConfigurationError

__all__ = ["PostgresListening"]

log = get_logger()


class PostgresListening:
    """``LISTEN``/``NOTIFY`` wake-ups for the Postgres journal (a mixin)."""

    channel: str
    schema: str
    where: str
    wake_channel: str
    _dsn: str
    _database: str
    _closed: bool
    _callbacks: list[Callable[[str], None]]
    _listen_conn: Any
    _listen_lost: asyncio.Event | None
    _listener: asyncio.Task[None] | None
    _wake_one: WakeOne

    def _connect_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    # ---- LISTEN/NOTIFY ----
    async def listen(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(run_id)`` on each wake-up notification, until :meth:`aclose`.

        Notifications are sent (on this schema's channel, with the run id as
        payload) when a run starts unclaimed, gets an inbox message, is released,
        is set back to pending, or suspends until a time; a queued start names
        one worker on the wake channel instead, and ``callback("")`` is called
        at once in the process running it, a moment later in the others
        (:mod:`~continuum_py.adapters._postgres_wake`). They come on a
        dedicated connection, which is re-opened with backoff if lost; once it is
        back, ``callback("")`` says notifications may have been missed meanwhile
        (look for work now). Workers also poll, so a missed one only delays work.

        Raises:
            JournalUnavailable: the first listening connection could not be opened.
        """
        if self._closed:
            raise ConfigurationError("this PostgresJournal was closed; open a new one")
        self._callbacks.append(callback)
        if self._listener is None:
            await self._open_listener()
            self._listener = asyncio.get_running_loop().create_task(
                self._keep_listening(), name=f"continuum-listen-{self.schema}"
            )

    async def _connect_one(self) -> Any:
        """A connection of its own, outside the pool (LISTEN, a liveness lock)."""
        try:
            return await asyncpg.connect(
                self._dsn, **{**self._connect_kwargs(), "statement_cache_size": 0}
            )
        except Exception as exc:
            raise connect_error(exc, self.where, self._database) from exc

    def _dispatch(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for cb in list(self._callbacks):
            try:
                cb(payload)
            except Exception:
                log.exception("journal.listen_callback_failed", run_id=payload)

    async def _open_listener(self) -> None:
        conn = await self._connect_one()
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            with translated(self.where, "listen"):
                await conn.add_listener(self.channel, self._dispatch)
                await conn.add_listener(
                    self.wake_channel, lambda _c, _p, _ch, who: self._wake_one.on_notify(who)
                )
        except BaseException:
            conn.terminate()
            raise
        self._listen_conn, self._listen_lost = conn, lost

    async def _keep_listening(self, *, ping_every: float = 30.0, max_backoff: float = 5.0) -> None:
        backoff = 0.1
        while not self._closed:
            if self._listen_conn is None:
                try:
                    await self._open_listener()
                except Exception as exc:
                    log.warning(
                        "journal.listen_reconnect_failed",
                        where=self.where,
                        error=str(exc),
                        retry_in=backoff,
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, max_backoff)
                    continue
                log.info("journal.listen_reconnected", where=self.where)
                backoff = 0.1
                # Whatever was notified while we were away is lost: look now.
                self._dispatch(None, 0, self.channel, "")
            conn, lost = self._listen_conn, self._listen_lost
            assert lost is not None
            try:
                async with asyncio.timeout(ping_every):
                    await lost.wait()
            except TimeoutError:
                # A silent network drop closes nothing; a query finds it.
                try:
                    async with asyncio.timeout(10):
                        await conn.fetchval("SELECT 1")
                    continue
                except UNAVAILABLE:
                    pass
            if self._closed:
                return
            log.warning("journal.listen_connection_lost", where=self.where, channel=self.channel)
            conn.terminate()
            self._listen_conn = None
