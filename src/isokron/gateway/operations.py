"""What each gateway tool does, apart from how the MCP SDK sees it.

A :class:`ToolSpec` names a tool's capability (from ``isokron.governance.operations``) and says
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
from pydantic import ValidationError

from isokron.errors import NotFoundError
from isokron.gateway.auth import Principal
from isokron.gateway.governance import Governance
from isokron.governance import arguments as a
from isokron.governance.arguments import OperationArguments, describe_validation_error
from isokron.governance.operations import DEFAULT_READ_LIMIT, TOOLS, tool_capability
from isokron.substrate import reads, writes

#: Arguments every tool takes that are not part of what it writes or reads.
CALL_ARGUMENTS = frozenset({"workspace_id", "idempotency_key"})


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
        return tool_capability(self.name)

    @property
    def writes(self) -> bool:
        return TOOLS[self.name].writes


def _typed(model: type[OperationArguments], **fields: Any) -> dict[str, Any]:
    """The operation's arguments in their one typed shape (``isokron.governance.arguments``),
    as the JSON the SQL operation receives; None fields are left to the model's defaults
    (except those whose null is a value, ``keep_null``)."""
    given = {k: v for k, v in fields.items() if v is not None or k in model.keep_null}
    try:
        typed = model.model_validate(given)
    except ValidationError as exc:
        raise ArgumentProblem(describe_validation_error(exc)) from None
    return typed.sql_args()


# ------------------------------------------------------------------------------- writes


def prepare_append_event(args: Mapping[str, Any], _g: Governance) -> Prepared:
    event_type = args["event_type"]
    return Prepared(
        "append_event",
        _typed(a.AppendEventArgs, event_type=event_type, payload=dict(args.get("payload") or {})),
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
    digest = None if given_hash is None else str(given_hash).lower()
    if content is not None:
        computed = writes.content_hash(content)
        if digest is not None and not hmac.compare_digest(computed, digest):
            raise ArgumentProblem(
                "content_hash does not match the BLAKE3 of content; leave it out and the "
                "gateway computes it."
            )
        digest = computed
    op_args = _typed(
        a.WriteScratchpadEntryArgs,
        kind=args["kind"],
        summary=args["summary"],
        content=content,
        content_uri=content_uri,
        content_hash=digest,
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
        _typed(
            a.ProposeConventionArgs,
            title=args.get("title"),
            body=args.get("body"),
            rationale=args.get("rationale"),
        ),
        event_type="kora.convention.proposed",
    )


def prepare_propose_policy_change(args: Mapping[str, Any], _g: Governance) -> Prepared:
    op_args = _typed(
        a.ProposePolicyChangeArgs,
        policy_key=args.get("policy_key"),
        rationale=args.get("rationale"),
        proposed_value=args.get("proposed_value"),
    )
    return Prepared("propose_policy_change", op_args, event_type="kora.policy_change.proposed")


def prepare_raise_escalation(args: Mapping[str, Any], _g: Governance) -> Prepared:
    request = {"action": args["action"]} if args.get("action") is not None else {}
    return Prepared(
        "raise_escalation",
        _typed(
            a.RaiseEscalationArgs,
            tool="kora__raise_escalation",
            reason=args["reason"],
            request=request,
        ),
        event_type="kora.escalation.raised",
    )


def prepare_node_create(args: Mapping[str, Any], _g: Governance) -> Prepared:
    return Prepared(
        "iso_node_create",
        _typed(
            a.IsoNodeCreateArgs,
            node_type=args.get("node_type"),
            title=args.get("title"),
            content=args.get("content"),
            properties=args.get("properties"),
        ),
        event_type="kora.node.created",
    )


def prepare_node_supersede(args: Mapping[str, Any], _g: Governance) -> Prepared:
    return Prepared(
        "iso_node_supersede",
        _typed(
            a.IsoNodeSupersedeArgs,
            node_id=args["node_id"],
            reason=args.get("reason"),
            title=args.get("title"),
            content=args.get("content"),
            properties=args.get("properties"),
        ),
        event_type="kora.node.superseded",
    )


def prepare_link_create(args: Mapping[str, Any], _g: Governance) -> Prepared:
    return Prepared(
        "iso_link_create",
        _typed(
            a.IsoLinkCreateArgs,
            from_node_id=args["from_node_id"],
            to_node_id=args["to_node_id"],
            link_type=args.get("link_type"),
            properties=args.get("properties"),
        ),
        event_type="kora.link.created",
    )


# Operator decisions are governance acts. The constitution's event-type rules govern what
# agents append (its default revision denies governance.*), so a decision is screened with no
# event type: its note is still screened for secrets and size.
def prepare_decide_proposal(args: Mapping[str, Any], _g: Governance) -> Prepared:
    return Prepared(
        "decide_proposal",
        _typed(
            a.DecideProposalArgs,
            proposal_kind=args.get("proposal_kind"),
            proposal_id=args["proposal_id"],
            decision=args.get("decision"),
            note=args.get("note"),
        ),
    )


def prepare_decide_escalation(args: Mapping[str, Any], _g: Governance) -> Prepared:
    return Prepared(
        "decide_escalation",
        _typed(
            a.DecideEscalationArgs,
            escalation_id=args["escalation_id"],
            decision=args.get("decision"),
            note=args.get("note"),
        ),
    )


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
    node_id = UUID(str(args["node_id"]))
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
    )
}
