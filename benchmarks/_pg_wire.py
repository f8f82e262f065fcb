"""A counting TCP proxy for the Postgres wire protocol (used by head_to_head.py, not a benchmark).

Both sides of the head-to-head benchmark talk to Postgres through different drivers
(asyncpg, psycopg); counting at the wire is the one count that means the same for both.
The proxy forwards bytes unchanged and, on the server's side, counts ReadyForQuery
messages: the server sends exactly one at the end of every simple query and every
extended-protocol Sync, so their number is the number of round trips the client waited
for. CommandComplete tags are counted too (``COMMIT``, ``BEGIN``, ``INSERT``, ...).

The proxy runs in its own thread with its own event loop, so it works under a driver
that blocks (psycopg) as well as under asyncio; it adds a hop per round trip, so the
counting pass is kept apart from the timed ones.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import threading
from typing import Any

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


class _ServerParser:
    """Splits the server's byte stream into messages and counts the ones that matter."""

    def __init__(self, counts: collections.Counter[str], pending_single: list[int]) -> None:
        self.buf = bytearray()
        self.counts = counts
        self.pending_single = pending_single  # one-byte answers owed to SSL/GSS requests

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.pending_single[0] > 0:
                if not self.buf:
                    return
                del self.buf[:1]
                self.pending_single[0] -= 1
                continue
            if len(self.buf) < 5:
                return
            kind = chr(self.buf[0])
            (length,) = struct.unpack_from("!i", self.buf, 1)
            if len(self.buf) < 1 + length:
                return
            body = bytes(self.buf[5 : 1 + length])
            del self.buf[: 1 + length]
            if kind == "Z":
                self.counts["round_trips"] += 1
            elif kind == "C":
                tag = body.rstrip(b"\0").decode("ascii", "replace").split(" ")[0]
                self.counts[f"tag_{tag}"] += 1


class _ClientParser:
    """Notices the client's SSL/GSS requests, whose one-byte answers have no message header."""

    def __init__(self, pending_single: list[int]) -> None:
        self.started = False
        self.buf = bytearray()
        self.pending_single = pending_single

    def feed(self, data: bytes) -> None:
        if self.started:
            return
        self.buf += data
        while not self.started and len(self.buf) >= 8:
            (length, code) = struct.unpack_from("!ii", self.buf, 0)
            if length == 8 and code in (_SSL_REQUEST, _GSSENC_REQUEST):
                self.pending_single[0] += 1
                del self.buf[:8]
            else:
                self.started = True  # the startup message; typed messages follow


class WireCounter:
    """A proxy on 127.0.0.1 in front of ``host:port``; ``counts`` holds what went through."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.counts: collections.Counter[str] = collections.Counter()
        self.listen_port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="pg-wire-counter")

    def __enter__(self) -> WireCounter:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.listen_port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_connection(self.host, self.port)
        pending = [0]
        client = _ClientParser(pending)
        server = _ServerParser(self.counts, pending)

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, parse: Any) -> None:
            try:
                while data := await r.read(65536):
                    parse(data)
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(
            pump(c_reader, s_writer, client.feed), pump(s_reader, c_writer, server.feed)
        )
