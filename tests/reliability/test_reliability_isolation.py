"""Isolation: a token of workspace A can neither write nor read workspace B through ANY gateway
tool, the reader role sees one workspace per transaction, and the gateway role cannot touch the
event log except through the append function. Cross-tenant rows seen must be 0.

The tools are enumerated from ``tools/list``; each is called with ``workspace_id`` = B, with
B's object ids, and plainly; every answer is searched for B's ids and B's text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from mcp_types import CallToolResult
from reliability_processes import HttpGatewayProcess, gateway_argv, http_session
from reliability_strategies import ID_KINDS, Objects, plausible_arguments
from reliability_support import (
    Figures,
    Tenant,
    chain_head,
    make_tenant,
    new_marker,
    refusal,
    row_counts,
    success,
)

from isokron.gateway.operations import SPECS
from isokron.provider import IsoKronMemoryProvider, IsoKronProviderConfig
from isokron.substrate import connection, writes
from isokron.substrate.dsn import SubstrateDSNs, database_name, database_roles

SECTION = "isolation"
RLS_TABLES_SQL = """
SELECT n.nspname AS schema_name, c.relname AS table_name,
       CASE WHEN c.relname IN ('event_log', 'chain_head') THEN 'tenant_id'
            WHEN c.relname = 'workspaces' THEN 'id'
            WHEN c.relname = 'tenant' THEN 'clerk_org_id'
            ELSE 'workspace_id' END AS key_column
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relrowsecurity AND c.relforcerowsecurity
  AND n.nspname IN ('public', 'kronicle', 'hivex_foundation', 'isokron')
ORDER BY 1, 2
"""
HEAD_HASH_SQL = "SELECT last_hash FROM hivex_foundation.chain_head WHERE tenant_id = $1"
STATUSES_SQL = """
SELECT (SELECT array_agg(status ORDER BY proposal_id) FROM kronicle.convention_proposals
        WHERE workspace_id = $1) AS conventions,
       (SELECT array_agg(status ORDER BY proposal_id) FROM kronicle.policy_change_proposals
        WHERE workspace_id = $1) AS policy_changes,
       (SELECT array_agg(status ORDER BY escalation_id) FROM kronicle.escalations
        WHERE workspace_id = $1) AS escalations,
       (SELECT array_agg(status ORDER BY node_id) FROM kronicle.iso_nodes
        WHERE workspace_id = $1) AS nodes
"""


@dataclass
class World:
    a: Tenant
    b: Tenant
    a_objects: Objects
    b_objects: Objects
    b_marker: str
    b_strings: set[str] = field(default_factory=set)

    def leaks(self, sent: dict[str, Any], result: CallToolResult) -> int:
        """How many of B's ids or texts appear in an answer to A, besides those A sent itself
        (a refusal may name the workspace or the id it refuses)."""
        request = json.dumps(sent, default=str)
        text = json.dumps(result.structured_content, default=str) + " ".join(
            getattr(c, "text", "") for c in result.content
        )
        return sum(text.count(s) for s in self.b_strings if s not in request)


async def _populate(session: Any, ws: Tenant, marker: str, objects: Objects) -> None:
    async def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        return success(await session.call_tool(tool, args))

    for n in range(2):
        node = await call("iso_node_create", {"node_type": "fact", "title": f"{marker} node {n}"})
        objects.add("node", node["node_id"])
    await call(
        "iso_link_create",
        {
            "from_node_id": objects.first("node", 0),
            "to_node_id": objects.first("node", 1),
            "link_type": "supports",
            "properties": {"why": marker},
        },
    )
    for scope in ("own_only", "cross_agent_dereferenceable"):
        await call(
            "kora__write_agent_scratchpad",
            {
                "kind": "plan",
                "summary": f"{marker} plan",
                "content": marker,
                "visibility_scope": scope,
            },
        )
    conv = await call("kora__propose_convention", {"title": f"{marker} conv", "body": marker})
    objects.add("proposal", conv["proposal_id"])
    objects.proposal_kinds[conv["proposal_id"]] = "convention"
    change = await call(
        "kora__propose_policy_change",
        {"policy_key": "policy.kora_disabled", "proposed_value": True, "rationale": marker},
    )
    objects.add("proposal", change["proposal_id"])
    objects.proposal_kinds[change["proposal_id"]] = "policy_change"
    raised = await call("kora__raise_escalation", {"reason": f"{marker} question"})
    objects.add("escalation", raised["escalation_id"])
    held = await call(
        "iso_node_create", {"node_type": "fact", "title": f"{marker}: delete all the records"}
    )
    assert held["escalated"] is True
    objects.add("escalation", held["escalation_id"])


@pytest.fixture(scope="module")
async def world(admin_pool: asyncpg.Pool, http_gateway: HttpGatewayProcess) -> World:
    a, b = await make_tenant(admin_pool, "iso-a"), await make_tenant(admin_pool, "iso-b")
    w = World(a, b, Objects(), Objects(), new_marker())
    async with http_session(http_gateway.url, b.kora_token) as session:
        await _populate(session, b, w.b_marker, w.b_objects)
    async with http_session(http_gateway.url, a.kora_token) as session:
        await _populate(session, a, new_marker(), w.a_objects)
    w.b_strings = {w.b_marker, b.workspace_id, str(b.tenant_id)} | {
        i for ids in w.b_objects.ids.values() for i in ids
    }
    return w


async def _snapshot(admin_pool: asyncpg.Pool, t: Tenant) -> tuple[Any, ...]:
    statuses = await admin_pool.fetchrow(STATUSES_SQL, t.workspace_id)
    return (
        await chain_head(admin_pool, t.workspace_id),
        bytes(await admin_pool.fetchval(HEAD_HASH_SQL, t.tenant_id)),
        await row_counts(admin_pool, t.workspace_id),
        tuple(statuses),
    )


async def test_a_token_of_a_reaches_nothing_of_b_through_any_tool(
    world: World, admin_pool: asyncpg.Pool, http_gateway: HttpGatewayProcess, figures: Figures
) -> None:
    b_before = await _snapshot(admin_pool, world.b)
    probes = leaks = mismatches = not_found = 0
    unexpected: list[str] = []
    probed: set[str] = set()
    for token_kind in ("kora", "operator"):
        token = world.a.kora_token if token_kind == "kora" else world.a.operator_token
        async with http_session(http_gateway.url, token) as client:
            listing = (await client.list_tools()).tools
            assert {t.name for t in listing} == set(SPECS), "tools/list and the registry differ"
            for tool in listing:
                schema = tool.input_schema
                uses_ids = any(name in ID_KINDS for name in schema.get("properties", {}))
                calls: list[tuple[str, dict[str, Any], set[str]]] = []
                # 1. Name workspace B outright: refused before anything else is looked at.
                named = plausible_arguments(tool.name, schema, world.b_objects)
                calls.append(
                    (
                        "workspace_id=B",
                        {**named, "workspace_id": world.b.workspace_id},
                        {"workspace_mismatch"},
                    )
                )
                # 2. B's object ids under A's own workspace: they do not exist there.
                if uses_ids:
                    allowed = {"not_found"} | (
                        {"capability_denied"} if token_kind == "kora" else set()
                    )
                    calls.append(("B's ids", named, allowed))
                    if tool.name == "iso_link_create":  # A's node -> B's node
                        mixed = {**named, "from_node_id": world.a_objects.first("node")}
                        calls.append(("A->B link", mixed, {"not_found"}))
                # 3. A plain call in A's workspace: whatever it answers, nothing of B.
                calls.append(
                    (
                        "plain",
                        plausible_arguments(tool.name, schema, world.a_objects, with_optional=True),
                        set(),
                    )
                )
                for label, args, expected in calls:
                    result = await client.call_tool(tool.name, args)
                    probes += 1
                    probed.add(tool.name)
                    seen = world.leaks(args, result)
                    leaks += seen
                    error = refusal(result)
                    code = error["code"] if error else None
                    mismatches += code == "workspace_mismatch"
                    not_found += code == "not_found"
                    if seen or (expected and code not in expected):
                        unexpected.append(
                            f"{token_kind} {tool.name} [{label}]: {code} leaks={seen}"
                        )
    b_after = await _snapshot(admin_pool, world.b)

    figures.add(SECTION, "gateway tools probed", len(probed))
    figures.add(SECTION, "gateway probes sent (tokens of A)", probes)
    figures.add(SECTION, "refused workspace_mismatch", mismatches)
    figures.add(SECTION, "refused not_found (B's ids)", not_found)
    figures.add(SECTION, "cross-tenant rows seen (gateway)", leaks)
    figures.add(SECTION, "cross-tenant rows seen", leaks)
    figures.add(SECTION, "B changed by A's probes", 0 if b_after == b_before else 1)

    assert probed == set(SPECS)
    assert unexpected == []
    assert leaks == 0
    assert b_after == b_before  # B's chain, head, rows and statuses are untouched


async def test_the_reader_sees_one_workspace_per_transaction(
    world: World, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool, figures: Figures
) -> None:
    tables = await admin_pool.fetch(RLS_TABLES_SQL)
    assert len(tables) >= 18
    b_keys = {"workspace_id": world.b.workspace_id, "id": world.b.workspace_id}
    b_keys |= {"clerk_org_id": world.b.workspace_id}
    seen_of_b = seen_unscoped = probes = 0
    reader = await connection.connect(substrate.reader)
    try:
        for t in tables:
            name = f'"{t["schema_name"]}"."{t["table_name"]}"'
            key = t["key_column"]
            b_value: Any = world.b.tenant_id if key == "tenant_id" else b_keys[key]
            select = f'SELECT count(*) FROM {name} WHERE "{key}" = $1'
            try:
                async with connection.workspace_transaction(reader, world.a.workspace_id):
                    seen_of_b += await reader.fetchval(select, b_value)
                async with reader.transaction():
                    seen_unscoped += await reader.fetchval(f"SELECT count(*) FROM {name}")
            except asyncpg.InsufficientPrivilegeError:
                pass  # tokens, idempotency and rate-limit rows: not even granted to the reader
            probes += 1
    finally:
        await reader.close()
    figures.add(SECTION, "reader tables probed", probes)
    figures.add(SECTION, "cross-tenant rows seen (reader, scoped to A)", seen_of_b)
    figures.add(SECTION, "rows seen by the reader without a workspace", seen_unscoped)
    figures.add(SECTION, "cross-tenant rows seen", seen_of_b)
    assert seen_of_b == 0
    assert seen_unscoped == 0


GATEWAY_EVENT_LOG_ATTEMPTS = {
    "SELECT event_log": "SELECT count(*) FROM hivex_foundation.event_log",
    "INSERT event_log": "INSERT INTO hivex_foundation.event_log (tenant_id, seq, event_id, "
    "actor_id, event_type, payload, payload_digest, occurred_at, prev_event_hash, "
    "this_event_hash) SELECT $1, 999, gen_random_uuid(), gen_random_uuid(), 'kora.forged', "
    "'{}', sha256(''), now(), sha256(''), sha256('')",
    "UPDATE event_log": "UPDATE hivex_foundation.event_log SET event_type = 'x' "
    "WHERE tenant_id = $1",
    "DELETE event_log": "DELETE FROM hivex_foundation.event_log WHERE tenant_id = $1",
    "TRUNCATE event_log": "TRUNCATE hivex_foundation.event_log",
    "UPDATE chain_head": "UPDATE hivex_foundation.chain_head SET last_seq = 0 WHERE tenant_id = $1",
    "append_chain_event()": "SELECT hivex_foundation.append_chain_event($1, gen_random_uuid(), "
    "'kora.forged.event', '{}'::jsonb) ->> 'seq'",
    "erase_event_payload()": "SELECT hivex_foundation.erase_event_payload($1, 1, 'x')",
}


@pytest.mark.parametrize("role", ["gateway", "reader"])
async def test_the_gateway_and_reader_roles_touch_the_log_only_through_the_function(
    role: str, world: World, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool, figures: Figures
) -> None:
    before = await _snapshot(admin_pool, world.a)
    refused: list[str] = []
    allowed: list[str] = []
    conn = await connection.connect(getattr(substrate, role))
    try:
        for label, sql in GATEWAY_EVENT_LOG_ATTEMPTS.items():
            if role == "reader" and label == "SELECT event_log":
                continue  # the reader may read (under RLS): that is its job
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(connection.SET_WORKSPACE_SQL, world.a.workspace_id)
                args = (world.a.tenant_id,) if "$1" in sql else ()
                await conn.execute(sql, *args)
                allowed.append(label)
            except asyncpg.InsufficientPrivilegeError:
                refused.append(label)
            finally:
                await tx.rollback()
    finally:
        await conn.close()
    figures.add(
        SECTION, f"direct event-log attempts by the {role} role", len(refused) + len(allowed)
    )
    figures.add(SECTION, f"direct event-log attempts by the {role} role refused", len(refused))
    assert allowed == []
    assert await _snapshot(admin_pool, world.a) == before


async def test_documented_limits(
    world: World, substrate: SubstrateDSNs, admin_pool: asyncpg.Pool, figures: Figures
) -> None:
    """What docs/security.md says the roles do NOT prevent, asserted so that the document
    cannot drift from the system: a holder of the reader credentials chooses the workspace of
    each transaction and may create temporary tables; the owner role (which the migrating
    admin can assume) may switch the append-only trigger off. Changes are rolled back."""
    reader = await connection.connect(substrate.reader)
    try:
        async with connection.workspace_transaction(reader, world.b.workspace_id):
            b_nodes = await reader.fetchval(
                "SELECT count(*) FROM kronicle.iso_nodes WHERE workspace_id = $1",
                world.b.workspace_id,
            )
        async with reader.transaction():
            await reader.execute("CREATE TEMP TABLE reliability_probe (x int) ON COMMIT DROP")
            temp_ok = True
    finally:
        await reader.close()
    owner_can_disable = False
    async with admin_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            owner = database_roles(database_name(substrate.admin)).owner
            await conn.execute(f'SET LOCAL ROLE "{owner}"')
            await conn.execute(
                "ALTER TABLE hivex_foundation.event_log DISABLE TRIGGER event_log_append_only"
            )
            owner_can_disable = True
        finally:
            await tx.rollback()
    figures.set(
        SECTION, "limit: owner role may disable the append-only trigger", "yes (documented)"
    )
    figures.set(SECTION, "limit: reader credentials may pick any workspace", "yes (documented)")
    figures.set(SECTION, "limit: reader may create TEMP tables", "yes (documented)")
    assert b_nodes == 2  # B's two nodes (the third waits in B's escalation queue)
    assert temp_ok
    assert owner_can_disable


async def _wait_for_scratchpad_rows(pool: asyncpg.Pool, workspace_id: str, count: int) -> None:
    """Poll until ``count`` scratchpad rows exist (a hang guard, not a timing bound)."""
    for _ in range(3000):
        async with pool.acquire() as conn:
            async with connection.workspace_transaction(conn, workspace_id):
                seen = await conn.fetchval(
                    "SELECT count(*) FROM kronicle.agent_scratchpad_entries"
                    " WHERE workspace_id = $1",
                    workspace_id,
                )
        if seen >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{count} scratchpad row(s) never landed in {workspace_id}")


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_a_revoked_token_stops_a_live_provider_at_once(
    transport: str,
    substrate: SubstrateDSNs,
    admin_pool: asyncpg.Pool,
    http_gateway: HttpGatewayProcess,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    figures: Figures,
) -> None:
    """Revoking Kora's token under a running provider: the next write is refused
    (``unauthenticated``) and dropped, not mistaken for an outage and queued for ever."""
    caplog.set_level(logging.DEBUG, logger="isokron.provider")
    tenant = await make_tenant(admin_pool, f"revoke-{transport}")
    endpoint = http_gateway.url
    if transport == "stdio":  # the provider starts this gateway itself, governance cache off
        endpoint = "stdio:" + shlex.join(
            [sys.executable, *gateway_argv(substrate, "--governance-ttl", "0")]
        )
    provider = IsoKronMemoryProvider(
        IsoKronProviderConfig.model_validate(
            {
                "reader_dsn": substrate.reader,
                "mcp_endpoint": endpoint,
                "workspace_id": tenant.workspace_id,
                "service_token": tenant.kora_token,
            }
        )
    )
    try:
        provider.initialize(
            "rev-1", platform="cli", agent_context="primary", hermes_home=str(tmp_path)
        )
        provider.sync_turn("q1", "before the revocation, cap_append_event")
        # sync_turn hands the write to the provider's worker: revoke only once it has landed
        # (a stdio gateway may still be starting), or the test would race its own first write.
        await _wait_for_scratchpad_rows(admin_pool, tenant.workspace_id, 1)
        async with admin_pool.acquire() as conn:
            await writes.govern(
                conn,
                "revoke_token",
                tenant.workspace_id,
                tenant.operator_id,
                {"token_prefix": tenant.kora_token[:12]},
            )
        provider.sync_turn("q2", "after the revocation, cap_append_event")
        tool = json.loads(
            provider.handle_tool_call("iso_node_create", {"node_type": "fact", "title": "t"})
        )
        assert provider._writer is not None
        pending, down = provider._writer.pending, provider._writer.breaker.down
    finally:
        provider.shutdown()
    messages = [r.getMessage() for r in caplog.records]
    async with admin_pool.acquire() as conn:
        async with connection.workspace_transaction(conn, tenant.workspace_id):
            summaries = [
                r[0]
                for r in await conn.fetch(
                    "SELECT summary FROM kronicle.agent_scratchpad_entries WHERE workspace_id = $1",
                    tenant.workspace_id,
                )
            ]
    refused = any("[kora.chain.emit.failed]" in m and "unauthenticated" in m for m in messages)
    figures.set(
        SECTION,
        f"revoked token under a live provider ({transport}): refused at once",
        "yes" if refused and pending == 0 else "no",
    )
    assert tool["code"] == "unauthenticated", tool
    assert pending == 0 and not down  # refused, not queued as if the gateway were down
    assert refused
    assert not any("gateway.unavailable" in m or "emit.dropped" in m for m in messages)
    assert summaries == ["before the revocation, cap_append_event"]
