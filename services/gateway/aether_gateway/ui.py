"""Serves the built Mission Board (ui/dist) at `/`, with the single-page app's deep links."""

from __future__ import annotations

from pathlib import PurePosixPath

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

INDEX = "index.html"


class MissionBoard(StaticFiles):
    """A path that is no file and looks like a page (`/tasks/<id>`) gets index.html; the app routes it.

    Paths under /api/ and /mcp/ and paths with a file extension keep their 404, so a missing asset,
    a mistyped API call or an MCP client given `/mcp/` is not answered with HTML.
    """

    def __init__(self, directory: str) -> None:
        super().__init__(directory=directory, html=True)

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404 or not _is_page(path):
                raise
            response = await super().get_response(INDEX, scope)
        if path.startswith("assets/") and response.status_code == 200:
            # Vite puts a content hash in every asset's name: a changed asset has a new URL.
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        elif response.media_type == "text/html":
            response.headers["Cache-Control"] = "no-cache"
        return response


def _is_page(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return not (parts and parts[0] in ("api", "mcp")) and "." not in (parts[-1] if parts else "")
