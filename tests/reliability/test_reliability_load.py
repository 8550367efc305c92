"""Load: 16 concurrent writers through the gateway, real MCP clients over HTTP and stdio, on one
tenant and across eight. Every accepted write has exactly one row and one chain event, every
chain is gapless and verifies, nothing deadlocks, nothing is lost or doubled.

Writers are paired: each pair sends its first writes with the same idempotency keys at about
the same moment (one twin over HTTP, the other over stdio where the scenario has one), so
racing retries are part of the load. Exactly one twin may be told ``replayed: false``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from mcp import Client
from reliability_processes import (
    HANG_GUARD_SECONDS,
    HttpGatewayProcess,
    http_session,
    stdio_session,
)
from reliability_support import (
    Figures,
    Ledger,
    LogicalWrite,
    Tenant,
    account,
    logical_write,
    make_tenant,
    refusal,
    scaled,
    success,
)

from isokron.substrate.audit import verify_workspace
from isokron.substrate.dsn import SubstrateDSNs

WRITERS = 16
TWIN_WRITES = 3  # per pair of writers: the same writes, sent by both twins
WRITES_PER_WRITER = scaled(12)  # besides the twin writes

KORA_EVENTS_SQL = """
SELECT count(*) FROM hivex_foundation.event_log el
JOIN hivex_foundation.tenant t ON t.tenant_id = el.tenant_id
JOIN public.actor_registry a ON a.workspace_id = t.clerk_org_id AND a.actor_id = el.actor_id
WHERE t.clerk_org_id = $1 AND a.actor_kind = 'kora'
"""
DEADLOCKS_SQL = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"


@dataclass(frozen=True)
class Scenario:
    name: str
    tenants: int
    stdio_writers: int  # the last N writers use stdio, the others HTTP

    def transport(self, writer: int) -> str:
        return "stdio" if writer >= WRITERS - self.stdio_writers else "http"

    def tenant(self, writer: int) -> int:
        return writer % self.tenants


SCENARIOS = [Scenario("one-tenant", 1, 4), Scenario("eight-tenants", 8, 8)]


@pytest.fixture(scope="module")
async def load_gateway(
    substrate: SubstrateDSNs, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HttpGatewayProcess]:
    """An HTTP gateway with its production governance cache (default TTL)."""
    gateway = HttpGatewayProcess(
        substrate, tmp_path_factory.mktemp("load") / "gateway-http.log", governance_ttl=None
    )
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


async def _writer(
    connect: Callable[[], AbstractAsyncContextManager[Client]],
    plan: list[LogicalWrite],
    ledger: Ledger,
    connected: asyncio.Barrier,
) -> None:
    async with connect() as client:
        await connected.wait()  # every writer is connected before anyone writes
        for write in plan:
            ledger.attempts += 1
            result = await client.call_tool(write.tool, write.arguments)
            error = refusal(result)
            if error is not None:
                ledger.refusals.append((write.marker, error))
            else:
                ledger.acked(write, success(result))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_sixteen_concurrent_writers(
    scenario: Scenario,
    substrate: SubstrateDSNs,
    admin_pool: asyncpg.Pool,
    load_gateway: HttpGatewayProcess,
    tmp_path: Path,
    figures: Figures,
) -> None:
    tenants: list[Tenant] = [
        await make_tenant(admin_pool, f"load{i}") for i in range(scenario.tenants)
    ]
    deadlocks_before = await admin_pool.fetchval(DEADLOCKS_SQL)
    ledger = Ledger()
    plans: list[list[LogicalWrite]] = [[] for _ in range(WRITERS)]
    for first in range(WRITERS // 2):
        twin = first + WRITERS // 2
        assert scenario.tenant(first) == scenario.tenant(twin)
        ws = tenants[scenario.tenant(first)].workspace_id
        shared = [logical_write(ws, n) for n in range(TWIN_WRITES)]
        plans[first] += shared
        plans[twin] += shared
    for writer in range(WRITERS):
        ws = tenants[scenario.tenant(writer)].workspace_id
        plans[writer] += [logical_write(ws, n) for n in range(WRITES_PER_WRITER)]
    for plan in plans:
        for write in plan:
            ledger.plan(write)

    connected = asyncio.Barrier(WRITERS)
    tasks = []
    for writer, plan in enumerate(plans):
        token = tenants[scenario.tenant(writer)].kora_token
        if scenario.transport(writer) == "http":
            url = load_gateway.url

            def connect(url: str = url, token: str = token) -> AbstractAsyncContextManager:
                return http_session(url, token)
        else:
            log = tmp_path / f"gateway-stdio-{writer}.log"

            def connect(token: str = token, log: Path = log) -> AbstractAsyncContextManager:
                return stdio_session(substrate, token, log)

        tasks.append(asyncio.create_task(_writer(connect, plan, ledger, connected)))
    # A hang guard only (a deadlock would never finish); nothing here measures time.
    await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_SECONDS)

    result = await account(admin_pool, ledger)
    audits = [
        await asyncio.to_thread(verify_workspace, substrate.admin, t.workspace_id) for t in tenants
    ]
    kora_events = sum([await admin_pool.fetchval(KORA_EVENTS_SQL, t.workspace_id) for t in tenants])
    deadlocks = (await admin_pool.fetchval(DEADLOCKS_SQL)) - deadlocks_before
    first_acks = [results[0] for results in ledger.acks.values()]
    fresh = sum(1 for results in ledger.acks.values() if not results[0].get("replayed"))

    section = f"load: {scenario.name}"
    figures.set(
        section,
        "writers (http/stdio)",
        f"{WRITERS - scenario.stdio_writers}/{scenario.stdio_writers}",
    )
    figures.set(section, "tenants", scenario.tenants)
    figures.set(section, "writes attempted", result.attempted)
    figures.set(section, "distinct writes", len(ledger.writes))
    figures.set(section, "writes accepted", result.accepted)
    figures.set(section, "writes refused", len(ledger.refusals))
    figures.set(section, "writes lost", result.lost)
    figures.set(section, "writes doubled", result.doubled)
    figures.set(section, "idempotent replays", ledger.replays)
    figures.set(section, "chains verified", f"{sum(a.ok for a in audits)}/{len(audits)}")
    figures.set(section, "deadlocks (pg_stat_database)", deadlocks)
    figures.add("totals", "writes attempted", result.attempted)
    figures.add("totals", "writes accepted", result.accepted)
    figures.add("totals", "writes lost", result.lost)
    figures.add("totals", "writes doubled", result.doubled)

    assert ledger.refusals == []
    assert result.problems == ()
    assert result.lost == 0 and result.doubled == 0
    assert result.accepted == len(ledger.writes) == len(first_acks)
    assert result.attempted == WRITERS * (TWIN_WRITES + WRITES_PER_WRITER)
    # Each shared write: acknowledged twice, written once (one of the two is a replay).
    assert ledger.replays == (WRITERS // 2) * TWIN_WRITES
    assert fresh + sum(
        1 for results in ledger.acks.values() for r in results[1:] if not r.get("replayed")
    ) == len(ledger.writes)
    assert kora_events == len(ledger.writes)
    for audit in audits:
        assert audit.ok, audit.to_dict()
        assert audit.chain.events_checked == audit.chain.head_seq
    assert deadlocks == 0
