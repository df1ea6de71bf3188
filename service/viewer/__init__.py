"""The viewer page: ``GET /`` and its assets under ``/viewer/``.

three.js is installed from npm into ``service/viewer/node_modules`` at build time (``make viewer``, or
the Dockerfile's node stage) and served from there under ``/viewer/vendor/``, so that the page fetches
nothing from another host. Without it ``GET /`` still answers, with a page that says how to build it.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from starlette.staticfiles import StaticFiles

HERE = Path(__file__).parent
STATIC = HERE / "static"
VENDOR = HERE / "node_modules"
BUILD_COMMAND = "make viewer  (or: cd service/viewer && npm ci)"
# What index.html's import map points at; the page cannot work without any of them.
VENDOR_FILES = ("three/build/three.module.js", "three/build/three.core.js",
                "three/examples/jsm/loaders/GLTFLoader.js", "three/examples/jsm/controls/OrbitControls.js")


class OptionalStaticFiles(StaticFiles):
    """StaticFiles that answers 404 (not a 500) while its folder does not exist yet."""

    async def check_config(self) -> None:
        return None


def vendor_built(vendor: Path) -> bool:
    return all((vendor / name).is_file() for name in VENDOR_FILES)


def not_built_page(vendor: Path) -> str:
    missing = [name for name in VENDOR_FILES if not (vendor / name).is_file()]
    items = "".join(f"<li><code>{html.escape(name)}</code></li>" for name in missing)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facerecon: viewer not built</title></head>
<body data-state="not-built">
<h1>The viewer's assets have not been built</h1>
<p>The API works (see <a href="openapi.json">/openapi.json</a>); the viewer page and /docs need three.js and Swagger UI from npm, which is
missing under <code>{html.escape(str(vendor))}</code>:</p>
<ul>{items}</ul>
<p>Build it with <code>{html.escape(BUILD_COMMAND)}</code> and reload this page.</p>
</body></html>
"""


def mount_viewer(app: FastAPI) -> None:
    vendor = VENDOR  # read at call time, so that a test can point it elsewhere
    # Mounts match in order: the vendor folder before the page's own /viewer.
    app.mount("/viewer/vendor", OptionalStaticFiles(directory=vendor, check_dir=False), name="viewer-vendor")
    app.mount("/viewer", StaticFiles(directory=STATIC), name="viewer")

    @app.get("/", include_in_schema=False)
    async def index():
        # Checked per request: building the assets needs no restart.
        if not vendor_built(vendor):
            return HTMLResponse(not_built_page(vendor))
        return FileResponse(STATIC / "index.html", media_type="text/html")
