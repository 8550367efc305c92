"""The console as a Starlette app: static assets, a JSON API per panel, and the writes.

Security model (docs/console.md): sign-in with an operator token in a POST body; an opaque
HttpOnly SameSite=Strict session cookie; a per-session CSRF token required on every
state-changing request plus an Origin check; no secret in any URL, query string or log line;
``read_only`` (server-wide or per session) refuses every write with 403. Responses carry a
strict Content-Security-Policy (no inline script, no third-party origin).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from isokron.console import handlers, queries
from isokron.console.actions import authenticate_digest, require_operator
from isokron.console.handlers import SECURITY_HEADERS
from isokron.console.sessions import COOKIE_NAME, CSRF_HEADER, Session, csrf_ok
from isokron.console.settings import ConsoleSettings
from isokron.console.state import ConsoleState
from isokron.errors import (
    ConfigError,
    ConflictError,
    IsoKronError,
    NotFoundError,
    RefusalError,
)
from isokron.gateway.auth import MALFORMED_TOKEN_MESSAGE, is_well_formed
from isokron.substrate.writes import token_public_prefix, token_sha256

log = logging.getLogger("isokron.console.app")

STATIC_FILES = {
    "console.js": "application/javascript",
    "console.css": "text/css",
    "runbooks.json": "application/json",
}
Handler = Callable[[ConsoleState, Request, Session], Awaitable[Any]]


def _static(name: str) -> str:
    return (resources.files("isokron.console") / "static" / name).read_text("utf-8")


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(queries.jsonable(data), status_code=status, headers=SECURITY_HEADERS)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return _json({"error": code, "message": message}, status)


def error_response(exc: IsoKronError) -> JSONResponse:
    """The one mapping from IsoKron errors to HTTP answers."""
    if isinstance(exc, RefusalError):
        status = 401 if exc.code == "unauthenticated" else 403
        return _error(status, exc.code, exc.message)
    if isinstance(exc, NotFoundError):
        return _error(404, "not_found", str(exc))
    if isinstance(exc, ConfigError):
        return _error(400, "invalid_argument", str(exc))
    if isinstance(exc, ConflictError):
        return _error(409, "conflict", str(exc))
    return _error(503, "substrate_error", str(exc))


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


class LoopbackHostMiddleware:
    """Refuse requests whose Host is not a loopback name (DNS rebinding: a page on an attacker's
    domain re-pointed at 127.0.0.1 must not reach the console). Off behind a reverse proxy
    (``--base-path``) and inside Hermes, which checks Host itself."""

    def __init__(self, app: ASGIApp, *, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http":
            host = Headers(scope=scope).get("host", "")
            if _host_name(host) not in LOOPBACK_HOSTS:
                log.warning("[isokron.console.host_refused] host=%r", host[:100])
                await _error(400, "bad_host", "the console answers loopback names only")(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser cross-site request: browsers send Origin on POST
    return urlsplit(origin).netloc == request.headers.get("host", "")


class ConsoleApp:
    """Routes and handlers; ``asgi`` is the Starlette application."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.state = ConsoleState(settings)
        self.asgi = Starlette(
            routes=self._routes(),
            lifespan=self._lifespan,
            middleware=[Middleware(LoopbackHostMiddleware, enabled=settings.check_host)],
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await self.state.close()

    def _routes(self) -> list[Route]:
        r, w, h = self._read, self._write, handlers
        return [
            Route("/", self.index, methods=["GET"]),
            Route("/static/{name}", self.static, methods=["GET"]),
            Route("/api/session", self.session_get, methods=["GET"]),
            Route("/api/session", self.sign_in, methods=["POST"]),
            Route("/api/session/signout", w(_sign_out, write=False), methods=["POST"]),
            Route("/api/panels/{name}", r(h.panel), methods=["GET"]),
            Route("/api/chain", r(h.chain), methods=["GET"]),
            Route("/api/chain/{seq:int}", r(h.chain_event), methods=["GET"]),
            Route("/api/verify", w(h.verify_start, write=False), methods=["POST"]),
            Route("/api/verify/{job_id}", r(h.verify_poll), methods=["GET"]),
            Route("/api/checkpoint", w(h.checkpoint, write=False), methods=["POST"]),
            Route("/api/constitution/dry-run", w(h.dry_run, write=False), methods=["POST"]),
            Route("/api/escalations/{id}/decision", w(h.decide_escalation), methods=["POST"]),
            Route("/api/proposals/{id}/decision", w(h.decide_proposal), methods=["POST"]),
            Route("/api/policies", w(h.set_policy), methods=["POST"]),
            Route("/api/tokens", w(h.issue_token), methods=["POST"]),
            Route("/api/tokens/{id}/revoke", w(h.revoke_token), methods=["POST"]),
            Route("/api/diagnostics/bundle", self._read_raw(h.bundle), methods=["GET"]),
        ]

    # ------------------------------------------------------------ plumbing
    def _session(self, request: Request) -> Session | None:
        return self.state.sessions.get(request.cookies.get(COOKIE_NAME))

    async def _live(self, request: Request) -> Session | None:
        """The request's session if its token is still an active operator's (asked each time:
        a revoked or expired token, or a disabled operator, ends the session at once)."""
        session = self._session(request)
        if session is None:
            return None
        try:
            current = await authenticate_digest(
                await self.state.pool("gateway"),
                session.token_sha256,
                session.principal.token_prefix,
            )
            require_operator(current)
        except RefusalError as exc:
            log.info("[isokron.console.session_ended] %s", exc.code)
            self.state.sessions.drop(session.session_id)
            return None
        return session

    def _read(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                session = await self._live(request)
                if session is None:
                    return _error(401, "unauthenticated", "sign in with an operator token")
                return _json(await handler(self.state, request, session))
            except IsoKronError as exc:
                return error_response(exc)
            except ValueError as exc:
                return _error(400, "invalid_argument", str(exc))

        return endpoint

    def _read_raw(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                session = await self._live(request)
                if session is None:
                    return _error(401, "unauthenticated", "sign in with an operator token")
                result: Response = await handler(self.state, request, session)
            except IsoKronError as exc:
                return error_response(exc)
            return result

        return endpoint

    def _write(self, handler: Handler, *, write: bool = True) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            try:
                session = await self._live(request)
            except IsoKronError as exc:
                return error_response(exc)
            if session is None:
                return _error(401, "unauthenticated", "sign in with an operator token")
            if not _same_origin(request) or not csrf_ok(session, request.headers.get(CSRF_HEADER)):
                log.warning("[isokron.console.csrf_refused] path=%s", request.url.path)
                return _error(403, "csrf", "missing or wrong CSRF token; reload the console")
            if write and (session.read_only or self.settings.read_only):
                return _error(403, "read_only", "this console session is read-only (auditor)")
            try:
                return _json(await handler(self.state, request, session))
            except IsoKronError as exc:
                if isinstance(exc, RefusalError) and exc.code == "unauthenticated":
                    self.state.sessions.drop(session.session_id)
                return error_response(exc)
            except ValueError as exc:
                return _error(400, "invalid_argument", str(exc))

        return endpoint

    # ------------------------------------------------------------ pages and session
    def _base(self, request: Request) -> str:
        """The path prefix the browser sees: --base-path, or the Hermes plugin prefix."""
        return self.settings.normalized_base_path() or str(request.scope.get("isokron.base", ""))

    async def index(self, request: Request) -> Response:
        base = self._base(request)
        html = _static("index.html").replace("{{BASE}}", base)
        return Response(html, media_type="text/html", headers=SECURITY_HEADERS)

    def _cookie_path(self, request: Request) -> str:
        # Inside Hermes a reverse proxy may add a prefix the server never sees
        # (HERMES_BASE_PATH), so the cookie is scoped to the whole origin there.
        if "isokron.base" in request.scope:
            return "/"
        return self.settings.normalized_base_path() or "/"

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return _error(404, "not_found", "no such asset")
        return Response(_static(name), media_type=STATIC_FILES[name], headers=SECURITY_HEADERS)

    async def session_get(self, request: Request) -> Response:
        try:
            session = await self._live(request)
        except IsoKronError as exc:
            return error_response(exc)
        if session is None:  # a question, not a refusal: the page asks before showing sign-in
            return _json({"signed_in": False, "server_read_only": self.settings.read_only})
        return _json(
            {**session.public(), "signed_in": True, "server_read_only": self.settings.read_only}
        )

    async def sign_in(self, request: Request) -> Response:
        if not _same_origin(request):
            return _error(403, "csrf", "cross-origin sign-in refused")
        try:
            body = await handlers.read_body(request)
            token = str(body.get("token") or "").strip()
            if not is_well_formed(token):
                raise RefusalError("unauthenticated", MALFORMED_TOKEN_MESSAGE)
            digest = token_sha256(token)
            principal = await authenticate_digest(
                await self.state.pool("gateway"), digest, token_public_prefix(token)
            )
            require_operator(principal)
        except IsoKronError as exc:
            log.info("[isokron.console.signin_refused] %s", getattr(exc, "code", "error"))
            return error_response(exc)
        del token
        read_only = bool(body.get("read_only")) or self.settings.read_only
        session = self.state.sessions.create(principal, digest, read_only=read_only)
        response = _json(
            {**session.public(), "signed_in": True, "server_read_only": self.settings.read_only}
        )
        response.set_cookie(
            COOKIE_NAME,
            session.session_id,
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookies,
            path=self._cookie_path(request),
        )
        return response

    # ------------------------------------------------------------ reads


async def _sign_out(state: ConsoleState, request: Request, session: Session) -> dict[str, Any]:
    state.sessions.drop(session.session_id)
    return {"signed_out": True}


def create_app(settings: ConsoleSettings) -> Starlette:
    """The console's ASGI app."""
    return ConsoleApp(settings).asgi
