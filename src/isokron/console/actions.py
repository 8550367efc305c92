"""The console's changes: each one the same governed, chained write operation the CLI makes.

Every change goes through :mod:`isokron.substrate.writes` as the signed-in operator. Before it,
the operator's credential (the SHA-256 of the token the session was opened with) is checked
again through the gateway role's ``isokron_api.authenticate_token``: a token revoked or expired
since sign-in, or whose actor was disabled, stops the change and ends the session.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from isokron.errors import ConfigError, NotFoundError, RefusalError
from isokron.gateway.auth import AUTHENTICATE_TOKEN_SQL, Principal, principal_from_record
from isokron.substrate import reads, writes
from isokron.substrate.connection import translate_pg_error

log = logging.getLogger("isokron.console.actions")

OPERATOR_KIND = "operator"


async def authenticate_digest(gateway_pool: asyncpg.Pool, digest: bytes, prefix: str) -> Principal:
    """The principal a token's SHA-256 stands for, asked of the database now (never cached)."""
    try:
        record = await gateway_pool.fetchval(AUTHENTICATE_TOKEN_SQL, digest)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise translate_pg_error(exc) from exc
    return principal_from_record(record if isinstance(record, dict) else None, prefix)


def require_operator(principal: Principal) -> None:
    if principal.actor_kind != OPERATOR_KIND:
        raise RefusalError(
            "capability_denied",
            f"token {principal.token_prefix}… belongs to a {principal.actor_kind!r} actor; "
            "the console signs in operators only (issue one: isokron token issue WORKSPACE "
            "--actor-kind operator)",
        )


class OperatorActions:
    """Chained writes by the operator of one session."""

    def __init__(self, admin_pool: asyncpg.Pool, gateway_pool: asyncpg.Pool) -> None:
        self._admin = admin_pool
        self._gateway = gateway_pool

    async def _operator(self, principal: Principal, digest: bytes) -> Principal:
        current = await authenticate_digest(self._gateway, digest, principal.token_prefix)
        require_operator(current)
        if current.workspace_id != principal.workspace_id:
            raise RefusalError("workspace_mismatch", "the session's token changed workspace")
        return current

    async def perform(
        self, principal: Principal, digest: bytes, op: str, args: dict[str, Any]
    ) -> dict[str, Any]:
        """One operation (decision or governance) by the session's operator; returns its result."""
        who = await self._operator(principal, digest)
        perform = writes.govern if op in writes.GOVERNANCE_OPERATIONS else writes.write
        result = await perform(self._admin, op, who.workspace_id, who.actor_id, args)
        log.info(
            "[isokron.console.write] workspace=%s op=%s token=%s… event=%s",
            who.workspace_id,
            op,
            who.token_prefix,
            result.get("event_id"),
        )
        return result

    async def decide_escalation(
        self, principal: Principal, digest: bytes, escalation_id: str, approve: bool, note: str
    ) -> dict[str, Any]:
        return await self.perform(
            principal,
            digest,
            "decide_escalation",
            {
                "escalation_id": str(UUID(escalation_id)),
                "decision": "approved" if approve else "rejected",
                "note": note,
            },
        )

    async def decide_proposal(
        self,
        principal: Principal,
        digest: bytes,
        proposal_id: str,
        kind: str,
        accept: bool,
        note: str,
    ) -> dict[str, Any]:
        if kind not in ("convention", "policy_change"):
            raise ConfigError("proposal kind must be convention or policy_change")
        return await self.perform(
            principal,
            digest,
            "decide_proposal",
            {
                "proposal_kind": kind,
                "proposal_id": str(UUID(proposal_id)),
                "decision": "accepted" if accept else "rejected",
                "note": note,
            },
        )

    async def set_policy(
        self, principal: Principal, digest: bytes, key: str, value: Any
    ) -> dict[str, Any]:
        return await self.perform(
            principal,
            digest,
            "set_policies",
            {"policies": [{"policy_key": key, "policy_value": value}]},
        )

    async def issue_token(
        self,
        principal: Principal,
        digest: bytes,
        actor_kind: str,
        label: str,
        expires_at: datetime | None,
    ) -> writes.IssuedToken:
        who = await self._operator(principal, digest)
        holder = await reads.actor_id_of_kind(self._admin, who.workspace_id, actor_kind)
        if holder is None:
            raise NotFoundError(f"this workspace has no active {actor_kind!r} actor")
        async with self._admin.acquire() as conn:
            issued = await writes.issue_token(
                conn, who.workspace_id, who.actor_id, holder, label=label, expires_at=expires_at
            )
        log.info(
            "[isokron.console.write] workspace=%s op=issue_token token=%s… event=%s",
            who.workspace_id,
            issued.token_prefix,
            issued.event_id,
        )
        return issued

    async def revoke_token(
        self, principal: Principal, digest: bytes, token_id: str
    ) -> dict[str, Any]:
        return await self.perform(
            principal, digest, "revoke_token", {"token_id": str(UUID(token_id))}
        )
