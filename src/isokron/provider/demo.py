"""``isokron demo``: one scripted agent session through the real provider, without an LLM.

The demo issues a service token for the workspace's Kora actor, points an
:class:`IsoKronMemoryProvider` at the substrate (reads) and at a gateway it starts itself over
stdio (writes), and drives the hooks in the order Hermes Agent calls them::

    initialize -> on_turn_start -> system_prompt_block -> sync_turn (mentions a cap_*)
    -> on_memory_write -> handle_tool_call(iso_node_create) -> on_delegation
    -> on_session_end -> shutdown

Then it reads back what the session wrote (chain events and scratchpad entries), verifies the
workspace's chain, and revokes the token. Nothing is faked: every write went through the
gateway and is in the chain.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pydantic import SecretStr

from isokron.errors import NotFoundError
from isokron.provider.config import IsoKronProviderConfig
from isokron.provider.provider import IsoKronMemoryProvider
from isokron.substrate import reads, writes
from isokron.substrate.audit import verify_workspace
from isokron.substrate.connection import connect
from isokron.substrate.dsn import SubstrateDSNs

SELECT_EVENTS_SINCE_SQL = """
SELECT el.seq, el.event_id, el.event_type, el.actor_id
FROM hivex_foundation.event_log el
WHERE el.workspace_id = $1 AND el.seq > $2
ORDER BY el.seq
"""
SELECT_CHAIN_HEAD_SEQ_SQL = """
SELECT coalesce(max(el.seq), 0)
FROM hivex_foundation.event_log el
WHERE el.workspace_id = $1
"""
SELECT_SESSION_ENTRIES_SQL = """
SELECT entry_id, kind, visibility_scope, summary, approved_event_id
FROM kronicle.agent_scratchpad_entries
WHERE workspace_id = $1 AND session_id = $2
ORDER BY created_at
"""
DEMO_TOKEN_LABEL = "isokron demo (revoked when the demo ends)"
DEMO_USER_MESSAGE = "Record that we chose PostgreSQL row-level security for tenant isolation."
DEMO_ASSISTANT_REPLY = (
    "I will record the decision as a knowledge-graph node (cap_iso_node_create) and keep a "
    "note of it in my scratchpad (cap_write_agent_scratchpad)."
)


@dataclass(frozen=True, slots=True)
class DemoEvent:
    """A chain event the demo session appended."""

    seq: int
    event_id: UUID
    event_type: str
    actor: str


@dataclass(frozen=True, slots=True)
class DemoEntry:
    """A scratchpad entry the demo session wrote."""

    entry_id: UUID
    kind: str
    visibility_scope: str
    summary: str


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What the demo session did."""

    workspace_id: str
    session_id: str
    token_prefix: str
    prompt_block: str
    tool_result: dict[str, Any]
    events: tuple[DemoEvent, ...]
    scratchpad_entries: tuple[DemoEntry, ...]
    chain_ok: bool
    chain_events_checked: int
    steps: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when the session wrote through the gateway and the chain verifies."""
        return self.chain_ok and bool(self.events) and "error" not in self.tool_result

    def __str__(self) -> str:
        """A summary for people: the steps, what was written, and the verdict."""
        lines = [f"Demo session {self.session_id} in workspace {self.workspace_id}:"]
        lines += [f"  {n}. {step}" for n, step in enumerate(self.steps, 1)]
        lines.append(f"Chain events appended ({len(self.events)}):")
        lines += [f"  seq {e.seq:<5} {e.event_type:<28} by {e.actor}" for e in self.events]
        lines.append(f"Scratchpad entries written ({len(self.scratchpad_entries)}):")
        lines += [f"  {e.kind:<16} {e.summary[:70]}" for e in self.scratchpad_entries]
        verdict = "verified" if self.chain_ok else "NOT verified"
        lines.append(f"Chain {verdict} ({self.chain_events_checked} events).")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "ok": self.ok,
            "workspace_id": self.workspace_id,
            "session_id": self.session_id,
            "token_prefix": self.token_prefix,
            "prompt_block": self.prompt_block,
            "tool_result": self.tool_result,
            "events": [
                {
                    "seq": e.seq,
                    "event_id": str(e.event_id),
                    "event_type": e.event_type,
                    "actor": e.actor,
                }
                for e in self.events
            ],
            "scratchpad_entries": [
                {
                    "entry_id": str(e.entry_id),
                    "kind": e.kind,
                    "visibility_scope": e.visibility_scope,
                    "summary": e.summary,
                }
                for e in self.scratchpad_entries
            ],
            "chain_ok": self.chain_ok,
            "chain_events_checked": self.chain_events_checked,
            "steps": list(self.steps),
        }


def run_demo(
    dsns: SubstrateDSNs, workspace_id: str, *, progress: Callable[[str], None]
) -> DemoReport:
    """Run a scripted session against ``workspace_id`` and report what it wrote.

    ``progress`` receives one line per step. The gateway is started over stdio with the
    reader and gateway DSNs; the token is issued with the admin DSN and revoked at the end.

    Raises:
        NotFoundError: the workspace (or its Kora or operator actor) does not exist.
        SubstrateUnavailableError: PostgreSQL cannot be reached.
    """
    steps: list[str] = []

    def step(line: str) -> None:
        steps.append(line)
        progress(line)

    issued, operator, start_seq = asyncio.run(_issue_token(dsns.admin, workspace_id))
    step(f"issued service token {issued.token_prefix}… for Kora")
    session_id = f"demo-{uuid.uuid4().hex[:12]}"
    provider = IsoKronMemoryProvider(
        IsoKronProviderConfig(
            reader_dsn=dsns.reader,
            gateway_dsn=dsns.gateway,
            mcp_endpoint="stdio",
            workspace_id=workspace_id,
            service_token=SecretStr(issued.token),
        )
    )
    try:
        block, tool_result = _drive(provider, session_id, step)
    finally:
        provider.shutdown()
        asyncio.run(_revoke_token(dsns.admin, workspace_id, operator, issued.token_id))
        step(f"shutdown; revoked token {issued.token_prefix}…")
    events, entries = asyncio.run(_session_writes(dsns.admin, workspace_id, start_seq, session_id))
    audit = verify_workspace(dsns.admin, workspace_id)
    step(f"chain verified: {audit.ok} ({audit.chain.events_checked} events)")
    return DemoReport(
        workspace_id=workspace_id,
        session_id=session_id,
        token_prefix=issued.token_prefix,
        prompt_block=block,
        tool_result=tool_result,
        events=events,
        scratchpad_entries=entries,
        chain_ok=audit.ok,
        chain_events_checked=audit.chain.events_checked,
        steps=tuple(steps),
    )


def _drive(
    provider: IsoKronMemoryProvider, session_id: str, step: Callable[[str], None]
) -> tuple[str, dict[str, Any]]:
    provider.initialize(
        session_id, platform="isokron-demo", agent_context="primary", hermes_home=None
    )
    ready = provider.wait_ready()
    step(
        f"initialize: session {session_id}, gateway over stdio ({'open' if ready else 'NOT open'})"
    )
    provider.on_turn_start(1, DEMO_USER_MESSAGE)
    step("on_turn_start: warmed charter, policies, capabilities, scratchpads, events, constitution")
    block = provider.system_prompt_block()
    step(f"system_prompt_block: {len(block.splitlines())} lines (§1–§6)")
    provider.sync_turn(DEMO_USER_MESSAGE, DEMO_ASSISTANT_REPLY, session_id=session_id)
    step("sync_turn: the reply names cap_iso_node_create -> a reasoning_trail entry")
    provider.on_memory_write("add", "memory", "The team prefers decisions recorded as iso nodes.")
    step("on_memory_write: the built-in memory write mirrored as a reasoning_trail entry")
    raw = provider.handle_tool_call(
        "iso_node_create",
        {
            "node_type": "decision",
            "title": "Tenant isolation uses PostgreSQL row-level security",
            "content": "Every workspace-keyed table has RLS enabled and forced; reads set "
            "app.current_workspace_id per transaction.",
        },
    )
    tool_result = json.loads(raw)
    step(f"handle_tool_call(iso_node_create): {_short(tool_result)}")
    provider.on_delegation(
        "Draft the migration plan for the RLS rollout",
        "Plan drafted: three steps, no downtime.",
        child_session_id=f"{session_id}-sub1",
    )
    step("on_delegation: handoff_note entry + kora.handoff.to_claude_pm")
    provider.on_session_end(
        [
            {"role": "user", "content": DEMO_USER_MESSAGE},
            {"role": "assistant", "content": DEMO_ASSISTANT_REPLY},
        ]
    )
    step("on_session_end: kora.session.ended")
    return block, tool_result


def _short(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"refused [{result.get('code')}] {result['error']}"
    return f"node {result.get('node_id')} (event seq {result.get('seq', '?')})"


async def _issue_token(admin_dsn: str, workspace_id: str) -> tuple[writes.IssuedToken, UUID, int]:
    conn = await connect(admin_dsn)
    try:
        kora = await reads.actor_id_of_kind(conn, workspace_id, "kora")
        operator = await reads.actor_id_of_kind(conn, workspace_id, "operator")
        if kora is None or operator is None:
            raise NotFoundError(
                f"workspace {workspace_id!r} has no active kora and operator actors; "
                "create it with `isokron workspace create`"
            )
        async with reads.scoped(conn, workspace_id) as c:
            start_seq = int(await c.fetchval(SELECT_CHAIN_HEAD_SEQ_SQL, workspace_id))
        issued = await writes.issue_token(
            conn, workspace_id, operator, kora, label=DEMO_TOKEN_LABEL
        )
        return issued, operator, start_seq
    finally:
        await conn.close()


async def _revoke_token(admin_dsn: str, workspace_id: str, operator: UUID, token_id: UUID) -> None:
    conn = await connect(admin_dsn)
    try:
        await writes.govern(
            conn, "revoke_token", workspace_id, operator, {"token_id": str(token_id)}
        )
    finally:
        await conn.close()


async def _session_writes(
    admin_dsn: str, workspace_id: str, start_seq: int, session_id: str
) -> tuple[tuple[DemoEvent, ...], tuple[DemoEntry, ...]]:
    conn = await connect(admin_dsn)
    try:
        actors = {
            a["actor_id"]: a["actor_kind"] for a in await reads.read_actors(conn, workspace_id)
        }
        async with reads.scoped(conn, workspace_id) as c:
            rows = await c.fetch(SELECT_EVENTS_SINCE_SQL, workspace_id, start_seq)
            entry_rows = await c.fetch(SELECT_SESSION_ENTRIES_SQL, workspace_id, session_id)
    finally:
        await conn.close()
    events = tuple(
        DemoEvent(
            r["seq"], r["event_id"], r["event_type"], actors.get(r["actor_id"], str(r["actor_id"]))
        )
        for r in rows
    )
    entries = tuple(
        DemoEntry(r["entry_id"], r["kind"], r["visibility_scope"], r["summary"]) for r in entry_rows
    )
    return events, entries
