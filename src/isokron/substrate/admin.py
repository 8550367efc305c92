"""Operator-wide reads that span workspaces or touch secrets' metadata (admin DSN only)."""

from __future__ import annotations

from typing import Any

import asyncpg

from isokron.errors import NotFoundError
from isokron.substrate.database_errors import DRIVER_ERRORS, translate

# Superusers bypass RLS; a non-superuser admin that is a member of isokron_owner sees all
# workspaces through the owner's opt-in policy.
SCOPE_ALL_SQL = "SELECT isokron.set_local('isokron.all_workspaces', 'on', true)"
LIST_WORKSPACES_SQL = """
SELECT w.id AS workspace_id, w.name, t.tenant_id, w.created_at,
       coalesce(h.last_seq, 0) AS events
FROM public.workspaces w
JOIN hivex_foundation.tenant t ON t.clerk_org_id = w.id
LEFT JOIN hivex_foundation.chain_head h ON h.tenant_id = t.tenant_id
ORDER BY w.id
"""
LIST_TOKENS_SQL = """
SELECT t.token_id, t.token_prefix, a.actor_kind, a.display_name, t.label, t.created_at,
       t.expires_at, t.revoked_at,
       CASE WHEN t.revoked_at IS NOT NULL THEN 'revoked'
            WHEN t.expires_at IS NOT NULL AND t.expires_at <= now() THEN 'expired'
            ELSE 'active' END AS status
FROM isokron.service_tokens t
JOIN public.actor_registry a ON a.workspace_id = t.workspace_id AND a.actor_id = t.actor_id
WHERE t.workspace_id = $1
ORDER BY t.created_at
"""
WORKSPACE_EXISTS_SQL = "SELECT EXISTS (SELECT 1 FROM public.workspaces WHERE id = $1)"


async def list_workspaces(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every workspace with its tenant and number of chain events."""
    try:
        async with conn.transaction(readonly=True):
            await conn.execute(SCOPE_ALL_SQL)
            return [dict(r) for r in await conn.fetch(LIST_WORKSPACES_SQL)]
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc


async def require_workspace(conn: asyncpg.Connection, workspace_id: str) -> None:
    """Raise NotFoundError naming the fix when the workspace does not exist."""
    try:
        async with conn.transaction(readonly=True):
            await conn.execute(SCOPE_ALL_SQL)
            exists = await conn.fetchval(WORKSPACE_EXISTS_SQL, workspace_id)
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
    if not exists:
        raise NotFoundError(
            f"unknown workspace {workspace_id!r}; `isokron workspace list` shows the workspaces"
        )


async def list_tokens(conn: asyncpg.Connection, workspace_id: str) -> list[dict[str, Any]]:
    """The service tokens of a workspace: public prefix and status, never a secret or hash."""
    try:
        async with conn.transaction(readonly=True):
            await conn.execute(SCOPE_ALL_SQL)
            return [dict(r) for r in await conn.fetch(LIST_TOKENS_SQL, workspace_id)]
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
