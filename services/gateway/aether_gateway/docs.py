"""The API's documentation at `/docs`, served from this process: Swagger UI's files come with the
`fastapi-swagger` package (no CDN, no floating version, nothing loaded from another origin on
the origin that keeps the API key), and the page runs no inline script, so the content security
policy can forbid them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

ASSETS_PATH = "/docs/assets"
_SWAGGER = resources.files("fastapi_swagger") / "resources"
_ASSETS = {
    "swagger-ui-bundle.js": Path(str(_SWAGGER / "swagger-ui-bundle.js")),
    "swagger-ui.css": Path(str(_SWAGGER / "swagger-ui.css")),
    "favicon-32x32.png": Path(str(_SWAGGER / "favicon-32x32.png")),
    "init.js": Path(__file__).with_name("docs_init.js"),
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} · API</title>
<link rel="icon" href="{assets}/favicon-32x32.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/init.js"></script>
</body>
</html>
"""


def mount_docs(app: FastAPI, *, openapi_url: str = "/openapi.json") -> None:
    """`/docs` and its assets. The FastAPI app must be made with `docs_url=None`, `redoc_url=None`."""

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(PAGE.format(title=app.title, assets=ASSETS_PATH, openapi=openapi_url))

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False)
    async def swagger_asset(name: str) -> FileResponse:
        path = _ASSETS.get(name)
        if path is None:
            raise HTTPException(404, f"no documentation asset '{name}'")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})
