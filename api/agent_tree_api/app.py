"""The FastAPI application: routes, error bodies, the request-size limit, metrics and probes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_tree.spec import error_items
from agent_tree_api.auth import Caller
from agent_tree_api.deps import Services, caller, services
from agent_tree_api.errors import ApiError
from agent_tree_api.history import HistoryUnavailable
from agent_tree_api.kube import KubeError
from agent_tree_api.models import WhoAmI
from agent_tree_api.routes import approvals, runs, steps, trees
from agent_tree_api.routes.web import STATIC_DIR, web_router

VERSION = "v1"


def create_app(make_services: Callable[[], Awaitable[Services]], static_dir: Path = STATIC_DIR) -> FastAPI:
    """The application; ``make_services`` builds its clients when it starts (and they close when it stops).

    ``static_dir`` holds the web view's bundle (served at ``/``; see routes/web.py).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = await make_services()
        try:
            yield
        finally:
            await app.state.services.close()

    app = FastAPI(
        title="agent-tree",
        version="0.1.0",
        summary="Runs of supervised agent trees on Kubernetes: create, follow live, approve, retry and fork.",
        description="Authenticate with a Kubernetes bearer token (`Authorization: Bearer $(kubectl create token NAME)`); "
        "Kubernetes RBAC decides what the caller may do, and writes are made with the caller's own token. "
        "See docs/api.md.",
        lifespan=lifespan,
    )
    for module in (trees, runs, steps, approvals):
        app.include_router(module.router)
    app.include_router(web_router(static_dir))
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.get("/api/v1/whoami", tags=["auth"], response_model=WhoAmI)
    async def whoami(who: Caller = Depends(caller)) -> WhoAmI:
        """Who the Kubernetes API server says the token belongs to (a TokenReview)."""
        return WhoAmI(username=who.username, groups=list(who.groups))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(svc: Services = Depends(services)) -> JSONResponse:
        problems = []
        try:
            await svc.kube.as_service("GET", "/version")
        except KubeError as exc:
            problems.append(f"kubernetes: {exc.message}")
        if svc.config.settings.database_url:
            try:
                await (await svc.history.pool()).fetchval("SELECT 1")
            except (HistoryUnavailable, OSError, Exception) as exc:
                problems.append(f"history database: {type(exc).__name__}: {exc}")
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    return app


def with_middleware(app: FastAPI, max_body_bytes: int) -> ASGIApp:
    """The application behind the body-size limit and the request metrics."""
    return Metrics(BodyLimit(app, max_body_bytes), app)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        ctx = detail.get("ctx") or {}
        err = ApiError.invalid("body", f"not valid JSON ({ctx.get('error', 'parse error')})", 400)
        return await _api_error(request, err)
    items = []
    for path, message in error_items(errors):
        where, _, rest = path.partition(".")
        field = rest if where in ("body", "query", "path") and rest else path
        if where == "header":
            field = rest.replace("_", "-").title() if rest else path
        if where == "body" and not rest:
            field = "body"
        items.append((field, message))
    message = "; ".join(f"{f}: {m}" for f, m in items)
    return JSONResponse(ApiError(422, "Invalid", message, items).body(), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # FastAPI could not read the body at all (bytes that are not UTF-8, ...)
        err = ApiError.invalid("body", f"cannot be read ({exc.detail}); send a JSON object encoded in UTF-8", 400)
        return await _api_error(request, err)
    reason = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "Error")
    return JSONResponse(ApiError(exc.status_code, reason, str(exc.detail)).body(), status_code=exc.status_code)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, before the application reads them.

    A declared Content-Length is checked at once; a chunked body is read (up to ``limit`` + 1 bytes)
    before the application runs and replayed to it.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b""):
            await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body"):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        error = ApiError.invalid(
            "body", f"larger than the limit of {self.limit} bytes (AGENT_TREE_API_MAX_BODY_BYTES)", 413
        )
        payload = JSONResponse(error.body()).body
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class Metrics:
    """Counts requests by route template (not by path: bounded label values) and status code."""

    def __init__(self, inner: ASGIApp, app: FastAPI) -> None:
        self.inner = inner
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                self._observe(scope, status["code"], time.perf_counter() - start)
            await send(message)

        await self.inner(scope, receive, sending)

    def _observe(self, scope: Scope, code: int, seconds: float) -> None:
        svc: Services | None = getattr(self.app.state, "services", None)
        if svc is None:
            return
        route = scope.get("route")
        template = getattr(route, "path", None) or "(unmatched)"
        method = scope.get("method", "")
        svc.metrics.requests.labels(template, method, str(code)).inc()
        svc.metrics.latency.labels(template, method).observe(seconds)
