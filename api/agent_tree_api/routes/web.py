"""The web view: the static bundle built from web/ (index.html, app.js, app.css), served at ``/``.

The files need no token (they hold no data); every call the page makes to ``/api/v1`` does. Client
routes (``/ui/ns/NS/runs/NAME`` ...) return index.html so that a reload or a shared link opens the
same page. When the bundle was not built, ``/`` says how to build it (503) instead of a bare 404.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
BUILD_COMMAND = "hack/build-web.sh (that is: cd web && npm ci && npm run build)"
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
# Everything the page loads or calls is on this origin: no CDN, no fonts or scripts from elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def web_router(static_dir: Path = STATIC_DIR) -> APIRouter:
    """Routes serving the bundle in ``static_dir`` (the package's ``static/`` by default)."""
    router = APIRouter(include_in_schema=False)

    def missing() -> Response:
        return PlainTextResponse(
            f"The web view is not built: {static_dir}/index.html is missing.\n"
            f"Build it from a checkout with {BUILD_COMMAND}; the REST API under /api/v1 works without it.\n",
            status_code=503,
            headers={"Cache-Control": "no-store"},
        )

    def index() -> Response:
        page = static_dir / "index.html"
        if not page.is_file():
            return missing()
        return FileResponse(page, media_type="text/html; charset=utf-8", headers=HEADERS)

    @router.get("/")
    async def root() -> Response:
        return index()

    @router.get("/ui")
    async def ui_root() -> Response:
        return RedirectResponse("/", status_code=307)

    @router.get("/ui/{path:path}")
    async def ui(path: str) -> Response:
        return index()

    @router.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @router.get("/static/{name}")
    async def asset(name: str) -> Response:
        media = ASSETS.get(name)
        if media is None:  # only the bundle's own files: no path is ever joined from the request
            return PlainTextResponse(f"not found: /static/{name}", status_code=404)
        path = static_dir / name
        if not path.is_file():
            return missing()
        return FileResponse(path, media_type=f"{media}; charset=utf-8", headers=HEADERS)

    return router
