"""Writing through the gateway role as a given actor, the way the gateway does: with a token.

The gateway role's only write entry point takes the SHA-256 of a service token and resolves the
actor from it, so a test that writes "as kora through the gateway role" first has an operator
issue kora a token (through the owner's entry point) and then presents its hash.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from isokron.substrate import writes

ACTOR_WORKSPACE_SQL = """
SELECT a.workspace_id,
       (SELECT o.actor_id FROM public.actor_registry o
        WHERE o.workspace_id = a.workspace_id AND o.actor_kind = 'operator' AND o.status = 'active'
        ORDER BY o.created_at LIMIT 1) AS operator_id
FROM public.actor_registry a WHERE a.actor_id = $1
"""
SCOPE_ALL_SQL = "SELECT isokron.set_local('isokron.all_workspaces', 'on', true)"
#: Figures of the state tamper matrix, printed at the end of the run (tests/substrate/conftest.py).
STATE_TAMPER_FIGURES: dict[str, int] = {}


class GatewayWriter:
    """``write(op, workspace_id, actor_id, args)`` through the gateway role, with the actor's
    token (issued once per actor by its workspace's operator)."""

    def __init__(self, admin_pool: asyncpg.Pool, gateway_pool: asyncpg.Pool) -> None:
        self.admin = admin_pool
        self.pool = gateway_pool
        self._hashes: dict[str, bytes] = {}

    async def token_hash(self, actor_id: UUID | str) -> bytes:
        """The SHA-256 of a service token held by ``actor_id`` (issued on first use)."""
        key = str(actor_id)
        if key not in self._hashes:
            async with self.admin.acquire() as conn, conn.transaction():
                await conn.execute(SCOPE_ALL_SQL)
                row = await conn.fetchrow(ACTOR_WORKSPACE_SQL, UUID(key))
            assert row is not None, f"no actor {key}"
            async with self.admin.acquire() as conn:
                issued = await writes.issue_token(
                    conn, row["workspace_id"], row["operator_id"], key, label="test"
                )
            self._hashes[key] = writes.token_sha256(issued.token)
        return self._hashes[key]

    async def write(
        self,
        op: str,
        workspace_id: str,
        actor_id: UUID | str,
        args: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One operation as ``actor_id``, in ``workspace_id`` (refused if not the token's)."""
        return await writes.write_with_token(
            self.pool,
            op,
            await self.token_hash(actor_id),
            args,
            workspace_id=workspace_id,
            idempotency_key=idempotency_key,
        )
