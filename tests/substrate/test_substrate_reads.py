"""The reads, through the reader role: identity fails closed, working memory warns, policy drift
is logged, capabilities come from the matrix, and the session context assembles all of it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from uuid import uuid4

import asyncpg
import pytest

from isokron.errors import NoActiveRoleCharterError, RoleCharterIntegrityError
from isokron.governance import capabilities, seeds
from isokron.governance.charter import charter_sections_from_markdown
from isokron.governance.policies import POLICIES
from isokron.substrate import reads, writes

POLICY_DRIFT_TAG = "[isokron.reads.policy_drift]"
SCRATCHPAD_DRIFT_TAG = "[isokron.reads.scratchpad_drift]"


async def _kora(pool: asyncpg.Pool, ws: writes.CreatedWorkspace, op: str, args: dict) -> dict:
    return await writes.write(pool, op, ws.workspace_id, ws.actors["kora"], args)


# ------------------------------------------------------------------------- role charter
async def test_the_active_charter_is_returned_verified(
    workspace: writes.CreatedWorkspace, reader_pool: asyncpg.Pool
) -> None:
    charter = await reads.read_active_role_charter(reader_pool, workspace.workspace_id)
    assert charter.version == 1
    assert charter.content_md == seeds.DEFAULT_CHARTER_MD
    assert charter.identity == seeds.DEFAULT_CHARTER_SECTIONS["identity"]
    assert list(charter.authority_can_do) == seeds.DEFAULT_CHARTER_SECTIONS["authority_can_do"]
    assert charter.authority_cannot_do


@pytest.mark.parametrize(
    ("tamper", "error", "message"),
    [
        ("SET content_md = NULL", RoleCharterIntegrityError, "NULL content"),
        ("SET content_md = content_md || ' '", RoleCharterIntegrityError, "SHA-256"),
        ("SET content_hash = repeat('0', 64)", RoleCharterIntegrityError, "SHA-256"),
        ("SET is_active = false", NoActiveRoleCharterError, "no active role charter"),
    ],
    ids=["null-content", "edited-content", "edited-hash", "none-active"],
)
async def test_the_charter_fails_closed(
    workspace: writes.CreatedWorkspace,
    admin_pool: asyncpg.Pool,
    reader_pool: asyncpg.Pool,
    tamper: str,
    error: type[Exception],
    message: str,
) -> None:
    await admin_pool.execute(
        f"UPDATE public.kora_role_charter {tamper} WHERE workspace_id = $1",
        workspace.workspace_id,
    )
    with pytest.raises(error, match=message):
        await reads.read_active_role_charter(reader_pool, workspace.workspace_id)
    # The session context does not crash: it carries no charter and says why.
    ctx = await reads.assemble_session_context(reader_pool, workspace.workspace_id)
    assert ctx.role_charter is None
    assert ctx.identity_error is not None and message in ctx.identity_error
    assert len(ctx.policies) == 31


async def test_a_new_charter_version_replaces_the_active_one(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, reader_pool: asyncpg.Pool
) -> None:
    md = seeds.DEFAULT_CHARTER_MD + "\n## Notes\n\nVersion two.\n"
    await writes.govern(
        admin_pool,
        "set_charter",
        workspace.workspace_id,
        workspace.operator_actor_id,
        {"content_md": md, "sections": dict(charter_sections_from_markdown(md))},
    )
    charter = await reads.read_active_role_charter(reader_pool, workspace.workspace_id)
    assert (charter.version, charter.content_md) == (2, md)


# ---------------------------------------------------------------------------- policies
async def test_policies_are_the_31_defaults(
    workspace: writes.CreatedWorkspace, reader_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="isokron.substrate.reads"):
        policies = await reads.read_policy_registry(reader_pool, workspace.workspace_id)
    assert {p.policy_key: p.value for p in policies} == {k: p.value for k, p in POLICIES.items()}
    assert POLICY_DRIFT_TAG not in caplog.text


async def test_a_deleted_policy_is_logged_as_drift_not_refused(
    workspace: writes.CreatedWorkspace,
    admin_pool: asyncpg.Pool,
    reader_pool: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await admin_pool.execute(
        "DELETE FROM public.kora_policy_registry WHERE workspace_id = $1 "
        "AND policy_key = 'policy.kora_disabled'",
        workspace.workspace_id,
    )
    with caplog.at_level(logging.WARNING, logger="isokron.substrate.reads"):
        policies = await reads.read_policy_registry(reader_pool, workspace.workspace_id)
    assert len(policies) == 30
    drift = [r for r in caplog.records if POLICY_DRIFT_TAG in r.getMessage()]
    assert len(drift) == 1 and drift[0].levelno == logging.WARNING
    assert workspace.workspace_id in drift[0].getMessage()
    assert "30 policies, expected 31" in drift[0].getMessage()
    # Logged once per workspace and count, not on every read.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="isokron.substrate.reads"):
        await reads.read_policy_registry(reader_pool, workspace.workspace_id)
    assert not [r for r in caplog.records if POLICY_DRIFT_TAG in r.getMessage()]


# ------------------------------------------------------------------------ capabilities
async def test_kora_is_granted_22_of_49_capabilities(
    workspace: writes.CreatedWorkspace, reader_pool: asyncpg.Pool
) -> None:
    row = await reads.read_capability_row(reader_pool, workspace.workspace_id, "kora")
    assert len(row.capabilities) == 49
    assert len(row.granted) == 22
    assert set(row.granted) == capabilities.granted_capabilities("kora")
    assert row.has("cap_iso_node_create")
    assert not row.has("cap_decide_proposal")
    assert not row.has("cap_does_not_exist")  # unknown capabilities fail closed
    operator = await reads.read_capability_row(reader_pool, workspace.workspace_id, "operator")
    assert len(operator.granted) == 49


async def test_an_unknown_actor_kind_has_no_capabilities(
    workspace: writes.CreatedWorkspace, reader_pool: asyncpg.Pool
) -> None:
    row = await reads.read_capability_row(reader_pool, workspace.workspace_id, "stranger")
    assert row.capabilities == {} and not row.has("cap_append_event")


# -------------------------------------------------------------------------- scratchpad
async def test_scratchpad_drift_warns_and_marks_the_entry(
    workspace: writes.CreatedWorkspace,
    admin_pool: asyncpg.Pool,
    reader_pool: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ws = workspace
    edited = await _kora(
        admin_pool,
        ws,
        "write_scratchpad_entry",
        writes.scratchpad_args(kind="plan", summary="a", content="plan A"),
    )
    kept = await _kora(
        admin_pool,
        ws,
        "write_scratchpad_entry",
        writes.scratchpad_args(kind="plan", summary="b", content="plan B"),
    )
    await admin_pool.execute(
        "UPDATE kronicle.agent_scratchpad_entries SET content = 'plan Z' "
        "WHERE workspace_id = $1 AND entry_id = $2::uuid",
        ws.workspace_id,
        edited["entry_id"],
    )
    with caplog.at_level(logging.WARNING, logger="isokron.substrate.reads"):
        entries = await reads.read_own_scratchpad(reader_pool, ws.workspace_id)
    drifted = {str(e.entry_id): e.drifted for e in entries}
    assert drifted == {edited["entry_id"]: True, kept["entry_id"]: False}
    warnings = [r for r in caplog.records if SCRATCHPAD_DRIFT_TAG in r.getMessage()]
    assert len(warnings) == 1 and edited["entry_id"] in warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING


async def test_content_uri_entries_skip_the_inline_check(
    workspace: writes.CreatedWorkspace,
    admin_pool: asyncpg.Pool,
    reader_pool: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ws = workspace
    await _kora(
        admin_pool,
        ws,
        "write_scratchpad_entry",
        writes.scratchpad_args(
            kind="tool_result",
            summary="stored elsewhere",
            content_uri="s3://bucket/blob",
            content_sha="ab" * 32,  # the hash of content this database never sees
        ),
    )
    with caplog.at_level(logging.WARNING, logger="isokron.substrate.reads"):
        entries = await reads.read_own_scratchpad(reader_pool, ws.workspace_id)
    assert [(e.content, e.content_uri, e.drifted) for e in entries] == [
        (None, "s3://bucket/blob", False)
    ]
    assert SCRATCHPAD_DRIFT_TAG not in caplog.text


async def test_scratchpad_scopes_own_and_cross_agent(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, reader_pool: asyncpg.Pool
) -> None:
    ws = workspace
    await _kora(
        admin_pool,
        ws,
        "write_scratchpad_entry",
        writes.scratchpad_args(kind="plan", summary="kora's", content="k"),
    )
    for scope in ("own_only", "cross_agent_dereferenceable"):
        await writes.write(
            admin_pool,
            "write_scratchpad_entry",
            ws.workspace_id,
            ws.actors["oracle"],
            writes.scratchpad_args(
                kind="observation", summary=f"oracle {scope}", content="o", visibility_scope=scope
            ),
        )
    own = await reads.read_own_scratchpad(reader_pool, ws.workspace_id)
    cross = await reads.read_cross_agent_scratchpad(reader_pool, ws.workspace_id)
    assert [e.summary for e in own] == ["kora's"]
    assert [(e.summary, e.actor_kind) for e in cross] == [
        ("oracle cross_agent_dereferenceable", "oracle")
    ]
    limited = await reads.read_own_scratchpad(reader_pool, ws.workspace_id, "oracle", limit=1)
    assert [e.summary for e in limited] == ["oracle cross_agent_dereferenceable"]  # newest


# ------------------------------------------------------------------------ recent events
async def test_recent_events_are_cut_to_300_characters_with_an_ellipsis(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, reader_pool: asyncpg.Pool
) -> None:
    ws = workspace
    await _kora(
        admin_pool,
        ws,
        "append_event",
        {"event_type": "kora.note.long", "payload": {"text": "x" * 1000}},
    )
    await _kora(
        admin_pool, ws, "append_event", {"event_type": "kora.note.short", "payload": {"n": 1}}
    )
    events = await reads.read_recent_events(reader_pool, ws.workspace_id)
    assert [e.event_type for e in events] == ["kora.note.short", "kora.note.long"]
    short, long = events
    assert not short.payload_excerpt.endswith("…") and '"n": 1' in short.payload_excerpt
    assert len(long.payload_excerpt) == 301 and long.payload_excerpt.endswith("…")
    assert long.payload_excerpt.startswith("{")


async def test_recent_events_respect_prefix_order_and_limit(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, reader_pool: asyncpg.Pool
) -> None:
    ws = workspace
    for i in range(7):
        await _kora(
            admin_pool,
            ws,
            "append_event",
            {"event_type": "kora.note.recorded", "payload": {"i": i}},
        )
    events = await reads.read_recent_events(reader_pool, ws.workspace_id, limit=3)
    assert [e.seq for e in events] == [12, 11, 10]  # newest first; 5 seed events before
    # The default prefix keeps governance events out; another prefix shows them.
    assert all(
        e.event_type.startswith("kora.")
        for e in await reads.read_recent_events(reader_pool, ws.workspace_id, limit=50)
    )
    governance = await reads.read_recent_events(reader_pool, ws.workspace_id, prefix="governance.")
    assert [e.seq for e in governance] == [5, 4, 3, 2, 1]


# ------------------------------------------------------------------------- constitution
async def test_constitution_is_none_for_a_workspace_without_revisions(
    admin_pool: asyncpg.Pool, reader_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    ws_id = f"bare-{uuid4().hex[:8]}"
    await admin_pool.fetchval(
        writes.CREATE_WORKSPACE_SQL, ws_id, "bare", [{"actor_kind": "operator"}]
    )
    assert await reads.read_active_constitution(reader_pool, ws_id) is None
    with pytest.raises(NoActiveRoleCharterError):
        await reads.read_active_role_charter(reader_pool, ws_id)
    with caplog.at_level(logging.WARNING, logger="isokron.substrate.reads"):
        assert await reads.read_policy_registry(reader_pool, ws_id) == ()
    assert POLICY_DRIFT_TAG in caplog.text
    assert (await reads.read_capability_row(reader_pool, ws_id)).capabilities == {}


async def test_the_active_constitution_is_the_highest_revision(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, reader_pool: asyncpg.Pool
) -> None:
    first = await reads.read_active_constitution(reader_pool, workspace.workspace_id)
    assert first is not None and first.revision_number == 1
    assert first.rules == seeds.DEFAULT_CONSTITUTION_RULES
    await writes.govern(
        admin_pool,
        "revise_constitution",
        workspace.workspace_id,
        workspace.operator_actor_id,
        {"rules": {"rules": []}},
    )
    second = await reads.read_active_constitution(reader_pool, workspace.workspace_id)
    assert second is not None and second.revision_number == 2
    assert second.rules == {"rules": []} and second.rules_hash_hex != first.rules_hash_hex


# ------------------------------------------------------------- nodes, queues, proposals
async def test_nodes_links_escalations_and_proposals_read_back(
    workspace: writes.CreatedWorkspace, admin_pool: asyncpg.Pool, reader_pool: asyncpg.Pool
) -> None:
    ws = workspace
    a = await _kora(
        admin_pool,
        ws,
        "iso_node_create",
        {"node_type": "decision", "title": "Use PostgreSQL", "content": "durable"},
    )
    b = await _kora(admin_pool, ws, "iso_node_create", {"node_type": "fact", "title": "ACID"})
    await _kora(
        admin_pool,
        ws,
        "iso_link_create",
        {"from_node_id": b["node_id"], "to_node_id": a["node_id"], "link_type": "supports"},
    )
    await _kora(admin_pool, ws, "iso_node_supersede", {"node_id": b["node_id"], "title": "ACID!"})
    await _kora(admin_pool, ws, "raise_escalation", {"tool": "t", "reason": "please look"})
    await _kora(admin_pool, ws, "propose_convention", {"title": "conv", "body": "b"})

    found = await reads.read_iso_node(reader_pool, ws.workspace_id, a["node_id"])
    assert found is not None
    node, links = found
    assert node.title == "Use PostgreSQL"
    assert [(str(link.from_node_id), link.link_type) for link in links] == [
        (b["node_id"], "supports")
    ]
    assert await reads.read_iso_node(reader_pool, ws.workspace_id, uuid4()) is None
    found = await reads.search_iso_nodes(reader_pool, ws.workspace_id, "durable")
    assert [n.title for n in found] == ["Use PostgreSQL"]
    active = await reads.search_iso_nodes(reader_pool, ws.workspace_id, node_type="fact")
    assert [n.title for n in active] == ["ACID!"]
    everything = await reads.search_iso_nodes(
        reader_pool, ws.workspace_id, node_type="fact", include_superseded=True
    )
    assert sorted(n.status for n in everything) == ["active", "superseded"]
    queue = await reads.read_escalation_queue(reader_pool, ws.workspace_id)
    assert [(e.reason, e.status) for e in queue] == [("please look", "open")]
    proposals = await reads.read_proposals(reader_pool, ws.workspace_id)
    assert [(p.proposal_kind, p.title) for p in proposals] == [("convention", "conv")]


# ------------------------------------------------------------------------ session context
async def test_the_session_context_assembles_every_read(
    make_workspace: Callable, admin_pool: asyncpg.Pool, reader_pool: asyncpg.Pool
) -> None:
    ws = await make_workspace("ctx")
    other = await make_workspace("ctx-other")
    await _kora(
        admin_pool,
        ws,
        "write_scratchpad_entry",
        writes.scratchpad_args(kind="plan", summary="mine", content="m"),
    )
    await writes.write(
        admin_pool,
        "write_scratchpad_entry",
        ws.workspace_id,
        ws.actors["claude_pm"],
        writes.scratchpad_args(
            kind="handoff_note",
            summary="for kora",
            content="h",
            visibility_scope="cross_agent_dereferenceable",
        ),
    )
    await _kora(admin_pool, ws, "append_event", {"event_type": "kora.session.started"})
    await _kora(admin_pool, other, "append_event", {"event_type": "kora.other.workspace"})

    ctx = await reads.assemble_session_context(reader_pool, ws.workspace_id)

    assert ctx.workspace_id == ws.workspace_id
    assert ctx.identity_error is None
    assert ctx.role_charter is not None and ctx.role_charter.version == 1
    assert len(ctx.policies) == 31
    assert len(ctx.capability_matrix_row.granted) == 22
    assert [e.summary for e in ctx.own_scratchpad] == ["mine"]
    assert [e.summary for e in ctx.cross_agent_scratchpad] == ["for kora"]
    # Newest first; every scratchpad write is a kora.scratchpad.written event (claude_pm's too);
    # the other workspace's event is not there.
    assert [e.event_type for e in ctx.recent_chain_events] == [
        "kora.session.started",
        "kora.scratchpad.written",
        "kora.scratchpad.written",
    ]
    constitution = await reads.read_active_constitution(reader_pool, ws.workspace_id)
    assert constitution is not None
    assert ctx.active_constitution_revision_id == constitution.revision_id
    assert ctx.active_constitution_rules_hash == constitution.rules_hash_hex
    assert ctx.assembled_at.tzinfo is not None
