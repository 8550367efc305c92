"""The console's own reads (the chain browser, histories, the graph, activity).

Each runs through :func:`isokron.substrate.reads.scoped` on the reader role, so row-level
security limits it to the signed-in operator's workspace exactly as it limits the provider.
Results are JSON-ready dicts (hashes as hex, times as ISO 8601).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from isokron.substrate.reads import scoped

MAX_PAGE = 500

SELECT_CHAIN_PAGE_SQL = """
SELECT el.seq, el.event_id, el.actor_id, a.actor_kind, a.display_name AS actor_label,
       el.event_type, el.occurred_at, el.payload_erased,
       encode(el.payload_digest, 'hex') AS payload_digest,
       encode(el.prev_event_hash, 'hex') AS prev_event_hash,
       encode(el.this_event_hash, 'hex') AS this_event_hash
FROM hivex_foundation.event_log el
JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id
LEFT JOIN public.actor_registry a ON a.workspace_id = $1 AND a.actor_id = el.actor_id
WHERE t.clerk_org_id = $1
  AND ($2::text IS NULL OR starts_with(el.event_type, $2))
  AND ($3::text IS NULL OR a.actor_kind = $3)
  AND ($4::timestamptz IS NULL OR el.occurred_at >= $4)
  AND ($5::timestamptz IS NULL OR el.occurred_at < $5)
  AND ($6::bigint IS NULL OR el.seq > $6)
ORDER BY el.seq DESC
LIMIT $7
"""
SELECT_EVENT_SQL = """
SELECT el.seq, el.event_id, el.actor_id, a.actor_kind, a.display_name AS actor_label,
       el.event_type, el.occurred_at, el.payload, el.payload_erased,
       encode(el.payload_digest, 'hex') AS payload_digest,
       encode(el.prev_event_hash, 'hex') AS prev_event_hash,
       encode(el.this_event_hash, 'hex') AS this_event_hash,
       encode(p.this_event_hash, 'hex') AS previous_event_hash,
       encode(n.prev_event_hash, 'hex') AS next_prev_event_hash,
       n.seq AS next_seq
FROM hivex_foundation.event_log el
JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id
LEFT JOIN public.actor_registry a ON a.workspace_id = $1 AND a.actor_id = el.actor_id
LEFT JOIN hivex_foundation.event_log p ON p.tenant_id = el.tenant_id AND p.seq = el.seq - 1
LEFT JOIN hivex_foundation.event_log n ON n.tenant_id = el.tenant_id AND n.seq = el.seq + 1
WHERE t.clerk_org_id = $1 AND el.seq = $2
"""
SELECT_EVENT_TYPES_SQL = """
SELECT DISTINCT el.event_type
FROM hivex_foundation.event_log el
JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id
WHERE t.clerk_org_id = $1 ORDER BY 1
"""
SELECT_CHARTER_HISTORY_SQL = """
SELECT charter_id, version, is_active, content_md, content_hash, created_at, approved_event_id
FROM public.kora_role_charter WHERE workspace_id = $1 ORDER BY version DESC
"""
SELECT_CONSTITUTION_HISTORY_SQL = """
SELECT revision_id, revision_number, rules, encode(rules_hash, 'hex') AS rules_hash, created_at,
       approved_event_id
FROM kronicle.workspace_constitution_revisions WHERE workspace_id = $1
ORDER BY revision_number DESC
"""
SELECT_CAPABILITY_MATRIX_SQL = """
SELECT cap_name, actor_kind, granted, cap_group, description
FROM public.kora_capability_matrix WHERE workspace_id = $1 ORDER BY cap_group, cap_name, actor_kind
"""
SELECT_ESCALATIONS_SQL = """
SELECT e.escalation_id, e.actor_id, a.actor_kind, e.tool, e.rule_id, e.reason, e.request,
       e.status, e.created_at, e.decided_at, e.decision_note, e.result
FROM kronicle.escalations e
LEFT JOIN public.actor_registry a ON a.workspace_id = e.workspace_id AND a.actor_id = e.actor_id
WHERE e.workspace_id = $1 AND ($2::text IS NULL OR e.status = $2)
ORDER BY e.created_at DESC
LIMIT $3
"""
SELECT_GRAPH_NODES_SQL = """
SELECT node_id, node_type, title, status, superseded_by, created_at
FROM kronicle.iso_nodes WHERE workspace_id = $1 ORDER BY created_at DESC LIMIT $2
"""
SELECT_GRAPH_LINKS_SQL = """
SELECT link_id, from_node_id, to_node_id, link_type
FROM kronicle.iso_links WHERE workspace_id = $1 ORDER BY created_at DESC LIMIT $2
"""
# Writes are chained events of accepted operations; denials are gateway.write.denied events,
# counted by their refusal code.
SELECT_ACTIVITY_SQL = """
SELECT date_trunc('hour', el.occurred_at) AS hour,
       CASE WHEN el.event_type = 'gateway.write.denied' THEN 'denied' ELSE 'write' END AS kind,
       CASE WHEN el.event_type = 'gateway.write.denied'
            THEN coalesce(el.payload ->> 'code', 'unknown') ELSE NULL END AS code,
       count(*) AS n
FROM hivex_foundation.event_log el
JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id
WHERE t.clerk_org_id = $1
  AND el.occurred_at >= date_trunc('hour', now()) - make_interval(hours => $2 - 1)
GROUP BY 1, 2, 3
ORDER BY 1
"""


def jsonable(value: Any) -> Any:
    """Convert database values (UUID, datetime, bytes, records) to JSON-ready values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return value


def _rows(rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [jsonable(dict(r)) for r in rows]


async def chain_page(
    pool: asyncpg.Pool,
    workspace_id: str,
    *,
    event_type: str | None = None,
    actor_kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_seq: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The newest events matching the filters (type prefix, actor kind, time window)."""
    async with scoped(pool, workspace_id) as conn:
        rows = await conn.fetch(
            SELECT_CHAIN_PAGE_SQL,
            workspace_id,
            event_type or None,
            actor_kind or None,
            since,
            until,
            after_seq,
            max(1, min(limit, MAX_PAGE)),
        )
    return _rows(rows)


async def chain_event(pool: asyncpg.Pool, workspace_id: str, seq: int) -> dict[str, Any] | None:
    """One event in full, with its hash links to the events before and after it."""
    async with scoped(pool, workspace_id) as conn:
        row = await conn.fetchrow(SELECT_EVENT_SQL, workspace_id, seq)
    if row is None:
        return None
    event = jsonable(dict(row))
    event["links"] = {
        "prev_matches": (
            event["previous_event_hash"] == event["prev_event_hash"]
            if event["previous_event_hash"] is not None
            else event["prev_event_hash"] == "00" * 32
        ),
        "next_matches": (
            None
            if event["next_prev_event_hash"] is None
            else event["next_prev_event_hash"] == event["this_event_hash"]
        ),
    }
    return event


async def event_types(pool: asyncpg.Pool, workspace_id: str) -> list[str]:
    async with scoped(pool, workspace_id) as conn:
        return [r["event_type"] for r in await conn.fetch(SELECT_EVENT_TYPES_SQL, workspace_id)]


async def fetch_all(pool: asyncpg.Pool, workspace_id: str, sql: str, *args: Any) -> list[dict]:
    """Run one of this module's SELECTs in a workspace-scoped read transaction."""
    async with scoped(pool, workspace_id) as conn:
        return _rows(await conn.fetch(sql, workspace_id, *args))


async def charter_history(pool: asyncpg.Pool, workspace_id: str) -> list[dict[str, Any]]:
    return await fetch_all(pool, workspace_id, SELECT_CHARTER_HISTORY_SQL)


async def constitution_history(pool: asyncpg.Pool, workspace_id: str) -> list[dict[str, Any]]:
    return await fetch_all(pool, workspace_id, SELECT_CONSTITUTION_HISTORY_SQL)


async def capability_matrix(pool: asyncpg.Pool, workspace_id: str) -> dict[str, Any]:
    """The matrix as a grid: capabilities (rows) × actor kinds (columns)."""
    rows = await fetch_all(pool, workspace_id, SELECT_CAPABILITY_MATRIX_SQL)
    kinds = sorted({r["actor_kind"] for r in rows})
    caps: dict[str, dict[str, Any]] = {}
    for r in rows:
        cap = caps.setdefault(
            r["cap_name"],
            {
                "cap_name": r["cap_name"],
                "group": r["cap_group"],
                "description": r["description"],
                "grants": {},
            },
        )
        cap["grants"][r["actor_kind"]] = r["granted"]
    return {"actor_kinds": kinds, "capabilities": list(caps.values())}


async def escalations(
    pool: asyncpg.Pool, workspace_id: str, *, status: str | None, limit: int = 100
) -> list[dict[str, Any]]:
    return await fetch_all(pool, workspace_id, SELECT_ESCALATIONS_SQL, status, limit)


async def graph(pool: asyncpg.Pool, workspace_id: str, *, limit: int = 200) -> dict[str, Any]:
    """Nodes (with their supersede pointers) and links, newest first, for the graph picture."""
    async with scoped(pool, workspace_id) as conn:
        nodes = await conn.fetch(SELECT_GRAPH_NODES_SQL, workspace_id, limit)
        links = await conn.fetch(SELECT_GRAPH_LINKS_SQL, workspace_id, limit * 2)
    return {"nodes": _rows(nodes), "links": _rows(links)}


async def activity(pool: asyncpg.Pool, workspace_id: str, *, hours: int = 48) -> dict[str, Any]:
    """Writes and denials (by refusal code) per hour over the last ``hours`` hours."""
    rows = await fetch_all(pool, workspace_id, SELECT_ACTIVITY_SQL, hours)
    # One bucket per hour of the window, empty ones included, so the charts' x axis is time.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    buckets: dict[str, dict[str, Any]] = {}
    for back in range(hours - 1, -1, -1):
        hour = (now - timedelta(hours=back)).isoformat()
        buckets[hour] = {"hour": hour, "writes": 0, "denials": {}}
    codes: set[str] = set()
    for r in rows:
        hour = datetime.fromisoformat(r["hour"]).astimezone(UTC).isoformat()
        b = buckets.setdefault(hour, {"hour": hour, "writes": 0, "denials": {}})
        if r["kind"] == "write":
            b["writes"] += r["n"]
        else:
            codes.add(r["code"])
            b["denials"][r["code"]] = b["denials"].get(r["code"], 0) + r["n"]
    return {"hours": hours, "codes": sorted(codes), "buckets": list(buckets.values())}
