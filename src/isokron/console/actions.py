"""The console's changes: each one the same governed, chained write operation the CLI makes.

Every change goes through :mod:`isokron.substrate.writes` on the **gateway role** with the
SHA-256 of the operator's token (``writes.write_with_token``): the database itself resolves the
actor, its kind and its workspace from that hash in the write's transaction, refuses a revoked or
expired token or a disabled actor (``unauthenticated``), and lets only an operator decide or
govern. The console's process credentials alone cannot act as anyone.
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
from isokron.substrate.connection import fetch_in_transaction
from isokron.substrate.database_errors import DRIVER_ERRORS, translate

log = logging.getLogger("isokron.console.actions")

OPERATOR_KIND = "operator"


async def authenticate_digest(gateway_pool: asyncpg.Pool, digest: bytes, prefix: str) -> Principal:
    """The principal a token's SHA-256 stands for, asked of the database now (never cached)."""
    try:
        record = await fetch_in_transaction(gateway_pool, AUTHENTICATE_TOKEN_SQL, digest)
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
    return principal_from_record(record if isinstance(record, dict) else None, prefix, digest)


def require_operator(principal: Principal) -> None:
    if principal.actor_kind != OPERATOR_KIND:
        raise RefusalError(
            "capability_denied",
            f"token {principal.token_prefix}… belongs to a {principal.actor_kind!r} actor; "
            "the console signs in operators only (issue one: isokron token issue WORKSPACE "
            "--actor-kind operator)",
        )


class OperatorActions:
    """Chained writes by the operator whose token hash a session holds."""

    def __init__(self, reader_pool: asyncpg.Pool, gateway_pool: asyncpg.Pool) -> None:
        self._reader = reader_pool
        self._gateway = gateway_pool

    async def perform(
        self, principal: Principal, digest: bytes, op: str, args: dict[str, Any]
    ) -> dict[str, Any]:
        """One operation (decision or governance) as the token's holder; returns its result."""
        result = await writes.write_with_token(
            self._gateway, op, digest, args, workspace_id=principal.workspace_id
        )
        log.info(
            "[isokron.console.write] workspace=%s op=%s token=%s… event=%s",
            principal.workspace_id,
            op,
            principal.token_prefix,
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
        holder = await reads.actor_id_of_kind(self._reader, principal.workspace_id, actor_kind)
        if holder is None:
            raise NotFoundError(f"this workspace has no active {actor_kind!r} actor")
        issued = await writes.issue_token_with_token(
            self._gateway,
            digest,
            holder,
            workspace_id=principal.workspace_id,
            label=label,
            expires_at=expires_at,
        )
        log.info(
            "[isokron.console.write] workspace=%s op=issue_token token=%s… event=%s",
            principal.workspace_id,
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
