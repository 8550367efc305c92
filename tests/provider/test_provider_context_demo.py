"""The two functions the CLI calls: ``render_context`` (``isokron context``) and ``run_demo``
(``isokron demo``), against the real substrate and a real gateway."""

from __future__ import annotations

import asyncio
import json

import pytest
from provider_helpers import admin_execute, chain_events

from isokron.errors import NotFoundError
from isokron.provider import render_context, run_demo
from isokron.substrate.admin import list_tokens
from isokron.substrate.connection import connect
from isokron.substrate.dsn import SubstrateDSNs


def test_render_context_matches_what_the_provider_shows(
    substrate: SubstrateDSNs, kora_workspace, make_provider
) -> None:
    ws = kora_workspace("ctx")
    block, ctx = render_context(substrate.admin, ws.workspace_id)
    assert block == make_provider(ws).system_prompt_block()
    reader_block, reader_ctx = render_context(substrate.reader, ws.workspace_id)
    assert reader_block == block and reader_ctx["policies"] == ctx["policies"]
    json.dumps(ctx)  # JSON-ready
    assert ctx["workspace_id"] == ws.workspace_id
    assert ctx["role_charter"]["version"] == 1 and ctx["identity_error"] is None
    assert len(ctx["policies"]) == 31 and ctx["policies"]["policy.kora_disabled"] is False
    assert len(ctx["capability_matrix_row"]["granted"]) == 22
    assert len(ctx["active_constitution_rules_hash"]) == 64


def test_render_context_reports_an_unverified_identity(
    substrate: SubstrateDSNs, kora_workspace
) -> None:
    ws = kora_workspace("ctx")
    admin_execute(
        substrate.admin,
        ws.workspace_id,
        "UPDATE public.kora_role_charter SET content_hash = repeat('0', 64) "
        "WHERE workspace_id = $1",
        ws.workspace_id,
    )
    block, ctx = render_context(substrate.reader, ws.workspace_id)
    assert block.startswith("§1 Identity — NOT VERIFIED")
    assert ctx["role_charter"] is None and "SHA-256" in ctx["identity_error"]


def test_demo_runs_a_scripted_session_through_the_provider(
    substrate: SubstrateDSNs, kora_workspace
) -> None:
    ws = kora_workspace("demo")
    lines: list[str] = []
    report = run_demo(substrate, ws.workspace_id, progress=lines.append)
    assert report.ok, report.to_dict()
    assert lines == list(report.steps) and len(lines) >= 10
    assert report.prompt_block.startswith("§1 Identity (Kora Role Charter v1)")
    assert "node_id" in report.tool_result
    assert [e.event_type for e in report.events] == [
        "governance.token.issued",  # the demo's own token, by the operator
        "kora.scratchpad.written",  # sync_turn
        "kora.scratchpad.written",  # on_memory_write
        "kora.node.created",  # the model's tool call
        "kora.scratchpad.written",  # on_delegation
        "kora.handoff.to_claude_pm",
        "kora.session.ended",
        "governance.token.revoked",
    ]
    assert {e.actor for e in report.events[1:-1]} == {"kora"}
    assert report.events[0].actor == report.events[-1].actor == "operator"
    assert [e.kind for e in report.scratchpad_entries] == [
        "reasoning_trail",
        "reasoning_trail",
        "handoff_note",
    ]
    assert report.chain_ok and report.chain_events_checked == len(
        chain_events(substrate.admin, ws.workspace_id)
    )
    json.dumps(report.to_dict())

    async def tokens() -> list[dict]:
        conn = await connect(substrate.admin)
        try:
            return await list_tokens(conn, ws.workspace_id)
        finally:
            await conn.close()

    demo_tokens = [t for t in asyncio.run(tokens()) if t["token_prefix"] == report.token_prefix]
    assert [t["status"] for t in demo_tokens] == ["revoked"]


def test_demo_refuses_an_unknown_workspace(substrate: SubstrateDSNs) -> None:
    with pytest.raises(NotFoundError):
        run_demo(substrate, "no-such-workspace", progress=lambda _line: None)
