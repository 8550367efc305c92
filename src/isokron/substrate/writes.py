"""The write operations: the one module the gateway and the operator CLI both write through.

Every function here calls a substrate function that writes its rows and appends exactly one
chain event in ONE transaction (migrations/0011). Two entry points:

* ``isokron_api.write(token_sha256, op, args, idempotency_key, workspace_id)`` — the gateway
  role's: the database resolves actor, kind and workspace from the presented token's SHA-256
  (:func:`write_with_token`).
* ``isokron_api.write_as(op, workspace_id, actor_id, args, idempotency_key)`` — the owner's
  (admin DSN, the operator CLI): names the acting actor (:func:`write`, :func:`govern`).

Both authorize from ``isokron.operation_registry``: governance operations and decisions need an
operator, other operations their capability granted to the actor's kind.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias
from uuid import UUID

import asyncpg
import blake3

from isokron.errors import ConfigError
from isokron.substrate import defaults
from isokron.substrate.connection import translate_pg_error

WRITE_AS_SQL = "SELECT isokron_api.write_as($1, $2, $3::uuid, $4::jsonb, $5)"
WRITE_WITH_TOKEN_SQL = "SELECT isokron_api.write($1::bytea, $2, $3::jsonb, $4, $5)"
CREATE_WORKSPACE_SQL = "SELECT isokron_api.create_workspace($1, $2, $3::jsonb)"
ERASE_PAYLOAD_SQL = "SELECT isokron_api.erase_event_payload($1, $2, $3)"

AGENT_OPERATIONS = frozenset(
    {
        "append_event",
        "write_scratchpad_entry",
        "iso_node_create",
        "iso_node_supersede",
        "iso_link_create",
        "propose_convention",
        "propose_policy_change",
        "raise_escalation",
        "record_denial",
        "decide_proposal",
        "decide_escalation",
    }
)
GOVERNANCE_OPERATIONS = frozenset(
    {
        "set_charter",
        "set_policies",
        "set_capabilities",
        "revise_constitution",
        "issue_token",
        "revoke_token",
    }
)
SCRATCHPAD_KINDS = (
    "reasoning_trail",
    "observation",
    "plan",
    "hypothesis",
    "decision_draft",
    "handoff_note",
    "tool_result",
)
VISIBILITY_SCOPES = ("own_only", "cross_agent_dereferenceable")
TOKEN_PREFIX = "wsk_"
TOKEN_SECRET_LENGTH = 40
TOKEN_PUBLIC_CHARS = 12  # "wsk_" + 8: enough to name a token in a list, useless to an attacker
_TOKEN_ALPHABET = string.ascii_letters + string.digits

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def write(
    db: Executor,
    op: str,
    workspace_id: str,
    actor_id: UUID | str,
    args: dict[str, Any],
    *,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Perform one agent write operation as ``actor_id`` (owner entry point, admin DSN only).

    Returns the substrate's result (with ``event_id``).
    """
    if op not in AGENT_OPERATIONS:
        raise ConfigError(
            f"unknown write operation {op!r}; expected one of {sorted(AGENT_OPERATIONS)}"
        )
    return await _call(db, WRITE_AS_SQL, op, workspace_id, str(actor_id), args, idempotency_key)


async def write_with_token(
    db: Executor,
    op: str,
    token_hash: bytes,
    args: dict[str, Any],
    *,
    workspace_id: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Perform one operation as the holder of the token whose SHA-256 is ``token_hash``.

    The gateway role's entry point: the database resolves actor and workspace from the hash
    (``unauthenticated`` if unknown, revoked, expired or its actor disabled;
    ``workspace_mismatch`` if ``workspace_id`` is given and is not the token's).
    """
    if op not in AGENT_OPERATIONS and op not in GOVERNANCE_OPERATIONS:
        raise ConfigError(f"unknown write operation {op!r}")
    return await _call(
        db, WRITE_WITH_TOKEN_SQL, bytes(token_hash), op, args, idempotency_key, workspace_id
    )


async def govern(
    db: Executor,
    op: str,
    workspace_id: str,
    actor_id: UUID | str,
    args: dict[str, Any],
    *,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Perform one governance operation as an operator actor; chained like every write."""
    if op not in GOVERNANCE_OPERATIONS:
        raise ConfigError(
            f"unknown governance operation {op!r}; expected one of {sorted(GOVERNANCE_OPERATIONS)}"
        )
    return await _call(db, WRITE_AS_SQL, op, workspace_id, str(actor_id), args, idempotency_key)


async def _call(db: Executor, sql: str, *params: Any) -> dict[str, Any]:
    try:
        result = await db.fetchval(sql, *params)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise translate_pg_error(exc) from exc
    if not isinstance(result, dict):
        raise TypeError(f"substrate returned {type(result).__name__}, expected a JSON object")
    return result


def content_hash(content: str) -> str:
    """The BLAKE3 hex digest IsoKron stores for scratchpad content (UTF-8 bytes)."""
    return blake3.blake3(content.encode("utf-8")).hexdigest()


def scratchpad_args(
    *,
    kind: str,
    summary: str,
    content: str | None = None,
    content_uri: str | None = None,
    content_sha: str | None = None,
    visibility_scope: str = "own_only",
    session_id: str | None = None,
) -> dict[str, Any]:
    """Arguments of ``write_scratchpad_entry`` with the BLAKE3 computed here (server side).

    For an entry stored elsewhere (``content_uri``), the caller gives ``content_sha``.
    """
    if content is not None:
        digest = content_hash(content)
    elif content_sha is not None:
        digest = content_sha
    else:
        raise ConfigError("a scratchpad entry needs content or content_uri with its content hash")
    return {
        "kind": kind,
        "summary": summary,
        "content": content,
        "content_uri": content_uri,
        "content_hash": digest,
        "visibility_scope": visibility_scope,
        "session_id": session_id,
    }


@dataclass(frozen=True, slots=True)
class CreatedWorkspace:
    """What ``create_workspace`` made."""

    workspace_id: str
    tenant_id: UUID
    operator_actor_id: UUID
    actors: dict[str, UUID]
    events: int


async def create_workspace(
    conn: asyncpg.Connection,
    workspace_id: str,
    name: str | None = None,
    *,
    charter_md: str | None = None,
) -> CreatedWorkspace:
    """Create and seed a usable workspace in ONE transaction.

    Seeds the default actors, the role charter (``charter_md`` or the default), 31 policies,
    the 49-capability matrix for every actor kind and the first constitution revision; each
    step is a chained governance event by the workspace's operator.
    """
    md = charter_md if charter_md is not None else defaults.DEFAULT_CHARTER_MD
    sections = defaults.charter_sections_from_markdown(md)
    actors = [{"actor_kind": k, "display_name": v} for k, v in defaults.ACTOR_KINDS.items()]
    async with conn.transaction():
        created = await _call(
            conn, CREATE_WORKSPACE_SQL, workspace_id, name or workspace_id, actors
        )
        operator = created["operator_actor_id"]
        await govern(
            conn,
            "set_charter",
            workspace_id,
            operator,
            {"content_md": md, "sections": dict(sections)},
        )
        await govern(
            conn, "set_policies", workspace_id, operator, {"policies": default_policy_rows()}
        )
        await govern(
            conn,
            "set_capabilities",
            workspace_id,
            operator,
            {"capabilities": default_capability_rows()},
        )
        await govern(
            conn,
            "revise_constitution",
            workspace_id,
            operator,
            {"rules": defaults.DEFAULT_CONSTITUTION_RULES},
        )
    return CreatedWorkspace(
        workspace_id=workspace_id,
        tenant_id=UUID(created["tenant_id"]),
        operator_actor_id=UUID(operator),
        actors={a["actor_kind"]: UUID(a["actor_id"]) for a in created["actors"]},
        events=5,
    )


def default_policy_rows() -> list[dict[str, Any]]:
    """The 31 default policies as ``set_policies`` rows."""
    return [
        {"policy_key": p.key, "policy_value": p.value, "description": p.description}
        for p in defaults.DEFAULT_POLICIES.values()
    ]


def default_capability_rows() -> list[dict[str, Any]]:
    """The capability matrix: every capability × every default actor kind."""
    return [
        {
            "cap_name": cap.cap_name,
            "actor_kind": kind,
            "granted": kind in cap.grants,
            "cap_group": cap.group,
            "description": cap.description,
        }
        for cap in defaults.CAPABILITIES
        for kind in defaults.ACTOR_KINDS
    ]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly issued service token. ``token`` is shown once and never stored."""

    token: str
    token_id: UUID
    token_prefix: str
    holder_actor_id: UUID
    event_id: UUID


def new_token() -> str:
    """A new ``wsk_`` workspace service key: 40 random base62 characters after the prefix."""
    return TOKEN_PREFIX + "".join(
        secrets.choice(_TOKEN_ALPHABET) for _ in range(TOKEN_SECRET_LENGTH)
    )


def token_sha256(token: str) -> bytes:
    """How tokens are stored: SHA-256 of the whole token (tokens carry 238 bits of entropy)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def token_public_prefix(token: str) -> str:
    """The part of a token that may be shown and logged."""
    return token[:TOKEN_PUBLIC_CHARS]


async def issue_token(
    conn: asyncpg.Connection,
    workspace_id: str,
    operator_actor_id: UUID | str,
    holder_actor_id: UUID | str,
    *,
    label: str = "",
    expires_at: datetime | None = None,
) -> IssuedToken:
    """Issue a service token for ``holder_actor_id``; only its SHA-256 is stored."""
    token = new_token()
    result = await govern(
        conn,
        "issue_token",
        workspace_id,
        operator_actor_id,
        {
            "holder_actor_id": str(holder_actor_id),
            "token_sha256": token_sha256(token).hex(),
            "token_prefix": token_public_prefix(token),
            "label": label,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return IssuedToken(
        token=token,
        token_id=UUID(result["token_id"]),
        token_prefix=result["token_prefix"],
        holder_actor_id=UUID(str(holder_actor_id)),
        event_id=UUID(result["event_id"]),
    )


async def erase_event_payload(
    conn: asyncpg.Connection, workspace_id: str, seq: int, reason: str
) -> None:
    """Replace one event's payload by a tombstone (lawful deletion); its digest stays chained."""
    await _call_void(conn, ERASE_PAYLOAD_SQL, workspace_id, seq, reason)


async def _call_void(db: Executor, sql: str, *params: Any) -> None:
    try:
        await db.execute(sql, *params)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise translate_pg_error(exc) from exc
