"""Request bodies are counted as they arrive, whatever their encoding (issue 18).

A `Content-Length` over the limit is refused before a byte of the body is read; the server drops
the declared bytes as they come (they are finite), so a client that sends its whole body before
reading still gets the 413. A chunked body has no length to check beforehand: the count of what
arrived stops it the moment it passes the limit, so no more than the limit is ever held, and
that 413 closes the connection, which would otherwise go on taking (and dropping) bytes for as
long as the client sends them.

Pure ASGI rather than FastAPI's `max_body_size`, which answers a too-long `Content-Length` in
plain text, past every handler (no JSON detail, no security headers, the connection kept).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI, reading a body for a route, lets it through to the
    app's handler instead of calling it a body it could not parse."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes")


def too_large(max_bytes: int, *, close: bool) -> JSONResponse:
    return JSONResponse(
        {"detail": f"request body larger than {max_bytes} bytes"},
        status_code=413,
        headers={"Connection": "close"} if close else None,
    )


class BodyLimit:
    """`exempt(path)`: endpoints that bound their bodies themselves (MCP, A2A: a protocol error)."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: Callable[[str], bool] = lambda path: False) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope["path"]):
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large(self.max_bytes, close=False)(scope, receive, send)

        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except BodyTooLarge:
            # Read outside a route (the app's handlers answer it there): answer it here.
            if started:
                raise
            await too_large(self.max_bytes, close=True)(scope, receive, send)
