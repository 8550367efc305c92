"""The gateway on the wire: the HTTP health endpoint, HTTP 401 replies, and frames no MCP
client would send (1,000-deep JSON, lone surrogate escapes, invalid UTF-8) over both transports.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from gateway_harness import (
    TOKEN_OF_NOBODY,
    Gateways,
    Tenant,
    events_since,
    gateway_args,
    govern,
    head,
    issue,
    make_tenant,
)
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from isokron.substrate.dsn import SubstrateDSNs

PROTOCOL = "2025-06-18"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": PROTOCOL,
        "capabilities": {},
        "clientInfo": {"name": "raw-wire-test", "version": "0"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
DEEP = '{"a":' * 1000 + "{}" + "}" * 1000
BAD_FRAMES = {
    "deep-1000": (
        '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"kora__append_event",'
        '"arguments":{"event_type":"kora.wire.tested","payload":' + DEEP + "}}}"
    ).encode(),
    "lone-surrogate": (
        b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"kora__append_event",'
        b'"arguments":{"event_type":"kora.wire.tested","payload":{"k":"\\ud800"}}}}'
    ),
    "invalid-utf8": (
        b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"kora__append_event",'
        b'"arguments":{"event_type":"kora.wire.tested","payload":{"k":"\xff\xfe"}}}}'
    ),
}
GOOD_CALL = {
    "jsonrpc": "2.0",
    "id": 9,
    "method": "tools/call",
    "params": {"name": "kora__append_event", "arguments": {"event_type": "kora.wire.tested"}},
}


@pytest.fixture(scope="module")
async def tenant(admin_pool: asyncpg.Pool) -> Tenant:
    return await make_tenant(admin_pool, "wire")


@pytest.fixture(scope="module")
async def http_gateway(
    substrate: SubstrateDSNs, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateways]:
    gateways = Gateways("http", substrate, tmp_path_factory.mktemp("wire"))
    await gateways.start()
    try:
        yield gateways
    finally:
        await gateways.close()


async def test_health_endpoint(http_gateway: Gateways) -> None:
    assert http_gateway.http is not None
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{http_gateway.http.base_url}/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "transport": "http",
        "version": "0.1.0",
    }


async def _token(case: str, tenant: Tenant, admin_pool: asyncpg.Pool) -> str | None:
    if case == "missing":
        return None
    if case == "malformed":
        return "sk-not-a-workspace-key"
    if case == "unknown":
        return TOKEN_OF_NOBODY
    if case == "expired":
        return (await issue(admin_pool, tenant, "kora", expires_in=timedelta(seconds=-1))).token
    issued = await issue(admin_pool, tenant, "kora")
    await govern(admin_pool, tenant, "revoke_token", {"token_id": str(issued.token_id)})
    return issued.token


@pytest.mark.parametrize("case", ["missing", "malformed", "unknown", "expired", "revoked"])
async def test_http_refuses_bad_tokens_with_401_and_a_reason(
    http_gateway: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool, case: str
) -> None:
    assert http_gateway.http is not None
    token = await _token(case, tenant, admin_pool)
    headers = {"Accept": "application/json, text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient() as client:
        response = await client.post(http_gateway.http.url, json=INITIALIZE, headers=headers)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    error = response.json()["error"]
    assert error["data"] == {"code": "unauthenticated"}
    assert error["message"].startswith("[unauthenticated] ")
    if token is not None:
        assert token not in response.text
        assert token not in http_gateway.log_text()


class RawHttp:
    """A hand-driven MCP session over streamable HTTP, for frames the SDK would never send."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.client = httpx.AsyncClient(
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
            }
        )
        self.headers: dict[str, str] = {}

    async def __aenter__(self) -> RawHttp:
        response = await self.client.post(self.url, json=INITIALIZE)
        assert response.status_code == 200, response.text
        self.headers = {
            "mcp-session-id": response.headers["mcp-session-id"],
            "mcp-protocol-version": PROTOCOL,
            "content-type": "application/json",
        }
        await self.client.post(self.url, json=INITIALIZED, headers=self.headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def post(self, body: bytes) -> httpx.Response:
        return await self.client.post(self.url, content=body, headers=self.headers)


@pytest.mark.parametrize("frame", sorted(BAD_FRAMES))
async def test_http_rejects_unparsable_frames_and_writes_nothing(
    http_gateway: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool, frame: str
) -> None:
    assert http_gateway.http is not None
    before = await head(admin_pool, tenant.workspace_id)
    async with RawHttp(http_gateway.http.url, tenant.kora_token) as raw:
        response = await raw.post(BAD_FRAMES[frame])
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == -32700
        assert error["message"].startswith("Parse error")
        assert await head(admin_pool, tenant.workspace_id) == before
        # The session is still usable.
        good = await raw.post(json.dumps(GOOD_CALL).encode())
        assert good.status_code == 200
    assert await head(admin_pool, tenant.workspace_id) == before + 1


async def _read_reply(process: asyncio.subprocess.Process, wanted_id: int) -> dict[str, Any]:
    assert process.stdout is not None
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, "the gateway closed stdout"
        message = json.loads(line)
        if message.get("id") == wanted_id:
            return message


async def test_stdio_drops_unparsable_frames_and_writes_nothing(
    substrate: SubstrateDSNs, tenant: Tenant, admin_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Over stdio the SDK's transport drops a line it cannot parse (there is no id to answer);
    the session carries on and nothing is written. Invalid UTF-8 bytes are decoded by the SDK's
    transport with replacement characters: what is stored is well-formed text, never the bytes.
    """
    before = await head(admin_pool, tenant.workspace_id)
    with (tmp_path / "stdio.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *gateway_args(substrate),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env={**os.environ, "KORA_SERVICE_TOKEN": tenant.kora_token},
        )
    assert process.stdin is not None
    try:
        process.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
        assert "result" in await _read_reply(process, 1)
        process.stdin.write(json.dumps(INITIALIZED).encode() + b"\n")
        process.stdin.write(BAD_FRAMES["deep-1000"] + b"\n")
        process.stdin.write(BAD_FRAMES["lone-surrogate"] + b"\n")
        process.stdin.write(json.dumps(GOOD_CALL).encode() + b"\n")
        await process.stdin.drain()
        reply = await _read_reply(process, 9)
        assert reply["result"].get("isError") is not True, reply
        assert await head(admin_pool, tenant.workspace_id) == before + 1

        process.stdin.write(BAD_FRAMES["invalid-utf8"] + b"\n")
        await process.stdin.drain()
        reply = await _read_reply(process, 4)
        [event] = await events_since(admin_pool, tenant.workspace_id, before + 1)
        assert event["payload"] == {"k": "\ufffd\ufffd"}
    finally:
        process.stdin.close()
        await asyncio.wait_for(process.wait(), 30)


MODERN = "2026-07-28"


def _modern_call(rid: int, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A self-contained ``tools/call`` of the 2026-07-28 protocol: no initialize, no session."""
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {
            "name": tool,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }


def _modern_headers(token: str, tool: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }


async def test_a_stateless_json_write_needs_no_session(
    http_gateway: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    """What a load generator sends (bench/gateway_capacity.py): one POST per write, no
    initialize and no session; the same request id on many connections at once is fine."""
    assert http_gateway.http is not None
    before = await head(admin_pool, tenant.workspace_id)
    tool = "kora__write_agent_scratchpad"
    headers = _modern_headers(tenant.kora_token, tool)
    async with httpx.AsyncClient() as client:
        replies = await asyncio.gather(
            *(
                client.post(
                    http_gateway.http.url,
                    json=_modern_call(
                        1, tool, {"kind": "observation", "summary": f"n{i}", "content": "x"}
                    ),
                    headers=headers,
                )
                for i in range(8)
            )
        )
    for reply in replies:
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "application/json"
        assert "mcp-session-id" not in reply.headers
        body = reply.json()
        assert body["id"] == 1
        assert body["result"]["isError"] is False, body
        assert body["result"]["structuredContent"]["event_id"]
    assert await head(admin_pool, tenant.workspace_id) == before + 8
    # Without a token it is refused like any other request.
    async with httpx.AsyncClient() as client:
        refused = await client.post(
            http_gateway.http.url,
            json=_modern_call(2, tool, {"kind": "observation", "summary": "x"}),
            headers={k: v for k, v in headers.items() if k != "Authorization"},
        )
    assert refused.status_code == 401
    assert refused.json()["error"]["data"] == {"code": "unauthenticated"}


async def test_the_official_client_pinned_to_the_stateless_protocol(
    http_gateway: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    assert http_gateway.http is not None
    before = await head(admin_pool, tenant.workspace_id)
    async with (
        create_mcp_http_client(headers={"Authorization": f"Bearer {tenant.kora_token}"}) as http,
        Client(streamable_http_client(http_gateway.http.url, http_client=http), mode=MODERN) as c,
    ):
        assert c.protocol_version == MODERN
        result = await c.call_tool("kora__append_event", {"event_type": "kora.wire.stateless"})
    assert result.is_error is False, result
    assert await head(admin_pool, tenant.workspace_id) == before + 1
