"""The tools the provider gives the model: the knowledge graph, the scratchpad, the escalations.

Schemas are in Hermes's (OpenAI function) format; every result is a JSON string. Reads go
straight to the substrate through the reader role, after checking the capability in the
workspace's own capability matrix (fail closed: no row, no read). Writes are gateway calls, so
the gateway authorizes, screens and chains them; a refusal comes back to the model as
``{"error": ..., "code": ...}``. No name here is one of Hermes's core tools (``memory``,
``todo``, ``session_search``, ...): the node and link tools keep the gateway's names, and the
others start with ``kora_``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from isokron.errors import IsoKronError
from isokron.governance.operations import DEFAULT_READ_LIMIT, MODEL_TOOLS
from isokron.governance.policies import OUTPUT_CAP, POLICIES
from isokron.governance.vocabulary import SCRATCHPAD_KINDS, VISIBILITY_SCOPES
from isokron.provider import cache as names
from isokron.provider.errors import GatewayRefusedError, GatewayUnavailableError
from isokron.provider.reader import SubstrateReader
from isokron.provider.writes import (
    WRITE_SCRATCHPAD_TOOL,
    ChainWriter,
    cap_content,
    new_idempotency_key,
    summarize_for_scratchpad,
)
from isokron.substrate import reads
from isokron.substrate.models import CapabilityRow, PolicyEntry

log = logging.getLogger("isokron.provider.tools")

DEFAULT_LIMIT = DEFAULT_READ_LIMIT
PULL_CAP_POLICY = OUTPUT_CAP
DEFAULT_PULL_CAP = int(POLICIES[OUTPUT_CAP].default)
READ_CONTENT_CHARS = 2000

_PROPERTIES = {
    "type": "object",
    "description": "Optional JSON properties",
    "additionalProperties": True,
}
_NODE_ID = {"type": "string", "description": "UUID of an iso node"}
_LIMIT = {
    "type": "integer",
    "minimum": 1,
    "description": f"Most results to return (default {DEFAULT_LIMIT})",
}


def _schema(
    name: str, description: str, properties: dict[str, Any], required: Iterable[str] = ()
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": list(required)},
    }


TOOL_SCHEMAS: tuple[dict[str, Any], ...] = (
    _schema(
        "iso_node_create",
        "Record a fact, decision or source as a node of the workspace knowledge graph (IsoKron). "
        "The write is authorized, screened and chained by the IsoKron gateway.",
        {
            "node_type": {
                "type": "string",
                "description": "lower-case type, e.g. decision, fact, source",
            },
            "title": {"type": "string", "description": "short title (at most 500 characters)"},
            "content": {"type": "string", "description": "the node's text"},
            "properties": _PROPERTIES,
        },
        ("node_type", "title"),
    ),
    _schema(
        "iso_node_get",
        "Read one node of the IsoKron knowledge graph with its links.",
        {"node_id": _NODE_ID},
        ("node_id",),
    ),
    _schema(
        "iso_node_search",
        "Search the IsoKron knowledge graph by words (full text) and/or node type; newest first.",
        {
            "query": {"type": "string", "description": "words to look for"},
            "node_type": {"type": "string", "description": "only nodes of this type"},
            "include_superseded": {"type": "boolean", "description": "also superseded nodes"},
            "limit": _LIMIT,
        },
    ),
    _schema(
        "iso_node_supersede",
        "Replace an outdated node by a new version (the old one is kept, marked superseded).",
        {
            "node_id": _NODE_ID,
            "reason": {"type": "string", "description": "why the node is outdated"},
            "title": {"type": "string", "description": "new title (default: unchanged)"},
            "content": {"type": "string", "description": "new content (default: unchanged)"},
            "properties": _PROPERTIES,
        },
        ("node_id", "reason"),
    ),
    _schema(
        "iso_link_create",
        "Link two nodes of the IsoKron knowledge graph with a typed link (e.g. supports, cites).",
        {
            "from_node_id": _NODE_ID,
            "to_node_id": _NODE_ID,
            "link_type": {"type": "string", "description": "lower-case link type, e.g. supports"},
            "properties": _PROPERTIES,
        },
        ("from_node_id", "to_node_id", "link_type"),
    ),
    _schema(
        "kora_scratchpad_read",
        "Read your IsoKron scratchpad (own working notes) and/or notes other agents shared.",
        {
            "scope": {
                "type": "string",
                "enum": ["own", "cross_agent", "both"],
                "description": "default: both",
            },
            "limit": _LIMIT,
        },
    ),
    _schema(
        "kora_scratchpad_write",
        "Write a working note to your IsoKron scratchpad (chained; content is BLAKE3-hashed).",
        {
            "kind": {"type": "string", "enum": list(SCRATCHPAD_KINDS)},
            "summary": {"type": "string", "description": "one-paragraph summary (capped at 2 KB)"},
            "content": {"type": "string", "description": "the full note"},
            "visibility_scope": {
                "type": "string",
                "enum": list(VISIBILITY_SCOPES),
                "description": "own_only (default) or cross_agent_dereferenceable to share it",
            },
        },
        ("kind", "summary", "content"),
    ),
    _schema(
        "kora_escalation_queue_read",
        "Read the workspace's escalation queue (items waiting for an operator's decision).",
        {
            "status": {"type": "string", "description": "open (default), decided, or all"},
            "limit": _LIMIT,
        },
    ),
)
TOOL_NAMES = frozenset(s["name"] for s in TOOL_SCHEMAS)
#: Read tools -> the capability the workspace's matrix must grant Kora.
READ_CAPABILITIES = {t.name: t.capability for t in MODEL_TOOLS.values() if not t.writes}


class ToolArgumentError(IsoKronError):
    """The model called a tool with a missing or malformed argument."""


@dataclass(slots=True)
class ToolContext:
    """What a tool call needs from the provider."""

    workspace_id: str
    session_id: str
    reader: SubstrateReader
    writer: ChainWriter
    writes_allowed: bool
    invalidate: Callable[[Iterable[str]], None]


def handle(ctx: ToolContext, name: str, args: dict[str, Any]) -> str:
    """Run one tool call and return its JSON result (errors included); never raises."""
    try:
        handler = _HANDLERS.get(name)
        if handler is None:
            return error_result(f"unknown IsoKron tool {name!r}", "invalid_argument")
        capability = READ_CAPABILITIES.get(name)
        if capability is not None:
            refusal = _capability_refusal(ctx, capability)
            if refusal is not None:
                return refusal
        return json.dumps(handler(ctx, args or {}), ensure_ascii=False, default=_json_default)
    except ToolArgumentError as exc:
        return error_result(str(exc), "invalid_argument")
    except GatewayRefusedError as exc:
        return error_result(exc.message, exc.code)
    except GatewayUnavailableError as exc:
        return error_result(f"the IsoKron gateway is unavailable: {exc}", "unavailable")
    except IsoKronError as exc:
        return error_result(str(exc), getattr(exc, "code", "unavailable"))
    except TimeoutError:
        return error_result(
            "the IsoKron substrate did not answer in time; try again shortly", "unavailable"
        )


# ---------------------------------------------------------------------- reads
def _iso_node_get(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    node_id = _uuid(args, "node_id")
    found = ctx.reader.run(
        ctx.workspace_id, lambda pool: reads.read_iso_node(pool, ctx.workspace_id, node_id)
    )
    if found is None:
        return {"error": f"no iso node {node_id} in this workspace", "code": "not_found"}
    node, links = found
    return {"node": _plain(node), "links": [_plain(link) for link in links]}


def _iso_node_search(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    query = _opt_str(args, "query")
    node_type = _opt_str(args, "node_type")
    include = bool(args.get("include_superseded", False))
    limit = _limit(ctx, args)
    nodes = ctx.reader.run(
        ctx.workspace_id,
        lambda pool: reads.search_iso_nodes(
            pool,
            ctx.workspace_id,
            query,
            node_type=node_type,
            include_superseded=include,
            limit=limit,
        ),
    )
    return {"count": len(nodes), "nodes": [_plain(n) for n in nodes]}


def _scratchpad_read(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    scope = _opt_str(args, "scope") or "both"
    if scope not in ("own", "cross_agent", "both"):
        raise ToolArgumentError("scope must be own, cross_agent or both")
    limit = _limit(ctx, args)
    result: dict[str, Any] = {}
    if scope in ("own", "both"):
        own = ctx.reader.run(
            ctx.workspace_id,
            lambda pool: reads.read_own_scratchpad(pool, ctx.workspace_id, "kora", limit),
        )
        result["own"] = [_entry(e) for e in own]
    if scope in ("cross_agent", "both"):
        refusal = _capability_refusal(ctx, "cap_read_cross_agent_scratchpad")
        if refusal is not None and scope == "cross_agent":
            return json.loads(refusal)
        if refusal is None:
            cross = ctx.reader.run(
                ctx.workspace_id,
                lambda pool: reads.read_cross_agent_scratchpad(
                    pool, ctx.workspace_id, "kora", limit
                ),
            )
            result["cross_agent"] = [_entry(e) for e in cross]
    return result


def _escalations(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    status = _opt_str(args, "status") or "open"
    limit = _limit(ctx, args)
    wanted = None if status == "all" else status
    items = ctx.reader.run(
        ctx.workspace_id,
        lambda pool: reads.read_escalation_queue(
            pool, ctx.workspace_id, status=wanted, limit=limit
        ),
    )
    return {"count": len(items), "escalations": [_plain(e) for e in items]}


# ---------------------------------------------------------------------- writes (gateway)
def _gateway_write(
    ctx: ToolContext, tool: str, arguments: dict[str, Any], what: str
) -> dict[str, Any]:
    if not ctx.writes_allowed:
        return {
            "error": "this agent context may not write to IsoKron (only the primary agent writes)",
            "code": "capability_denied",
        }
    payload = {
        "workspace_id": ctx.workspace_id,
        **{k: v for k, v in arguments.items() if v is not None},
        "idempotency_key": new_idempotency_key(f"tool:{tool}"),
    }
    stale = _INVALIDATES.get(tool, (names.EVENTS,))
    ctx.invalidate(stale)  # before and after: a write that timed out may still have landed
    try:
        return ctx.writer.call(tool, payload, what=what)
    finally:
        ctx.invalidate(stale)


def _iso_node_create(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return _gateway_write(
        ctx,
        "iso_node_create",
        {
            "node_type": _str(args, "node_type"),
            "title": _str(args, "title"),
            "content": _opt_str(args, "content") or "",
            "properties": _opt_dict(args, "properties"),
        },
        "iso_node_create (model tool)",
    )


def _iso_node_supersede(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return _gateway_write(
        ctx,
        "iso_node_supersede",
        {
            "node_id": str(_uuid(args, "node_id")),
            "reason": _str(args, "reason"),
            "title": _opt_str(args, "title"),
            "content": _opt_str(args, "content"),
            "properties": _opt_dict(args, "properties"),
        },
        "iso_node_supersede (model tool)",
    )


def _iso_link_create(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return _gateway_write(
        ctx,
        "iso_link_create",
        {
            "from_node_id": str(_uuid(args, "from_node_id")),
            "to_node_id": str(_uuid(args, "to_node_id")),
            "link_type": _str(args, "link_type"),
            "properties": _opt_dict(args, "properties"),
        },
        "iso_link_create (model tool)",
    )


def _scratchpad_write(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    kind = _str(args, "kind")
    if kind not in SCRATCHPAD_KINDS:
        raise ToolArgumentError(f"kind must be one of {', '.join(SCRATCHPAD_KINDS)}")
    scope = _opt_str(args, "visibility_scope") or "own_only"
    if scope not in VISIBILITY_SCOPES:
        raise ToolArgumentError(f"visibility_scope must be one of {', '.join(VISIBILITY_SCOPES)}")
    return _gateway_write(
        ctx,
        WRITE_SCRATCHPAD_TOOL,
        {
            "kind": kind,
            "summary": summarize_for_scratchpad(_str(args, "summary")),
            "content": cap_content(_str(args, "content")),
            "visibility_scope": scope,
            "session_id": ctx.session_id or None,
        },
        f"scratchpad {kind} (model tool)",
    )


_INVALIDATES: dict[str, tuple[str, ...]] = {
    WRITE_SCRATCHPAD_TOOL: (names.OWN_SCRATCHPAD, names.EVENTS),
}
_HANDLERS: dict[str, Callable[[ToolContext, dict[str, Any]], dict[str, Any]]] = {
    "iso_node_create": _iso_node_create,
    "iso_node_get": _iso_node_get,
    "iso_node_search": _iso_node_search,
    "iso_node_supersede": _iso_node_supersede,
    "iso_link_create": _iso_link_create,
    "kora_scratchpad_read": _scratchpad_read,
    "kora_scratchpad_write": _scratchpad_write,
    "kora_escalation_queue_read": _escalations,
}


# ---------------------------------------------------------------------- helpers
def _capability_refusal(ctx: ToolContext, capability: str) -> str | None:
    row = ctx.reader.value(ctx.workspace_id, names.CAPABILITIES)
    if not isinstance(row, CapabilityRow):
        return error_result(
            "the capability row could not be read, so the read is refused", "unavailable"
        )
    if not row.has(capability):
        return error_result(
            f"Kora is not granted {capability} in this workspace", "capability_denied"
        )
    return None


def _limit(ctx: ToolContext, args: dict[str, Any]) -> int:
    raw = args.get("limit", DEFAULT_LIMIT)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ToolArgumentError("limit must be a positive integer")
    try:
        limit = int(raw)
    except ValueError:
        raise ToolArgumentError("limit must be a positive integer") from None
    cap = DEFAULT_PULL_CAP
    policies = ctx.reader.cache.get_stale(ctx.workspace_id, names.POLICIES) or ()
    for p in policies:
        if (
            isinstance(p, PolicyEntry)
            and p.policy_key == PULL_CAP_POLICY
            and isinstance(p.value, int)
        ):
            cap = p.value
    return max(1, min(limit, cap))


def _str(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ToolArgumentError(f"{key} is required and must be a non-empty string")
    return value


def _opt_str(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ToolArgumentError(f"{key} must be a string")
    return value


def _opt_dict(args: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ToolArgumentError(f"{key} must be a JSON object")
    return value


def _uuid(args: dict[str, Any], key: str) -> UUID:
    try:
        return UUID(str(args.get(key, "")))
    except ValueError:
        raise ToolArgumentError(f"{key} must be a UUID") from None


def _entry(entry: Any) -> dict[str, Any]:
    data = _plain(entry)
    content = data.get("content")
    if isinstance(content, str) and len(content) > READ_CONTENT_CHARS:
        data["content"] = content[:READ_CONTENT_CHARS] + "…"
    return data


def _plain(value: Any) -> dict[str, Any]:
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}


def _json_default(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, tuple | frozenset | set):
        return list(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def error_result(message: str, code: str) -> str:
    """A tool error as the model sees it: ``{"error": sentence, "code": code}``."""
    return json.dumps({"error": message, "code": code}, ensure_ascii=False)
