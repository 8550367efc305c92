"""Gateway test helpers: real gateway processes, the official MCP client, real PostgreSQL.

``Gateways`` starts the gateway the way a user would (``python -m isokron.gateway``): one HTTP
process per test module and transport, reached through the SDK's streamable HTTP client with an
``Authorization`` header; or one stdio process per token, spawned by the SDK's stdio client
with ``KORA_SERVICE_TOKEN``. Governance and authentication caching is off (TTL 0) so a policy
change made by a test applies to the very next call.

MCP client sessions are anyio contexts that must be entered and left by one task, while
pytest-asyncio runs a fixture's setup and teardown as separate tasks; a :class:`Session` is
therefore owned by a background task and used from the tests through its client.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult

from isokron.governance.seeds import default_seed
from isokron.substrate import writes
from isokron.substrate.dsn import SubstrateDSNs

CLIENT_TIMEOUT_SECONDS = 60.0
START_TIMEOUT_SECONDS = 60.0

DENIED = "gateway.write.denied"
BURST_POLICY = "policy.kora_rate_limit_burst"
LIFTED_BURST = 1_000_000
TOKEN_OF_NOBODY = "wsk_" + "Q" * 40  # well-formed, never issued


def gateway_args(dsns: SubstrateDSNs, *extra: str) -> list[str]:
    """Arguments of ``python -m isokron.gateway`` against the test substrate."""
    return [
        "-m",
        "isokron.gateway",
        "--reader-dsn",
        dsns.reader,
        "--gateway-dsn",
        dsns.gateway,
        "--governance-ttl",
        "0",
        *extra,
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpGateway:
    """``python -m isokron.gateway --transport http`` as a subprocess on a free port."""

    def __init__(self, dsns: SubstrateDSNs, log_path: Path, *extra_args: str) -> None:
        self.dsns = dsns
        self.log_path = log_path
        self.extra_args = extra_args
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/mcp"

    async def start(self) -> None:
        self.port = free_port()
        log = self.log_path.open("ab")
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            *gateway_args(
                self.dsns, "--transport", "http", "--port", str(self.port), *self.extra_args
            ),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_SECONDS
        async with httpx.AsyncClient() as client:
            while True:
                if self._process.returncode is not None:
                    raise RuntimeError(f"the HTTP gateway exited:\n{self.log_path.read_text()}")
                try:
                    response = await client.get(f"{self.base_url}/healthz")
                    if response.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(
                        f"the HTTP gateway did not start:\n{self.log_path.read_text()}"
                    )
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            await self._process.wait()


@asynccontextmanager
async def http_client(url: str, token: str | None) -> AsyncIterator[Client]:
    """The official client over streamable HTTP, sending ``token`` as a bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(
            streamable_http_client(url, http_client=http),
            read_timeout_seconds=CLIENT_TIMEOUT_SECONDS,
        ) as client,
    ):
        yield client


@asynccontextmanager
async def stdio_gateway_client(
    dsns: SubstrateDSNs, token: str | None, log_path: Path
) -> AsyncIterator[Client]:
    """The official client over stdio, spawning a gateway with ``KORA_SERVICE_TOKEN``."""
    params = StdioServerParameters(
        command=sys.executable,
        args=gateway_args(dsns),
        env={"KORA_SERVICE_TOKEN": token or ""},
    )
    with log_path.open("a") as errlog:
        async with Client(
            stdio_client(params, errlog=errlog), read_timeout_seconds=CLIENT_TIMEOUT_SECONDS
        ) as client:
            yield client


class Session:
    """A connected MCP client owned by a background task."""

    def __init__(self, connect: Callable[[], AbstractAsyncContextManager[Client]]) -> None:
        self._connect = connect
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> Session:
        self._task = asyncio.create_task(self._run())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.is_set():
            ready.cancel()
            await self._task  # raises what went wrong
        return self

    async def _run(self) -> None:
        async with self._connect() as client:
            self._client = client
            self._ready.set()
            await self._stop.wait()

    @property
    def client(self) -> Client:
        assert self._client is not None, "session not open"
        return self._client

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
        return await self.client.call_tool(tool, arguments or {})

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


class Gateways:
    """Sessions with a gateway over one transport, one per token, made on first use."""

    def __init__(self, transport: str, dsns: SubstrateDSNs, log_dir: Path) -> None:
        self.transport = transport
        self.dsns = dsns
        self.log_path = log_dir / f"gateway-{transport}.log"
        self.http = HttpGateway(dsns, self.log_path) if transport == "http" else None
        self._sessions: dict[str | None, Session] = {}

    async def start(self) -> None:
        if self.http is not None:
            await self.http.start()

    def connector(self, token: str | None) -> Callable[[], AbstractAsyncContextManager[Client]]:
        if self.http is not None:
            url = self.http.url
            return lambda: http_client(url, token)
        return lambda: stdio_gateway_client(self.dsns, token, self.log_path)

    async def session(self, token: str | None) -> Session:
        """The shared session of ``token`` (opened on first use)."""
        if token not in self._sessions:
            self._sessions[token] = await Session(self.connector(token)).open()
        return self._sessions[token]

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        if self.http is not None:
            await self.http.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --------------------------------------------------------------------------- workspaces


@dataclass(frozen=True)
class Tenant:
    """A seeded workspace with tokens for its kora and operator actors."""

    workspace_id: str
    operator_id: uuid.UUID
    actors: dict[str, uuid.UUID]
    kora_token: str
    operator_token: str


async def make_tenant(admin_pool: asyncpg.Pool, prefix: str) -> Tenant:
    """Create and seed a workspace and issue a kora and an operator token."""
    ws_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
    async with admin_pool.acquire() as conn:
        created = await writes.create_workspace(conn, ws_id, f"Test {ws_id}", seed=default_seed())
        operator = created.operator_actor_id
        kora = await writes.issue_token(conn, ws_id, operator, created.actors["kora"])
        op = await writes.issue_token(conn, ws_id, operator, operator)
        # Tests call faster than an agent may write: lift the per-second burst (the tests of
        # the burst set it on purpose).
        await writes.govern(
            conn,
            "set_policies",
            ws_id,
            operator,
            {"policies": [{"policy_key": BURST_POLICY, "policy_value": LIFTED_BURST}]},
        )
    return Tenant(ws_id, operator, created.actors, kora.token, op.token)


async def issue(
    admin_pool: asyncpg.Pool,
    tenant: Tenant,
    actor_kind: str,
    *,
    expires_in: timedelta | None = None,
) -> writes.IssuedToken:
    """Issue one more token for an actor of ``tenant``."""
    expires_at = datetime.now(UTC) + expires_in if expires_in is not None else None
    async with admin_pool.acquire() as conn:
        return await writes.issue_token(
            conn,
            tenant.workspace_id,
            tenant.operator_id,
            tenant.actors[actor_kind],
            expires_at=expires_at,
        )


async def govern(admin_pool: asyncpg.Pool, tenant: Tenant, op: str, args: dict[str, Any]) -> None:
    """A governance operation by the tenant's operator (as the CLI would do it)."""
    async with admin_pool.acquire() as conn:
        await writes.govern(conn, op, tenant.workspace_id, tenant.operator_id, args)


async def set_policy(admin_pool: asyncpg.Pool, tenant: Tenant, key: str, value: Any) -> None:
    await govern(
        admin_pool,
        tenant,
        "set_policies",
        {"policies": [{"policy_key": key, "policy_value": value}]},
    )


# ------------------------------------------------------------------------------ chain reads

EVENTS_SQL = """
SELECT el.seq, el.event_id, el.event_type, el.actor_id, el.payload,
       el.prev_event_hash, el.this_event_hash
FROM hivex_foundation.event_log el
JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id
WHERE t.clerk_org_id = $1 AND el.seq > $2
ORDER BY el.seq
"""
HEAD_SQL = """
SELECT coalesce(max(el.seq), 0)
FROM hivex_foundation.event_log el
JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id
WHERE t.clerk_org_id = $1
"""


async def head(admin_pool: asyncpg.Pool, workspace_id: str) -> int:
    """The workspace's last chain seq."""
    return int(await admin_pool.fetchval(HEAD_SQL, workspace_id))


async def events_since(
    admin_pool: asyncpg.Pool, workspace_id: str, seq: int
) -> list[asyncpg.Record]:
    """Chain events of the workspace after ``seq``, in order."""
    return list(await admin_pool.fetch(EVENTS_SQL, workspace_id, seq))


async def count_rows(admin_pool: asyncpg.Pool, table: str, workspace_id: str) -> int:
    """Rows of a workspace in one of the substrate's tables (a fixed, known table name)."""
    assert table.replace("_", "").replace(".", "").isalnum()
    return int(
        await admin_pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE workspace_id = $1", workspace_id
        )
    )


def error_of(result: CallToolResult) -> dict[str, Any]:
    """The structured error of a refused call (asserting it is one)."""
    assert result.is_error, result
    assert result.structured_content is not None, result
    error = result.structured_content["error"]
    text = result.content[0].text  # type: ignore[union-attr]
    assert text == f"[{error['code']}] {error['message']}"
    return error


def data_of(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a successful call (asserting it is one)."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
