"""The reads: one module used by the provider, the gateway's read tools and the CLI.

Every read runs in a transaction that first sets ``app.current_workspace_id`` (row-level
security then shows that workspace alone). Reads take a connection, or a pool and borrow one.
The session context (:func:`read_session_parts`) and the provider's recall (:func:`recall_nodes`)
are one statement each: a SECURITY INVOKER function that sets the workspace for its own
transaction (migrations 0070, 0071), one round trip.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar
from uuid import UUID

import asyncpg
import blake3

from isokron.errors import (
    GovernanceIntegrityError,
    IdentityError,
    NoActiveRoleCharterError,
    RoleCharterIntegrityError,
)
from isokron.substrate import state_sql
from isokron.substrate.connection import SET_WORKSPACE_SQL
from isokron.substrate.database_errors import DRIVER_ERRORS, translate
from isokron.substrate.models import (
    ActiveConstitution,
    CapabilityRow,
    Escalation,
    IsoLink,
    IsoNode,
    KoraSessionContext,
    PolicyEntry,
    Proposal,
    RecentChainEvent,
    RoleCharter,
    ScratchpadEntry,
)

log = logging.getLogger("isokron.substrate.reads")

EXPECTED_POLICY_COUNT = 31
DEFAULT_SCRATCHPAD_LIMIT = 100
DEFAULT_RECENT_EVENT_LIMIT = 50
PAYLOAD_EXCERPT_CHARS = 300

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool
T = TypeVar("T")


@asynccontextmanager
async def scoped(db: Executor, workspace_id: str) -> AsyncIterator[asyncpg.Connection]:
    """Borrow a connection (if given a pool) and open a workspace-scoped read transaction."""
    if isinstance(db, asyncpg.Pool):
        try:
            # Borrowing may open a connection, which the server may refuse (too many clients).
            conn = await db.acquire()
        except DRIVER_ERRORS as exc:
            raise translate(exc) from exc
        try:
            async with _scoped_tx(conn, workspace_id) as c:
                yield c
        finally:
            await db.release(conn)
    else:
        async with _scoped_tx(db, workspace_id) as c:
            yield c


@asynccontextmanager
async def _scoped_tx(
    conn: asyncpg.Connection, workspace_id: str
) -> AsyncIterator[asyncpg.Connection]:
    try:
        async with conn.transaction(readonly=True):
            await conn.execute(SET_WORKSPACE_SQL, workspace_id)
            yield conn
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc


# ---------------------------------------------------------------- role charter (fail closed)
# Every read of identity and governance also re-computes the row's record and compares it with
# what its approving event (or the workspace's state attestation) recorded: ``verified``.
SELECT_ACTIVE_CHARTER_SQL = f"""
SELECT c.charter_id, c.version, c.content_md, c.content_jsonb, c.content_hash,
       {state_sql.verified_column("public.kora_role_charter", "c")}
FROM public.kora_role_charter c
{state_sql.approval_joins("c")}
WHERE c.workspace_id = $1 AND c.is_active
LIMIT 1
"""


async def read_active_role_charter(db: Executor, workspace_id: str) -> RoleCharter:
    """The active charter, verified: raises rather than return unverified text (invariant 4)."""
    async with scoped(db, workspace_id) as conn:
        row = await conn.fetchrow(SELECT_ACTIVE_CHARTER_SQL, workspace_id)
    return charter_from_row(workspace_id, row)


def charter_from_row(workspace_id: str, row: asyncpg.Record | None) -> RoleCharter:
    """Build a RoleCharter from its row, failing closed on absence, NULL or hash mismatch."""
    if row is None:
        raise NoActiveRoleCharterError(f"workspace {workspace_id!r} has no active role charter")
    md = row["content_md"]
    if md is None:
        raise RoleCharterIntegrityError(
            f"the active role charter of {workspace_id!r} (v{row['version']}) has NULL content"
        )
    actual = hashlib.sha256(md.encode("utf-8")).hexdigest()
    if actual != row["content_hash"]:
        raise RoleCharterIntegrityError(
            f"the active role charter of {workspace_id!r} (v{row['version']}) does not match its "
            f"SHA-256: stored {row['content_hash'][:16]}…, computed {actual[:16]}…"
        )
    if "verified" in row and not row["verified"]:
        raise RoleCharterIntegrityError(
            f"the active role charter of {workspace_id!r} (v{row['version']}) is not what the "
            "chain event that approved it records — it was changed outside the write operations"
        )
    doc = row["content_jsonb"]
    sections = (doc or {}).get("sections", {}) if isinstance(doc, dict) else {}
    return RoleCharter(
        workspace_id=workspace_id,
        charter_id=row["charter_id"],
        version=row["version"],
        content_md=md,
        identity=str(sections.get("identity", "")),
        authority_can_do=tuple(str(x) for x in sections.get("authority_can_do", [])),
        authority_cannot_do=tuple(str(x) for x in sections.get("authority_cannot_do", [])),
        content_hash=row["content_hash"],
    )


# ---------------------------------------------------------------- policy registry
SELECT_POLICIES_SQL = f"""
SELECT p.policy_key, p.policy_value, p.description,
       {state_sql.verified_column("public.kora_policy_registry", "p")}
FROM public.kora_policy_registry p
{state_sql.approval_joins("p")}
WHERE p.workspace_id = $1
ORDER BY p.policy_key
"""


async def read_policy_registry(db: Executor, workspace_id: str) -> tuple[PolicyEntry, ...]:
    """All policies of a workspace; a count other than 31 is logged as drift, not refused."""
    async with scoped(db, workspace_id) as conn:
        rows = await conn.fetch(SELECT_POLICIES_SQL, workspace_id)
    return policies_from_rows(workspace_id, rows)


# (workspace, count) pairs already warned about: drift is logged once, not on every read.
_DRIFT_WARNED: set[tuple[str, int]] = set()


def policies_from_rows(workspace_id: str, rows: list[asyncpg.Record]) -> tuple[PolicyEntry, ...]:
    _fail_closed_on_unverified(
        workspace_id, "policy", [r["policy_key"] for r in rows if not r["verified"]]
    )
    if len(rows) != EXPECTED_POLICY_COUNT and (workspace_id, len(rows)) not in _DRIFT_WARNED:
        _DRIFT_WARNED.add((workspace_id, len(rows)))
        log.warning(
            "[isokron.reads.policy_drift] workspace %s has %d policies, expected %d",
            workspace_id,
            len(rows),
            EXPECTED_POLICY_COUNT,
        )
    return tuple(PolicyEntry(r["policy_key"], r["policy_value"], r["description"]) for r in rows)


# ---------------------------------------------------------------- capability matrix
SELECT_CAPABILITY_ROW_SQL = f"""
SELECT m.cap_name, m.granted,
       {state_sql.verified_column("public.kora_capability_matrix", "m")}
FROM public.kora_capability_matrix m
{state_sql.approval_joins("m")}
WHERE m.workspace_id = $1 AND m.actor_kind = $2
"""


async def read_capability_row(
    db: Executor, workspace_id: str, actor_kind: str = "kora"
) -> CapabilityRow:
    """One actor kind's capabilities, from the substrate's matrix (the one source of truth)."""
    async with scoped(db, workspace_id) as conn:
        rows = await conn.fetch(SELECT_CAPABILITY_ROW_SQL, workspace_id, actor_kind)
    return capability_row_from_rows(workspace_id, actor_kind, rows)


def capability_row_from_rows(
    workspace_id: str, actor_kind: str, rows: list[asyncpg.Record]
) -> CapabilityRow:
    """Build a CapabilityRow, failing closed if any row is not what its event records."""
    _fail_closed_on_unverified(
        workspace_id,
        "capability",
        [f"{r['cap_name']}/{actor_kind}" for r in rows if not r["verified"]],
    )
    return CapabilityRow(actor_kind, {r["cap_name"]: r["granted"] for r in rows})


def _fail_closed_on_unverified(workspace_id: str, what: str, keys: list[str]) -> None:
    """Refuse to present governance a chain event does not vouch for (invariant 4)."""
    if not keys:
        return
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    log.error(
        "[isokron.reads.state_unverified] workspace %s: %s rows not matching their approving "
        "event: %s",
        workspace_id,
        what,
        shown,
    )
    raise GovernanceIntegrityError(
        f"workspace {workspace_id!r}: {what} {shown} does not match the chain event that "
        "approved it — changed outside the write operations; run `isokron verify`"
    )


# ---------------------------------------------------------------- scratchpad (warn on drift)
_SCRATCHPAD_COLUMNS = """
s.entry_id, s.actor_id, a.actor_kind, a.display_name AS actor_label, s.kind, s.visibility_scope,
s.summary, s.content, s.content_uri, s.content_hash, s.status, s.session_id, s.created_at,
s.approved_event_id
"""
SELECT_OWN_SCRATCHPAD_SQL = f"""
SELECT {_SCRATCHPAD_COLUMNS}
FROM kronicle.agent_scratchpad_entries s
JOIN public.actor_registry a ON a.workspace_id = s.workspace_id AND a.actor_id = s.actor_id
WHERE s.workspace_id = $1 AND a.actor_kind = $2 AND s.status = 'active'
ORDER BY s.created_at DESC
LIMIT $3
"""
SELECT_CROSS_AGENT_SCRATCHPAD_SQL = f"""
SELECT {_SCRATCHPAD_COLUMNS}
FROM kronicle.agent_scratchpad_entries s
JOIN public.actor_registry a ON a.workspace_id = s.workspace_id AND a.actor_id = s.actor_id
WHERE s.workspace_id = $1 AND a.actor_kind <> $2
  AND s.visibility_scope = 'cross_agent_dereferenceable' AND s.status = 'active'
ORDER BY s.created_at DESC
LIMIT $3
"""


async def read_own_scratchpad(
    db: Executor, workspace_id: str, actor_kind: str = "kora", limit: int = DEFAULT_SCRATCHPAD_LIMIT
) -> tuple[ScratchpadEntry, ...]:
    """The actor kind's own active entries, newest first."""
    async with scoped(db, workspace_id) as conn:
        rows = await conn.fetch(SELECT_OWN_SCRATCHPAD_SQL, workspace_id, actor_kind, limit)
    return tuple(scratchpad_entry_from_row(r) for r in rows)


async def read_cross_agent_scratchpad(
    db: Executor, workspace_id: str, actor_kind: str = "kora", limit: int = DEFAULT_SCRATCHPAD_LIMIT
) -> tuple[ScratchpadEntry, ...]:
    """Other actors' entries shared as ``cross_agent_dereferenceable``, newest first."""
    async with scoped(db, workspace_id) as conn:
        rows = await conn.fetch(SELECT_CROSS_AGENT_SCRATCHPAD_SQL, workspace_id, actor_kind, limit)
    return tuple(scratchpad_entry_from_row(r) for r in rows)


# Entries built from rows, by entry id, with the row they were built from: a session context
# re-read every TTL returns mostly the same entries, and an identical row gives an identical
# entry (drift included), so it is not hashed and built again. Bounded; shared by threads (one
# dict operation at a time).
_ENTRY_MEMO: dict[Any, tuple[tuple[Any, ...], ScratchpadEntry]] = {}
_ENTRY_MEMO_MAX = 4096


def scratchpad_entry_from_row(r: asyncpg.Record) -> ScratchpadEntry:
    """Build an entry, checking inline content against its BLAKE3 (warn-only, invariant 5)."""
    raw = tuple(r.values())
    memo = _ENTRY_MEMO.get(r["entry_id"])
    if memo is not None and memo[0] == raw:
        entry = memo[1]
        if entry.drifted:
            _log_drift(entry.entry_id)
        return entry
    entry = _build_scratchpad_entry(r)
    if len(_ENTRY_MEMO) >= _ENTRY_MEMO_MAX:
        _ENTRY_MEMO.clear()
    _ENTRY_MEMO[entry.entry_id] = (raw, entry)
    return entry


def _log_drift(entry_id: Any) -> None:
    log.warning(
        "[isokron.reads.scratchpad_drift] entry %s content does not match its BLAKE3 hash",
        entry_id,
    )


def _build_scratchpad_entry(r: asyncpg.Record) -> ScratchpadEntry:
    drifted = False
    if r["content_uri"] is None and r["content"] is not None:
        actual = blake3.blake3(r["content"].encode("utf-8")).hexdigest()
        if actual != r["content_hash"]:
            drifted = True
            _log_drift(r["entry_id"])
    return ScratchpadEntry(
        entry_id=r["entry_id"],
        actor_id=r["actor_id"],
        actor_kind=r["actor_kind"],
        actor_label=r["actor_label"],
        kind=r["kind"],
        visibility_scope=r["visibility_scope"],
        summary=r["summary"],
        content=r["content"],
        content_uri=r["content_uri"],
        content_hash=r["content_hash"],
        status=r["status"],
        session_id=r["session_id"],
        created_at=r["created_at"],
        approved_event_id=r["approved_event_id"],
        drifted=drifted,
    )


# ---------------------------------------------------------------- recent chain events
# Filtered by the workspace key itself: one shard on Citus, the primary key's order here.
SELECT_RECENT_EVENTS_SQL = """
SELECT el.event_id, el.seq, el.event_type, el.occurred_at, jsonb_pretty(el.payload) AS payload_text
FROM hivex_foundation.event_log el
WHERE el.workspace_id = $1 AND starts_with(el.event_type, $2)
ORDER BY el.seq DESC
LIMIT $3
"""


async def read_recent_events(
    db: Executor,
    workspace_id: str,
    *,
    prefix: str = "kora.",
    limit: int = DEFAULT_RECENT_EVENT_LIMIT,
) -> tuple[RecentChainEvent, ...]:
    """The newest events whose type starts with ``prefix``, payload cut to 300 characters."""
    async with scoped(db, workspace_id) as conn:
        rows = await conn.fetch(SELECT_RECENT_EVENTS_SQL, workspace_id, prefix, limit)
    return tuple(recent_event_from_row(r) for r in rows)


# Events built from rows, by event id, with the row they were built from (an event never
# changes; the row is compared anyway): the session context re-reads the same newest events.
_EVENT_MEMO: dict[Any, tuple[tuple[Any, ...], RecentChainEvent]] = {}
_EVENT_MEMO_MAX = 1024


def recent_event_from_row(r: asyncpg.Record) -> RecentChainEvent:
    raw = tuple(r.values())
    memo = _EVENT_MEMO.get(r["event_id"])
    if memo is not None and memo[0] == raw:
        return memo[1]
    event = _build_recent_event(r)
    if len(_EVENT_MEMO) >= _EVENT_MEMO_MAX:
        _EVENT_MEMO.clear()
    _EVENT_MEMO[event.event_id] = (raw, event)
    return event


def _build_recent_event(r: asyncpg.Record) -> RecentChainEvent:
    return RecentChainEvent(
        event_id=r["event_id"],
        seq=r["seq"],
        event_type=r["event_type"],
        occurred_at=r["occurred_at"],
        payload_excerpt=excerpt(r["payload_text"] or ""),
    )


def excerpt(text: str, limit: int = PAYLOAD_EXCERPT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit] + "…"


# ---------------------------------------------------------------- constitution
SELECT_ACTIVE_CONSTITUTION_SQL = """
SELECT revision_id, revision_number, rules, rules_hash
FROM kronicle.workspace_constitution_revisions
WHERE workspace_id = $1
ORDER BY revision_number DESC
LIMIT 1
"""


async def read_active_constitution(db: Executor, workspace_id: str) -> ActiveConstitution | None:
    """The highest revision, or None for a workspace that has none yet."""
    async with scoped(db, workspace_id) as conn:
        row = await conn.fetchrow(SELECT_ACTIVE_CONSTITUTION_SQL, workspace_id)
    return constitution_from_row(row)


def constitution_from_row(row: asyncpg.Record | None) -> ActiveConstitution | None:
    if row is None:
        return None
    return ActiveConstitution(
        revision_id=row["revision_id"],
        revision_number=row["revision_number"],
        rules=row["rules"],
        rules_hash_hex=bytes(row["rules_hash"]).hex(),
    )


# ---------------------------------------------------------------- iso nodes and links
_NODE_COLUMNS = """node_id, node_type, title, content, properties, status, superseded_by,
created_by, created_at, approved_event_id"""
SELECT_NODE_SQL = (
    f"SELECT {_NODE_COLUMNS} FROM kronicle.iso_nodes WHERE workspace_id = $1 AND node_id = $2"
)
SEARCH_NODES_SQL = f"""
SELECT {_NODE_COLUMNS}
FROM kronicle.iso_nodes
WHERE workspace_id = $1
  AND ($2::text IS NULL OR search_tsv @@ websearch_to_tsquery('simple', $2))
  AND ($3::text IS NULL OR node_type = $3)
  AND ($4 OR status = 'active')
ORDER BY created_at DESC
LIMIT $5
"""
SELECT_NODE_LINKS_SQL = """
SELECT link_id, from_node_id, to_node_id, link_type, properties, created_at
FROM kronicle.iso_links
WHERE workspace_id = $1 AND (from_node_id = $2 OR to_node_id = $2)
ORDER BY created_at
"""


def _node(r: asyncpg.Record) -> IsoNode:
    return IsoNode(**{k: r[k] for k in r.keys()})


async def read_iso_node(
    db: Executor, workspace_id: str, node_id: UUID
) -> tuple[IsoNode, tuple[IsoLink, ...]] | None:
    """A node and its links, or None if the workspace has no such node."""
    async with scoped(db, workspace_id) as conn:
        row = await conn.fetchrow(SELECT_NODE_SQL, workspace_id, node_id)
        if row is None:
            return None
        links = await conn.fetch(SELECT_NODE_LINKS_SQL, workspace_id, node_id)
    return _node(row), tuple(IsoLink(**{k: r[k] for k in r.keys()}) for r in links)


async def search_iso_nodes(
    db: Executor,
    workspace_id: str,
    query: str | None = None,
    *,
    node_type: str | None = None,
    include_superseded: bool = False,
    limit: int = 20,
) -> tuple[IsoNode, ...]:
    """Nodes whose title or content contain the words of ``query`` (full text, GIN-indexed)."""
    async with scoped(db, workspace_id) as conn:
        rows = await conn.fetch(
            SEARCH_NODES_SQL, workspace_id, query or None, node_type, include_superseded, limit
        )
    return tuple(_node(r) for r in rows)


# One statement (migration 0071): the same search of active nodes, scoped by the function.
RECALL_NODES_SQL = "SELECT * FROM isokron.recall_nodes($1, $2, $3)"


async def recall_nodes(
    db: Executor, workspace_id: str, query: str, *, limit: int = 5
) -> tuple[IsoNode, ...]:
    """Active nodes matching ``query`` (full text), newest first: :func:`search_iso_nodes` for
    active nodes, in one round trip (the provider's per-turn recall; reader role)."""
    try:
        rows = await db.fetch(RECALL_NODES_SQL, workspace_id, query, limit)
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
    return tuple(_node(r) for r in rows)


# ---------------------------------------------------------------- escalations and proposals
SELECT_ESCALATIONS_SQL = """
SELECT escalation_id, actor_id, tool, rule_id, reason, status, created_at, decided_at, decision_note
FROM kronicle.escalations
WHERE workspace_id = $1 AND ($2::text IS NULL OR status = $2)
ORDER BY created_at
LIMIT $3
"""
SELECT_PROPOSALS_SQL = """
SELECT 'convention' AS proposal_kind, proposal_id, actor_id, title, to_jsonb(body) AS detail,
       rationale, status, created_at
FROM kronicle.convention_proposals WHERE workspace_id = $1 AND ($2::text IS NULL OR status = $2)
UNION ALL
SELECT 'policy_change', proposal_id, actor_id, policy_key,
       jsonb_build_object('policy_key', policy_key, 'proposed_value', proposed_value),
       rationale, status, created_at
FROM kronicle.policy_change_proposals WHERE workspace_id = $1 AND ($2::text IS NULL OR status = $2)
ORDER BY created_at
LIMIT $3
"""


async def read_escalation_queue(
    db: Executor, workspace_id: str, *, status: str | None = "open", limit: int = 50
) -> tuple[Escalation, ...]:
    """Escalations (open ones by default), oldest first."""
    async with scoped(db, workspace_id) as conn:
        rows = await conn.fetch(SELECT_ESCALATIONS_SQL, workspace_id, status, limit)
    return tuple(Escalation(**{k: r[k] for k in r.keys()}) for r in rows)


SELECT_HELD_ESCALATIONS_SQL = """
SELECT e.escalation_id, e.actor_id, a.actor_kind, e.tool, e.rule_id, e.reason, e.status,
       e.request, e.created_at, e.decided_at, e.decision_note, e.result
FROM kronicle.escalations e
LEFT JOIN public.actor_registry a ON a.workspace_id = e.workspace_id AND a.actor_id = e.actor_id
WHERE e.workspace_id = $1 AND ($2::text IS NULL OR e.status = $2)
  AND ($3::uuid IS NULL OR e.escalation_id = $3)
ORDER BY e.created_at
LIMIT $4
"""


async def read_held_escalations(
    db: Executor,
    workspace_id: str,
    *,
    status: str | None = "open",
    escalation_id: UUID | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Escalations with the operation they hold (``request``: ``{op, args}``), for operators.

    Unredacted: callers that print them redact secrets first (the CLI does).
    """
    async with scoped(db, workspace_id) as conn:
        rows = await conn.fetch(
            SELECT_HELD_ESCALATIONS_SQL, workspace_id, status, escalation_id, limit
        )
    return [dict(r) for r in rows]


async def read_proposals(
    db: Executor, workspace_id: str, *, status: str | None = "pending", limit: int = 50
) -> tuple[Proposal, ...]:
    """Convention and policy-change proposals (pending by default), oldest first."""
    async with scoped(db, workspace_id) as conn:
        rows = await conn.fetch(SELECT_PROPOSALS_SQL, workspace_id, status, limit)
    return tuple(Proposal(**{k: r[k] for k in r.keys()}) for r in rows)


# ---------------------------------------------------------------- actors
SELECT_ACTORS_SQL = """
SELECT actor_id, actor_kind, display_name, status
FROM public.actor_registry WHERE workspace_id = $1 ORDER BY actor_kind, display_name
"""


async def read_actors(db: Executor, workspace_id: str) -> list[dict[str, Any]]:
    """The actors of a workspace."""
    async with scoped(db, workspace_id) as conn:
        rows = await conn.fetch(SELECT_ACTORS_SQL, workspace_id)
    return [dict(r) for r in rows]


async def actor_id_of_kind(db: Executor, workspace_id: str, actor_kind: str) -> UUID | None:
    """The first active actor of a kind (e.g. the workspace's operator)."""
    for actor in await read_actors(db, workspace_id):
        if actor["actor_kind"] == actor_kind and actor["status"] == "active":
            return UUID(str(actor["actor_id"]))
    return None


# ---------------------------------------------------------------- session context
# One statement, one round trip: isokron.session_context (migration 0070) sets the workspace for
# the statement's transaction and returns every part; row-level security applies (invoker
# rights). The checks of each part are the same functions as the single reads' above.
SESSION_CONTEXT_SQL = "SELECT * FROM isokron.session_context($1, $2, $3, $4, $5)"


@dataclass(frozen=True, slots=True)
class SessionParts:
    """The parts of a session context; a part refused as unverified holds its IdentityError."""

    charter: RoleCharter | IdentityError
    policies: tuple[PolicyEntry, ...] | IdentityError
    capabilities: CapabilityRow | IdentityError
    own_scratchpad: tuple[ScratchpadEntry, ...]
    cross_agent_scratchpad: tuple[ScratchpadEntry, ...]
    recent_events: tuple[RecentChainEvent, ...]
    constitution: ActiveConstitution | None


async def read_session_parts(
    db: Executor,
    workspace_id: str,
    *,
    actor_kind: str = "kora",
    scratchpad_limit: int = DEFAULT_SCRATCHPAD_LIMIT,
    event_limit: int = DEFAULT_RECENT_EVENT_LIMIT,
    limits_from_policy: bool = False,
) -> SessionParts:
    """Every part of the session context in one statement.

    ``limits_from_policy``: the scratchpad and event limits are the workspace's verified
    ``policy.kora_scratchpad_read_limit`` / ``policy.kora_recent_event_read_limit`` (whole
    numbers), else the limits given. Identity and governance parts that fail their checks are
    returned as their error (the caller fails closed); other failures raise.
    """
    try:
        row = await db.fetchrow(
            SESSION_CONTEXT_SQL,
            workspace_id,
            actor_kind,
            scratchpad_limit,
            event_limit,
            limits_from_policy,
        )
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
    assert row is not None
    return SessionParts(
        charter=_or_refusal(
            charter_from_row, workspace_id, _parsed(row["charter"], "content_jsonb")
        ),
        policies=_or_refusal(
            policies_from_rows, workspace_id, _all_parsed(row["policies"], "policy_value")
        ),
        capabilities=_or_refusal(
            lambda ws, rows: capability_row_from_rows(ws, actor_kind, rows),
            workspace_id,
            row["capabilities"],
        ),
        own_scratchpad=tuple(scratchpad_entry_from_row(r) for r in row["own_scratchpad"]),
        cross_agent_scratchpad=tuple(
            scratchpad_entry_from_row(r) for r in row["cross_agent_scratchpad"]
        ),
        recent_events=tuple(recent_event_from_row(r) for r in row["recent_events"]),
        constitution=constitution_from_row(_parsed(row["constitution"], "rules")),
    )


def _parsed(record: asyncpg.Record | None, json_field: str) -> dict[str, Any] | None:
    """A part's record as a dict with its JSONB field (sent as text) parsed."""
    if record is None:
        return None
    out = dict(record.items())
    text = out[json_field]
    out[json_field] = None if text is None else json.loads(text)
    return out


def _all_parsed(records: list[asyncpg.Record], json_field: str) -> list[dict[str, Any]]:
    """Parts' records as dicts with their JSONB field (sent as text) parsed: one json.loads
    for all of them (a policy registry is ~31 small values)."""
    texts = ("null" if r[json_field] is None else r[json_field] for r in records)
    values = json.loads("[" + ",".join(texts) + "]")
    out = []
    for record, value in zip(records, values, strict=True):
        part = dict(record.items())
        part[json_field] = value
        out.append(part)
    return out


def _or_refusal(build: Callable[[str, Any], T], workspace_id: str, value: Any) -> T | IdentityError:
    try:
        return build(workspace_id, value)
    except IdentityError as exc:
        return exc


async def assemble_session_context(
    pool: Executor, workspace_id: str, *, actor_kind: str = "kora"
) -> KoraSessionContext:
    """The load-bearing reads in one statement (:func:`read_session_parts`).

    A charter that fails its integrity check does not abort the others: the context carries
    ``role_charter=None`` and the reason, so the caller can fail closed loudly. Policies or
    capabilities that fail theirs raise :class:`GovernanceIntegrityError`.
    """
    parts = await read_session_parts(pool, workspace_id, actor_kind=actor_kind)
    for part in (parts.policies, parts.capabilities):
        if isinstance(part, BaseException):
            raise part
    identity_error = None
    charter: RoleCharter | None = None
    if isinstance(parts.charter, IdentityError):
        identity_error = str(parts.charter)
    else:
        charter = parts.charter
    constitution = parts.constitution
    return KoraSessionContext(
        workspace_id=workspace_id,
        assembled_at=datetime.now(UTC),
        role_charter=charter,
        identity_error=identity_error,
        policies=parts.policies,  # type: ignore[arg-type]
        capability_matrix_row=parts.capabilities,  # type: ignore[arg-type]
        own_scratchpad=parts.own_scratchpad,
        cross_agent_scratchpad=parts.cross_agent_scratchpad,
        recent_chain_events=parts.recent_events,
        active_constitution_revision_id=constitution.revision_id if constitution else None,
        active_constitution_rules_hash=constitution.rules_hash_hex if constitution else None,
    )
