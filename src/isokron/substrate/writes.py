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

The gateway writes through :func:`submit` semantics (admit the call against its quotas and
perform it, or chain its denial, in one statement), coalesced per workspace by
:class:`isokron.substrate.group_writes.GroupWriter` into :func:`submit_group`; maintenance
(:func:`maintain`) closes what the workspaces' policies say is overdue.

Design note on submit_group (migration 0060). The gateway's writes go through
``isokron_api.submit_group``: one statement performing one or more writes of ONE workspace. It
takes the workspace's group lock (a transaction-level advisory lock) first, then runs each item
in its own subtransaction: the admission (``isokron.admit``, the quotas) and the write, or the
chained denial when the admission says so. If an item raises (a substrate refusal such as an
unknown node), only that item rolls back, budget unit included; the caller then submits the
denial, which consumes the unit again, so every call costs exactly one unit. An actor's
"writes" budget row and the chain head stay locked until the group commits; every group takes
its group lock before either, so two groups never wait on each other in opposite orders.

Every call carries the presented token's SHA-256 (``token_sha256``): the database resolves the
actor and workspace from it in the same transaction and refuses a revoked or expired token, so
the gateway role's DSN alone cannot write as anyone.

Denial events are bounded by the same budget: once an actor is over its limit, only the first
refused call of the minute is chained (``calls = limit + 1``); later ones are logged only, so
a runaway client cannot flood the chain with denials (``chain_denial`` in the admission).
"""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias
from uuid import UUID

import asyncpg
import blake3

from isokron.errors import ConfigError, SubstrateError
from isokron.substrate.connection import fetch_in_transaction
from isokron.substrate.database_errors import DRIVER_ERRORS, from_sqlstate, translate

WRITE_AS_SQL = "SELECT isokron_api.write_as($1, $2, $3::uuid, $4::jsonb, $5)"
WRITE_WITH_TOKEN_SQL = "SELECT isokron_api.write($1::bytea, $2, $3::jsonb, $4, $5)"
CREATE_WORKSPACE_SQL = "SELECT isokron_api.create_workspace($1, $2, $3::jsonb)"
ERASE_PAYLOAD_SQL = "SELECT isokron_api.erase_event_payload($1, $2, $3)"

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
    """Perform one operation as ``actor_id`` (owner entry point, admin DSN only).

    ``op`` is an operation of :mod:`isokron.governance.operations`; the database refuses any
    other name (``invalid_argument``). Returns the substrate's result (with ``event_id``).
    """
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
    (``unauthenticated`` if unknown, revoked or expired, ``actor_disabled`` if its actor is
    disabled; ``workspace_mismatch`` if ``workspace_id`` is given and is not the token's).
    """
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
    return await write(db, op, workspace_id, actor_id, args, idempotency_key=idempotency_key)


async def _call(db: Executor, sql: str, *params: Any) -> dict[str, Any]:
    try:
        result = await fetch_in_transaction(db, sql, *params)
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
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
class WorkspaceSeed:
    """The rows a new workspace is seeded with (``isokron.governance.seeds.default_seed``)."""

    actors: list[dict[str, Any]]
    charter_md: str
    charter_sections: dict[str, Any]
    policies: list[dict[str, Any]]
    capabilities: list[dict[str, Any]]
    constitution_rules: dict[str, Any]


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
    seed: WorkspaceSeed,
) -> CreatedWorkspace:
    """Create and seed a usable workspace in ONE transaction.

    Seeds ``seed``'s actors, role charter, policies, capability matrix and first constitution
    revision; each step is a chained governance event by the workspace's operator.
    """
    async with conn.transaction():
        created = await _call(
            conn, CREATE_WORKSPACE_SQL, workspace_id, name or workspace_id, seed.actors
        )
        operator = created["operator_actor_id"]
        steps: tuple[tuple[str, dict[str, Any]], ...] = (
            ("set_charter", {"content_md": seed.charter_md, "sections": seed.charter_sections}),
            ("set_policies", {"policies": seed.policies}),
            ("set_capabilities", {"capabilities": seed.capabilities}),
            ("revise_constitution", {"rules": seed.constitution_rules}),
        )
        for op, args in steps:
            await govern(conn, op, workspace_id, operator, args)
    return CreatedWorkspace(
        workspace_id=workspace_id,
        tenant_id=UUID(created["tenant_id"]),
        operator_actor_id=UUID(operator),
        actors={a["actor_kind"]: UUID(a["actor_id"]) for a in created["actors"]},
        events=1 + len(steps),
    )


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


def _issue_token_args(
    token: str, holder_actor_id: UUID | str, label: str, expires_at: datetime | None
) -> dict[str, Any]:
    return {
        "holder_actor_id": str(holder_actor_id),
        "token_sha256": token_sha256(token).hex(),
        "token_prefix": token_public_prefix(token),
        "label": label,
        "expires_at": expires_at.isoformat() if expires_at else None,
    }


def _issued(token: str, holder_actor_id: UUID | str, result: dict[str, Any]) -> IssuedToken:
    return IssuedToken(
        token=token,
        token_id=UUID(result["token_id"]),
        token_prefix=result["token_prefix"],
        holder_actor_id=UUID(str(holder_actor_id)),
        event_id=UUID(result["event_id"]),
    )


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
    args = _issue_token_args(token, holder_actor_id, label, expires_at)
    result = await govern(conn, "issue_token", workspace_id, operator_actor_id, args)
    return _issued(token, holder_actor_id, result)


async def issue_token_with_token(
    db: Executor,
    operator_token_hash: bytes,
    holder_actor_id: UUID | str,
    *,
    workspace_id: str,
    label: str = "",
    expires_at: datetime | None = None,
) -> IssuedToken:
    """:func:`issue_token` by the operator whose token's SHA-256 is given (gateway role)."""
    token = new_token()
    args = _issue_token_args(token, holder_actor_id, label, expires_at)
    result = await write_with_token(
        db, "issue_token", operator_token_hash, args, workspace_id=workspace_id
    )
    return _issued(token, holder_actor_id, result)


async def erase_event_payload(
    conn: asyncpg.Connection, workspace_id: str, seq: int, reason: str
) -> None:
    """Replace one event's payload by a tombstone (lawful deletion); its digest stays chained."""
    await _call_void(conn, ERASE_PAYLOAD_SQL, workspace_id, seq, reason)


async def _call_void(db: Executor, sql: str, *params: Any) -> None:
    try:
        await fetch_in_transaction(db, sql, *params)
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc


# ------------------------------------------------------------------ the gateway's writes
# One or more writes of one workspace in one statement (migration 0060): each item admitted and
# performed (or its denial chained) in its own subtransaction, the chain head held by the whole
# group; one JSON object per item, in order: {rate, result} or {error}.
SUBMIT_GROUP_SQL = "SELECT isokron_api.submit_group($1, $2::bytea[], $3::jsonb)"
MAINTAIN_SQL = "SELECT isokron_api.maintain($1)"
HEALTH_SQL = "SELECT 1"

RECORD_DENIAL = "record_denial"


@dataclass(frozen=True, slots=True)
class Submitted:
    """What one submission did: the admission's answer and the write's (or denial's) result.

    When the call was not admitted, ``bucket`` names the quota it exceeded, ``code`` its
    refusal code and ``limit`` its limit; ``retry_after_seconds`` is None for a cap on state
    (open escalations), which no waiting lifts.
    """

    allowed: bool
    retry_after_seconds: int | None
    result: Mapping[str, Any] | None
    bucket: str | None = None
    code: str | None = None
    limit: int | None = None

    @property
    def event_id(self) -> str | None:
        return None if self.result is None else str(self.result.get("event_id"))


@dataclass(frozen=True, slots=True)
class Submission:
    """One gateway write as :func:`submit` takes it (see there)."""

    token_sha256: bytes
    quotas: Sequence[Mapping[str, Any]]
    op: str
    args: Mapping[str, Any]
    idempotency_key: str | None
    over_limit_denial: Mapping[str, Any]


def submit_group_args(workspace_id: str, items: Sequence[Submission]) -> tuple[Any, ...]:
    """The parameters of :data:`SUBMIT_GROUP_SQL` for ``items`` (all of ``workspace_id``)."""
    return (
        workspace_id,
        [bytes(i.token_sha256) for i in items],
        [
            {
                "quotas": list(i.quotas),
                "op": i.op,
                "args": dict(i.args),
                "key": i.idempotency_key,
                "denial": dict(i.over_limit_denial),
            }
            for i in items
        ],
    )


def item_outcome(entry: Mapping[str, Any]) -> Submitted | BaseException:
    """One item's answer from :data:`SUBMIT_GROUP_SQL`: its :class:`Submitted`, or the error
    it raised (rolled back alone), typed as :func:`translate` would have typed it."""
    error = entry.get("error")
    if error is not None:
        return from_sqlstate(str(error.get("sqlstate") or ""), str(error.get("message") or ""))
    rate = entry["rate"]
    retry = rate.get("retry_after_seconds")
    return Submitted(
        allowed=bool(rate["allowed"]),
        retry_after_seconds=None if retry is None else int(retry),
        result=entry.get("result"),
        bucket=rate.get("bucket"),
        code=rate.get("code"),
        limit=rate.get("limit"),
    )


async def submit_group(
    db: Executor, workspace_id: str, items: Sequence[Submission]
) -> list[Submitted | BaseException]:
    """Perform ``items`` (writes of ``workspace_id``) in one transaction and one commit.

    Returns one outcome per item, in order: a :class:`Submitted` or the error that item alone
    raised. Raises (translated) when the group's statement or its commit failed: then nothing
    of the group was committed.
    """
    try:
        entries = await fetch_in_transaction(
            db, SUBMIT_GROUP_SQL, *submit_group_args(workspace_id, items)
        )
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
    if not isinstance(entries, list) or len(entries) != len(items):
        raise SubstrateError("isokron_api.submit_group answered a different number of items")
    return [item_outcome(e) for e in entries]


async def submit(
    pool: asyncpg.Pool,
    *,
    workspace_id: str,
    token_sha256: bytes,
    quotas: Sequence[Mapping[str, Any]],
    op: str,
    args: Mapping[str, Any],
    idempotency_key: str | None,
    over_limit_denial: Mapping[str, Any],
) -> Submitted:
    """Admit the call against ``quotas`` and, if admitted, perform ``op`` with ``args``.

    Not admitted, ``over_limit_denial`` (``record_denial`` arguments) is chained instead (for
    the per-minute budget, for the first call over only). A group of one: the gateway's
    concurrent calls go through :class:`isokron.substrate.group_writes.GroupWriter`.

    Raises:
        RefusalError, NotFoundError, ConflictError: the substrate refused the operation.
        SubstrateError: the database failed.
    """
    item = Submission(token_sha256, quotas, op, args, idempotency_key, over_limit_denial)
    (outcome,) = await submit_group(pool, workspace_id, [item])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


async def maintain(pool: asyncpg.Pool, workspace_id: str | None = None) -> dict[str, Any]:
    """Close what is overdue (expired escalations and proposals, scratchpad past retention,
    stale idempotency keys) in one workspace or, with None, in all; returns the counts."""
    try:
        result = await fetch_in_transaction(pool, MAINTAIN_SQL, workspace_id)
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
    return dict(result or {})


async def ping(pool: asyncpg.Pool) -> None:
    """Round-trip to the database through the gateway role (the health check)."""
    try:
        await pool.fetchval(HEALTH_SQL)
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
