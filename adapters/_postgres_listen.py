"""The Postgres journal's LISTEN side: notifications turned into listeners' calls.

They come on a connection of its own, kept open (re-opened if lost).

A mixin of :class:`~continuum_py.adapters.postgres.PostgresJournal`, kept apart
so that module stays readable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from continuum_py._log import get_logger
from continuum_py.adapters._postgres_errors import UNAVAILABLE
from continuum_py.adapters._postgres_wake import WakeOne
from continuum_py.errors import ConfigurationError

__all__ = ["Listening"]

log = get_logger()


class Listening:
    """Notifications of a Postgres journal's channels, on a connection of their own."""

    schema: str
    where: str
    channel: str
    wake_channel: str
    _closed: bool
    _callbacks: list[Callable[[str], None]]
    _listen_conn: Any
    _listen_lost: asyncio.Event | None
    _listener: asyncio.Task[None] | None
    _wake_one: WakeOne

    if TYPE_CHECKING:  # the Postgres journal provides these

        async def _connect_one(self) -> Any: ...

        def _errors(self, what: str) -> contextlib.AbstractContextManager[None]: ...

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
            with self._errors("listen"):
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
