"""The gateway's MCP tools: typed signatures and descriptions a model can act on.

Each tool's JSON schema comes from its signature (the SDK derives it from the types), its
description from its docstring. Every tool body hands its arguments to
``Gateway.call``, which runs the one pipeline (``isokron.gateway.service``); what each tool
writes or reads is in ``isokron.gateway.operations``.

Every tool takes ``workspace_id`` (optional; it must be the token's workspace) and every write
takes ``idempotency_key``. Refusals come back as tool errors ``[code] sentence`` with
``structuredContent.error.code`` (see ``isokron.gateway.results``).
"""

# No ``from __future__ import annotations`` here: the SDK reads these annotations at runtime.

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from isokron.gateway.arguments import TextKeepingMetadata
from isokron.governance.vocabulary import (
    EscalationDecision,
    EscalationStatus,
    ProposalDecision,
    ProposalKind,
    ProposalStatus,
    ScratchpadKind,
    Visibility,
)

if TYPE_CHECKING:
    from isokron.gateway.service import Gateway

WorkspaceId = Annotated[
    str | None,
    Field(
        description=(
            "Workspace to act on. Usually leave it out: it defaults to your token's workspace, "
            "and any other workspace is refused (workspace_mismatch)."
        )
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=200,
        description=(
            "A string unique to this write, e.g. a UUID. A retry with the same key and the same "
            "arguments returns the first result and writes nothing new; the same key with "
            "different arguments is refused (conflict)."
        ),
    ),
]
Properties = Annotated[
    dict[str, Any] | None,
    Field(description="Structured attributes as a JSON object (optional)."),
]
Note = Annotated[
    str | None, Field(description="Why you decided so; recorded with the decision (optional).")
]
Limit = Annotated[
    int | None,
    Field(
        ge=1,
        description=(
            "Most rows to return; the workspace's pull cap (policy.kora_output_size_cap_pull) "
            "applies. Default 50 (for iso_node_search: policy.kora_node_search_default_limit)."
        ),
    ),
]

_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def build_tools(gateway: "Gateway") -> list[Tool]:
    """The gateway's tools, bound to ``gateway``, ready for ``MCPServer(tools=...)``.

    Each family's builder below defines its tools as closures over ``gateway`` (the SDK builds a
    tool's schema from its signature, so each tool stays a typed function); the order here is
    the order ``tools/list`` returns.
    """
    return [
        *_event_tools(gateway),
        *_scratchpad_write_tools(gateway),
        *_agent_read_tools(gateway),
        *_proposal_tools(gateway),
        *_escalation_and_queue_tools(gateway),
        *_iso_node_tools(gateway),
        *_iso_revision_tools(gateway),
        *_operator_decision_tools(gateway),
        *_proof_tools(gateway),
    ]


def _event_tools(gateway: "Gateway") -> list[Tool]:
    """The chain write: append an event."""

    async def kora__append_event(
        ctx: Context,
        event_type: Annotated[
            str,
            Field(
                description=(
                    "Dotted lower-case event type such as 'kora.note.recorded'. governance.* "
                    "and gateway.* are reserved; the workspace constitution may deny or "
                    "escalate other types."
                )
            ),
        ],
        payload: Annotated[
            dict[str, Any] | None,
            Field(description="What happened, as a JSON object (optional; default {})."),
        ] = None,
        workspace_id: WorkspaceId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> CallToolResult:
        """Append an event to the workspace's tamper-evident chain, recording what you did and
        why. Returns event_id, seq and event_hash. Never put secrets in the payload: secret-shaped
        text is refused by the constitution."""
        return await gateway.call(
            "kora__append_event",
            _request(ctx),
            {
                "event_type": event_type,
                "payload": payload,
                "workspace_id": workspace_id,
                "idempotency_key": idempotency_key,
            },
        )

    return [_tool(kora__append_event, _WRITE)]


def _scratchpad_write_tools(gateway: "Gateway") -> list[Tool]:
    """The scratchpad write."""

    async def kora__write_agent_scratchpad(
        ctx: Context,
        kind: Annotated[ScratchpadKind, Field(description="What sort of note this is.")],
        summary: Annotated[
            str,
            Field(
                description=(
                    "One or two sentences saying what the entry holds; capped by "
                    "policy.kora_max_summary_bytes (2 KB by default)."
                )
            ),
        ],
        content: Annotated[
            str | None,
            Field(
                description=(
                    "The note itself, stored inline; its BLAKE3 hash is computed by the gateway. "
                    "Capped by policy.kora_max_scratchpad_content_bytes."
                )
            ),
        ] = None,
        content_uri: Annotated[
            str | None,
            Field(description="Where bigger content is stored, instead of content (optional)."),
        ] = None,
        content_hash: Annotated[
            str | None,
            Field(
                description=(
                    "BLAKE3 hex of the content. Needed only with content_uri; with content it "
                    "must match or the write is refused."
                )
            ),
        ] = None,
        visibility_scope: Annotated[
            Visibility | None,
            Field(
                description=(
                    "own_only (only your actor kind reads it) or cross_agent_dereferenceable "
                    "(other agents may read it). Default: the workspace's "
                    "policy.kora_scratchpad_default_visibility."
                )
            ),
        ] = None,
        session_id: Annotated[
            str | None, Field(description="The session the note belongs to (optional).")
        ] = None,
        workspace_id: WorkspaceId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> CallToolResult:
        """Write an entry to your agent scratchpad: working notes, plans, hypotheses and
        hand-offs that persist across sessions. Returns entry_id, event_id and the content_hash
        (BLAKE3) the gateway computed."""
        return await gateway.call(
            "kora__write_agent_scratchpad",
            _request(ctx),
            {
                "kind": kind,
                "summary": summary,
                "content": content,
                "content_uri": content_uri,
                "content_hash": content_hash,
                "visibility_scope": visibility_scope,
                "session_id": session_id,
                "workspace_id": workspace_id,
                "idempotency_key": idempotency_key,
            },
        )

    return [_tool(kora__write_agent_scratchpad, _WRITE)]


def _agent_read_tools(gateway: "Gateway") -> list[Tool]:
    """An agent's own reads: its scratchpad and its capability row."""

    async def kora__read_agent_scratchpad(
        ctx: Context,
        scope: Annotated[
            Literal["own", "cross_agent"],
            Field(
                description=(
                    "own: your actor kind's active entries; cross_agent: other agents' entries "
                    "they marked cross_agent_dereferenceable."
                )
            ),
        ] = "own",
        limit: Limit = None,
        workspace_id: WorkspaceId = None,
    ) -> CallToolResult:
        """Read scratchpad entries, newest first. An entry whose content no longer matches its
        BLAKE3 hash is returned with drifted=true."""
        return await gateway.call(
            "kora__read_agent_scratchpad",
            _request(ctx),
            {"scope": scope, "limit": limit, "workspace_id": workspace_id},
        )

    async def kora__read_kora_capability_row(
        ctx: Context, workspace_id: WorkspaceId = None
    ) -> CallToolResult:
        """Read your actor kind's row of the capability matrix: every capability of the
        workspace (49 by default), each granted or denied. Check it before attempting something
        you may not be allowed to do."""
        return await gateway.call(
            "kora__read_kora_capability_row", _request(ctx), {"workspace_id": workspace_id}
        )

    return [_tool(kora__read_agent_scratchpad, _READ), _tool(kora__read_kora_capability_row, _READ)]


def _proposal_tools(gateway: "Gateway") -> list[Tool]:
    """Proposals for an operator: a convention, a policy change."""

    async def kora__propose_convention(
        ctx: Context,
        title: Annotated[str, Field(description="Short name of the convention.")],
        body: Annotated[str, Field(description="The convention, stated so others can follow it.")],
        rationale: Annotated[
            str | None, Field(description="Why the workspace should adopt it (optional).")
        ] = None,
        workspace_id: WorkspaceId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> CallToolResult:
        """Propose a workspace convention for an operator to accept or reject. Returns
        proposal_id with status pending."""
        return await gateway.call(
            "kora__propose_convention",
            _request(ctx),
            {
                "title": title,
                "body": body,
                "rationale": rationale,
                "workspace_id": workspace_id,
                "idempotency_key": idempotency_key,
            },
        )

    async def kora__propose_policy_change(
        ctx: Context,
        policy_key: Annotated[
            str,
            Field(description="An existing policy key, e.g. 'policy.kora_rate_limit_per_minute'."),
        ],
        proposed_value: Annotated[
            Any, Field(description="The value you propose, as JSON (number, text, true/false ...).")
        ],
        rationale: Annotated[
            str | None, Field(description="Why the change is needed (optional).")
        ] = None,
        workspace_id: WorkspaceId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> CallToolResult:
        """Propose a change to one workspace policy. Nothing changes until an operator accepts
        the proposal. Returns proposal_id with status pending."""
        return await gateway.call(
            "kora__propose_policy_change",
            _request(ctx),
            {
                "policy_key": policy_key,
                "proposed_value": proposed_value,
                "rationale": rationale,
                "workspace_id": workspace_id,
                "idempotency_key": idempotency_key,
            },
        )

    return [_tool(kora__propose_convention, _WRITE), _tool(kora__propose_policy_change, _WRITE)]


def _escalation_and_queue_tools(gateway: "Gateway") -> list[Tool]:
    """Raising an escalation; reading the escalation and proposal queues."""

    async def kora__raise_escalation(
        ctx: Context,
        reason: Annotated[str, Field(description="What you need an operator to decide, and why.")],
        action: Annotated[
            str | None,
            Field(description="The action you would take if allowed (optional, short)."),
        ] = None,
        workspace_id: WorkspaceId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> CallToolResult:
        """Put a question on the escalation queue for an operator, e.g. when unsure whether an
        action is within your authority. Returns escalation_id with status open."""
        return await gateway.call(
            "kora__raise_escalation",
            _request(ctx),
            {
                "reason": reason,
                "action": action,
                "workspace_id": workspace_id,
                "idempotency_key": idempotency_key,
            },
        )

    async def kora__read_escalation_queue(
        ctx: Context,
        status: Annotated[
            Literal[EscalationStatus, "all"],
            Field(description="Which escalations to list (default open)."),
        ] = "open",
        limit: Limit = None,
        workspace_id: WorkspaceId = None,
    ) -> CallToolResult:
        """List escalations, oldest first: writes the constitution held for an operator, and
        questions raised with kora__raise_escalation, with their status and decision."""
        return await gateway.call(
            "kora__read_escalation_queue",
            _request(ctx),
            {"status": status, "limit": limit, "workspace_id": workspace_id},
        )

    async def kora__read_proposals(
        ctx: Context,
        status: Annotated[
            Literal[ProposalStatus, "all"],
            Field(description="Which proposals to list (default pending)."),
        ] = "pending",
        limit: Limit = None,
        workspace_id: WorkspaceId = None,
    ) -> CallToolResult:
        """List convention and policy-change proposals, oldest first, with their status."""
        return await gateway.call(
            "kora__read_proposals",
            _request(ctx),
            {"status": status, "limit": limit, "workspace_id": workspace_id},
        )

    return [
        _tool(kora__raise_escalation, _WRITE),
        _tool(kora__read_escalation_queue, _READ),
        _tool(kora__read_proposals, _READ),
    ]


def _iso_node_tools(gateway: "Gateway") -> list[Tool]:
    """The knowledge graph: create, get and search nodes."""

    async def iso_node_create(
        ctx: Context,
        node_type: Annotated[
            str,
            Field(
                description=(
                    "Kind of node: lower-case letters, digits, _ . or -, e.g. 'decision', "
                    "'fact', 'person'."
                )
            ),
        ],
        title: Annotated[str, Field(description="Short title (up to 500 characters).")],
        content: Annotated[str | None, Field(description="The node's text (optional).")] = None,
        properties: Properties = None,
        workspace_id: WorkspaceId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> CallToolResult:
        """Create a node in the workspace knowledge graph to record a fact, decision or source.
        Returns node_id and the event_id of its kora.node.created chain event."""
        return await gateway.call(
            "iso_node_create",
            _request(ctx),
            {
                "node_type": node_type,
                "title": title,
                "content": content,
                "properties": properties,
                "workspace_id": workspace_id,
                "idempotency_key": idempotency_key,
            },
        )

    async def iso_node_get(
        ctx: Context,
        node_id: Annotated[UUID, Field(description="The node's id.")],
        workspace_id: WorkspaceId = None,
    ) -> CallToolResult:
        """Get one knowledge-graph node with its links (both directions). A superseded node
        names its successor in superseded_by."""
        return await gateway.call(
            "iso_node_get", _request(ctx), {"node_id": node_id, "workspace_id": workspace_id}
        )

    async def iso_node_search(
        ctx: Context,
        query: Annotated[
            str | None,
            Field(description="Words to find (full text), or part of a title (optional)."),
        ] = None,
        node_type: Annotated[
            str | None, Field(description="Only nodes of this type (optional).")
        ] = None,
        include_superseded: Annotated[
            bool, Field(description="Also return superseded nodes (default false).")
        ] = False,
        limit: Limit = None,
        workspace_id: WorkspaceId = None,
    ) -> CallToolResult:
        """Search the workspace knowledge graph, newest first. Without a query, lists the
        newest active nodes."""
        return await gateway.call(
            "iso_node_search",
            _request(ctx),
            {
                "query": query,
                "node_type": node_type,
                "include_superseded": include_superseded,
                "limit": limit,
                "workspace_id": workspace_id,
            },
        )

    return [
        _tool(iso_node_create, _WRITE),
        _tool(iso_node_get, _READ),
        _tool(iso_node_search, _READ),
    ]


def _iso_revision_tools(gateway: "Gateway") -> list[Tool]:
    """The knowledge graph: supersede a node, link two nodes."""

    async def iso_node_supersede(
        ctx: Context,
        node_id: Annotated[UUID, Field(description="The active node to supersede.")],
        reason: Annotated[
            str | None, Field(description="Why the node is outdated (recommended).")
        ] = None,
        title: Annotated[
            str | None, Field(description="Title of the new node (default: the old title).")
        ] = None,
        content: Annotated[
            str | None, Field(description="Text of the new node (default: the old text).")
        ] = None,
        properties: Annotated[
            dict[str, Any] | None,
            Field(description="Properties of the new node (default: the old properties)."),
        ] = None,
        workspace_id: WorkspaceId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> CallToolResult:
        """Replace an outdated node with a new version. The old node is kept, marked superseded
        and pointed at the new one; history is never erased. Emits kora.node.superseded and
        returns the new node_id."""
        return await gateway.call(
            "iso_node_supersede",
            _request(ctx),
            {
                "node_id": node_id,
                "reason": reason,
                "title": title,
                "content": content,
                "properties": properties,
                "workspace_id": workspace_id,
                "idempotency_key": idempotency_key,
            },
        )

    async def iso_link_create(
        ctx: Context,
        from_node_id: Annotated[UUID, Field(description="The node the link starts at.")],
        to_node_id: Annotated[UUID, Field(description="The node the link points to.")],
        link_type: Annotated[
            str,
            Field(
                description=(
                    "Kind of link: lower-case letters, digits, _ . or -, e.g. 'supports', "
                    "'contradicts', 'derived_from'."
                )
            ),
        ],
        properties: Properties = None,
        workspace_id: WorkspaceId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> CallToolResult:
        """Link two knowledge-graph nodes with a typed link. Returns link_id."""
        return await gateway.call(
            "iso_link_create",
            _request(ctx),
            {
                "from_node_id": from_node_id,
                "to_node_id": to_node_id,
                "link_type": link_type,
                "properties": properties,
                "workspace_id": workspace_id,
                "idempotency_key": idempotency_key,
            },
        )

    return [_tool(iso_node_supersede, _WRITE), _tool(iso_link_create, _WRITE)]


def _operator_decision_tools(gateway: "Gateway") -> list[Tool]:
    """Operators' decisions on proposals and escalations."""

    async def kora__decide_proposal(
        ctx: Context,
        proposal_kind: Annotated[ProposalKind, Field(description="Which kind of proposal.")],
        proposal_id: Annotated[UUID, Field(description="The pending proposal's id.")],
        decision: Annotated[ProposalDecision, Field(description="The decision.")],
        note: Note = None,
        workspace_id: WorkspaceId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> CallToolResult:
        """Operators only: accept or reject a pending proposal. Accepting a policy change sets
        the policy."""
        return await gateway.call(
            "kora__decide_proposal",
            _request(ctx),
            {
                "proposal_kind": proposal_kind,
                "proposal_id": proposal_id,
                "decision": decision,
                "note": note,
                "workspace_id": workspace_id,
                "idempotency_key": idempotency_key,
            },
        )

    async def kora__decide_escalation(
        ctx: Context,
        escalation_id: Annotated[UUID, Field(description="The open escalation's id.")],
        decision: Annotated[EscalationDecision, Field(description="The decision.")],
        note: Note = None,
        workspace_id: WorkspaceId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> CallToolResult:
        """Operators only: approve or reject an open escalation. Approving a write the
        constitution held performs it, as the actor who asked for it."""
        return await gateway.call(
            "kora__decide_escalation",
            _request(ctx),
            {
                "escalation_id": escalation_id,
                "decision": decision,
                "note": note,
                "workspace_id": workspace_id,
                "idempotency_key": idempotency_key,
            },
        )

    return [_tool(kora__decide_proposal, _WRITE), _tool(kora__decide_escalation, _WRITE)]


def _proof_tools(gateway: "Gateway") -> list[Tool]:
    """Auditors' proofs against the signed log."""

    async def kora__prove_event_inclusion(
        ctx: Context,
        seq: Annotated[
            int, Field(ge=1, description="The event's seq in the chain (leaf index = seq - 1).")
        ],
        workspace_id: WorkspaceId = None,
    ) -> CallToolResult:
        """Auditors: an RFC 9162 inclusion proof that event `seq` is in the workspace's log,
        against the latest checkpoint the operator signed. Returns tree_size, leaf_index,
        leaf_hash, audit_path (lowercase hex) and the signed checkpoint; check it offline with
        `isokron verify-proof FILE --key VERIFIER_KEY`."""
        return await gateway.call(
            "kora__prove_event_inclusion",
            _request(ctx),
            {"seq": seq, "workspace_id": workspace_id},
        )

    async def kora__prove_log_consistency(
        ctx: Context,
        first: Annotated[
            int, Field(ge=1, description="Tree size of an earlier signed checkpoint.")
        ],
        second: Annotated[
            int | None,
            Field(ge=1, description="Tree size of a later signed checkpoint (default: latest)."),
        ] = None,
        workspace_id: WorkspaceId = None,
    ) -> CallToolResult:
        """Auditors: an RFC 9162 consistency proof that the log's tree at size `second` extends
        the one at size `first` (both checkpoints the operator signed, included)."""
        return await gateway.call(
            "kora__prove_log_consistency",
            _request(ctx),
            {"first": first, "second": second, "workspace_id": workspace_id},
        )

    return [_tool(kora__prove_event_inclusion, _READ), _tool(kora__prove_log_consistency, _READ)]


def _tool(fn: Callable[..., Any], annotations: ToolAnnotations) -> Tool:
    """One MCP tool from a typed function: its docstring as the description, its arguments
    validated by ``TextKeepingMetadata`` (see ``isokron.gateway.arguments``)."""
    tool = Tool.from_function(fn, description=_describe(fn.__doc__ or ""), annotations=annotations)
    meta = tool.fn_metadata
    tool.fn_metadata = TextKeepingMetadata(
        arg_model=meta.arg_model,
        output_schema=meta.output_schema,
        output_model=meta.output_model,
        wrap_output=meta.wrap_output,
    )
    return tool


def _request(ctx: Context) -> Any:
    """The transport's request behind a call (a Starlette request over HTTP; None on stdio)."""
    return ctx.request_context.request


def _describe(doc: str) -> str:
    """A docstring as one paragraph (models read descriptions as plain text)."""
    return " ".join(doc.split())
