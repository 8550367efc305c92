"""Every policy the gateway or the database reads: set it, call the real gateway (official MCP
client over streamable HTTP), observe the effect. Time-based policies (SLA, expiry, retention,
idempotency TTL) are set to 0 so that what exists is already overdue; maintenance runs through
``isokron maintain`` and through the gateway's own periodic task."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from gateway_harness import (
    DENIED,
    HttpGateway,
    Session,
    Tenant,
    data_of,
    error_of,
    events_since,
    govern,
    head,
    http_client,
    issue,
    make_tenant,
    set_policy,
)
from typer.testing import CliRunner

from isokron.cli.main import app
from isokron.substrate import audit
from isokron.substrate.dsn import SubstrateDSNs

policy_effect = pytest.mark.policy_effect
NOTE = {"event_type": "kora.note.recorded", "payload": {"n": 1}}
SECRET = "wsk_" + "Zq8" * 8
#: Seconds the periodic maintenance of the gateway under test waits between passes.
MAINTAIN_INTERVAL = "0.5"
#: Longest a test waits for the periodic maintenance to close something (a liveness bound).
MAINTENANCE_WAIT_SECONDS = 60.0


@pytest.fixture(scope="module")
async def gateway(
    substrate: SubstrateDSNs, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HttpGateway]:
    log = tmp_path_factory.mktemp("gw-policies") / "gateway.log"
    gw = HttpGateway(substrate, log, "--maintain-interval", MAINTAIN_INTERVAL)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


class Calls:
    """One tenant's sessions with the gateway under test."""

    def __init__(self, gateway: HttpGateway, tenant: Tenant) -> None:
        self.gateway = gateway
        self.tenant = tenant
        self._sessions: dict[str, Session] = {}

    async def as_(self, token: str) -> Session:
        if token not in self._sessions:
            url = self.gateway.url
            self._sessions[token] = await Session(lambda: http_client(url, token)).open()
        return self._sessions[token]

    async def kora(self, tool: str, args: dict[str, Any] | None = None) -> Any:
        return await (await self.as_(self.tenant.kora_token)).call(tool, args)

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()


@pytest.fixture
async def calls(gateway: HttpGateway, admin_pool: asyncpg.Pool) -> AsyncIterator[Calls]:
    tenant = await make_tenant(admin_pool, "pol")
    c = Calls(gateway, tenant)
    try:
        yield c
    finally:
        await c.close()


async def _node(calls: Calls, title: str = "t") -> Any:
    return await calls.kora("iso_node_create", {"node_type": "fact", "title": title})


async def _quota_refusals(calls: Calls, tool: str, make: Any, n: int) -> list[dict[str, Any]]:
    refusals = []
    for i in range(n):
        result = await calls.kora(tool, make(i))
        if result.is_error:
            refusals.append(error_of(result))
    return refusals


async def _fresh_minute(admin_pool: asyncpg.Pool) -> None:
    """Sleep into the next database minute if this one is nearly over (the windows are
    clock-aligned: a window rolling over mid-test would reset the count under test)."""
    epoch = float(await admin_pool.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
    left = 60.0 - epoch % 60.0
    if left < 10.0:
        await asyncio.sleep(left + 0.5)


# ------------------------------------------------------------------------------ switches


@policy_effect("policy.kora_disabled")
async def test_kill_switch(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    assert not (await calls.kora("kora__append_event", NOTE)).is_error
    await set_policy(admin_pool, calls.tenant, "policy.kora_disabled", True)
    assert error_of(await calls.kora("kora__append_event", NOTE))["code"] == "kill_switch"
    await set_policy(admin_pool, calls.tenant, "policy.kora_disabled", False)
    assert not (await calls.kora("kora__append_event", NOTE)).is_error


@policy_effect("policy.kora_constitution_failure_mode")
async def test_constitution_failure_mode(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    # A revision that does not compile: writes fail closed unless the mode is "allow".
    bad = {"rules": [{"id": "bad", "effect": "explode", "match": {"tool": ["*"]}}]}
    await govern(admin_pool, calls.tenant, "revise_constitution", {"rules": bad})
    assert error_of(await calls.kora("kora__append_event", NOTE))["code"] == "constitution_denied"
    await set_policy(admin_pool, calls.tenant, "policy.kora_constitution_failure_mode", "allow")
    assert not (await calls.kora("kora__append_event", NOTE)).is_error


@policy_effect("policy.kora_handoff_summary_required")
async def test_handoff_summary_required(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    bare = {"event_type": "kora.handoff.to_claude_pm", "payload": {"session_id": "s"}}
    refused = error_of(await calls.kora("kora__append_event", bare))
    assert refused["code"] == "invalid_argument"
    assert "policy.kora_handoff_summary_required" in refused["message"]
    summarized = {
        "event_type": "kora.handoff.to_claude_pm",
        "payload": {"task_summary": "finish the report"},
    }
    assert not (await calls.kora("kora__append_event", summarized)).is_error
    await set_policy(admin_pool, calls.tenant, "policy.kora_handoff_summary_required", False)
    assert not (await calls.kora("kora__append_event", bare)).is_error


@policy_effect("policy.kora_denial_events_redacted")
async def test_denial_events_redacted(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    ws = calls.tenant.workspace_id
    leak = {"event_type": "kora.note.recorded", "payload": {"token": SECRET}}

    async def denial_arguments() -> str:
        seq = await head(admin_pool, ws)
        refused = error_of(await calls.kora("kora__append_event", leak))
        assert refused["code"] == "constitution_denied"
        denial = [e for e in await events_since(admin_pool, ws, seq) if e["event_type"] == DENIED]
        assert len(denial) == 1
        payload = denial[0]["payload"]
        payload = json.loads(payload) if isinstance(payload, str) else payload
        return str(payload["arguments"])

    redacted = await denial_arguments()
    assert SECRET not in redacted and "[REDACTED]" in redacted and "kora.note" in redacted
    await set_policy(admin_pool, calls.tenant, "policy.kora_denial_events_redacted", False)
    assert SECRET in await denial_arguments()


@policy_effect("policy.kora_service_token_max_age_days")
async def test_token_max_age(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    old = await issue(admin_pool, calls.tenant, "kora")
    # Ten days pass for this token (the superuser backdates it; nothing else changes).
    await admin_pool.execute(
        "UPDATE isokron.service_tokens SET created_at = now() - interval '10 days' "
        "WHERE workspace_id = $1 AND token_id = $2",
        calls.tenant.workspace_id,
        old.token_id,
    )
    session = await calls.as_(old.token)
    assert not (await session.call("kora__append_event", NOTE)).is_error  # 90 days by default
    await set_policy(admin_pool, calls.tenant, "policy.kora_service_token_max_age_days", 7)
    refused = error_of(await session.call("kora__append_event", NOTE))
    assert refused["code"] == "unauthenticated"
    assert "policy.kora_service_token_max_age_days" in refused["message"]
    # a younger token of the same actor still works
    assert not (await calls.kora("kora__append_event", NOTE)).is_error


# -------------------------------------------------------------------------------- sizes


@policy_effect("policy.kora_max_payload_bytes")
async def test_max_payload_bytes(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    big = {"event_type": "kora.note.recorded", "payload": {"text": "x" * 2000}}
    assert not (await calls.kora("kora__append_event", big)).is_error
    await set_policy(admin_pool, calls.tenant, "policy.kora_max_payload_bytes", 1000)
    assert error_of(await calls.kora("kora__append_event", big))["code"] == "too_large"


@policy_effect("policy.kora_max_scratchpad_content_bytes")
@policy_effect("policy.kora_max_summary_bytes")
async def test_scratchpad_content_and_summary_caps(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    entry = {"kind": "plan", "summary": "s" * 300, "content": "c" * 3000}
    assert not (await calls.kora("kora__write_agent_scratchpad", entry)).is_error
    await set_policy(admin_pool, calls.tenant, "policy.kora_max_scratchpad_content_bytes", 2000)
    refused = error_of(await calls.kora("kora__write_agent_scratchpad", entry))
    assert refused["code"] == "too_large" and "content" in refused["message"]
    await set_policy(admin_pool, calls.tenant, "policy.kora_max_scratchpad_content_bytes", 10000)
    await set_policy(admin_pool, calls.tenant, "policy.kora_max_summary_bytes", 100)
    refused = error_of(await calls.kora("kora__write_agent_scratchpad", entry))
    assert refused["code"] == "too_large" and "summary" in refused["message"]


@policy_effect("policy.kora_scratchpad_default_visibility")
async def test_scratchpad_default_visibility(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    entry = {"kind": "observation", "summary": "s", "content": "c"}

    async def scope_of_new_entry() -> str:
        entry_id = data_of(await calls.kora("kora__write_agent_scratchpad", entry))["entry_id"]
        return str(
            await admin_pool.fetchval(
                "SELECT visibility_scope FROM kronicle.agent_scratchpad_entries "
                "WHERE workspace_id = $1 AND entry_id = $2",
                calls.tenant.workspace_id,
                uuid.UUID(entry_id),
            )
        )

    assert await scope_of_new_entry() == "own_only"
    await set_policy(
        admin_pool,
        calls.tenant,
        "policy.kora_scratchpad_default_visibility",
        "cross_agent_dereferenceable",
    )
    assert await scope_of_new_entry() == "cross_agent_dereferenceable"


# -------------------------------------------------------------------------------- reads


@policy_effect("policy.kora_node_search_default_limit")
@policy_effect("policy.kora_output_size_cap_pull")
async def test_read_limits(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    await set_policy(admin_pool, calls.tenant, "policy.kora_max_nodes_per_minute", 1000)
    for i in range(6):
        data_of(await _node(calls, f"n{i}"))
    assert data_of(await calls.kora("iso_node_search", {}))["count"] == 6
    await set_policy(admin_pool, calls.tenant, "policy.kora_node_search_default_limit", 4)
    assert data_of(await calls.kora("iso_node_search", {}))["count"] == 4
    assert data_of(await calls.kora("iso_node_search", {"limit": 6}))["count"] == 6
    await set_policy(admin_pool, calls.tenant, "policy.kora_output_size_cap_pull", 3)
    assert data_of(await calls.kora("iso_node_search", {"limit": 6}))["count"] == 3


# ------------------------------------------------------------------------------- quotas


@policy_effect("policy.kora_rate_limit_per_minute")
async def test_rate_limit_per_minute(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    await _fresh_minute(admin_pool)
    await set_policy(admin_pool, calls.tenant, "policy.kora_rate_limit_per_minute", 3)
    refusals = await _quota_refusals(calls, "kora__append_event", lambda i: NOTE, 5)
    assert len(refusals) == 2
    assert all(r["code"] == "rate_limited" for r in refusals)
    assert all(1 <= r["retry_after_seconds"] <= 60 for r in refusals)
    assert "policy.kora_rate_limit_per_minute" in refusals[0]["message"]


@policy_effect("policy.kora_rate_limit_burst")
async def test_burst(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    await set_policy(admin_pool, calls.tenant, "policy.kora_rate_limit_burst", 2)
    results = await asyncio.gather(*(calls.kora("kora__append_event", NOTE) for _ in range(8)))
    refused = [error_of(r) for r in results if r.is_error]
    # eight calls at once span at most two clock seconds: at most 2 + 2 are admitted
    assert len(refused) >= 4
    assert all(r["code"] == "rate_limited" and r["retry_after_seconds"] == 1 for r in refused)
    assert "policy.kora_rate_limit_burst" in refused[0]["message"]


@policy_effect("policy.kora_max_nodes_per_minute")
async def test_nodes_per_minute(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    await _fresh_minute(admin_pool)
    await set_policy(admin_pool, calls.tenant, "policy.kora_max_nodes_per_minute", 2)
    refusals = await _quota_refusals(
        calls, "iso_node_create", lambda i: {"node_type": "fact", "title": f"n{i}"}, 3
    )
    assert len(refusals) == 1 and refusals[0]["code"] == "rate_limited"
    assert "policy.kora_max_nodes_per_minute" in refusals[0]["message"]
    assert 1 <= refusals[0]["retry_after_seconds"] <= 60
    # other writes are not counted against nodes
    assert not (await calls.kora("kora__append_event", NOTE)).is_error


@policy_effect("policy.kora_max_links_per_minute")
async def test_links_per_minute(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    await _fresh_minute(admin_pool)
    ids = [data_of(await _node(calls, f"n{i}"))["node_id"] for i in range(3)]
    await set_policy(admin_pool, calls.tenant, "policy.kora_max_links_per_minute", 1)
    first = {"from_node_id": ids[0], "to_node_id": ids[1], "link_type": "supports"}
    second = {"from_node_id": ids[1], "to_node_id": ids[2], "link_type": "supports"}
    assert not (await calls.kora("iso_link_create", first)).is_error
    refused = error_of(await calls.kora("iso_link_create", second))
    assert refused["code"] == "rate_limited"
    assert "policy.kora_max_links_per_minute" in refused["message"]


@policy_effect("policy.kora_max_proposals_per_24h")
async def test_proposals_per_24h(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    await set_policy(admin_pool, calls.tenant, "policy.kora_max_proposals_per_24h", 2)
    refusals = await _quota_refusals(
        calls, "kora__propose_convention", lambda i: {"title": f"c{i}", "body": "b"}, 3
    )
    assert len(refusals) == 1 and refusals[0]["code"] == "rate_limited"
    assert "policy.kora_max_proposals_per_24h" in refusals[0]["message"]
    # the oldest proposal of the rolling day leaves the window in about 23-24 hours
    assert 22 * 3600 < refusals[0]["retry_after_seconds"] <= 24 * 3600
    refused = error_of(
        await calls.kora(
            "kora__propose_policy_change",
            {"policy_key": "policy.kora_disabled", "proposed_value": True},
        )
    )
    assert refused["code"] == "rate_limited"


@policy_effect("policy.kora_max_nonsecurity_overrides_per_24h")
async def test_overrides_per_24h(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    await set_policy(admin_pool, calls.tenant, "policy.kora_max_nonsecurity_overrides_per_24h", 1)
    request = {"event_type": "kora.policy.override_requested", "payload": {"why": "demo"}}
    first = data_of(await calls.kora("kora__append_event", request))
    assert first["escalated"] is True  # the default constitution escalates overrides
    refused = error_of(await calls.kora("kora__append_event", request))
    assert refused["code"] == "rate_limited"
    assert "policy.kora_max_nonsecurity_overrides_per_24h" in refused["message"]
    assert not (await calls.kora("kora__append_event", NOTE)).is_error


@policy_effect("policy.kora_max_open_escalations")
async def test_open_escalations_cap(calls: Calls, admin_pool: asyncpg.Pool) -> None:
    await set_policy(admin_pool, calls.tenant, "policy.kora_max_open_escalations", 1)
    assert not (await calls.kora("kora__raise_escalation", {"reason": "one"})).is_error
    refused = error_of(await calls.kora("kora__raise_escalation", {"reason": "two"}))
    assert refused["code"] == "quota_exceeded"
    assert refused.get("retry_after_seconds") is None
    assert "policy.kora_max_open_escalations" in refused["message"]


# -------------------------------------------------------------------------- maintenance


async def _maintain(dsns: SubstrateDSNs, workspace_id: str) -> dict[str, Any]:
    """``isokron maintain WORKSPACE --json`` (the CLI runs its own loop: in a thread)."""
    args = ["maintain", workspace_id, "--dsn", dsns.admin, "--json"]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    (only,) = json.loads(result.output)["workspaces"]
    return dict(only)


async def _wait_until(check: Any) -> None:
    deadline = asyncio.get_running_loop().time() + MAINTENANCE_WAIT_SECONDS
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "maintenance did not run"
        await asyncio.sleep(0.2)


async def _status(admin_pool: asyncpg.Pool, table: str, column: str, ws: str, key: str) -> str:
    assert table.replace(".", "").replace("_", "").isalpha()
    return str(
        await admin_pool.fetchval(
            f"SELECT status FROM {table} WHERE workspace_id = $1 AND {column} = $2",
            ws,
            uuid.UUID(key),
        )
    )


@policy_effect("policy.kora_escalation_sla_hours")
async def test_escalation_sla_closes_by_a_chained_event(
    calls: Calls, admin_pool: asyncpg.Pool, substrate: SubstrateDSNs
) -> None:
    ws = calls.tenant.workspace_id
    raised = data_of(await calls.kora("kora__raise_escalation", {"reason": "decide me"}))
    esc = raised["escalation_id"]
    assert (await _maintain(substrate, ws))["escalations_expired"] == 0  # 24 h by default
    seq = await head(admin_pool, ws)
    await set_policy(admin_pool, calls.tenant, "policy.kora_escalation_sla_hours", 0)
    # the gateway's periodic maintenance closes it by itself
    await _wait_until(
        lambda: _is(admin_pool, "kronicle.escalations", "escalation_id", ws, esc, "expired")
    )
    expired = [
        e for e in await events_since(admin_pool, ws, seq)
        if e["event_type"] == "governance.escalation.expired"
    ]  # fmt: skip
    assert len(expired) == 1 and expired[0]["actor_id"] == calls.tenant.operator_id
    assert audit.verify_workspace(substrate.admin, ws).ok


async def _is(pool: asyncpg.Pool, table: str, column: str, ws: str, key: str, want: str) -> bool:
    return await _status(pool, table, column, ws, key) == want


@policy_effect("policy.kora_proposal_expiry_days")
async def test_proposal_expiry(
    calls: Calls, admin_pool: asyncpg.Pool, substrate: SubstrateDSNs
) -> None:
    ws = calls.tenant.workspace_id
    filed = data_of(await calls.kora("kora__propose_convention", {"title": "t", "body": "b"}))
    key = filed["proposal_id"]
    assert (await _maintain(substrate, ws))["proposals_expired"] == 0  # 14 days by default
    seq = await head(admin_pool, ws)
    await set_policy(admin_pool, calls.tenant, "policy.kora_proposal_expiry_days", 0)
    await _maintain(substrate, ws)  # (or the gateway's periodic pass, whichever comes first)
    assert await _is(admin_pool, "kronicle.convention_proposals", "proposal_id", ws, key, "expired")
    types = [e["event_type"] for e in await events_since(admin_pool, ws, seq)]
    assert types.count("governance.proposal.expired") == 1
    assert audit.verify_workspace(substrate.admin, ws).ok


MAINTAIN_SQL = "SELECT isokron_api.maintain($1)::text"
WAITING_FOR_A_LOCK_SQL = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"


@policy_effect("policy.kora_proposal_expiry_days")
async def test_two_maintenance_passes_at_once_expire_each_proposal_once(
    calls: Calls, admin_pool: asyncpg.Pool, substrate: SubstrateDSNs
) -> None:
    """The gateway's periodic pass and ``isokron maintain`` over one workspace at once: the
    second pass picks the same pending proposals, waits for the first one's row locks, and
    must then find them decided (0074), not expire them and chain them a second time."""
    ws = calls.tenant.workspace_id
    keys = [
        data_of(await calls.kora("kora__propose_convention", {"title": f"t{i}", "body": "b"}))[
            "proposal_id"
        ]
        for i in range(3)
    ]
    seq = await head(admin_pool, ws)
    await set_policy(admin_pool, calls.tenant, "policy.kora_proposal_expiry_days", 0)
    first = await asyncpg.connect(substrate.gateway)
    second = await asyncpg.connect(substrate.gateway)
    try:
        tx = first.transaction()
        await tx.start()
        await first.fetchval(MAINTAIN_SQL, ws)  # expires them; holds their row locks
        pid = await second.fetchval("SELECT pg_backend_pid()")
        later = asyncio.create_task(second.fetchval(MAINTAIN_SQL, ws))

        async def second_waits() -> bool:
            return later.done() or bool(await admin_pool.fetchval(WAITING_FOR_A_LOCK_SQL, pid))

        await _wait_until(second_waits)
        await tx.commit()
        await later
    finally:
        await first.close()
        await second.close()
    expired = [
        e["payload"]["proposal_id"]
        for e in await events_since(admin_pool, ws, seq)
        if e["event_type"] == "governance.proposal.expired"
    ]
    assert sorted(expired) == sorted(keys), "a proposal was expired more than once, or never"
    for key in keys:
        assert await _is(
            admin_pool, "kronicle.convention_proposals", "proposal_id", ws, key, "expired"
        )
    assert audit.verify_workspace(substrate.admin, ws).ok


@policy_effect("policy.kora_scratchpad_retention_days")
async def test_scratchpad_retention(
    calls: Calls, admin_pool: asyncpg.Pool, substrate: SubstrateDSNs
) -> None:
    ws = calls.tenant.workspace_id
    entry = data_of(
        await calls.kora(
            "kora__write_agent_scratchpad", {"kind": "plan", "summary": "s", "content": "c"}
        )
    )
    read = data_of(await calls.kora("kora__read_agent_scratchpad", {}))
    assert read["count"] == 1
    seq = await head(admin_pool, ws)
    await set_policy(admin_pool, calls.tenant, "policy.kora_scratchpad_retention_days", 0)
    await _maintain(substrate, ws)
    assert await _is(
        admin_pool, "kronicle.agent_scratchpad_entries", "entry_id", ws, entry["entry_id"],
        "archived",
    )  # fmt: skip
    archived = [
        e for e in await events_since(admin_pool, ws, seq)
        if e["event_type"] == "governance.scratchpad.archived"
    ]  # fmt: skip
    assert len(archived) == 1
    assert data_of(await calls.kora("kora__read_agent_scratchpad", {}))["count"] == 0
    assert audit.verify_workspace(substrate.admin, ws).ok


@policy_effect("policy.kora_idempotency_ttl_hours")
async def test_idempotency_ttl(
    calls: Calls, admin_pool: asyncpg.Pool, substrate: SubstrateDSNs
) -> None:
    ws = calls.tenant.workspace_id
    keyed = {**NOTE, "idempotency_key": "once-" + uuid.uuid4().hex}
    first = data_of(await calls.kora("kora__append_event", keyed))
    again = data_of(await calls.kora("kora__append_event", keyed))
    assert again["replayed"] is True and again["event_id"] == first["event_id"]
    await _maintain(substrate, ws)  # 24 h by default: the key stays
    assert data_of(await calls.kora("kora__append_event", keyed))["replayed"] is True
    await set_policy(admin_pool, calls.tenant, "policy.kora_idempotency_ttl_hours", 0)
    await _maintain(substrate, ws)
    fresh = data_of(await calls.kora("kora__append_event", keyed))
    assert fresh["replayed"] is False and fresh["event_id"] != first["event_id"]
