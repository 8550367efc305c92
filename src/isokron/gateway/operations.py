"""What each gateway tool does, apart from how the MCP SDK sees it.

A :class:`ToolSpec` names a tool's capability (from ``defaults.TOOL_CAPABILITIES``) and says
how to turn its validated arguments into what the pipeline screens: for a write tool, the
substrate write operation and its arguments (:class:`Prepared`); for a read tool, a coroutine
that reads through the reader role.
``isokron.gateway.tools`` gives each spec its typed MCP signature.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

import asyncpg

from isokron.errors import NotFoundError
from isokron.gateway.auth import Principal
from isokron.gateway.governance import Governance
from isokron.substrate import reads, transparency, writes
from isokron.substrate.connection import translate_pg_error
from isokron.substrate.defaults import TOOL_CAPABILITIES

#: Arguments every tool takes that are not part of what it writes or reads.
CALL_ARGUMENTS = frozenset({"workspace_id", "idempotency_key"})
#: Rows a read returns when the caller gives no limit (the workspace's pull cap still applies).
DEFAULT_READ_LIMIT = 50


class ArgumentProblem(ValueError):
    """The arguments are well-typed but do not make sense together."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A call made ready for the pipeline.

    ``op``/``args`` are the substrate write operation and its arguments (writes), or None and
    the normalized tool arguments (reads). ``event_type`` is the chain event the write would
    append, which constitution rules match; ``inline_content``/``summary`` are capped apart.
    """

    op: str | None
    args: dict[str, Any]
    event_type: str | None = None
    inline_content: str | None = None
    summary: str | None = None


Preparer = Callable[[Mapping[str, Any], Governance], Prepared]
Reader = Callable[[asyncpg.Pool, Principal, Mapping[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One gateway tool: its capability and what it does."""

    name: str
    prepare: Preparer
    read: Reader | None = None

    @property
    def capability(self) -> str | None:
        return TOOL_CAPABILITIES.get(self.name)

    @property
    def writes(self) -> bool:
        return self.read is None


def _present(args: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """The named arguments that were given (not None), as a fresh dict."""
    return {k: args[k] for k in keys if args.get(k) is not None}


def _uuid(value: Any) -> str:
    return str(value) if isinstance(value, UUID) else str(UUID(str(value)))


# ------------------------------------------------------------------------------- writes


def prepare_append_event(args: Mapping[str, Any], _g: Governance) -> Prepared:
    event_type = args["event_type"]
    return Prepared(
        "append_event",
        {"event_type": event_type, "payload": dict(args.get("payload") or {})},
        event_type=event_type,
    )


def prepare_scratchpad(args: Mapping[str, Any], governance: Governance) -> Prepared:
    content = args.get("content")
    content_uri = args.get("content_uri")
    given_hash = args.get("content_hash")
    if content is None and content_uri is None:
        raise ArgumentProblem("give content, or content_uri with its content_hash.")
    if content is None and given_hash is None:
        raise ArgumentProblem("content_uri needs content_hash, the BLAKE3 hex of that content.")
    if content is not None and given_hash is not None:
        computed = writes.content_hash(content)
        if not hmac.compare_digest(computed, str(given_hash).lower()):
            raise ArgumentProblem(
                "content_hash does not match the BLAKE3 of content; leave it out and the "
                "gateway computes it."
            )
    op_args = writes.scratchpad_args(
        kind=args["kind"],
        summary=args["summary"],
        content=content,
        content_uri=content_uri,
        content_sha=None if given_hash is None else str(given_hash).lower(),
        visibility_scope=args.get("visibility_scope") or governance.default_visibility,
        session_id=args.get("session_id"),
    )
    return Prepared(
        "write_scratchpad_entry",
        op_args,
        event_type="kora.scratchpad.written",
        inline_content=content,
        summary=args["summary"],
    )


def prepare_propose_convention(args: Mapping[str, Any], _g: Governance) -> Prepared:
    return Prepared(
        "propose_convention",
        _present(args, "title", "body", "rationale"),
        event_type="kora.convention.proposed",
    )


def prepare_propose_policy_change(args: Mapping[str, Any], _g: Governance) -> Prepared:
    op_args = _present(args, "policy_key", "rationale")
    op_args["proposed_value"] = args.get("proposed_value")
    return Prepared("propose_policy_change", op_args, event_type="kora.policy_change.proposed")


def prepare_raise_escalation(args: Mapping[str, Any], _g: Governance) -> Prepared:
    request = _present(args, "action")
    return Prepared(
        "raise_escalation",
        {"tool": "kora__raise_escalation", "reason": args["reason"], "request": request},
        event_type="kora.escalation.raised",
    )


def prepare_node_create(args: Mapping[str, Any], _g: Governance) -> Prepared:
    return Prepared(
        "iso_node_create",
        _present(args, "node_type", "title", "content", "properties"),
        event_type="kora.node.created",
    )


def prepare_node_supersede(args: Mapping[str, Any], _g: Governance) -> Prepared:
    op_args = _present(args, "reason", "title", "content", "properties")
    op_args["node_id"] = _uuid(args["node_id"])
    return Prepared("iso_node_supersede", op_args, event_type="kora.node.superseded")


def prepare_link_create(args: Mapping[str, Any], _g: Governance) -> Prepared:
    op_args = _present(args, "link_type", "properties")
    op_args["from_node_id"] = _uuid(args["from_node_id"])
    op_args["to_node_id"] = _uuid(args["to_node_id"])
    return Prepared("iso_link_create", op_args, event_type="kora.link.created")


# Operator decisions are governance acts. The constitution's event-type rules govern what
# agents append (its default revision denies governance.*), so a decision is screened with no
# event type: its note is still screened for secrets and size.
def prepare_decide_proposal(args: Mapping[str, Any], _g: Governance) -> Prepared:
    op_args = _present(args, "proposal_kind", "decision", "note")
    op_args["proposal_id"] = _uuid(args["proposal_id"])
    return Prepared("decide_proposal", op_args)


def prepare_decide_escalation(args: Mapping[str, Any], _g: Governance) -> Prepared:
    op_args = _present(args, "decision", "note")
    op_args["escalation_id"] = _uuid(args["escalation_id"])
    return Prepared("decide_escalation", op_args)


# -------------------------------------------------------------------------------- reads


def _limited(args: Mapping[str, Any], governance: Governance, default: int) -> Prepared:
    read_args = {k: v for k, v in args.items() if k not in CALL_ARGUMENTS}
    if "limit" in read_args:
        limit = read_args["limit"] or default
        read_args["limit"] = max(1, min(int(limit), max(governance.output_cap, 1)))
    return Prepared(None, read_args)


def prepare_read(args: Mapping[str, Any], governance: Governance) -> Prepared:
    """Read arguments; a missing ``limit`` is DEFAULT_READ_LIMIT, capped by the pull cap."""
    return _limited(args, governance, DEFAULT_READ_LIMIT)


def prepare_search(args: Mapping[str, Any], governance: Governance) -> Prepared:
    """Search arguments; a missing ``limit`` is policy.kora_node_search_default_limit."""
    return _limited(args, governance, governance.search_default_limit or DEFAULT_READ_LIMIT)


async def read_capability_row(
    pool: asyncpg.Pool, principal: Principal, _args: Mapping[str, Any]
) -> dict[str, Any]:
    row = await reads.read_capability_row(pool, principal.workspace_id, principal.actor_kind)
    return {
        "actor_kind": row.actor_kind,
        "count": len(row.capabilities),
        "granted": list(row.granted),
        "denied": list(row.denied),
        "capabilities": dict(sorted(row.capabilities.items())),
    }


def _status(value: Any) -> str | None:
    return None if value in (None, "all") else str(value)


async def read_escalation_queue(
    pool: asyncpg.Pool, principal: Principal, args: Mapping[str, Any]
) -> dict[str, Any]:
    items = await reads.read_escalation_queue(
        pool, principal.workspace_id, status=_status(args.get("status")), limit=args["limit"]
    )
    return {"count": len(items), "escalations": [asdict(e) for e in items]}


async def read_proposals(
    pool: asyncpg.Pool, principal: Principal, args: Mapping[str, Any]
) -> dict[str, Any]:
    items = await reads.read_proposals(
        pool, principal.workspace_id, status=_status(args.get("status")), limit=args["limit"]
    )
    return {"count": len(items), "proposals": [asdict(p) for p in items]}


async def read_node(
    pool: asyncpg.Pool, principal: Principal, args: Mapping[str, Any]
) -> dict[str, Any]:
    node_id = UUID(_uuid(args["node_id"]))
    found = await reads.read_iso_node(pool, principal.workspace_id, node_id)
    if found is None:
        raise NotFoundError(f"no iso node {node_id} in this workspace")
    node, links = found
    return {"node": asdict(node), "links": [asdict(link) for link in links]}


async def search_nodes(
    pool: asyncpg.Pool, principal: Principal, args: Mapping[str, Any]
) -> dict[str, Any]:
    nodes = await reads.search_iso_nodes(
        pool,
        principal.workspace_id,
        args.get("query"),
        node_type=args.get("node_type"),
        include_superseded=bool(args.get("include_superseded")),
        limit=args["limit"],
    )
    return {"count": len(nodes), "nodes": [asdict(n) for n in nodes]}


async def read_scratchpad(
    pool: asyncpg.Pool, principal: Principal, args: Mapping[str, Any]
) -> dict[str, Any]:
    scope = args.get("scope") or "own"
    read = (
        reads.read_cross_agent_scratchpad if scope == "cross_agent" else reads.read_own_scratchpad
    )
    entries = await read(pool, principal.workspace_id, principal.actor_kind, args["limit"])
    return {"scope": scope, "count": len(entries), "entries": [asdict(e) for e in entries]}


async def prove_event_inclusion(
    pool: asyncpg.Pool, principal: Principal, args: Mapping[str, Any]
) -> dict[str, Any]:
    """Inclusion proof of one event against the latest checkpoint the log signed."""
    workspace_id = principal.workspace_id
    try:
        async with pool.acquire() as conn:
            checkpoint = await transparency.latest_checkpoint(conn, workspace_id)
            return await transparency.prove_inclusion(
                conn, workspace_id, int(args["seq"]), checkpoint
            )
    except asyncpg.PostgresError as exc:
        raise translate_pg_error(exc) from exc


async def prove_log_consistency(
    pool: asyncpg.Pool, principal: Principal, args: Mapping[str, Any]
) -> dict[str, Any]:
    """Consistency proof between two checkpoints the log signed (default: to the latest)."""
    workspace_id = principal.workspace_id
    try:
        async with pool.acquire() as conn:
            first = await transparency.stored_checkpoint(conn, workspace_id, int(args["first"]))
            second: transparency.StoredCheckpoint | None
            if args.get("second") is None:
                second = await transparency.latest_checkpoint(conn, workspace_id)
            else:
                second = await transparency.stored_checkpoint(
                    conn, workspace_id, int(args["second"])
                )
            if first is None or second is None:
                missing = args["first"] if first is None else args.get("second")
                raise NotFoundError(
                    f"the log signed no checkpoint at tree size {missing}; proofs go between "
                    "signed checkpoints"
                )
            return await transparency.prove_consistency(conn, workspace_id, first, second)
    except asyncpg.PostgresError as exc:
        raise translate_pg_error(exc) from exc


# ---------------------------------------------------------------------------- registry

SPECS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec("kora__append_event", prepare_append_event),
        ToolSpec("kora__write_agent_scratchpad", prepare_scratchpad),
        ToolSpec("kora__read_agent_scratchpad", prepare_read, read_scratchpad),
        ToolSpec("kora__read_kora_capability_row", prepare_read, read_capability_row),
        ToolSpec("kora__propose_convention", prepare_propose_convention),
        ToolSpec("kora__propose_policy_change", prepare_propose_policy_change),
        ToolSpec("kora__raise_escalation", prepare_raise_escalation),
        ToolSpec("kora__read_escalation_queue", prepare_read, read_escalation_queue),
        ToolSpec("kora__read_proposals", prepare_read, read_proposals),
        ToolSpec("iso_node_create", prepare_node_create),
        ToolSpec("iso_node_get", prepare_read, read_node),
        ToolSpec("iso_node_search", prepare_search, search_nodes),
        ToolSpec("iso_node_supersede", prepare_node_supersede),
        ToolSpec("iso_link_create", prepare_link_create),
        ToolSpec("kora__decide_proposal", prepare_decide_proposal),
        ToolSpec("kora__decide_escalation", prepare_decide_escalation),
        ToolSpec("kora__prove_event_inclusion", prepare_read, prove_event_inclusion),
        ToolSpec("kora__prove_log_consistency", prepare_read, prove_log_consistency),
    )
}
