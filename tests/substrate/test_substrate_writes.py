"""The write operations (invariants 3, 6 and 8): every operation appends exactly one chain event
that its row keeps, a retried call with the same idempotency key appends nothing, failures leave
nothing behind, and capabilities are enforced in the database itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from substrate_support import GatewayWriter

from isokron.chain import read_bundle, verify_bundle
from isokron.errors import ConflictError, NotFoundError, RefusalError
from isokron.governance import charter, operations, seeds
from isokron.governance.seeds import default_seed
from isokron.substrate import audit, connection, reads, writes
from isokron.substrate.dsn import SubstrateDSNs

SELECT_HEAD_SQL = """
SELECT h.last_seq FROM hivex_foundation.chain_head h WHERE h.tenant_id = $1
"""
SELECT_EVENT_SQL = """
SELECT seq, event_id, actor_id, event_type, payload, occurred_at
FROM hivex_foundation.event_log WHERE tenant_id = $1 AND seq = $2
"""


@pytest.fixture(scope="module")
async def gateway_pool(substrate: SubstrateDSNs) -> AsyncIterator[asyncpg.Pool]:
    pool = await connection.create_pool(substrate.gateway, min_size=1, max_size=6)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def gw(admin_pool: asyncpg.Pool, gateway_pool: asyncpg.Pool) -> GatewayWriter:
    """Writes through the gateway role, each actor with its own token."""
    return GatewayWriter(admin_pool, gateway_pool)


@pytest.fixture
async def make_workspace(make_workspace: Callable, gw: GatewayWriter) -> Callable:
    """Workspaces whose actors already hold tokens, so counting events starts after issuance."""

    async def make(prefix: str = "ws") -> writes.CreatedWorkspace:
        ws = await make_workspace(prefix)
        for actor in ws.actors.values():
            await gw.token_hash(actor)
        return ws

    return make


async def _head(admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace) -> int:
    return await admin_pool.fetchval(SELECT_HEAD_SQL, ws.tenant_id)


async def _event_count(admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace) -> int:
    return await admin_pool.fetchval(
        "SELECT count(*) FROM hivex_foundation.event_log WHERE tenant_id = $1", ws.tenant_id
    )


class Ledger:
    """Runs one write and checks it appended exactly one event of the expected type."""

    def __init__(self, admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace) -> None:
        self.admin = admin_pool
        self.ws = ws
        self.ops: set[str] = set()

    async def one_event(
        self, op: str, call: Awaitable[dict[str, Any]], event_type: str
    ) -> tuple[dict[str, Any], asyncpg.Record]:
        before = await _head(self.admin, self.ws)
        result = await call
        assert await _head(self.admin, self.ws) == before + 1, f"{op} did not append one event"
        assert await _event_count(self.admin, self.ws) == before + 1
        event = await self.admin.fetchrow(SELECT_EVENT_SQL, self.ws.tenant_id, before + 1)
        assert result["seq"] == before + 1
        assert UUID(result["event_id"]) == event["event_id"]
        assert event["event_type"] == event_type, op
        assert result["replayed"] is False
        self.ops.add(op)
        return result, event

    async def row_keeps(self, sql: str, *args: Any) -> Any:
        value = await self.admin.fetchval(sql, self.ws.workspace_id, *args)
        assert value is not None, sql
        return value


async def test_every_operation_appends_exactly_one_event_its_row_keeps(
    make_workspace: Callable,
    admin_pool: asyncpg.Pool,
    gw: GatewayWriter,
    substrate: SubstrateDSNs,
) -> None:
    ws = await make_workspace("ops")
    kora, operator = ws.actors["kora"], ws.operator_actor_id
    led = Ledger(admin_pool, ws)

    def agent(op: str, args: dict[str, Any], actor: UUID = kora) -> Awaitable[dict[str, Any]]:
        return gw.write(op, ws.workspace_id, actor, args)

    def govern(op: str, args: dict[str, Any]) -> Awaitable[dict[str, Any]]:
        return writes.govern(admin_pool, op, ws.workspace_id, operator, args)

    # ---- agent operations
    r, ev = await led.one_event(
        "append_event",
        agent("append_event", {"event_type": "kora.note.recorded", "payload": {"n": 1}}),
        "kora.note.recorded",
    )
    assert ev["payload"] == {"n": 1} and ev["actor_id"] == kora

    r, ev = await led.one_event(
        "write_scratchpad_entry",
        agent(
            "write_scratchpad_entry",
            writes.scratchpad_args(kind="plan", summary="s", content="c", session_id="sess"),
        ),
        "kora.scratchpad.written",
    )
    assert ev["event_id"] == await led.row_keeps(
        "SELECT approved_event_id FROM kronicle.agent_scratchpad_entries "
        "WHERE workspace_id = $1 AND entry_id = $2",
        UUID(r["entry_id"]),
    )
    assert ev["payload"]["content_hash"] == writes.content_hash("c")

    r, ev = await led.one_event(
        "iso_node_create",
        agent("iso_node_create", {"node_type": "decision", "title": "first", "content": "x"}),
        "kora.node.created",
    )
    first = UUID(r["node_id"])
    assert ev["event_id"] == await led.row_keeps(
        "SELECT approved_event_id FROM kronicle.iso_nodes WHERE workspace_id = $1 AND node_id = $2",
        first,
    )

    r, ev = await led.one_event(
        "iso_node_supersede",
        agent("iso_node_supersede", {"node_id": str(first), "title": "second", "reason": "r"}),
        "kora.node.superseded",
    )
    second = UUID(r["node_id"])
    assert UUID(r["superseded_node_id"]) == first
    assert ev["event_id"] == await led.row_keeps(
        "SELECT approved_event_id FROM kronicle.iso_nodes WHERE workspace_id = $1 AND node_id = $2",
        second,
    )
    old = await admin_pool.fetchrow(
        "SELECT status, superseded_by, superseded_event_id FROM kronicle.iso_nodes "
        "WHERE workspace_id = $1 AND node_id = $2",
        ws.workspace_id,
        first,
    )
    assert (old["status"], old["superseded_by"], old["superseded_event_id"]) == (
        "superseded",
        second,
        ev["event_id"],
    )

    r, ev = await led.one_event(
        "iso_link_create",
        agent(
            "iso_link_create",
            {"from_node_id": str(first), "to_node_id": str(second), "link_type": "precedes"},
        ),
        "kora.link.created",
    )
    assert ev["event_id"] == await led.row_keeps(
        "SELECT approved_event_id FROM kronicle.iso_links WHERE workspace_id = $1 AND link_id = $2",
        UUID(r["link_id"]),
    )

    r, ev = await led.one_event(
        "propose_convention",
        agent("propose_convention", {"title": "t", "body": "b", "rationale": "why"}),
        "kora.convention.proposed",
    )
    convention = UUID(r["proposal_id"])
    assert ev["event_id"] == await led.row_keeps(
        "SELECT approved_event_id FROM kronicle.convention_proposals "
        "WHERE workspace_id = $1 AND proposal_id = $2",
        convention,
    )

    r, ev = await led.one_event(
        "propose_policy_change",
        agent(
            "propose_policy_change",
            {"policy_key": "policy.kora_rate_limit_per_minute", "proposed_value": 10},
        ),
        "kora.policy_change.proposed",
    )
    assert ev["event_id"] == await led.row_keeps(
        "SELECT approved_event_id FROM kronicle.policy_change_proposals "
        "WHERE workspace_id = $1 AND proposal_id = $2",
        UUID(r["proposal_id"]),
    )

    r, ev = await led.one_event(
        "raise_escalation",
        agent("raise_escalation", {"tool": "iso_node_create", "reason": "unsure"}),
        "kora.escalation.raised",
    )
    escalation = UUID(r["escalation_id"])
    assert ev["event_id"] == await led.row_keeps(
        "SELECT approved_event_id FROM kronicle.escalations "
        "WHERE workspace_id = $1 AND escalation_id = $2",
        escalation,
    )

    r, ev = await led.one_event(
        "record_denial",
        agent("record_denial", {"tool": "iso_node_create", "code": "kill_switch", "reason": "off"}),
        "gateway.write.denied",
    )
    assert ev["payload"]["code"] == "kill_switch"

    r, ev = await led.one_event(
        "decide_proposal",
        agent(
            "decide_proposal",
            {"proposal_kind": "convention", "proposal_id": str(convention), "decision": "accepted"},
            actor=operator,
        ),
        "governance.proposal.decided",
    )
    assert ev["event_id"] == await led.row_keeps(
        "SELECT decision_event_id FROM kronicle.convention_proposals "
        "WHERE workspace_id = $1 AND proposal_id = $2 AND status = 'accepted'",
        convention,
    )

    r, ev = await led.one_event(
        "decide_escalation",
        agent(
            "decide_escalation",
            {"escalation_id": str(escalation), "decision": "rejected", "note": "no"},
            actor=operator,
        ),
        "governance.escalation.decided",
    )
    assert ev["event_id"] == await led.row_keeps(
        "SELECT decision_event_id FROM kronicle.escalations "
        "WHERE workspace_id = $1 AND escalation_id = $2 AND status = 'rejected'",
        escalation,
    )

    # ---- governance operations (operator)
    md = seeds.DEFAULT_CHARTER_MD.replace("Kora", "Kora the Second", 1)
    sections = charter.charter_sections_from_markdown(md)
    r, ev = await led.one_event(
        "set_charter",
        govern("set_charter", {"content_md": md, "sections": dict(sections)}),
        "governance.charter.set",
    )
    assert r["version"] == 2
    assert ev["event_id"] == await led.row_keeps(
        "SELECT approved_event_id FROM public.kora_role_charter "
        "WHERE workspace_id = $1 AND charter_id = $2 AND is_active",
        UUID(r["charter_id"]),
    )

    r, ev = await led.one_event(
        "set_policies",
        govern(
            "set_policies",
            {"policies": [{"policy_key": "policy.kora_disabled", "policy_value": True}]},
        ),
        "governance.policy.set",
    )
    assert ev["payload"]["changes"][0]["previous_value"] is False
    assert ev["event_id"] == await led.row_keeps(
        "SELECT approved_event_id FROM public.kora_policy_registry "
        "WHERE workspace_id = $1 AND policy_key = 'policy.kora_disabled' AND policy_value = 'true'"
    )

    r, ev = await led.one_event(
        "set_capabilities",
        govern(
            "set_capabilities",
            {
                "capabilities": [
                    {"cap_name": "cap_decide_proposal", "actor_kind": "critic", "granted": True}
                ]
            },
        ),
        "governance.capability.set",
    )
    assert ev["event_id"] == await led.row_keeps(
        "SELECT approved_event_id FROM public.kora_capability_matrix WHERE workspace_id = $1 "
        "AND cap_name = 'cap_decide_proposal' AND actor_kind = 'critic' AND granted"
    )

    r, ev = await led.one_event(
        "revise_constitution",
        govern("revise_constitution", {"rules": {"version": 1, "rules": []}}),
        "governance.constitution.revised",
    )
    assert r["revision_number"] == 2
    assert ev["event_id"] == await led.row_keeps(
        "SELECT approved_event_id FROM kronicle.workspace_constitution_revisions "
        "WHERE workspace_id = $1 AND revision_id = $2",
        UUID(r["revision_id"]),
    )

    token = writes.new_token()
    r, ev = await led.one_event(
        "issue_token",
        govern(
            "issue_token",
            {
                "holder_actor_id": str(kora),
                "token_sha256": writes.token_sha256(token).hex(),
                "token_prefix": writes.token_public_prefix(token),
            },
        ),
        "governance.token.issued",
    )
    token_id = UUID(r["token_id"])
    assert ev["event_id"] == await led.row_keeps(
        "SELECT approved_event_id FROM isokron.service_tokens "
        "WHERE workspace_id = $1 AND token_id = $2",
        token_id,
    )
    assert token not in str(ev["payload"])  # the secret never enters the chain

    r, ev = await led.one_event(
        "revoke_token",
        govern("revoke_token", {"token_id": str(token_id)}),
        "governance.token.revoked",
    )
    # The row is written in the event's transaction just before the event that records it.
    revoked_at = await led.row_keeps(
        "SELECT revoked_at FROM isokron.service_tokens WHERE workspace_id = $1 AND token_id = $2",
        token_id,
    )
    issued_at = (await admin_pool.fetchrow(SELECT_EVENT_SQL, ws.tenant_id, ev["seq"] - 1))[
        "occurred_at"
    ]
    assert issued_at < revoked_at <= ev["occurred_at"]

    assert led.ops == set(operations.OPERATIONS) - {"set_actor_status"}
    result = audit.verify_workspace(substrate.admin, ws.workspace_id)
    assert result.ok, result.to_dict()


# ---------------------------------------------------------------------------- idempotency
async def test_a_retry_with_the_same_key_returns_the_first_result_and_appends_nothing(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gw: GatewayWriter
) -> None:
    ws = workspace
    args = {"node_type": "fact", "title": "once"}
    first = await gw.write(
        "iso_node_create",
        ws.workspace_id,
        ws.actors["kora"],
        args,
        idempotency_key="retry-1",
    )
    count = await _event_count(admin_pool, ws)
    again = await gw.write(
        "iso_node_create",
        ws.workspace_id,
        ws.actors["kora"],
        dict(args),
        idempotency_key="retry-1",
    )
    assert first["replayed"] is False and again["replayed"] is True
    assert {**again, "replayed": False} == first
    assert await _event_count(admin_pool, ws) == count
    assert (
        await admin_pool.fetchval(
            "SELECT count(*) FROM kronicle.iso_nodes WHERE workspace_id = $1 AND title = 'once'",
            ws.workspace_id,
        )
        == 1
    )


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("iso_node_create", {"node_type": "fact", "title": "another title"}),
        ("append_event", {"event_type": "kora.note.recorded"}),
    ],
    ids=["different-args", "different-operation"],
)
async def test_the_same_key_for_a_different_request_is_a_conflict(
    workspace: writes.CreatedWorkspace,
    admin_pool: asyncpg.Pool,
    gw: GatewayWriter,
    op: str,
    args: dict[str, Any],
) -> None:
    ws = workspace
    await gw.write(
        "iso_node_create",
        ws.workspace_id,
        ws.actors["kora"],
        {"node_type": "fact", "title": "original"},
        idempotency_key="k",
    )
    count = await _event_count(admin_pool, ws)
    with pytest.raises(ConflictError, match="already used for a different request") as caught:
        await gw.write(op, ws.workspace_id, ws.actors["kora"], args, idempotency_key="k")
    assert caught.value.sqlstate == "IKC02"
    assert await _event_count(admin_pool, ws) == count


async def test_keys_are_per_actor(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gw: GatewayWriter
) -> None:
    ws = workspace
    args = {"event_type": "kora.note.recorded"}
    a = await gw.write(
        "append_event",
        ws.workspace_id,
        ws.actors["kora"],
        args,
        idempotency_key="shared",
    )
    b = await gw.write(
        "append_event",
        ws.workspace_id,
        ws.actors["oracle"],
        args,
        idempotency_key="shared",
    )
    assert a["event_id"] != b["event_id"] and not b["replayed"]


async def test_concurrent_retries_with_one_key_make_one_write(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gw: GatewayWriter
) -> None:
    ws = workspace
    count = await _event_count(admin_pool, ws)
    results = await asyncio.gather(
        *(
            gw.write(
                "write_scratchpad_entry",
                ws.workspace_id,
                ws.actors["kora"],
                writes.scratchpad_args(kind="observation", summary="dup?", content="once"),
                idempotency_key="concurrent-1",
            )
            for _ in range(5)
        )
    )
    assert len({r["event_id"] for r in results}) == 1
    assert len({r["entry_id"] for r in results}) == 1
    assert sorted(r["replayed"] for r in results) == [False, True, True, True, True]
    assert await _event_count(admin_pool, ws) == count + 1
    assert (
        await admin_pool.fetchval(
            "SELECT count(*) FROM kronicle.agent_scratchpad_entries WHERE workspace_id = $1",
            ws.workspace_id,
        )
        == 1
    )


# ---------------------------------------------------------------------- all or nothing
async def test_a_link_to_a_missing_node_leaves_nothing(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gw: GatewayWriter
) -> None:
    ws = workspace
    kora = ws.actors["kora"]
    node = await gw.write(
        "iso_node_create",
        ws.workspace_id,
        kora,
        {"node_type": "fact", "title": "real"},
    )
    count = await _event_count(admin_pool, ws)
    args = {"from_node_id": node["node_id"], "to_node_id": str(uuid4()), "link_type": "cites"}
    with pytest.raises(NotFoundError, match="to_node_id"):
        await gw.write("iso_link_create", ws.workspace_id, kora, args, idempotency_key="link-1")
    assert await _event_count(admin_pool, ws) == count
    assert (
        await admin_pool.fetchval(
            "SELECT count(*) FROM kronicle.iso_links WHERE workspace_id = $1", ws.workspace_id
        )
        == 0
    )
    # The failed call did not keep its idempotency key either: the key is free for a retry.
    assert (
        await admin_pool.fetchval(
            "SELECT count(*) FROM isokron.idempotency_keys WHERE workspace_id = $1", ws.workspace_id
        )
        == 0
    )
    other = await gw.write(
        "iso_node_create",
        ws.workspace_id,
        kora,
        {"node_type": "fact", "title": "other"},
    )
    fixed = await gw.write(
        "iso_link_create",
        ws.workspace_id,
        kora,
        {**args, "to_node_id": other["node_id"]},
        idempotency_key="link-1",
    )
    assert fixed["replayed"] is False


@pytest.mark.parametrize(
    ("op", "args", "code"),
    [
        (
            "write_scratchpad_entry",
            {"kind": "diary", "summary": "s", "content": "c", "content_hash": "0" * 64},
            "invalid_argument",
        ),
        ("append_event", {"event_type": "governance.fake.event"}, "invalid_argument"),
        ("append_event", {"event_type": "Not Dotted"}, "invalid_argument"),
        ("iso_node_create", {"node_type": "fact"}, "invalid_argument"),
        ("iso_node_supersede", {"node_id": "not-a-uuid"}, "invalid_argument"),
    ],
)
async def test_invalid_arguments_are_refused_and_append_nothing(
    workspace: writes.CreatedWorkspace,
    admin_pool: asyncpg.Pool,
    gw: GatewayWriter,
    op: str,
    args: dict[str, Any],
    code: str,
) -> None:
    count = await _event_count(admin_pool, workspace)
    with pytest.raises(RefusalError) as caught:
        await gw.write(op, workspace.workspace_id, workspace.actors["kora"], args)
    assert caught.value.code == code
    assert await _event_count(admin_pool, workspace) == count


async def test_an_approved_escalation_whose_held_write_fails_changes_nothing(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gw: GatewayWriter
) -> None:
    ws = workspace
    request = {
        "op": "iso_link_create",
        "args": {"from_node_id": str(uuid4()), "to_node_id": str(uuid4()), "link_type": "x"},
    }
    esc = await gw.write(
        "raise_escalation",
        ws.workspace_id,
        ws.actors["kora"],
        {"tool": "iso_link_create", "reason": "r", "request": request},
    )
    count = await _event_count(admin_pool, ws)
    with pytest.raises(NotFoundError):
        await gw.write(
            "decide_escalation",
            ws.workspace_id,
            ws.operator_actor_id,
            {"escalation_id": esc["escalation_id"], "decision": "approved"},
        )
    # The decision event was appended before the held write failed; both rolled back.
    assert await _event_count(admin_pool, ws) == count
    queue = await reads.read_escalation_queue(admin_pool, ws.workspace_id)
    assert [e.status for e in queue] == ["open"]


async def test_a_duplicate_workspace_is_a_conflict(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool
) -> None:
    async with admin_pool.acquire() as conn:
        with pytest.raises(ConflictError, match="already exists"):
            await writes.create_workspace(conn, workspace.workspace_id, seed=default_seed())


# ------------------------------------------------------------------------- capabilities
async def test_kora_deciding_a_proposal_is_capability_denied_by_the_database(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gw: GatewayWriter
) -> None:
    ws = workspace
    proposal = await gw.write(
        "propose_convention",
        ws.workspace_id,
        ws.actors["kora"],
        {"title": "t", "body": "b"},
    )
    count = await _event_count(admin_pool, ws)
    with pytest.raises(RefusalError) as caught:
        await gw.write(
            "decide_proposal",
            ws.workspace_id,
            ws.actors["kora"],
            {
                "proposal_kind": "convention",
                "proposal_id": proposal["proposal_id"],
                "decision": "accepted",
            },
        )
    assert caught.value.code == "capability_denied"
    assert "needs an operator's credential" in caught.value.message
    assert await _event_count(admin_pool, ws) == count


async def test_governance_by_a_non_operator_is_capability_denied(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool
) -> None:
    count = await _event_count(admin_pool, workspace)
    with pytest.raises(RefusalError) as caught:
        await writes.govern(
            admin_pool,
            "set_policies",
            workspace.workspace_id,
            workspace.actors["kora"],
            {"policies": [{"policy_key": "policy.kora_disabled", "policy_value": False}]},
        )
    assert caught.value.code == "capability_denied"
    assert await _event_count(admin_pool, workspace) == count


async def test_a_capability_denied_in_the_matrix_is_refused(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gw: GatewayWriter
) -> None:
    ws = workspace
    args = {"node_type": "fact", "title": "t"}
    await gw.write("iso_node_create", ws.workspace_id, ws.actors["kora"], args)
    await writes.govern(
        admin_pool,
        "set_capabilities",
        ws.workspace_id,
        ws.operator_actor_id,
        {
            "capabilities": [
                {"cap_name": "cap_iso_node_create", "actor_kind": "kora", "granted": False}
            ]
        },
    )
    with pytest.raises(RefusalError) as caught:
        await gw.write("iso_node_create", ws.workspace_id, ws.actors["kora"], args)
    assert caught.value.code == "capability_denied"


async def test_an_actor_of_another_workspace_cannot_write_here(
    make_workspace: Callable, gw: GatewayWriter
) -> None:
    a, b = await make_workspace("cap-a"), await make_workspace("cap-b")
    # b's token names b's workspace: the database refuses it for a, and for a workspace that
    # does not exist, before anything is written.
    for target in (a.workspace_id, "no-such-workspace"):
        with pytest.raises(RefusalError, match="another workspace") as caught:
            await gw.write(
                "append_event", target, b.actors["kora"], {"event_type": "kora.note.recorded"}
            )
        assert caught.value.code == "workspace_mismatch"


async def test_unknown_operations_are_refused(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gw: GatewayWriter
) -> None:
    # Names are checked by the database alone (the registry): on the owner's path ...
    with pytest.raises(RefusalError, match="unknown write operation") as owner:
        await writes.write(
            admin_pool, "drop_everything", workspace.workspace_id, workspace.operator_actor_id, {}
        )
    assert owner.value.code == "invalid_argument"
    # ... and on the gateway's.
    with pytest.raises(RefusalError, match="unknown write operation") as caught:
        await connection.run(
            gw.pool,
            writes.WRITE_WITH_TOKEN_SQL,
            await gw.token_hash(workspace.operator_actor_id),
            "drop_everything",
            {},
            None,
            None,
        )
    assert caught.value.code == "invalid_argument"


# --------------------------------------------------------------------- held writes, policy
async def test_an_approved_escalation_performs_the_held_write(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gw: GatewayWriter
) -> None:
    ws = workspace
    request = {
        "op": "iso_node_create",
        "args": {"node_type": "decision", "title": "held until approved"},
    }
    esc = await gw.write(
        "raise_escalation",
        ws.workspace_id,
        ws.actors["kora"],
        {"tool": "iso_node_create", "reason": "needs approval", "request": request},
    )
    assert await reads.search_iso_nodes(admin_pool, ws.workspace_id, "held") == ()
    count = await _event_count(admin_pool, ws)

    decided = await gw.write(
        "decide_escalation",
        ws.workspace_id,
        ws.operator_actor_id,
        {"escalation_id": esc["escalation_id"], "decision": "approved", "note": "fine"},
    )

    assert decided["status"] == "approved"
    applied = decided["applied"]
    nodes = await reads.search_iso_nodes(admin_pool, ws.workspace_id, "held")
    assert [n.node_id for n in nodes] == [UUID(applied["node_id"])]
    assert nodes[0].created_by == ws.actors["kora"]  # performed as the actor who asked
    assert nodes[0].approved_event_id == UUID(applied["event_id"])
    # The decision and the held write are one event each.
    assert await _event_count(admin_pool, ws) == count + 2
    row = await admin_pool.fetchrow(
        "SELECT status, decision_event_id, result FROM kronicle.escalations "
        "WHERE workspace_id = $1 AND escalation_id = $2",
        ws.workspace_id,
        UUID(esc["escalation_id"]),
    )
    assert row["status"] == "approved"
    assert row["decision_event_id"] == UUID(decided["event_id"])
    assert row["result"]["node_id"] == applied["node_id"]
    with pytest.raises(ConflictError, match="already approved"):
        await gw.write(
            "decide_escalation",
            ws.workspace_id,
            ws.operator_actor_id,
            {"escalation_id": esc["escalation_id"], "decision": "approved"},
        )


async def test_an_escalation_cannot_smuggle_a_governance_operation(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, gw: GatewayWriter
) -> None:
    ws = workspace
    request = {
        "op": "set_policies",
        "args": {"policies": [{"policy_key": "policy.kora_disabled", "policy_value": True}]},
    }
    esc = await gw.write(
        "raise_escalation",
        ws.workspace_id,
        ws.actors["kora"],
        {"tool": "x", "reason": "r", "request": request},
    )
    with pytest.raises(RefusalError) as caught:
        await gw.write(
            "decide_escalation",
            ws.workspace_id,
            ws.operator_actor_id,
            {"escalation_id": esc["escalation_id"], "decision": "approved"},
        )
    assert caught.value.code == "invalid_argument"
    policies = {
        p.policy_key: p.value for p in await reads.read_policy_registry(admin_pool, ws.workspace_id)
    }
    assert policies["policy.kora_disabled"] is False


async def test_an_accepted_policy_change_updates_the_policy(
    workspace: writes.CreatedWorkspace,
    admin_pool: asyncpg.Pool,
    gw: GatewayWriter,
    reader_pool: asyncpg.Pool,
) -> None:
    ws = workspace
    key = "policy.kora_rate_limit_per_minute"
    proposal = await gw.write(
        "propose_policy_change",
        ws.workspace_id,
        ws.actors["kora"],
        {"policy_key": key, "proposed_value": 7},
    )
    before = {
        p.policy_key: p.value
        for p in await reads.read_policy_registry(reader_pool, ws.workspace_id)
    }
    assert before[key] == 60  # a proposal alone changes nothing

    decided = await gw.write(
        "decide_proposal",
        ws.workspace_id,
        ws.operator_actor_id,
        {
            "proposal_kind": "policy_change",
            "proposal_id": proposal["proposal_id"],
            "decision": "accepted",
        },
    )

    after = {
        p.policy_key: p.value
        for p in await reads.read_policy_registry(reader_pool, ws.workspace_id)
    }
    assert after[key] == 7
    assert await admin_pool.fetchval(
        "SELECT approved_event_id FROM public.kora_policy_registry "
        "WHERE workspace_id = $1 AND policy_key = $2",
        ws.workspace_id,
        key,
    ) == UUID(decided["event_id"])
    assert [
        p.status for p in await reads.read_proposals(reader_pool, ws.workspace_id, status=None)
    ] == ["accepted"]


async def test_a_rejected_policy_change_keeps_the_policy(
    workspace: writes.CreatedWorkspace, gw: GatewayWriter, reader_pool: asyncpg.Pool
) -> None:
    ws = workspace
    key = "policy.kora_rate_limit_per_minute"
    proposal = await gw.write(
        "propose_policy_change",
        ws.workspace_id,
        ws.actors["kora"],
        {"policy_key": key, "proposed_value": 1},
    )
    await gw.write(
        "decide_proposal",
        ws.workspace_id,
        ws.operator_actor_id,
        {
            "proposal_kind": "policy_change",
            "proposal_id": proposal["proposal_id"],
            "decision": "rejected",
        },
    )
    values = {
        p.policy_key: p.value
        for p in await reads.read_policy_registry(reader_pool, ws.workspace_id)
    }
    assert values[key] == 60


# ------------------------------------------------------------------------------ erasure
async def test_erasing_a_payload_keeps_the_chain_verifying(
    workspace: writes.CreatedWorkspace,
    admin_pool: asyncpg.Pool,
    gw: GatewayWriter,
    substrate: SubstrateDSNs,
    tmp_path: Path,
) -> None:
    ws = workspace
    secret = await gw.write(
        "append_event",
        ws.workspace_id,
        ws.actors["kora"],
        {"event_type": "kora.note.personal", "payload": {"email": "ada@example.org"}},
    )
    await gw.write(
        "append_event",
        ws.workspace_id,
        ws.actors["kora"],
        {"event_type": "kora.note.after"},
    )
    digest_before = await admin_pool.fetchval(
        "SELECT payload_digest FROM hivex_foundation.event_log WHERE tenant_id = $1 AND seq = $2",
        ws.tenant_id,
        secret["seq"],
    )

    async with admin_pool.acquire() as conn:
        await writes.erase_event_payload(conn, ws.workspace_id, secret["seq"], "GDPR request 42")

    row = await admin_pool.fetchrow(
        "SELECT payload, payload_erased, payload_digest FROM hivex_foundation.event_log "
        "WHERE tenant_id = $1 AND seq = $2",
        ws.tenant_id,
        secret["seq"],
    )
    assert row["payload_erased"] is True
    assert "ada@example.org" not in str(row["payload"])
    assert row["payload"]["reason"] == "GDPR request 42"
    assert row["payload_digest"] == digest_before
    # The erasure is itself chained: the next event names the erased one and the reason.
    erasure = await admin_pool.fetchrow(
        "SELECT event_type, actor_id, payload FROM hivex_foundation.event_log "
        "WHERE tenant_id = $1 AND seq = (SELECT last_seq FROM hivex_foundation.chain_head "
        "WHERE tenant_id = $1)",
        ws.tenant_id,
    )
    assert erasure["event_type"] == "substrate.payload.erased"
    assert erasure["actor_id"] == ws.operator_actor_id
    assert erasure["payload"]["erased_seq"] == secret["seq"]
    assert erasure["payload"]["erased_event_id"] == secret["event_id"]
    assert erasure["payload"]["reason"] == "GDPR request 42"
    result = audit.verify_workspace(substrate.admin, ws.workspace_id)
    assert result.ok, result.to_dict()

    bundle = tmp_path / "export.jsonl"
    audit.export_workspace(substrate.admin, ws.workspace_id, bundle)
    assert "ada@example.org" not in bundle.read_text(encoding="utf-8")
    header, records = read_bundle(bundle)
    payloads = {r.seq: r.payload_text for r in records}
    assert payloads[secret["seq"]] is None
    assert payloads[secret["seq"] + 1] is not None
    assert header.event_count == len(payloads)
    assert verify_bundle(bundle).ok

    async with admin_pool.acquire() as conn:
        with pytest.raises(NotFoundError):
            await writes.erase_event_payload(conn, ws.workspace_id, secret["seq"], "again")
