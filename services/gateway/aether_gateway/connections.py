"""What a client that does not read can cost the gateway: little, and not for long (issue 18).

A live stream writes whenever a task changes; a client that stops reading leaves the bytes with
the server. Two bounds, on every connection (HTTP, SSE, WebSocket):

- The kernel keeps at most `UNSENT_BYTES` not yet sent per socket (`TCP_NOTSENT_LOWAT`), and
  the server's own buffer stops taking more at asyncio's high-water mark (64 KiB): past both,
  the stream waits (and folds what it could not send into its next message, `streams.py`).
  Without the first bound a loopback socket takes about 4 MB before anything waits.
- A connection that stays that full for `slow_client_timeout_s` is closed (a TCP reset: a
  graceful close would wait for the same client to read) and logged with the reason. A reason
  sent to the client could not reach it: its connection is full.

A request's line and headers are bounded as well (`MAX_HEAD_BYTES`, else 431 and the connection
closed): uvicorn's h11 parser has such a limit, its httptools parser none (a 30 MB header was
held whole, uvicorn issue 157).

uvicorn takes these as its `http` and `ws` protocol classes: the same classes it would pick,
with the bounds added to asyncio's own callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TypedDict, cast

from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

from .metrics import SLOW_CLIENTS_CLOSED

log = logging.getLogger("aether.gateway.connections")

UNSENT_BYTES = 128 * 1024
MAX_HEAD_BYTES = 64 * 1024
"""Request line and headers of one request (h11's own limit is 16 KiB)."""


class SlowReaderGuard(asyncio.Protocol):
    timeout_s: float = 30.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._guarded = transport
        self._stalled: asyncio.TimerHandle | None = None
        sock = transport.get_extra_info("socket")
        if sock is not None and hasattr(socket, "TCP_NOTSENT_LOWAT") and sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, UNSENT_BYTES)
        super().connection_made(transport)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled = asyncio.get_running_loop().call_later(self.timeout_s, self._close_stalled)

    def resume_writing(self) -> None:
        self._cancel()
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _cancel(self) -> None:
        if getattr(self, "_stalled", None) is not None:
            self._stalled.cancel()  # type: ignore[union-attr]
            self._stalled = None

    def _close_stalled(self) -> None:
        self._stalled = None
        peer = self._guarded.get_extra_info("peername")
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        log.warning(
            "closed the connection of %s: it took nothing of what it was sent for %.0fs "
            "(a slow or stalled client; AETHER_SLOW_CLIENT_TIMEOUT_S)",
            address,
            self.timeout_s,
        )
        SLOW_CLIENTS_CLOSED.inc()
        self._guarded.abort()  # type: ignore[attr-defined]


class HeadLimit(asyncio.Protocol):
    """For uvicorn's httptools protocol: its parser calls `on_message_begin` and
    `on_headers_complete`; the bytes received in between are counted."""

    _head: int | None = 0
    """Bytes of the current request's head so far; None once its headers are complete."""

    def on_message_begin(self) -> None:
        self._head = 0
        super().on_message_begin()  # type: ignore[misc]

    def on_headers_complete(self) -> None:
        self._head = None
        super().on_headers_complete()  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            self._head += len(data)
        super().data_received(data)
        # Checked after parsing: a chunk that ends the headers and brings a body is no head.
        if self._head is not None and self._head > MAX_HEAD_BYTES and not self.transport.is_closing():  # type: ignore[attr-defined]
            self._refuse_head()

    def _refuse_head(self) -> None:
        peer = self.transport.get_extra_info("peername")  # type: ignore[attr-defined]
        log.warning("refused a request from %s: its line and headers passed %d bytes", peer, MAX_HEAD_BYTES)
        message = f"request line and headers larger than {MAX_HEAD_BYTES} bytes".encode()
        self.transport.write(  # type: ignore[attr-defined]
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(message), message)
        )
        self.transport.close()  # type: ignore[attr-defined]


class Protocols(TypedDict, total=False):
    http: type[asyncio.Protocol]
    ws: type[asyncio.Protocol]


def protocols(timeout_s: float) -> Protocols:
    """uvicorn's `http` and `ws` arguments: its automatic choices, guarded."""
    http_bases: tuple[type, ...] = (SlowReaderGuard, AutoHTTPProtocol)
    if not issubclass(AutoHTTPProtocol, H11Protocol):  # httptools: no limit of its own
        http_bases = (SlowReaderGuard, HeadLimit, AutoHTTPProtocol)
    classes: Protocols = {
        "http": type("GuardedHTTPProtocol", http_bases, {"timeout_s": timeout_s})
    }
    if AutoWebSocketsProtocol is not None:
        # uvicorn types it as any callable making a protocol; it is one of its protocol classes.
        ws_protocol = cast("type[asyncio.Protocol]", AutoWebSocketsProtocol)
        classes["ws"] = type(
            "GuardedWebSocketProtocol", (SlowReaderGuard, ws_protocol), {"timeout_s": timeout_s}
        )
    return classes
