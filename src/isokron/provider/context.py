"""A workspace's session context and prompt block, outside any agent (``isokron context``).

The same reads (:func:`isokron.substrate.reads.assemble_session_context`) and the same renderer
(:func:`isokron.provider.prompt_block.render_prompt_block`) as the provider, so what the CLI
prints is what the model is shown.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

from isokron.provider.prompt_block import render_prompt_block
from isokron.substrate import reads
from isokron.substrate.connection import create_pool
from isokron.substrate.models import KoraSessionContext, ScratchpadEntry

CONTEXT_POOL_SIZE = 1  # the session context is one statement


async def render_context_async(dsn: str, workspace_id: str) -> tuple[str, dict[str, Any]]:
    """See :func:`render_context`."""
    pool = await create_pool(dsn, min_size=1, max_size=CONTEXT_POOL_SIZE, session_state=False)
    try:
        ctx = await reads.assemble_session_context(pool, workspace_id)
    finally:
        await pool.close()
    return prompt_block_of(ctx), session_context_to_dict(ctx)


def render_context(admin_or_reader_dsn: str, workspace_id: str) -> tuple[str, dict[str, Any]]:
    """The prompt block and the JSON-ready session context of ``workspace_id``.

    Works with the admin or the reader DSN. An identity failure does not raise: the block says
    the identity could not be verified and the dict carries ``identity_error``.

    Raises:
        ConfigError: the DSN is invalid.
        SubstrateUnavailableError: PostgreSQL cannot be reached.
        SubstrateError: a read failed.
    """
    return asyncio.run(render_context_async(admin_or_reader_dsn, workspace_id))


def prompt_block_of(ctx: KoraSessionContext) -> str:
    """The provider's §1–§6 block for an assembled session context."""
    return render_prompt_block(
        workspace_id=ctx.workspace_id,
        charter=ctx.role_charter,
        identity_error=ctx.identity_error,
        policies=ctx.policies,
        capabilities=ctx.capability_matrix_row,
        recent_events=ctx.recent_chain_events,
    )


def session_context_to_dict(ctx: KoraSessionContext) -> dict[str, Any]:
    """A JSON-ready dict of the session context (UUIDs and times as strings)."""
    charter = ctx.role_charter
    caps = ctx.capability_matrix_row
    return {
        "workspace_id": ctx.workspace_id,
        "assembled_at": _iso(ctx.assembled_at),
        "role_charter": None
        if charter is None
        else {
            "charter_id": str(charter.charter_id),
            "version": charter.version,
            "content_hash": charter.content_hash,
            "identity": charter.identity,
            "authority_can_do": list(charter.authority_can_do),
            "authority_cannot_do": list(charter.authority_cannot_do),
        },
        "identity_error": ctx.identity_error,
        "policies": {p.policy_key: p.value for p in ctx.policies},
        "capability_matrix_row": {
            "actor_kind": caps.actor_kind,
            "granted": list(caps.granted),
            "denied": list(caps.denied),
        },
        "own_scratchpad": [_entry(e) for e in ctx.own_scratchpad],
        "cross_agent_scratchpad": [_entry(e) for e in ctx.cross_agent_scratchpad],
        "recent_chain_events": [
            {
                "event_id": str(e.event_id),
                "seq": e.seq,
                "event_type": e.event_type,
                "occurred_at": _iso(e.occurred_at),
                "payload_excerpt": e.payload_excerpt,
            }
            for e in ctx.recent_chain_events
        ],
        "active_constitution_revision_id": _str(ctx.active_constitution_revision_id),
        "active_constitution_rules_hash": ctx.active_constitution_rules_hash,
    }


def _entry(e: ScratchpadEntry) -> dict[str, Any]:
    return {
        "entry_id": str(e.entry_id),
        "actor_kind": e.actor_kind,
        "actor_label": e.actor_label,
        "kind": e.kind,
        "visibility_scope": e.visibility_scope,
        "summary": e.summary,
        "content_uri": e.content_uri,
        "content_hash": e.content_hash,
        "session_id": e.session_id,
        "created_at": _iso(e.created_at),
        "approved_event_id": str(e.approved_event_id),
        "drifted": e.drifted,
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _str(value: UUID | None) -> str | None:
    return None if value is None else str(value)
