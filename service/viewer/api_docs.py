"""``GET /docs``: Swagger UI for the API, served from ``service/viewer/node_modules/swagger-ui-dist``.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, so it is a blank page on a closed network; this
one takes the same files from the npm package the viewer build installs (``make viewer``).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

ASSETS = "/viewer/vendor/swagger-ui-dist"


def mount_api_docs(app: FastAPI) -> None:
    """Add ``GET /docs`` (keep FastAPI's ``docs_url`` and ``redoc_url`` off: both use a CDN)."""

    @app.get("/docs", include_in_schema=False)
    async def api_docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")  # behind a path prefix, links need it
        return get_swagger_ui_html(openapi_url=root + app.openapi_url, title=f"{app.title} API",
                                   swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png")
