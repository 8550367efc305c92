"""The console as a Starlette app: static assets, a JSON API per panel, and the writes.

Security model (docs/console.md): sign-in with an operator token in a POST body; an opaque
HttpOnly SameSite=Strict session cookie; a per-session CSRF token required on every
state-changing request plus an Origin check; no secret in any URL, query string or log line;
``read_only`` (server-wide or per session) refuses every write with 403. Responses carry a
strict Content-Security-Policy (no inline script, no third-party origin).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from isokron.console import diagnostics, panels, queries
from isokron.console.actions import authenticate_digest, require_operator
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
from isokron.substrate.constitution import Constitution
from isokron.substrate.writes import token_public_prefix, token_sha256

log = logging.getLogger("isokron.console.app")

STATIC_FILES = {
    "console.js": "application/javascript",
    "console.css": "text/css",
    "runbooks.json": "application/json",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Handler = Callable[[Request, Session], Awaitable[Any]]


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


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser cross-site request: browsers send Origin on POST
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _body(request: Request) -> dict[str, Any]:
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise ConfigError("send the request body as application/json")
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("the request body must be a JSON object")
    return data


class ConsoleApp:
    """Routes and handlers; ``asgi`` is the Starlette application."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.state = ConsoleState(settings)
        self.asgi = Starlette(routes=self._routes(), lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await self.state.close()

    def _routes(self) -> list[Route]:
        r, w = self._read, self._write
        return [
            Route("/", self.index, methods=["GET"]),
            Route("/static/{name}", self.static, methods=["GET"]),
            Route("/api/session", self.session_get, methods=["GET"]),
            Route("/api/session", self.sign_in, methods=["POST"]),
            Route("/api/session/signout", w(self.sign_out, write=False), methods=["POST"]),
            Route("/api/panels/{name}", r(self.panel), methods=["GET"]),
            Route("/api/chain", r(self.chain), methods=["GET"]),
            Route("/api/chain/{seq:int}", r(self.chain_event), methods=["GET"]),
            Route("/api/verify", w(self.verify_start, write=False), methods=["POST"]),
            Route("/api/verify/{job_id}", r(self.verify_poll), methods=["GET"]),
            Route("/api/checkpoint", w(self.checkpoint, write=False), methods=["POST"]),
            Route("/api/constitution/dry-run", w(self.dry_run, write=False), methods=["POST"]),
            Route("/api/escalations/{id}/decision", w(self.decide_escalation), methods=["POST"]),
            Route("/api/proposals/{id}/decision", w(self.decide_proposal), methods=["POST"]),
            Route("/api/policies", w(self.set_policy), methods=["POST"]),
            Route("/api/tokens", w(self.issue_token), methods=["POST"]),
            Route("/api/tokens/{id}/revoke", w(self.revoke_token), methods=["POST"]),
            Route("/api/diagnostics/bundle", self._read_raw(self.bundle), methods=["GET"]),
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
                return _json(await handler(request, session))
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
                result: Response = await handler(request, session)
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
                return _json(await handler(request, session))
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
            body = await _body(request)
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
            path=self._base(request) or "/",
        )
        return response

    async def sign_out(self, request: Request, session: Session) -> dict[str, Any]:
        self.state.sessions.drop(session.session_id)
        return {"signed_out": True}

    # ------------------------------------------------------------ reads
    async def panel(self, request: Request, session: Session) -> Any:
        name = request.path_params["name"]
        if name not in panels.PANELS:
            raise NotFoundError(f"no panel {name!r}; panels: {', '.join(panels.PANELS)}")
        ctx = await self.state.panel_context(session)
        data = await panels.PANELS[name][1](ctx)
        if name == "verification":
            data["jobs"] = [j.to_dict() for j in session.verify_jobs.values()]
        return data

    async def chain(self, request: Request, session: Session) -> Any:
        q = request.query_params
        ctx = await self.state.panel_context(session)
        return {
            "events": await queries.chain_page(
                ctx.reader_pool,
                ctx.workspace_id,
                event_type=q.get("type") or None,
                actor_kind=q.get("actor_kind") or None,
                since=_time(q.get("since")),
                until=_time(q.get("until")),
                after_seq=int(q["after_seq"]) if q.get("after_seq") else None,
                limit=int(q.get("limit") or 100),
            )
        }

    async def chain_event(self, request: Request, session: Session) -> Any:
        ctx = await self.state.panel_context(session)
        event = await queries.chain_event(
            ctx.reader_pool, ctx.workspace_id, request.path_params["seq"]
        )
        if event is None:
            raise NotFoundError(f"no event with seq {request.path_params['seq']}")
        return event

    async def verify_start(self, request: Request, session: Session) -> Any:
        return self.state.start_verify(session).to_dict()

    async def verify_poll(self, request: Request, session: Session) -> Any:
        job = session.verify_jobs.get(request.path_params["job_id"])
        if job is None:
            raise NotFoundError("no such verification run in this session")
        return job.to_dict()

    async def checkpoint(self, request: Request, session: Session) -> Any:
        return await asyncio.to_thread(self.state.take_checkpoint, session.principal.workspace_id)

    async def dry_run(self, request: Request, session: Session) -> Any:
        body = await _body(request)
        ctx = await self.state.panel_context(session)
        revisions = await queries.constitution_history(ctx.reader_pool, ctx.workspace_id)
        if not revisions:
            raise NotFoundError("this workspace has no constitution revision yet")
        wanted = body.get("revision_number")
        rev = next((r for r in revisions if r["revision_number"] == wanted), revisions[0])
        constitution = Constitution.from_rules(rev["rules"])
        text = str(body.get("text") or "")
        decision = constitution.evaluate(
            tool=str(body.get("tool") or "kora__write_agent_scratchpad"),
            event_type=body.get("event_type") or None,
            arguments={"content": text},
        )
        return {
            "revision_number": rev["revision_number"],
            "effect": decision.effect,
            "rule_id": decision.rule_id,
            "reason": decision.reason,
        }

    async def bundle(self, request: Request, session: Session) -> Response:
        ctx = await self.state.panel_context(session)
        data, report = await diagnostics.build_bundle(ctx)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"isokron-diagnostics-{stamp}.zip"
        return Response(
            data,
            media_type="application/zip",
            headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
        )

    # ------------------------------------------------------------ writes
    async def decide_escalation(self, request: Request, session: Session) -> Any:
        body = await _body(request)
        actions = await self.state.actions()
        return await actions.decide_escalation(
            session.principal,
            session.token_sha256,
            request.path_params["id"],
            _decision(body, "approve", "reject"),
            _reason(body),
        )

    async def decide_proposal(self, request: Request, session: Session) -> Any:
        body = await _body(request)
        actions = await self.state.actions()
        return await actions.decide_proposal(
            session.principal,
            session.token_sha256,
            request.path_params["id"],
            str(body.get("kind") or "convention"),
            _decision(body, "accept", "reject"),
            _reason(body),
        )

    async def set_policy(self, request: Request, session: Session) -> Any:
        body = await _body(request)
        key = str(body.get("policy_key") or "")
        if not key.startswith("policy."):
            raise ConfigError("policy_key must name a policy (policy.…)")
        if "value" not in body:
            raise ConfigError("give the policy's new JSON value")
        actions = await self.state.actions()
        return await actions.set_policy(session.principal, session.token_sha256, key, body["value"])

    async def issue_token(self, request: Request, session: Session) -> Any:
        body = await _body(request)
        days = body.get("expires_in_days")
        expires = datetime.now(UTC) + timedelta(days=float(days)) if days else None
        actions = await self.state.actions()
        issued = await actions.issue_token(
            session.principal,
            session.token_sha256,
            str(body.get("actor_kind") or "kora"),
            str(body.get("label") or "")[:200],
            expires,
        )
        return {
            "token": issued.token,
            "token_id": issued.token_id,
            "token_prefix": issued.token_prefix,
            "event_id": issued.event_id,
            "expires_at": expires,
        }

    async def revoke_token(self, request: Request, session: Session) -> Any:
        actions = await self.state.actions()
        return await actions.revoke_token(
            session.principal, session.token_sha256, request.path_params["id"]
        )


def _decision(body: dict[str, Any], yes: str, no: str) -> bool:
    decision = body.get("decision")
    if decision not in (yes, no):
        raise ConfigError(f"decision must be {yes} or {no}")
    return bool(decision == yes)


def _reason(body: dict[str, Any]) -> str:
    reason = str(body.get("reason") or "").strip()
    if not reason:
        raise ConfigError("give a reason for the decision; it is chained with it")
    return reason[:2000]


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def create_app(settings: ConsoleSettings) -> Starlette:
    """The console's ASGI app."""
    return ConsoleApp(settings).asgi
