"""The portal's FastAPI application: security headers, error handling, static files,
and the page and API routers.

``create_app(services, settings)`` is the only entry point; ``serve(app, host, port)``
runs it with uvicorn on exactly the address it is given (the daemon passes the
gateway's LAN-side address; the enforcement rules never let a managed device reach
it).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mudguard.errors import MudguardError
from mudguard.portal import _api, _pages
from mudguard.portal._auth import OwnerAccount
from mudguard.portal._services import PortalServices
from mudguard.portal._web import (
    LANG_COOKIE,
    PortalSettings,
    PortalState,
    error_fields,
    error_key,
    error_status,
    secure,
)

log = logging.getLogger(__name__)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class _Headers(BaseHTTPMiddleware):
    """Security headers on every answer; no caching of anything but static files;
    the language switch remembered in a cookie."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        """Add the headers (and the language cookie) to the answer."""
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        if secure(request):
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        lang = request.query_params.get("lang")
        if lang in ("en", "fr") and request.cookies.get(LANG_COOKIE) != lang:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, httponly=True,
                                samesite="strict", secure=secure(request))
        return response


class _BodyLimit:
    """Refuse (413) any request body over ``limit`` bytes, announced or streamed, before
    a handler reads it into memory: JSON bodies have no other bound."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0
        state = {"over": False, "started": False}

        async def counted() -> Message:
            nonlocal seen
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                # Stop reading: the handler sees a disconnect, and its answer is replaced.
                state["over"] = True
                return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            if state["over"] and not state["started"]:
                return
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, tracked)
        if state["over"] and not state["started"]:
            await self._refuse(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"error": "too_large", "message": "the request body is "
                                 "too large"}, status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)


def create_app(services: PortalServices, settings: PortalSettings) -> FastAPI:
    """The owner's portal and its REST API (OpenAPI schema at ``/openapi.json``)."""
    app = FastAPI(title="mudguard portal", version="1",
                  description="The owner's portal and API of a mudguard home gateway.",
                  docs_url=None, redoc_url=None)
    app.state.portal = PortalState(services=services, settings=settings,
                                   owner=OwnerAccount(settings.state_dir / "owner.json"))
    app.add_middleware(_Headers)
    # The largest legitimate body is a label photo in a form (see ``_pages._form``).
    app.add_middleware(_BodyLimit, limit=settings.max_upload_bytes + 65536)
    if settings.allowed_hosts is not None:
        # A page on another site that re-binds its DNS name to the portal's address is
        # same-origin for the browser; only the Host header gives it away.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    static = Path(str(resources.files(__package__).joinpath("static")))
    app.mount("/static", StaticFiles(directory=static), name="static")
    app.include_router(_api.router)
    app.include_router(_pages.router)
    _install_error_handlers(app)
    return app


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MudguardError)
    async def mudguard_error(request: Request, exc: MudguardError) -> Response:
        status = error_status(exc)
        if status >= 500:
            log.error("portal: %s failed: %s", request.url.path, exc.__class__.__name__)
        if _is_api(request):
            return _api.error_response(exc)
        return _pages.error_page(request, exc, status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        fields = [".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()][:20]
        if _is_api(request):
            return JSONResponse({"error": "bad_input", "message": "the request is malformed",
                                 "fields": fields}, status_code=422)
        return _pages.error_page(request, _pages.simple_error("bad_input"), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        key = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_input")
        if _is_api(request) or exc.status_code == 405:
            return JSONResponse({"error": key, "message": str(exc.detail)},
                                status_code=exc.status_code)
        return _pages.error_page(request, _pages.simple_error(key), exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("portal: unexpected error on %s", request.url.path)
        if _is_api(request):
            return JSONResponse({"error": "internal", "message": "the gateway could not do "
                                 "that; nothing was changed"}, status_code=500)
        return _pages.error_page(request, _pages.simple_error("internal"), 500)

    del mudguard_error, validation_error, http_error, unexpected


def serve(app: FastAPI, host: str, port: int, *, log_level: str = "warning",
          certfile: Path | None = None, keyfile: Path | None = None) -> None:
    """Serve ``app`` on exactly ``host:port`` (blocking); over TLS with a certificate
    and key (cookies are then Secure and HSTS is sent)."""
    tls = certfile is not None and keyfile is not None
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                server_header=False, proxy_headers=False,
                ssl_certfile=str(certfile) if tls else None,
                ssl_keyfile=str(keyfile) if tls else None)


__all__ = ["CSP", "SECURITY_HEADERS", "create_app", "error_fields", "error_key", "serve"]
