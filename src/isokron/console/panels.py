"""What each console panel shows: one function per panel, shared by the panel's API route and
by the diagnostics bundle (so the bundle holds exactly what the operator saw)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

from isokron.console import gates, queries
from isokron.console.checkpoints import CheckpointStore
from isokron.errors import NoActiveRoleCharterError, RoleCharterIntegrityError
from isokron.substrate import admin, reads
from isokron.substrate.models import ScratchpadEntry

SCRATCHPAD_PANEL_LIMIT = 200


@dataclass(frozen=True, slots=True)
class PanelContext:
    """Everything a panel reads from, for one signed-in workspace."""

    workspace_id: str
    admin_dsn: str
    admin_pool: asyncpg.Pool
    reader_pool: asyncpg.Pool
    checkpoints: CheckpointStore
    gateway_url: str | None
    hermes_home: Path | None


async def boot_gates(ctx: PanelContext) -> dict[str, Any]:
    gate_ctx = gates.GateContext(
        workspace_id=ctx.workspace_id,
        admin_dsn=ctx.admin_dsn,
        admin_pool=ctx.admin_pool,
        reader_pool=ctx.reader_pool,
        checkpoints=ctx.checkpoints,
        gateway_url=ctx.gateway_url,
        hermes_home=ctx.hermes_home,
    )
    return {"gates": [g.to_dict() for g in await gates.run_gates(gate_ctx)]}


async def chain(ctx: PanelContext) -> dict[str, Any]:
    events, types = await asyncio.gather(
        queries.chain_page(ctx.reader_pool, ctx.workspace_id, limit=100),
        queries.event_types(ctx.reader_pool, ctx.workspace_id),
    )
    return {"events": events, "event_types": types}


async def verification(ctx: PanelContext) -> dict[str, Any]:
    return {
        "checkpoints": [c.to_dict() for c in ctx.checkpoints.load(ctx.workspace_id)],
    }


async def escalations(ctx: PanelContext) -> dict[str, Any]:
    rows = await queries.escalations(ctx.reader_pool, ctx.workspace_id, status=None)
    return {"escalations": rows}


async def proposals(ctx: PanelContext) -> dict[str, Any]:
    rows = await reads.read_proposals(ctx.reader_pool, ctx.workspace_id, status=None, limit=200)
    return {"proposals": [queries.jsonable(_slots(p)) for p in rows]}


async def policies(ctx: PanelContext) -> dict[str, Any]:
    rows = await reads.read_policy_registry(ctx.reader_pool, ctx.workspace_id)
    return {
        "policies": [
            {"policy_key": p.policy_key, "value": p.value, "description": p.description}
            for p in rows
        ]
    }


async def capabilities(ctx: PanelContext) -> dict[str, Any]:
    return await queries.capability_matrix(ctx.reader_pool, ctx.workspace_id)


async def charter(ctx: PanelContext) -> dict[str, Any]:
    history = await queries.charter_history(ctx.reader_pool, ctx.workspace_id)
    try:
        active = await reads.read_active_role_charter(ctx.reader_pool, ctx.workspace_id)
        verified, error = active.version, None
    except (NoActiveRoleCharterError, RoleCharterIntegrityError) as exc:
        verified, error = None, str(exc)
    return {"history": history, "verified_version": verified, "identity_error": error}


async def constitution(ctx: PanelContext) -> dict[str, Any]:
    return {"revisions": await queries.constitution_history(ctx.reader_pool, ctx.workspace_id)}


async def scratchpad(ctx: PanelContext) -> dict[str, Any]:
    rows = await _scratchpad_all(ctx)
    return {"entries": [queries.jsonable(_slots(e)) for e in rows]}


async def _scratchpad_all(ctx: PanelContext) -> list[ScratchpadEntry]:
    # Every actor's own active entries (each read checks BLAKE3 and marks drifted entries).
    kinds = {a["actor_kind"] for a in await reads.read_actors(ctx.reader_pool, ctx.workspace_id)}
    own = await asyncio.gather(
        *(
            reads.read_own_scratchpad(
                ctx.reader_pool, ctx.workspace_id, kind, limit=SCRATCHPAD_PANEL_LIMIT
            )
            for kind in sorted(kinds)
        )
    )
    entries = [e for group in own for e in group]
    entries.sort(key=lambda e: e.created_at, reverse=True)
    return entries[:SCRATCHPAD_PANEL_LIMIT]


async def graph(ctx: PanelContext) -> dict[str, Any]:
    return await queries.graph(ctx.reader_pool, ctx.workspace_id)


async def tokens(ctx: PanelContext) -> dict[str, Any]:
    async with ctx.admin_pool.acquire() as conn:
        rows = await admin.list_tokens(conn, ctx.workspace_id)
    actors = await reads.read_actors(ctx.reader_pool, ctx.workspace_id)
    return {
        "tokens": [queries.jsonable(r) for r in rows],
        "actor_kinds": sorted({a["actor_kind"] for a in actors if a["status"] == "active"}),
    }


async def activity(ctx: PanelContext) -> dict[str, Any]:
    return await queries.activity(ctx.reader_pool, ctx.workspace_id)


def runbooks_manifest() -> dict[str, Any]:
    """The runbooks shipped with the console (``static/runbooks.json``)."""
    text = (resources.files("isokron.console") / "static" / "runbooks.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


async def runbooks(ctx: PanelContext) -> dict[str, Any]:
    return runbooks_manifest()


def _slots(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in getattr(obj, "__slots__", ())}


#: panel key -> (title, data function). The order is the console's navigation order.
PANELS = {
    "gates": ("Boot gates", boot_gates),
    "chain": ("Chain", chain),
    "verification": ("Verification", verification),
    "escalations": ("Escalations", escalations),
    "proposals": ("Proposals", proposals),
    "policies": ("Policies", policies),
    "capabilities": ("Capabilities", capabilities),
    "charter": ("Charter", charter),
    "constitution": ("Constitution", constitution),
    "scratchpad": ("Scratchpad", scratchpad),
    "graph": ("Knowledge graph", graph),
    "tokens": ("Tokens", tokens),
    "activity": ("Activity", activity),
    "runbooks": ("Runbooks", runbooks),
}
