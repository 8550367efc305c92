"""The provider's MCP client to the IsoKron gateway: every write the provider makes goes here.

One long-lived MCP session per provider, over stdio (the gateway started as a child process,
with the service token in ``KORA_SERVICE_TOKEN``) or streamable HTTP (``Authorization: Bearer``).
The session is owned by one task on the provider's loop, because the MCP client's transports
must be entered and left by the same task; calls from other tasks share it. A broken session is
torn down and the next call connects again, so the provider recovers when the gateway returns.

This is the one boundary where MCP and transport exceptions become provider errors:
``GatewayRefusedError`` for a refusal (``[code] sentence``), ``GatewayUnavailableError`` for
everything that means "could not talk to the gateway".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent
from mcp_types.jsonrpc import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_PARAMS, REQUEST_TIMEOUT

from isokron.errors import REFUSAL_CODES
from isokron.provider.config import IsoKronProviderConfig
from isokron.provider.errors import (
    GatewayRefusedError,
    GatewayUnavailableError,
    IsoKronMCPInvocationError,
    refusal_from_text,
)

log = logging.getLogger("isokron.provider.gateway_client")

TOKEN_ENV = "KORA_SERVICE_TOKEN"
READER_DSN_ENV = "ISOKRON_READER_DSN"
GATEWAY_DSN_ENV = "ISOKRON_GATEWAY_DSN"
GATEWAY_MODULE = "isokron.gateway"
GATEWAY_LOG_NAME = "isokron-gateway.log"
#: The gateway's code for "PostgreSQL could not be reached": retryable, like a lost connection.
UNAVAILABLE_CODE = "unavailable"
#: JSON-RPC errors that mean the call did not get a verdict: the connection closed, timed out, or
#: the server answered with an HTTP error status (the SDK reports a 5xx as INTERNAL_ERROR, e.g.
#: the gateway's token check while PostgreSQL is down). Retryable, never a refusal.
_UNANSWERED_CODES = (CONNECTION_CLOSED, REQUEST_TIMEOUT, INTERNAL_ERROR)
#: How long closing a session may take before it is cancelled. The SDK bounds its own stdio
#: shutdown (stdin close, 2 s grace, SIGTERM, 2 s, SIGKILL); cancelling it earlier could leave
#: the child's pipes to the garbage collector.
_TEARDOWN_SECONDS = 8.0
#: A gateway started over stdio is a new Python process; on a loaded machine its start can take
#: many seconds. The session opens in its own task, so this bounds only how long a starting
#: gateway is waited for before it counts as down: no hook waits this long.
STDIO_START_SECONDS = 30.0
# Environment a spawned gateway inherits besides the MCP SDK's safe defaults.
_PASSTHROUGH_ENV = (
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
)
_TRANSPORT_ERRORS = (
    OSError,
    EOFError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    httpx2.HTTPError,
)


def gateway_command(
    config: IsoKronProviderConfig, *, log_level: str = "WARNING"
) -> tuple[str, list[str], dict[str, str]]:
    """The command, arguments and extra environment that start the gateway for ``stdio``.

    The DSNs travel in the child's environment (``ISOKRON_READER_DSN``/``ISOKRON_GATEWAY_DSN``),
    never on its command line where ``ps`` would show a password.
    """
    if config.mcp_endpoint.startswith("stdio:"):
        argv = shlex.split(config.mcp_endpoint[len("stdio:") :])
        return argv[0], argv[1:], {}
    assert config.gateway_dsn is not None  # guaranteed by the config's validator
    env = {READER_DSN_ENV: config.reader_dsn, GATEWAY_DSN_ENV: config.gateway_dsn}
    args = ["-m", GATEWAY_MODULE, "--transport", "stdio", "--log-level", log_level]
    return sys.executable, args, env


class GatewayClient:
    """Calls gateway tools over one shared MCP session, connecting lazily and again after loss."""

    def __init__(self, config: IsoKronProviderConfig, *, log_dir: Path | None = None) -> None:
        self._config = config
        self._log_dir = log_dir
        self._client: Client | None = None
        self._owner: asyncio.Task[None] | None = None
        self._closing: asyncio.Event | None = None
        self._connecting: asyncio.Task[Client] | None = None
        self._errlog: TextIO | None = None
        self.connections = 0

    @property
    def connect_wait(self) -> float:
        """How long opening a session may take (longer when a gateway process is started)."""
        if self._config.transport == "stdio":
            return max(self._config.connect_timeout_seconds, STDIO_START_SECONDS)
        return self._config.connect_timeout_seconds

    @property
    def connecting(self) -> bool:
        """True while a session is being opened (e.g. a gateway process is starting)."""
        return self._connecting is not None and not self._connecting.done()

    async def wait_connected(self, timeout: float) -> bool:
        """Open the session if needed and wait for it at most ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._session("connect"), timeout)
        except (TimeoutError, IsoKronMCPInvocationError):
            return False
        return True

    @property
    def connected(self) -> bool:
        """True while a session is open."""
        return self._client is not None and self._owner is not None and not self._owner.done()

    async def call(self, tool: str, arguments: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """Call one gateway tool and return its JSON object result.

        Raises:
            GatewayRefusedError: the gateway refused the call (its ``code`` says why).
            GatewayUnavailableError: no session could be opened, it broke, or the call timed out.
        """
        client = await self._session(tool)
        try:
            result = await asyncio.wait_for(
                client.call_tool(tool, arguments, read_timeout_seconds=timeout), timeout
            )
        except TimeoutError:
            raise GatewayUnavailableError(
                tool, f"the gateway did not answer {tool} within {timeout:.1f}s"
            ) from None
        except MCPError as exc:
            verdict = gateway_verdict(tool, exc)
            if verdict is not None:
                raise verdict from exc
            if exc.code in _UNANSWERED_CODES:
                await self._teardown()
                raise GatewayUnavailableError(
                    tool, f"the gateway connection failed: {exc.message}"
                ) from exc
            code = "invalid_argument" if exc.code == INVALID_PARAMS else "error"
            raise GatewayRefusedError(tool, code, exc.message) from exc
        except _TRANSPORT_ERRORS as exc:
            await self._teardown()
            raise GatewayUnavailableError(
                tool, f"the gateway connection broke: {_describe(exc)}"
            ) from exc
        return parse_result(tool, result)

    async def connect(self) -> None:
        """Open the session now (e.g. right after ``initialize``) so the first write need not wait.

        Raises:
            GatewayUnavailableError: the gateway could not be reached.
        """
        await self._session("connect")

    async def list_tools(self, *, timeout: float) -> dict[str, dict[str, Any]]:
        """The gateway's tools: name -> input JSON schema."""
        client = await self._session("tools/list")
        try:
            listing = await asyncio.wait_for(client.list_tools(), timeout)
        except (TimeoutError, MCPError, *_TRANSPORT_ERRORS) as exc:
            await self._teardown()
            raise GatewayUnavailableError(
                "tools/list", f"cannot list the gateway's tools: {_describe(exc)}"
            ) from exc
        return {tool.name: dict(tool.input_schema) for tool in listing.tools}

    async def close(self) -> None:
        """Close the session (and stop a gateway this client started)."""
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()
            await asyncio.wait({connecting}, timeout=_TEARDOWN_SECONDS)
        await self._teardown()
        if self._errlog is not None and self._errlog is not sys.stderr:
            self._errlog.close()
        self._errlog = None

    # -------------------------------------------------------------------- the session owner
    async def _session(self, tool: str) -> Client:
        """The open session, opening one if needed.

        The opening runs in its own task: a caller that gives up (its hook timed out) does not
        abort it, and concurrent callers share it.
        """
        if self.connected:
            assert self._client is not None
            return self._client
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._open(tool), name="isokron-gateway-connect")
            self._connecting.add_done_callback(_retrieve)
        return await asyncio.shield(self._connecting)

    async def _open(self, tool: str) -> Client:
        await self._teardown()
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Client] = loop.create_future()
        self._closing = asyncio.Event()
        self._owner = asyncio.create_task(
            self._own(ready, self._closing), name="isokron-gateway-session"
        )
        try:
            client = await asyncio.wait_for(asyncio.shield(ready), self.connect_wait)
        except TimeoutError:
            await self._teardown(abandon=True)
            raise GatewayUnavailableError(
                tool,
                f"cannot connect to the gateway at {self.describe_endpoint()} within "
                f"{self.connect_wait:.1f}s",
            ) from None
        except asyncio.CancelledError:
            await self._teardown(abandon=True)
            raise
        except Exception as exc:
            await self._teardown(abandon=True)
            verdict = gateway_verdict(tool, exc)
            if verdict is not None:
                raise verdict from exc  # e.g. HTTP 401: a revoked token is not an outage
            raise GatewayUnavailableError(
                tool,
                f"cannot connect to the gateway at {self.describe_endpoint()}: {_describe(exc)}",
            ) from exc
        self.connections += 1
        log.debug("[isokron.provider.gateway.connected] %s", self.describe_endpoint())
        return client

    async def _own(self, ready: asyncio.Future[Client], closing: asyncio.Event) -> None:
        try:
            async with AsyncExitStack() as stack:
                transport = await self._transport(stack)
                client = await stack.enter_async_context(
                    Client(
                        transport,
                        read_timeout_seconds=self._config.hook_timeout_seconds,
                        cache=None,
                    )
                )
                self._client = client
                if not ready.done():
                    ready.set_result(client)
                await closing.wait()
        except asyncio.CancelledError:
            if not ready.done():
                ready.cancel()
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller, or logged
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            else:
                log.debug("[isokron.provider.gateway.session_ended] %s", _describe(exc))
        finally:
            self._client = None

    async def _transport(self, stack: AsyncExitStack) -> Any:
        token = self._config.token()
        if self._config.transport == "stdio":
            log_level = "WARNING" if self._log_dir is None else "INFO"
            command, args, extra_env = gateway_command(self._config, log_level=log_level)
            env = {k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ}
            env.update(extra_env)
            if token:
                env[TOKEN_ENV] = token
            params = StdioServerParameters(command=command, args=args, env=env)
            return stdio_client(params, errlog=self._gateway_errlog())
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = httpx2.Timeout(
            self._config.hook_timeout_seconds, connect=self._config.connect_timeout_seconds
        )
        http_client = await stack.enter_async_context(
            create_mcp_http_client(headers=headers, timeout=timeout)
        )
        return streamable_http_client(self._config.mcp_endpoint, http_client=http_client)

    def _gateway_errlog(self) -> TextIO:
        """Where a spawned gateway's stderr goes: a log file beside Hermes's logs, else stderr."""
        if self._errlog is None:
            if self._log_dir is None:
                self._errlog = sys.stderr
            else:
                self._log_dir.mkdir(parents=True, exist_ok=True)
                self._errlog = open(self._log_dir / GATEWAY_LOG_NAME, "a", encoding="utf-8")
        return self._errlog

    async def _teardown(self, *, abandon: bool = False) -> None:
        """End the session: let its owner leave the transport (the SDK stops a child gateway
        within its own bounds); ``abandon`` cancels an owner still opening the session."""
        owner, closing = self._owner, self._closing
        self._owner, self._closing, self._client = None, None, None
        if owner is None:
            return
        if closing is not None:
            closing.set()
        if owner.done():
            with contextlib.suppress(BaseException):
                owner.result()
            return
        if abandon:
            owner.cancel()
        done, _ = await asyncio.wait({owner}, timeout=_TEARDOWN_SECONDS)
        if not done and not abandon:
            owner.cancel()
            await asyncio.wait({owner}, timeout=_TEARDOWN_SECONDS)
        if owner.done() and not owner.cancelled():
            with contextlib.suppress(BaseException):
                owner.result()

    def describe_endpoint(self) -> str:
        """The endpoint for messages (a spawned gateway is named by its module, never its DSNs)."""
        if self._config.mcp_endpoint == "stdio":
            return f"stdio ({GATEWAY_MODULE})"
        if self._config.transport == "stdio":
            return "stdio (custom command)"
        return self._config.mcp_endpoint


def parse_result(tool: str, result: CallToolResult) -> dict[str, Any]:
    """The JSON object a gateway tool returned.

    A tool error becomes :class:`GatewayRefusedError` carrying its stable code, except code
    ``unavailable`` (the gateway could not reach PostgreSQL), which is
    :class:`GatewayUnavailableError`: the write may be retried later.
    """
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    structured = result.structured_content
    if result.is_error:
        body = structured.get("error") if isinstance(structured, dict) else None
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            retry = body.get("retry_after_seconds")
            refusal = GatewayRefusedError(
                tool,
                body["code"],
                str(body.get("message", "")),
                retry_after_seconds=float(retry) if isinstance(retry, int | float) else None,
            )
        else:
            refusal = refusal_from_text(tool, "\n".join(texts))
        if refusal.code == UNAVAILABLE_CODE:
            raise GatewayUnavailableError(tool, f"the gateway reports: {refusal.message}")
        raise refusal
    if isinstance(structured, dict):
        if set(structured) == {"result"} and isinstance(structured["result"], dict):
            return structured["result"]
        return structured
    for text in texts:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise GatewayRefusedError(tool, "error", f"the gateway's {tool} result is not a JSON object")


def gateway_verdict(tool: str, exc: BaseException) -> GatewayRefusedError | None:
    """The gateway's refusal carried by a JSON-RPC error, if ``exc`` is (or wraps) one.

    The gateway answers a refused bearer token with HTTP 401 and a JSON-RPC error whose
    ``data.code`` is ``unauthenticated``; its JSON-RPC code, -32001, is also the SDK's
    REQUEST_TIMEOUT, so the code alone would make a revoked token look like an outage.
    """
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    data = exc.data if isinstance(exc, MCPError) else None
    if isinstance(data, dict) and data.get("code") in REFUSAL_CODES:
        refusal = refusal_from_text(tool, str(exc))
        if refusal.code == data["code"]:
            return refusal
        return GatewayRefusedError(tool, str(data["code"]), str(exc))
    return None


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a finished connect task's exception as seen (callers may all have given up)."""
    if not task.cancelled():
        task.exception()


def _describe(exc: BaseException) -> str:
    """One line for an exception, unwrapping exception groups to their first member."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
