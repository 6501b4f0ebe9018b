"""A tiny HTTP endpoint for the FastStream services: `/livez`, `/readyz`, `/metrics`.

Kubernetes probes and Prometheus need HTTP; the services otherwise speak only NATS. `/readyz` is
200 only while NATS is connected and the KV store answers, so a pod that lost NATS stops getting
traffic it cannot serve. Plain asyncio: it must not need a web framework, nor cost anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("aether.probe")

ReadyCheck = Callable[[], Awaitable[bool]]
Metrics = Callable[[], Awaitable[tuple[bytes, str]]]


class ProbeServer:
    def __init__(self, host: str, port: int, ready: ReadyCheck, metrics: Metrics | None = None) -> None:
        self.host, self.port = host, port
        self.ready = ready
        self.metrics = metrics
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode(errors="replace").split()
            path = parts[1].split("?", 1)[0] if len(parts) > 1 else "/"
            status, body, content_type = await self._route(path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except Exception as exc:
            log.debug("probe request failed: %r", exc)
        finally:
            writer.close()

    async def _route(self, path: str) -> tuple[str, bytes, str]:
        if path == "/livez":
            return "200 OK", b"ok\n", "text/plain"
        if path == "/readyz":
            try:
                ok = await asyncio.wait_for(self.ready(), 3)
            except Exception:
                ok = False
            return ("200 OK", b"ready\n", "text/plain") if ok else ("503 Service Unavailable", b"not ready\n", "text/plain")
        if path == "/metrics" and self.metrics is not None:
            body, content_type = await self.metrics()
            return "200 OK", body, content_type
        return "404 Not Found", b"not found\n", "text/plain"
