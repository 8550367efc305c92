"""The MCP server around the pipeline, its two transports, and the process entry point.

``build_server`` makes an ``MCPServer`` (the official SDK's high-level server) whose tools all
run through one :class:`~isokron.gateway.service.Gateway`. Over HTTP the SDK's bearer-token
layer authenticates every request with :class:`~isokron.gateway.auth.GatewayTokenVerifier`
(a refused token gets HTTP 401) and ``GET /healthz`` reports the database's reachability.
Over stdio the token comes from ``KORA_SERVICE_TOKEN``: the server starts without one, and
then refuses every call with ``unauthenticated`` so a client sees a clean tool error.
Bad arguments are caught by ``isokron.gateway.arguments.ArgumentGuard``, SDK middleware.

Under faults (issue 11): the HTTP transport's guards live in :mod:`isokron.gateway.transport`
(head and body deadlines, the body limit enforced while reading under a shared budget, one
in-flight request per JSON-RPC id and session). With the database down or hung, the token
check cannot give a verdict: a ``tools/call`` then gets the ``unavailable`` tool error (an MCP
reply), any other request HTTP 503 with ``Retry-After``; never a bare HTTP 500. Every statement
has a timeout, and SIGTERM drains in-flight calls for at most
:data:`~isokron.gateway.transport.GRACEFUL_SHUTDOWN_SECONDS` before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from isokron import __version__
from isokron.errors import SubstrateError
from isokron.gateway import maintenance, results
from isokron.gateway.arguments import ArgumentGuard
from isokron.gateway.auth import (
    MISSING_TOKEN_MESSAGE,
    GatewayTokenVerifier,
    is_well_formed,
    refusal_code,
    refusal_reason,
)
from isokron.gateway.service import Gateway
from isokron.gateway.settings import (
    DEFAULT_MAX_REQUEST_BODY_BYTES,
    DEFAULT_POOL_MAX_SIZE,
    HEALTH_PATH,
    MCP_PATH,
    TOKEN_ENV,
    GatewaySettings,
)
from isokron.gateway.tools import build_tools
from isokron.gateway.transport import (
    GRACEFUL_SHUTDOWN_SECONDS,
    KEEP_ALIVE_SECONDS,
    GuardedHttpToolsProtocol,
    RequestGuard,
    jsonrpc_error_body,
    send_json,
)
from isokron.substrate import writes
from isokron.substrate.connection import create_pool
from isokron.substrate.dsn import redact_dsn
from isokron.substrate.writes import token_public_prefix

log = logging.getLogger("isokron.gateway")

SERVER_NAME = "isokron-gateway"
INSTRUCTIONS = (
    "IsoKron is this workspace's governed memory. Every write you make here is authorized, "
    "screened by the workspace constitution and recorded in a tamper-evident chain under your "
    "name. Read your capability row before attempting something you may not be allowed to do. "
    "A refusal is a tool error that starts with a code in brackets, e.g. [capability_denied]; "
    "do not retry refusals other than rate_limited. Pass an idempotency_key when you may retry "
    "a write. Never write secrets."
)
HEALTH_TIMEOUT_SECONDS = 2.0
#: Longest a token check may wait on the database before the request counts as unavailable.
AUTH_TIMEOUT_SECONDS = 5.0
#: Statement timeout of the gateway's pools: a hung database costs a call this much at most.
STATEMENT_TIMEOUT_SECONDS = 10.0
UNAVAILABLE_MESSAGE = "The memory substrate could not be reached; try again shortly."
#: Why the token check of this request could not be made (the database), for the reply.
unavailable_reason: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "isokron_gateway_unavailable", default=None
)
#: JSON-RPC error code of an HTTP 401 reply (the implementation-defined server-error range).
UNAUTHENTICATED_JSONRPC_CODE = -32001


def build_server(gateway: Gateway, settings: GatewaySettings) -> MCPServer:
    """The gateway's MCP server for ``settings.transport``, its tools bound to ``gateway``."""
    tools = build_tools(gateway)
    http = settings.transport == "http"
    server: MCPServer = MCPServer(
        SERVER_NAME,
        title="IsoKron gateway",
        description="Governed, tamper-evident memory for AI agents: the only way to write.",
        instructions=INSTRUCTIONS,
        version=__version__,
        tools=tools,
        middleware=[ArgumentGuard(gateway, tools)],
        # Bearer tokens are verified here; no OAuth authorization server is advertised
        # (resource_server_url is None), so issuer_url is never published.
        token_verifier=OutageAwareVerifier(gateway.authenticator) if http else None,
        auth=AuthSettings(issuer_url=AnyHttpUrl(_base_url(settings)), resource_server_url=None)
        if http
        else None,
    )

    @server.custom_route(HEALTH_PATH, methods=["GET"], include_in_schema=False)
    async def health(_request: Request) -> Response:
        return await health_response(gateway)

    return server


async def health_response(gateway: Gateway) -> JSONResponse:
    """``{"status", "database", "transport", "version"}``; HTTP 503 when the database is down."""
    try:
        await asyncio.wait_for(writes.ping(gateway.gateway_pool), HEALTH_TIMEOUT_SECONDS)
    except (SubstrateError, TimeoutError) as exc:
        log.warning("[isokron.gateway.health] database unreachable: %s", exc)
        body = {"status": "degraded", "database": "unreachable"}
        status = 503
    else:
        body = {"status": "ok", "database": "ok"}
        status = 200
    body.update(transport=gateway.transport, version=__version__)
    return JSONResponse(body, status_code=status)


class OutageAwareVerifier(GatewayTokenVerifier):
    """The token check, bounded in time; a database that cannot answer is not a verdict on the
    token: the request is answered ``unavailable`` (see :class:`ExplainUnauthenticated`)."""

    async def verify_token(self, token: str) -> AccessToken | None:
        if self._authenticator.is_cached(token):
            # Answered from memory: no database to wait for, so no task and no timer.
            return await super().verify_token(token)
        # The check runs as its own task and is abandoned after the timeout, rather than
        # cancelled and awaited: a connection to a frozen server does not always let a
        # cancellation through promptly. Its refusal reason and code are carried back to this
        # context, where the reply is made.
        task = asyncio.ensure_future(self._check(token))
        done, _ = await asyncio.wait({task}, timeout=AUTH_TIMEOUT_SECONDS)
        if not done:
            task.cancel()
            task.add_done_callback(_forget)
            return self._unavailable(f"no answer within {AUTH_TIMEOUT_SECONDS:.0f}s")
        try:
            access, reason, code = task.result()
        except (SubstrateError, TimeoutError) as exc:
            return self._unavailable(str(exc) or exc.__class__.__name__)
        refusal_reason.set(reason)
        refusal_code.set(code)
        return access

    async def _check(self, token: str) -> tuple[AccessToken | None, str | None, str]:
        access = await super().verify_token(token)
        return access, refusal_reason.get(), refusal_code.get()

    @staticmethod
    def _unavailable(why: str) -> None:
        log.warning("[isokron.gateway.unavailable] token check: the database failed: %s", why)
        unavailable_reason.set(why)
        return None


def _forget(task: asyncio.Task[Any]) -> None:
    """Mark an abandoned task's outcome as seen (no 'exception never retrieved' report)."""
    if not task.cancelled():
        task.exception()


class ExplainUnauthenticated:
    """ASGI wrapper: the SDK's HTTP 401 for a refused token, with the reason a person can act on.

    The status (401) and ``WWW-Authenticate: Bearer error="invalid_token"`` stay as the MCP
    authorization spec asks; the description in that header becomes the gateway's sentence,
    and the body becomes a JSON-RPC error (``[unauthenticated] ...``, ``data.code``), which MCP
    clients surface as the failed request's error instead of a bare status.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        refusal_reason.set(None)
        unavailable_reason.set(None)
        refusal_code.set("unauthenticated")
        rewriting = False

        async def reply(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start" and message["status"] == 401:
                rewriting = True
                return
            if rewriting and message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                if unavailable_reason.get() is not None:
                    await _send_unavailable(send, scope)
                    return
                await _send_unauthenticated(
                    send, refusal_reason.get() or MISSING_TOKEN_MESSAGE, refusal_code.get()
                )
                return
            await send(message)

        await self._app(scope, receive, reply)


async def _send_unavailable(send: Send, scope: Scope) -> None:
    """The database is down: a tool call gets the ``unavailable`` tool error (an MCP reply with
    its id); anything else HTTP 503 with ``Retry-After``."""
    method, request_id = scope.get("state", {}).get("isokron.jsonrpc", (None, None))
    if method == "tools/call" and request_id is not None:
        result = results.error(results.UNAVAILABLE, UNAVAILABLE_MESSAGE, retry_after_seconds=1)
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": json.loads(request_id),
                "result": result.model_dump(mode="json", by_alias=True, exclude_none=True),
            },
            ensure_ascii=False,
        ).encode("utf-8")
        await send_json(send, 200, body)
        return
    rid: Any = json.loads(request_id) if request_id is not None else None
    body = jsonrpc_error_body(results.UNAVAILABLE, UNAVAILABLE_MESSAGE, rid)
    await send_json(send, 503, body, [(b"retry-after", b"1")])


async def _send_unauthenticated(send: Send, reason: str, code: str = "unauthenticated") -> None:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": UNAUTHENTICATED_JSONRPC_CODE,
                "message": f"[{code}] {reason}",
                "data": {"code": code},
            },
        },
        ensure_ascii=False,
    ).encode("utf-8")
    # A quoted-string in a header: ASCII, no quotes or backslashes.
    description = (
        reason.replace("…", "...").replace('"', "'").replace("\\", "/").encode("ascii", "replace")
    )
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (
                    b"www-authenticate",
                    b'Bearer error="invalid_token", error_description="' + description + b'"',
                ),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _base_url(settings: GatewaySettings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"


@asynccontextmanager
async def open_gateway(settings: GatewaySettings) -> AsyncIterator[Gateway]:
    """A gateway with its two pools, which are closed when the block ends."""
    reader_pool = await create_pool(
        settings.reader_dsn,
        max_size=DEFAULT_POOL_MAX_SIZE,
        command_timeout=STATEMENT_TIMEOUT_SECONDS,
        session_state=False,
    )
    try:
        gateway_pool: asyncpg.Pool = await create_pool(
            settings.gateway_dsn,
            max_size=DEFAULT_POOL_MAX_SIZE,
            command_timeout=STATEMENT_TIMEOUT_SECONDS,
            session_state=False,
        )
        try:
            yield Gateway(
                reader_pool=reader_pool,
                gateway_pool=gateway_pool,
                transport=settings.transport,
                governance_ttl=settings.governance_ttl_seconds,
                stdio_token=settings.stdio_token,
            )
        finally:
            await gateway_pool.close()
    finally:
        await reader_pool.close()


def http_app(server: MCPServer, settings: GatewaySettings) -> ASGIApp:
    """The ASGI app serving ``server`` over streamable HTTP, with ``/healthz``."""
    # The tools never stream and the gateway sends no notifications, so plain JSON replies
    # spare the SSE framing (about 40 % of the gateway's CPU per call, docs/benchmarks.md).
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        json_response=True,
        host=settings.host,
        max_request_body_size=DEFAULT_MAX_REQUEST_BODY_BYTES,
    )
    return RequestGuard(ExplainUnauthenticated(app), max_body=DEFAULT_MAX_REQUEST_BODY_BYTES)


async def serve(settings: GatewaySettings) -> None:
    """Serve until the transport ends (stdin closes) or the process is interrupted."""
    asyncio.get_running_loop().set_exception_handler(_background_error)
    async with open_gateway(settings) as gateway:
        server = build_server(gateway, settings)
        interval = settings.maintain_interval_seconds
        maintaining = (
            asyncio.create_task(maintenance.run_periodically(gateway.gateway_pool, interval))
            if interval > 0
            else None
        )
        try:
            await _serve(server, settings)
        finally:
            if maintaining is not None:
                maintaining.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await maintaining


async def _serve(server: MCPServer, settings: GatewaySettings) -> None:
    if settings.transport == "stdio":
        _announce_stdio(settings)
        await server.run_stdio_async()
        return
    app = http_app(server, settings)
    # log_config=None: logging belongs to the entry point, not to uvicorn; no access log:
    # the decision log already records every call.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        http=GuardedHttpToolsProtocol,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    log.info(
        "[isokron.gateway.start] streamable HTTP on %s%s (health %s), reader %s, gateway %s",
        _base_url(settings),
        MCP_PATH,
        HEALTH_PATH,
        redact_dsn(settings.reader_dsn),
        redact_dsn(settings.gateway_dsn),
    )
    await uvicorn.Server(config).serve()


def _background_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's report of an error nobody awaited (asyncpg losing a connection to a database
    that went away): one line, no traceback; the calls themselves answer ``unavailable``."""
    exc = context.get("exception")
    detail = f": {exc.__class__.__name__}: {exc}" if exc is not None else ""
    log.warning("[isokron.gateway.background_error] %s%s", context.get("message"), detail)


def _announce_stdio(settings: GatewaySettings) -> None:
    token = settings.stdio_token
    if not token:
        log.warning(
            "[isokron.gateway.start] stdio without a service token: every call will be refused "
            "(unauthenticated) until %s is set",
            TOKEN_ENV,
        )
    elif not is_well_formed(token):
        log.warning(
            "[isokron.gateway.start] the %s value is not a wsk_ token: every call will be "
            "refused (unauthenticated)",
            TOKEN_ENV,
        )
    else:
        log.info("[isokron.gateway.start] stdio, token %s…", token_public_prefix(token))


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (not on Windows), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_gateway(settings: GatewaySettings) -> None:
    """Run the gateway in the foreground until it is interrupted (Ctrl-C, SIGTERM, EOF).

    Logging is configured by the caller. Raises ``SubstrateUnavailableError`` when the
    database cannot be reached at start.
    """
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve(settings))
    except KeyboardInterrupt:
        log.info("[isokron.gateway.stop] interrupted")
