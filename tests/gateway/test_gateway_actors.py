"""Actors have a lifecycle: ``isokron actor list|disable|enable`` are governed, chained
operations; a disabled actor's calls are refused ``actor_disabled`` over both transports, and
its tokens stay revocable."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from gateway_harness import (
    Gateways,
    Session,
    Tenant,
    data_of,
    error_of,
    events_since,
    govern,
    head,
    issue,
    make_tenant,
)
from typer.testing import CliRunner

from isokron.cli.main import app
from isokron.substrate import audit
from isokron.substrate.dsn import SubstrateDSNs

NOTE = {"event_type": "kora.note.recorded"}


async def cli(*args: str) -> Any:
    """Run ``isokron ARGS`` (its own event loop, so in a thread); returns the result."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def _refused_as_disabled(gateways: Gateways, session: Session) -> None:
    if gateways.transport == "stdio":
        error = error_of(await session.call("kora__append_event", NOTE))
        assert error["code"] == "actor_disabled"
        assert "disabled" in error["message"]
    else:  # HTTP 401, the JSON-RPC error carrying the code
        with pytest.raises(Exception) as raised:
            await session.call("kora__append_event", NOTE)
        assert "[actor_disabled]" in str(raised.value)


async def test_disable_refuses_enable_restores_and_tokens_stay_revocable(
    gateways: Gateways, admin_pool: asyncpg.Pool, substrate: SubstrateDSNs
) -> None:
    tenant: Tenant = await make_tenant(admin_pool, "actors")
    ws, dsn = tenant.workspace_id, substrate.admin
    spare = await issue(admin_pool, tenant, "kora")
    session = await gateways.session(tenant.kora_token)
    data_of(await session.call("kora__append_event", NOTE))
    seq = await head(admin_pool, ws)

    done = await cli("actor", "disable", ws, "kora", "--reason", "audit", "--dsn", dsn, "--json")
    assert done.exit_code == 0, done.output
    listed = await cli("actor", "list", ws, "--dsn", dsn, "--json")
    status = {a["actor_kind"]: a["status"] for a in json.loads(listed.output)}
    assert status["kora"] == "disabled" and status["operator"] == "active"
    events = await events_since(admin_pool, ws, seq)
    assert [e["event_type"] for e in events] == ["governance.actor.disabled"]
    assert events[0]["actor_id"] == tenant.operator_id

    await _refused_as_disabled(gateways, session)
    before = await head(admin_pool, ws)
    # a disabled actor's token can still be revoked
    await govern(admin_pool, tenant, "revoke_token", {"token_prefix": tenant.kora_token[:12]})
    assert [e["event_type"] for e in await events_since(admin_pool, ws, before)] == [
        "governance.token.revoked"
    ]

    enabled = await cli("actor", "enable", ws, "kora", "--dsn", dsn)
    assert enabled.exit_code == 0, enabled.output
    revived = await Session(gateways.connector(spare.token)).open()
    try:
        data_of(await revived.call("kora__append_event", NOTE))
    finally:
        await revived.close()
    assert audit.verify_workspace(dsn, ws).ok


async def test_the_last_operator_cannot_be_disabled(
    admin_pool: asyncpg.Pool, substrate: SubstrateDSNs
) -> None:
    tenant = await make_tenant(admin_pool, "lastop")
    result = await cli(
        "actor", "disable", tenant.workspace_id, "operator", "--dsn", substrate.admin
    )
    assert result.exit_code == 1
    assert "last active operator" in result.output
    again = await cli("actor", "enable", tenant.workspace_id, "kora", "--dsn", substrate.admin)
    assert again.exit_code == 1 and "already active" in again.output
