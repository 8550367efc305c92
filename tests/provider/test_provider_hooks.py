"""Every hook of IsoKronMemoryProvider against the real substrate and a real stdio gateway."""

from __future__ import annotations

import json
import logging

from provider_helpers import (
    assert_chain_verifies,
    chain_events,
    payload,
    scratchpad_rows,
    tagged,
)

from isokron.provider import cache as names
from isokron.provider.prompt_block import SOURCE_OF_TRUTH_LABEL
from isokron.substrate.dsn import SubstrateDSNs
from isokron.substrate.models import KoraSessionContext


def kora_events(admin: str, ws: str) -> list[dict]:
    return [e for e in chain_events(admin, ws) if e["actor_kind"] == "kora"]


def test_full_session_writes_through_the_gateway_and_chains(
    substrate: SubstrateDSNs, kora_workspace, make_provider, provider_logs
) -> None:
    ws = kora_workspace()
    provider = make_provider(ws, session_id="sess-full")
    provider.on_turn_start(1, "hello")

    block = provider.system_prompt_block()
    assert block.startswith("§1 Identity (Kora Role Charter v1)\nKora is this workspace")
    assert block.endswith(SOURCE_OF_TRUTH_LABEL)
    assert "§5 Granted capabilities (22 of 49):" in block

    ctx = provider.session_context()
    assert isinstance(ctx, KoraSessionContext)
    assert ctx.workspace_id == ws.workspace_id
    assert ctx.role_charter is not None and ctx.identity_error is None
    assert len(ctx.policies) == 31
    assert len(ctx.capability_matrix_row.granted) == 22
    assert ctx.active_constitution_rules_hash is not None
    assert len(ctx.active_constitution_rules_hash) == 64

    provider.sync_turn("plain question", "a plain answer, no capability named")
    provider.sync_turn("record it", "Recorded with cap_iso_node_create as asked.")
    provider.on_memory_write("add", "memory", "User prefers short answers.")
    result = json.loads(
        provider.handle_tool_call(
            "iso_node_create", {"node_type": "decision", "title": "Use RLS", "content": "why"}
        )
    )
    assert "error" not in result, result
    provider.on_delegation("Draft the plan", "Plan drafted.", child_session_id="sub-1")
    provider.on_session_end([{"role": "user", "content": "hi"}])
    provider.on_session_end([{"role": "user", "content": "hi"}])  # once per session

    events = kora_events(substrate.admin, ws.workspace_id)
    types = [e["event_type"] for e in events]
    assert types == [
        "kora.scratchpad.written",  # sync_turn (the plain turn wrote nothing)
        "kora.scratchpad.written",  # on_memory_write
        "kora.node.created",  # the model's tool call
        "kora.scratchpad.written",  # on_delegation's handoff note
        "kora.handoff.to_claude_pm",
        "kora.session.ended",
    ]
    ended = payload(events[-1])
    assert ended["session_id"] == "sess-full" and ended["turns"] == 1
    entries = scratchpad_rows(substrate.admin, ws.workspace_id)
    assert [e["kind"] for e in entries] == ["reasoning_trail", "reasoning_trail", "handoff_note"]
    assert entries[1]["summary"].startswith("[memory.add → memory] User prefers")
    assert entries[2]["visibility_scope"] == "cross_agent_dereferenceable"
    assert {e["session_id"] for e in entries} == {"sess-full"}
    assert len(tagged(provider_logs, "[kora.chain.emit]", logging.INFO)) == 6
    assert not tagged(provider_logs, "[kora.chain.emit.failed]")
    assert_chain_verifies(substrate.admin, ws.workspace_id)

    # The writes invalidated the events cache: §6 now shows them.
    assert "kora.session.ended" in provider.system_prompt_block()
    assert provider._cache is not None
    assert provider._cache.has(ws.workspace_id, names.EVENTS)


def test_non_primary_contexts_read_but_never_write(
    substrate: SubstrateDSNs, kora_workspace, make_provider
) -> None:
    ws = kora_workspace()
    for context in ("subagent", "cron", "flush"):
        provider = make_provider(ws, session_id=f"s-{context}", agent_context=context)
        assert not provider.writes_enabled
        assert "§1 Identity (Kora Role Charter v1)" in provider.system_prompt_block()
        provider.sync_turn("q", "done with cap_iso_node_create")
        provider.on_memory_write("add", "user", "likes tea")
        provider.on_delegation("task", "result")
        provider.on_session_end([])
        refused = json.loads(
            provider.handle_tool_call("iso_node_create", {"node_type": "fact", "title": "t"})
        )
        assert refused["code"] == "capability_denied"
        found = json.loads(provider.handle_tool_call("iso_node_search", {}))
        assert found == {"count": 0, "nodes": []}
    assert kora_events(substrate.admin, ws.workspace_id) == []


def test_without_a_token_the_provider_reads_only(
    substrate: SubstrateDSNs, kora_workspace, make_provider, provider_logs
) -> None:
    ws = kora_workspace()
    provider = make_provider(ws, service_token=None)
    assert "§5 Granted capabilities (22 of 49):" in provider.system_prompt_block()
    provider.sync_turn("q", "cap_iso_node_create")
    provider.on_session_end([])
    assert kora_events(substrate.admin, ws.workspace_id) == []
    assert len(tagged(provider_logs, "[isokron.provider.no_token]", logging.WARNING)) == 1


def test_session_id_follows_initialize_and_switch_and_reset_flushes_caches(
    substrate: SubstrateDSNs, kora_workspace, make_provider
) -> None:
    ws = kora_workspace()
    provider = make_provider(ws, session_id="s-a")
    provider.on_turn_start(1, "hi")
    assert provider._cache is not None and len(provider._cache) == 7
    assert provider.prefetch("anything at all", session_id="") == ""  # Hermes passes ""
    provider.sync_turn("q1", "used cap_append_event")  # no session_id given: the tracked one
    assert len(provider._cache) == 5  # the write invalidated own scratchpad and events
    provider.on_session_switch("s-b", parent_session_id="s-a")  # /resume: caches kept
    assert provider.session_id == "s-b" and len(provider._cache) == 5
    provider.sync_turn("q2", "used cap_append_event again")
    provider.on_session_end([])
    provider.on_session_switch("s-c", parent_session_id="s-b", reset=True)  # /new
    assert provider.session_id == "s-c" and len(provider._cache) == 0
    provider.on_session_end([])
    assert provider.on_pre_compress([{"role": "user", "content": "x"}]) == ""

    entries = scratchpad_rows(substrate.admin, ws.workspace_id)
    assert [e["session_id"] for e in entries] == ["s-a", "s-b"]
    ended = [
        payload(e)["session_id"]
        for e in kora_events(substrate.admin, ws.workspace_id)
        if e["event_type"] == "kora.session.ended"
    ]
    assert ended == ["s-b", "s-c"]


def test_model_tools_graph_scratchpad_and_escalations(
    substrate: SubstrateDSNs, kora_workspace, make_provider
) -> None:
    ws = kora_workspace()
    provider = make_provider(ws)
    names_ = {s["name"] for s in provider.get_tool_schemas()}
    assert names_ == {
        "iso_node_create",
        "iso_node_get",
        "iso_node_search",
        "iso_node_supersede",
        "iso_link_create",
        "kora_scratchpad_read",
        "kora_scratchpad_write",
        "kora_escalation_queue_read",
    }

    def call(name: str, args: dict) -> dict:
        return json.loads(provider.handle_tool_call(name, args))

    a = call(
        "iso_node_create",
        {
            "node_type": "decision",
            "title": "Use row-level security",
            "content": "Tenant isolation by RLS.",
            "properties": {"p": 1},
        },
    )
    b = call("iso_node_create", {"node_type": "source", "title": "PostgreSQL manual"})
    link = call(
        "iso_link_create",
        {"from_node_id": a["node_id"], "to_node_id": b["node_id"], "link_type": "cites"},
    )
    assert "link_id" in link
    got = call("iso_node_get", {"node_id": a["node_id"]})
    assert got["node"]["title"] == "Use row-level security" and len(got["links"]) == 1
    found = call("iso_node_search", {"query": "security"})
    assert [n["node_id"] for n in found["nodes"]] == [a["node_id"]]
    new = call(
        "iso_node_supersede",
        {"node_id": a["node_id"], "reason": "refined", "content": "RLS, enabled and forced."},
    )
    assert new["superseded_node_id"] == a["node_id"]
    assert call("iso_node_search", {"node_type": "decision"})["count"] == 1
    assert (
        call("iso_node_search", {"node_type": "decision", "include_superseded": True})["count"] == 2
    )

    note = call(
        "kora_scratchpad_write",
        {
            "kind": "plan",
            "summary": "Plan the rollout",
            "content": "1. enable RLS",
            "visibility_scope": "cross_agent_dereferenceable",
        },
    )
    assert len(note["content_hash"]) == 64
    mine = call("kora_scratchpad_read", {"scope": "own"})
    assert [e["summary"] for e in mine["own"]] == ["Plan the rollout"]
    assert call("kora_scratchpad_read", {})["cross_agent"] == []

    escalated = call(
        "iso_node_create",
        {"node_type": "task", "title": "Cleanup", "content": "delete all the archived records"},
    )
    assert escalated.get("escalated") is True
    queue = call("kora_escalation_queue_read", {})
    assert queue["count"] == 1 and queue["escalations"][0]["tool"] == "iso_node_create"

    # Refusals reach the model as {"error", "code"}; none raises.
    assert (
        call(
            "iso_link_create",
            {
                "from_node_id": b["node_id"],
                "to_node_id": b["node_id"],
                "link_type": "cites",
                "properties": {},
            },
        ).get("code")
        is None
    )
    missing = call("iso_node_get", {"node_id": "00000000-0000-0000-0000-000000000000"})
    assert missing["code"] == "not_found"
    assert call("iso_node_get", {"node_id": "not-a-uuid"})["code"] == "invalid_argument"
    assert call("iso_node_create", {"title": "no type"})["code"] == "invalid_argument"
    assert (
        call("kora_scratchpad_write", {"kind": "diary", "summary": "s", "content": "c"})["code"]
        == "invalid_argument"
    )
    assert call("no_such_tool", {})["code"] == "invalid_argument"
    dup = call(
        "iso_link_create",
        {"from_node_id": b["node_id"], "to_node_id": b["node_id"], "link_type": "cites"},
    )
    assert dup["code"] == "conflict"

    types = [e["event_type"] for e in kora_events(substrate.admin, ws.workspace_id)]
    assert types.count("kora.node.created") == 2
    assert "kora.node.superseded" in types and "kora.escalation.raised" in types
    assert_chain_verifies(substrate.admin, ws.workspace_id)


def test_secret_shaped_content_is_refused_and_logged_at_error(
    substrate: SubstrateDSNs, kora_workspace, make_provider, provider_logs
) -> None:
    ws = kora_workspace()
    provider = make_provider(ws)
    leaked = "wsk_" + "Z" * 30
    provider.sync_turn("here is my key", f"Stored {leaked} using cap_write_agent_scratchpad")
    refused = tagged(provider_logs, "[kora.chain.emit.failed]", logging.ERROR)
    assert len(refused) == 1 and "constitution_denied" in refused[0].getMessage()
    assert leaked not in " ".join(r.getMessage() for r in provider_logs.records)
    assert scratchpad_rows(substrate.admin, ws.workspace_id) == []
    result = json.loads(
        provider.handle_tool_call(
            "kora_scratchpad_write", {"kind": "observation", "summary": "s", "content": leaked}
        )
    )
    assert result["code"] == "constitution_denied"
    types = [e["event_type"] for e in chain_events(substrate.admin, ws.workspace_id)]
    assert types.count("gateway.write.denied") == 2  # the refusals are chained too


def test_session_end_is_written_once_even_from_a_second_provider(
    substrate: SubstrateDSNs, kora_workspace, make_provider, provider_logs
) -> None:
    ws = kora_workspace()
    first = make_provider(ws, session_id="s-same")
    first.on_session_end([])
    second = make_provider(ws, session_id="s-same")  # e.g. Hermes restarted, same session
    second.on_session_end([])
    ended = [
        e
        for e in kora_events(substrate.admin, ws.workspace_id)
        if e["event_type"] == "kora.session.ended"
    ]
    assert len(ended) == 1
    assert any("(replayed)" in r.getMessage() for r in tagged(provider_logs, "[kora.chain.emit]"))


def test_writes_made_while_the_gateway_starts_are_delivered_in_order(
    substrate: SubstrateDSNs, kora_workspace, make_provider
) -> None:
    ws = kora_workspace()
    provider = make_provider(ws, session_id="s-early", wait=False)
    provider.sync_turn("first", "right away, with cap_append_event")  # gateway may be starting
    provider.on_memory_write("add", "memory", "second")
    assert provider.wait_ready(60)
    provider.on_session_end([])
    types = [e["event_type"] for e in kora_events(substrate.admin, ws.workspace_id)]
    assert types == ["kora.scratchpad.written", "kora.scratchpad.written", "kora.session.ended"]
    summaries = [e["summary"] for e in scratchpad_rows(substrate.admin, ws.workspace_id)]
    assert summaries[0] == "right away, with cap_append_event"


def test_no_hook_raises_into_the_host(kora_workspace, make_provider, provider_logs) -> None:
    ws = kora_workspace()
    provider = make_provider(ws)
    assert provider.on_turn_start("not a number", "x") is None  # type: ignore[arg-type]
    assert provider.on_turn_start("still not", "x") is None  # type: ignore[arg-type]
    failed = tagged(provider_logs, "[isokron.provider.hook_failed]", logging.ERROR)
    assert len(failed) == 1 and "on_turn_start: ValueError" in failed[0].getMessage()
    assert json.loads(provider.handle_tool_call("iso_node_search", None))["count"] == 0  # type: ignore[arg-type]
    provider.shutdown()
    # After shutdown every hook still returns quietly.
    assert provider.system_prompt_block() == provider.system_prompt_block()
    provider.on_turn_start(2, "x")
    provider.sync_turn("q", "cap_append_event")
    provider.on_session_end([])
    assert json.loads(provider.handle_tool_call("iso_node_search", {}))["code"] == "unavailable"
