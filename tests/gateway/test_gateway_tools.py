"""Every gateway tool succeeds through the official MCP client, over stdio and over HTTP."""

from __future__ import annotations

import uuid

import asyncpg
import blake3
import pytest
from gateway_harness import (
    Gateways,
    Tenant,
    data_of,
    error_of,
    events_since,
    head,
    make_tenant,
)

from isokron.gateway.operations import SPECS
from isokron.governance.operations import TOOLS


@pytest.fixture(scope="module")
async def tenant(gateways: Gateways, admin_pool: asyncpg.Pool) -> Tenant:
    """A workspace per transport (so one transport's writes do not spend the other's budget)."""
    return await make_tenant(admin_pool, f"tools-{gateways.transport}")


async def test_lists_every_tool_with_a_schema(gateways: Gateways, tenant: Tenant) -> None:
    session = await gateways.session(tenant.kora_token)
    listed = (await session.client.list_tools()).tools
    names = {tool.name for tool in listed}
    assert names == set(SPECS) == set(TOOLS)
    for tool in listed:
        assert tool.description and len(tool.description) > 40, tool.name
        assert tool.input_schema["type"] == "object"
        assert "workspace_id" in tool.input_schema["properties"]
        writes = SPECS[tool.name].writes
        assert ("idempotency_key" in tool.input_schema["properties"]) is writes, tool.name
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (not writes)


async def test_append_event(gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool) -> None:
    session = await gateways.session(tenant.kora_token)
    before = await head(admin_pool, tenant.workspace_id)
    data = data_of(
        await session.call(
            "kora__append_event",
            {"event_type": "kora.note.recorded", "payload": {"note": "hello", "n": 1}},
        )
    )
    assert data["replayed"] is False
    [event] = await events_since(admin_pool, tenant.workspace_id, before)
    assert str(event["event_id"]) == data["event_id"]
    assert event["seq"] == data["seq"]
    assert event["event_type"] == "kora.note.recorded"
    assert event["payload"] == {"note": "hello", "n": 1}
    assert event["actor_id"] == tenant.actors["kora"]
    assert bytes(event["this_event_hash"]).hex() == data["event_hash"]


async def test_write_and_read_scratchpad(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    session = await gateways.session(tenant.kora_token)
    content = f"plan for {gateways.transport}: read, then write"
    data = data_of(
        await session.call(
            "kora__write_agent_scratchpad",
            {"kind": "plan", "summary": "the plan", "content": content, "session_id": "s-1"},
        )
    )
    assert data["content_hash"] == blake3.blake3(content.encode()).hexdigest()
    row = await admin_pool.fetchrow(
        "SELECT * FROM kronicle.agent_scratchpad_entries WHERE workspace_id = $1 AND entry_id = $2",
        tenant.workspace_id,
        uuid.UUID(data["entry_id"]),
    )
    assert row["approved_event_id"] == uuid.UUID(data["event_id"])
    assert row["visibility_scope"] == "own_only"  # the workspace's default visibility policy
    assert row["content"] == content

    # Text that happens to be JSON stays text (the SDK would parse it into an object).
    json_text = '{"tool": "search", "hits": [1, 2, 3]}'
    tool_result = data_of(
        await session.call(
            "kora__write_agent_scratchpad",
            {"kind": "tool_result", "summary": "search output", "content": json_text},
        )
    )
    stored = await admin_pool.fetchval(
        "SELECT content FROM kronicle.agent_scratchpad_entries "
        "WHERE workspace_id = $1 AND entry_id = $2",
        tenant.workspace_id,
        uuid.UUID(tool_result["entry_id"]),
    )
    assert stored == json_text

    own = data_of(await session.call("kora__read_agent_scratchpad", {"limit": 5}))
    assert own["scope"] == "own"
    assert data["entry_id"] in [e["entry_id"] for e in own["entries"]]
    assert all(e["drifted"] is False for e in own["entries"])


async def test_scratchpad_by_reference_and_cross_agent_read(
    gateways: Gateways, tenant: Tenant
) -> None:
    operator = await gateways.session(tenant.operator_token)
    digest = blake3.blake3(b"stored elsewhere").hexdigest()
    shared = data_of(
        await operator.call(
            "kora__write_agent_scratchpad",
            {
                "kind": "handoff_note",
                "summary": "for kora",
                "content_uri": "s3://bucket/note.txt",
                "content_hash": digest,
                "visibility_scope": "cross_agent_dereferenceable",
            },
        )
    )
    assert shared["content_hash"] == digest
    kora = await gateways.session(tenant.kora_token)
    cross = data_of(await kora.call("kora__read_agent_scratchpad", {"scope": "cross_agent"}))
    entry = next(e for e in cross["entries"] if e["entry_id"] == shared["entry_id"])
    assert entry["actor_kind"] == "operator"
    assert entry["content_uri"] == "s3://bucket/note.txt"


async def test_read_capability_row(gateways: Gateways, tenant: Tenant) -> None:
    kora = data_of(
        await (await gateways.session(tenant.kora_token)).call("kora__read_kora_capability_row")
    )
    assert kora["actor_kind"] == "kora"
    assert kora["count"] == 49
    assert len(kora["granted"]) == 22
    assert len(kora["denied"]) == 27
    assert kora["capabilities"]["cap_append_event"] is True
    assert kora["capabilities"]["cap_decide_proposal"] is False
    operator = data_of(
        await (await gateways.session(tenant.operator_token)).call("kora__read_kora_capability_row")
    )
    assert operator["actor_kind"] == "operator"
    assert len(operator["granted"]) == 49


async def test_knowledge_graph_tools(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    session = await gateways.session(tenant.kora_token)
    marker = f"zebra{uuid.uuid4().hex[:8]}"
    first = data_of(
        await session.call(
            "iso_node_create",
            {
                "node_type": "fact",
                "title": f"The sky is blue {marker}",
                "content": "Observed on a clear day.",
                "properties": {"source": "window"},
            },
        )
    )
    second = data_of(
        await session.call("iso_node_create", {"node_type": "source", "title": "Window"})
    )
    link = data_of(
        await session.call(
            "iso_link_create",
            {
                "from_node_id": first["node_id"],
                "to_node_id": second["node_id"],
                "link_type": "derived_from",
            },
        )
    )
    got = data_of(await session.call("iso_node_get", {"node_id": first["node_id"]}))
    assert got["node"]["title"] == f"The sky is blue {marker}"
    assert got["node"]["properties"] == {"source": "window"}
    assert [lk["link_id"] for lk in got["links"]] == [link["link_id"]]

    found = data_of(await session.call("iso_node_search", {"query": marker}))
    assert [n["node_id"] for n in found["nodes"]] == [first["node_id"]]

    before = await head(admin_pool, tenant.workspace_id)
    newer = data_of(
        await session.call(
            "iso_node_supersede",
            {"node_id": first["node_id"], "reason": "colour corrected", "content": "Often blue."},
        )
    )
    assert newer["superseded_node_id"] == first["node_id"]
    [event] = await events_since(admin_pool, tenant.workspace_id, before)
    assert event["event_type"] == "kora.node.superseded"
    assert event["payload"]["superseded_by"] == newer["node_id"]
    old = data_of(await session.call("iso_node_get", {"node_id": first["node_id"]}))
    assert old["node"]["status"] == "superseded"
    assert old["node"]["superseded_by"] == newer["node_id"]
    active = data_of(await session.call("iso_node_search", {"query": marker}))
    assert [n["node_id"] for n in active["nodes"]] == [newer["node_id"]]
    everything = data_of(
        await session.call("iso_node_search", {"query": marker, "include_superseded": True})
    )
    assert {n["node_id"] for n in everything["nodes"]} == {first["node_id"], newer["node_id"]}


async def test_proposals_and_operator_decisions(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    kora = await gateways.session(tenant.kora_token)
    operator = await gateways.session(tenant.operator_token)
    convention = data_of(
        await kora.call(
            "kora__propose_convention",
            {"title": "Cite sources", "body": "Every fact node links its source."},
        )
    )
    change = data_of(
        await kora.call(
            "kora__propose_policy_change",
            {
                "policy_key": "policy.kora_node_search_default_limit",
                "proposed_value": 25,
                "rationale": "more context per search",
            },
        )
    )
    assert convention["status"] == change["status"] == "pending"
    pending = data_of(await operator.call("kora__read_proposals", {}))
    ids = {p["proposal_id"] for p in pending["proposals"]}
    assert {convention["proposal_id"], change["proposal_id"]} <= ids

    decided = data_of(
        await operator.call(
            "kora__decide_proposal",
            {
                "proposal_kind": "policy_change",
                "proposal_id": change["proposal_id"],
                "decision": "accepted",
                "note": "agreed",
            },
        )
    )
    assert decided["status"] == "accepted"
    value = await admin_pool.fetchval(
        "SELECT policy_value FROM public.kora_policy_registry "
        "WHERE workspace_id = $1 AND policy_key = $2",
        tenant.workspace_id,
        "policy.kora_node_search_default_limit",
    )
    assert value == 25
    rejected = data_of(
        await operator.call(
            "kora__decide_proposal",
            {
                "proposal_kind": "convention",
                "proposal_id": convention["proposal_id"],
                "decision": "rejected",
            },
        )
    )
    assert rejected["status"] == "rejected"


async def test_escalations_raised_listed_and_decided(gateways: Gateways, tenant: Tenant) -> None:
    kora = await gateways.session(tenant.kora_token)
    operator = await gateways.session(tenant.operator_token)
    raised = data_of(
        await kora.call(
            "kora__raise_escalation",
            {"reason": "May I archive the stale onboarding nodes?", "action": "archive nodes"},
        )
    )
    assert raised["status"] == "open"
    queue = data_of(await kora.call("kora__read_escalation_queue", {}))
    assert raised["escalation_id"] in [e["escalation_id"] for e in queue["escalations"]]
    decided = data_of(
        await operator.call(
            "kora__decide_escalation",
            {"escalation_id": raised["escalation_id"], "decision": "rejected", "note": "not yet"},
        )
    )
    assert decided["status"] == "rejected"
    rejected = data_of(await kora.call("kora__read_escalation_queue", {"status": "rejected"}))
    assert raised["escalation_id"] in [e["escalation_id"] for e in rejected["escalations"]]


async def test_escalated_write_is_held_then_performed_on_approval(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    kora = await gateways.session(tenant.kora_token)
    operator = await gateways.session(tenant.operator_token)
    nodes_before = await admin_pool.fetchval(
        "SELECT count(*) FROM kronicle.iso_nodes WHERE workspace_id = $1", tenant.workspace_id
    )
    held = data_of(
        await kora.call(
            "iso_node_create",
            {"node_type": "task", "title": "Cleanup", "content": "Delete all the draft nodes."},
        )
    )
    assert held["escalated"] is True
    assert held["rule_id"] == "escalate-bulk-destruction"
    assert "escalation queue" in held["message"]
    assert "node_id" not in held
    assert (
        await admin_pool.fetchval(
            "SELECT count(*) FROM kronicle.iso_nodes WHERE workspace_id = $1", tenant.workspace_id
        )
        == nodes_before
    )
    approved = data_of(
        await operator.call(
            "kora__decide_escalation",
            {"escalation_id": held["escalation_id"], "decision": "approved"},
        )
    )
    node_id = uuid.UUID(approved["applied"]["node_id"])
    creator = await admin_pool.fetchval(
        "SELECT created_by FROM kronicle.iso_nodes WHERE workspace_id = $1 AND node_id = $2",
        tenant.workspace_id,
        node_id,
    )
    assert creator == tenant.actors["kora"]


async def test_idempotent_retries_return_the_first_result(
    gateways: Gateways, tenant: Tenant, admin_pool: asyncpg.Pool
) -> None:
    session = await gateways.session(tenant.kora_token)
    key = f"retry-{uuid.uuid4()}"
    arguments = {"event_type": "kora.retry.tested", "payload": {"try": 1}, "idempotency_key": key}
    before = await head(admin_pool, tenant.workspace_id)
    first = data_of(await session.call("kora__append_event", arguments))
    second = data_of(await session.call("kora__append_event", arguments))
    assert first["replayed"] is False and second["replayed"] is True
    assert {k: v for k, v in second.items() if k != "replayed"} == {
        k: v for k, v in first.items() if k != "replayed"
    }
    assert len(await events_since(admin_pool, tenant.workspace_id, before)) == 1

    entry_args = {
        "kind": "observation",
        "summary": "seen once",
        "content": "x",
        "idempotency_key": f"pad-{uuid.uuid4()}",
    }
    one = data_of(await session.call("kora__write_agent_scratchpad", entry_args))
    two = data_of(await session.call("kora__write_agent_scratchpad", entry_args))
    assert one["entry_id"] == two["entry_id"] and two["replayed"] is True

    reused = error_of(
        await session.call("kora__append_event", {**arguments, "payload": {"try": 2}})
    )
    assert reused["code"] == "conflict"
    assert "idempotency key" in reused["message"].lower()
    # The refusal is chained as a denial; nothing else was appended.
    types = [e["event_type"] for e in await events_since(admin_pool, tenant.workspace_id, before)]
    assert types == ["kora.retry.tested", "kora.scratchpad.written", "gateway.write.denied"]
