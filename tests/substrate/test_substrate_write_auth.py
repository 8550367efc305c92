"""The database authenticates every write (issue 9, items 4 and 5).

The gateway role writes only through ``isokron_api.write(token_sha256, ...)``: the database
resolves actor and workspace from the token's hash in the same transaction. With the gateway DSN
alone nobody can write as an actor whose token they lack; deciding needs an operator's token;
an approved escalation re-checks the original actor's capability or runs as a recorded operator
override. Operations are dispatched by name through ``isokron.operation_registry``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from isokron.errors import RefusalError, SubstrateError
from isokron.substrate import connection, reads, writes
from isokron.substrate.dsn import SubstrateDSNs

SELECT_POLICY_SQL = """
SELECT policy_value FROM public.kora_policy_registry WHERE workspace_id = $1 AND policy_key = $2
"""
SELECT_EVENT_SQL = """
SELECT event_type, actor_id, payload FROM hivex_foundation.event_log
WHERE workspace_id = $1 AND event_id = $2::uuid
"""


@pytest.fixture(scope="module")
async def gateway_pool(substrate: SubstrateDSNs) -> AsyncIterator[asyncpg.Pool]:
    pool = await connection.create_pool(substrate.gateway, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def _token(
    admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace, kind: str, **kw: Any
) -> writes.IssuedToken:
    async with admin_pool.acquire() as conn:
        return await writes.issue_token(
            conn, ws.workspace_id, ws.operator_actor_id, ws.actors[kind], **kw
        )


async def _refusal(call: Any) -> RefusalError:
    with pytest.raises(RefusalError) as caught:
        await call
    return caught.value


async def test_unknown_revoked_and_expired_tokens_are_refused_by_the_database(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gateway_pool: asyncpg.Pool
) -> None:
    note = {"event_type": "kora.note.recorded"}
    unknown = writes.token_sha256(writes.new_token())
    assert (
        await _refusal(writes.write_with_token(gateway_pool, "append_event", unknown, note))
    ).code == "unauthenticated"

    live = await _token(admin_pool, workspace, "kora")
    digest = writes.token_sha256(live.token)
    assert (await writes.write_with_token(gateway_pool, "append_event", digest, note))["seq"] > 0
    await writes.govern(
        admin_pool,
        "revoke_token",
        workspace.workspace_id,
        workspace.operator_actor_id,
        {"token_id": str(live.token_id)},
    )
    refused = await _refusal(writes.write_with_token(gateway_pool, "append_event", digest, note))
    assert refused.code == "unauthenticated" and "revoked" in refused.message

    expired = await _token(
        admin_pool, workspace, "kora", expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    refused = await _refusal(
        writes.write_with_token(
            gateway_pool, "append_event", writes.token_sha256(expired.token), note
        )
    )
    assert refused.code == "unauthenticated" and "expired" in refused.message
    # The rate-limit budget is the token holder's too: an unknown token cannot spend anyone's.
    with pytest.raises(RefusalError, match="not known"):
        await connection.run(
            gateway_pool,
            "SELECT isokron_api.admit_write($1, $2::jsonb)",
            unknown,
            [{"bucket": "writes", "limit": 60, "window_seconds": 60}],
        )


async def test_a_disabled_actor_cannot_write_with_its_token(
    make_workspace: Callable, admin_pool: asyncpg.Pool, gateway_pool: asyncpg.Pool
) -> None:
    ws = await make_workspace("disabled")
    critic = await _token(admin_pool, ws, "critic")
    async with admin_pool.acquire() as conn:  # the chained operation isokron actor disable runs
        await writes.govern(
            conn,
            "set_actor_status",
            ws.workspace_id,
            ws.operator_actor_id,
            {"actor_id": str(ws.actors["critic"]), "status": "disabled"},
        )
    refused = await _refusal(
        writes.write_with_token(
            gateway_pool,
            "append_event",
            writes.token_sha256(critic.token),
            {"event_type": "kora.note.recorded"},
        )
    )
    assert refused.code == "actor_disabled" and "disabled" in refused.message


async def test_the_gateway_dsn_alone_cannot_decide_a_proposal_as_the_operator(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gateway_pool: asyncpg.Pool
) -> None:
    # The finding: propose as Kora, then decide as the operator, with only the gateway's DSN.
    ws = workspace
    kora = writes.token_sha256((await _token(admin_pool, ws, "kora")).token)
    proposal = await writes.write_with_token(
        gateway_pool,
        "propose_policy_change",
        kora,
        {"policy_key": "policy.kora_rate_limit_per_minute", "proposed_value": 999999},
    )
    decide = {
        "proposal_kind": "policy_change",
        "proposal_id": proposal["proposal_id"],
        "decision": "accepted",
    }
    refused = await _refusal(writes.write_with_token(gateway_pool, "decide_proposal", kora, decide))
    assert refused.code == "capability_denied" and "operator" in refused.message
    # Naming the operator is not something the gateway role can do at all.
    for call in (
        writes.write(
            gateway_pool, "decide_proposal", ws.workspace_id, ws.operator_actor_id, decide
        ),
        connection.run(
            gateway_pool,
            "SELECT isokron.run_op('decide_proposal', $1, $2::uuid, $3::jsonb, NULL)",
            ws.workspace_id,
            str(ws.operator_actor_id),
            decide,
        ),
    ):
        with pytest.raises(SubstrateError, match="permission denied"):
            await call
    for kind in ("kora", "critic", "oracle", "claude_pm"):
        token = writes.token_sha256((await _token(admin_pool, ws, kind)).token)
        for op, args in (
            ("decide_proposal", decide),
            (
                "set_policies",
                {"policies": [{"policy_key": "policy.kora_disabled", "policy_value": True}]},
            ),
        ):
            refused = await _refusal(writes.write_with_token(gateway_pool, op, token, args))
            assert refused.code == "capability_denied", (kind, op)
    assert (
        await admin_pool.fetchval(
            SELECT_POLICY_SQL, ws.workspace_id, "policy.kora_rate_limit_per_minute"
        )
        == 60
    )
    # An operator's token decides (through the same gateway entry point).
    operator = writes.token_sha256((await _token(admin_pool, ws, "operator")).token)
    decided = await writes.write_with_token(gateway_pool, "decide_proposal", operator, decide)
    assert decided["status"] == "accepted"
    assert (
        await admin_pool.fetchval(
            SELECT_POLICY_SQL, ws.workspace_id, "policy.kora_rate_limit_per_minute"
        )
        == 999999
    )


async def test_a_token_of_another_workspace_is_refused_for_this_one(
    make_workspace: Callable, admin_pool: asyncpg.Pool, gateway_pool: asyncpg.Pool
) -> None:
    a, b = await make_workspace("tok-a"), await make_workspace("tok-b")
    b_kora = writes.token_sha256((await _token(admin_pool, b, "kora")).token)
    refused = await _refusal(
        writes.write_with_token(
            gateway_pool,
            "append_event",
            b_kora,
            {"event_type": "kora.note.recorded"},
            workspace_id=a.workspace_id,
        )
    )
    assert refused.code == "workspace_mismatch"
    # Without a workspace named, the write lands in the token's own workspace, never in a's.
    done = await writes.write_with_token(
        gateway_pool, "append_event", b_kora, {"event_type": "kora.note.recorded"}
    )
    row = await admin_pool.fetchrow(SELECT_EVENT_SQL, b.workspace_id, done["event_id"])
    assert row is not None and row["actor_id"] == b.actors["kora"]


async def _held_node(
    admin_pool: asyncpg.Pool, gateway_pool: asyncpg.Pool, ws: writes.CreatedWorkspace, title: str
) -> dict[str, Any]:
    critic = writes.token_sha256((await _token(admin_pool, ws, "critic")).token)
    return await writes.write_with_token(
        gateway_pool,
        "raise_escalation",
        critic,
        {
            "tool": "iso_node_create",
            "reason": "held",
            "request": {"op": "iso_node_create", "args": {"node_type": "fact", "title": title}},
        },
    )


async def test_approving_an_escalation_rechecks_the_raisers_capability(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gateway_pool: asyncpg.Pool
) -> None:
    # critic lacks cap_iso_node_create: approval alone must not create the node as critic.
    ws = workspace
    esc = await _held_node(admin_pool, gateway_pool, ws, "critic's node")
    decide = {"escalation_id": esc["escalation_id"], "decision": "approved"}
    refused = await _refusal(
        writes.write(admin_pool, "decide_escalation", ws.workspace_id, ws.operator_actor_id, decide)
    )
    assert refused.code == "capability_denied" and "cap_iso_node_create" in refused.message
    assert await reads.search_iso_nodes(admin_pool, ws.workspace_id, "critic") == ()

    decided = await writes.write(
        admin_pool,
        "decide_escalation",
        ws.workspace_id,
        ws.operator_actor_id,
        {**decide, "override": True, "note": "operator takes it on"},
    )
    assert decided["override"] is True
    nodes = await reads.search_iso_nodes(admin_pool, ws.workspace_id, "critic")
    assert len(nodes) == 1 and nodes[0].created_by == ws.operator_actor_id  # not critic
    event = await admin_pool.fetchrow(SELECT_EVENT_SQL, ws.workspace_id, decided["event_id"])
    assert event["event_type"] == "governance.escalation.decided"
    assert event["payload"]["override"] is True
    assert event["payload"]["ran_as"] == str(ws.operator_actor_id)
    assert event["payload"]["applied_event_id"] == decided["applied"]["event_id"]


async def test_an_escalation_runs_as_its_raiser_when_the_capability_is_held_now(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gateway_pool: asyncpg.Pool
) -> None:
    ws = workspace
    esc = await _held_node(admin_pool, gateway_pool, ws, "granted later")
    await writes.govern(
        admin_pool,
        "set_capabilities",
        ws.workspace_id,
        ws.operator_actor_id,
        {
            "capabilities": [
                {"cap_name": "cap_iso_node_create", "actor_kind": "critic", "granted": True}
            ]
        },
    )
    decided = await writes.write(
        admin_pool,
        "decide_escalation",
        ws.workspace_id,
        ws.operator_actor_id,
        {"escalation_id": esc["escalation_id"], "decision": "approved", "override": True},
    )
    assert decided["override"] is False  # no override was needed, so none is recorded
    nodes = await reads.search_iso_nodes(admin_pool, ws.workspace_id, "granted")
    assert [n.created_by for n in nodes] == [ws.actors["critic"]]


async def test_operations_are_dispatched_by_name_from_the_registry(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool
) -> None:
    # A new operation is a function isokron.op_<name> plus a registry row; nothing else.
    name = f"probe_{uuid4().hex[:8]}"
    ws = workspace
    async with admin_pool.acquire() as conn:
        await conn.execute(
            f"CREATE FUNCTION isokron.op_{name}(p_tenant uuid, p_ws text, p_actor uuid, "
            "p_args jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT jsonb_build_object("
            "'echo', p_args -> 'x', 'ws', p_ws) $$"
        )
        try:
            refused = await _refusal(
                connection.run(
                    conn,
                    "SELECT isokron_api.write_as($1, $2, $3::uuid, '{}'::jsonb)",
                    name,
                    ws.workspace_id,
                    str(ws.actors["kora"]),
                )
            )
            assert "unknown write operation" in refused.message  # not registered: refused
            await conn.execute(
                "INSERT INTO isokron.operation_registry VALUES ($1, 'cap_iso_node_create', false)",
                name,
            )
            result = await connection.run(
                conn,
                "SELECT isokron_api.write_as($1, $2, $3::uuid, '{\"x\": 7}'::jsonb)",
                name,
                ws.workspace_id,
                str(ws.actors["kora"]),
            )
            assert result["echo"] == 7 and result["ws"] == ws.workspace_id
            refused = await _refusal(
                connection.run(
                    conn,
                    "SELECT isokron_api.write_as($1, $2, $3::uuid, '{}'::jsonb)",
                    name,
                    ws.workspace_id,
                    str(ws.actors["critic"]),  # critic lacks the registered capability
                )
            )
            assert refused.code == "capability_denied"
        finally:
            await conn.execute("DELETE FROM isokron.operation_registry WHERE operation = $1", name)
            await conn.execute(f"DROP FUNCTION isokron.op_{name}(uuid, text, uuid, jsonb)")


@pytest.mark.policy_effect("policy.kora_service_token_max_age_days")
async def test_a_token_past_the_max_age_is_refused_by_the_database(
    make_workspace: Callable, admin_pool: asyncpg.Pool, gateway_pool: asyncpg.Pool
) -> None:
    """The limit holds for a write that bypasses the gateway (gateway DSN + a token hash)."""
    ws = await make_workspace("tokenage")
    kora = await _token(admin_pool, ws, "kora")
    digest = writes.token_sha256(kora.token)
    note = {"event_type": "kora.note.recorded"}
    await admin_pool.execute(  # ten days pass for this token (the superuser backdates it)
        "UPDATE isokron.service_tokens SET created_at = now() - interval '10 days' "
        "WHERE workspace_id = $1 AND token_id = $2",
        ws.workspace_id,
        kora.token_id,
    )
    assert (await writes.write_with_token(gateway_pool, "append_event", digest, note))["seq"]
    async with admin_pool.acquire() as conn:
        await writes.govern(
            conn,
            "set_policies",
            ws.workspace_id,
            ws.operator_actor_id,
            {
                "policies": [
                    {"policy_key": "policy.kora_service_token_max_age_days", "policy_value": 7}
                ]
            },
        )
    refused = await _refusal(writes.write_with_token(gateway_pool, "append_event", digest, note))
    assert refused.code == "unauthenticated"
    assert "policy.kora_service_token_max_age_days" in refused.message
