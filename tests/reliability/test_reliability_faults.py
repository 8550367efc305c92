"""Faults: the gateway killed with ``kill -9`` while clients write, a PostgreSQL backend
terminated inside a write, and PostgreSQL restarted under a live gateway and provider.

Clients write with idempotency keys and retry every call they were not told the outcome of,
with the same key, after the gateway comes back (as the tool descriptions ask them to). The
database must then hold each write exactly once: nothing lost, nothing doubled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from mcp import Client
from reliability_processes import (
    HANG_GUARD_SECONDS,
    HttpGatewayProcess,
    http_session,
    kill9_stdio_gateways,
    stdio_session,
)
from reliability_support import (
    Figures,
    Ledger,
    LogicalWrite,
    Tenant,
    account,
    chain_head,
    describe,
    logical_write,
    make_tenant,
    marker_counts,
    new_marker,
    refusal,
    scaled,
    success,
)

from isokron.provider import IsoKronMemoryProvider, IsoKronProviderConfig
from isokron.substrate import connection
from isokron.substrate.audit import verify_workspace
from isokron.substrate.dsn import SubstrateDSNs, database_roles
from isokron.substrate.embedded import start_embedded, stop_embedded
from isokron.substrate.migrate import upgrade

SECTION = "faults"
BLOCKED_GATEWAY_BACKENDS_SQL = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND usename = $1
  AND wait_event_type = 'Lock' AND state = 'active'
ORDER BY pid
"""
LOCK_CHAIN_HEAD_SQL = (
    "SELECT last_seq FROM hivex_foundation.chain_head WHERE tenant_id = $1 FOR UPDATE"
)
IDEMPOTENCY_KEY_SQL = """
SELECT count(*) FROM isokron.idempotency_keys WHERE workspace_id = $1 AND idempotency_key = $2
"""
POLL_ATTEMPTS = 600  # x 0.05 s: bounds for polling, never asserted on


async def _gateway_role(admin_pool: asyncpg.Pool) -> str:
    """This database's gateway role (roles are named per database)."""
    return database_roles(await admin_pool.fetchval("SELECT current_database()")).gateway


async def _wait_for_blocked(admin_pool: asyncpg.Pool, n: int) -> list[int]:
    """Pids of gateway backends waiting on a lock, once there are ``n`` of them."""
    for _ in range(POLL_ATTEMPTS):
        pids = [
            r["pid"]
            for r in await admin_pool.fetch(
                BLOCKED_GATEWAY_BACKENDS_SQL, await _gateway_role(admin_pool)
            )
        ]
        if len(pids) >= n:
            return pids
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {n} gateway backends waiting on a lock")


class RetryingWriter:
    """A client that writes its plan exactly once from its point of view: a call it got no
    answer to (the connection broke) is sent again, with the same idempotency key, on a new
    session once the gateway is back."""

    def __init__(
        self,
        connect: Callable[[], AbstractAsyncContextManager[Client]],
        plan: list[LogicalWrite],
        ledger: Ledger,
        up: asyncio.Event,
    ) -> None:
        self.connect = connect
        self.plan = plan
        self.ledger = ledger
        self.up = up
        self.unanswered = 0  # calls sent whose outcome the client never learnt
        self.sessions = 0

    async def run(self) -> None:
        pending = list(self.plan)
        while pending:
            await self.up.wait()
            try:
                async with self.connect() as client:
                    self.sessions += 1
                    while pending:
                        write = pending[0]
                        self.ledger.attempts += 1
                        try:
                            result = await client.call_tool(write.tool, write.arguments)
                        except BaseException:
                            self.unanswered += 1
                            raise
                        error = refusal(result)
                        if error is not None and error["code"] == "unavailable":
                            await asyncio.sleep(0.05)  # the database blinked: same key again
                            continue
                        if error is not None:
                            self.ledger.refusals.append((write.marker, error))
                        else:
                            self.ledger.acked(write, success(result))
                        pending.pop(0)
            except Exception as exc:  # the session broke (the gateway died): reconnect
                if _failed_check(exc):
                    raise  # an untyped answer is a failure, not a broken connection
                await asyncio.sleep(0.05)


def _failed_check(exc: BaseException) -> bool:
    """True when ``exc`` is, or wraps, a failed assertion of this test."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_failed_check(e) for e in exc.exceptions)
    return isinstance(exc, AssertionError)


async def _stop(gateway: HttpGatewayProcess, tasks: list[asyncio.Task[None]]) -> None:
    """Stop the writers still running (after a failure) and the gateway."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await gateway.stop()


def _record(figures: Figures, name: str, injected: int, survived: bool) -> None:
    figures.add(SECTION, f"{name}: injected", injected)
    figures.add(SECTION, f"{name}: survived", injected if survived else 0)
    figures.add(SECTION, "faults injected", injected)
    figures.add(SECTION, "faults survived", injected if survived else 0)


def _totals(figures: Figures, ledger: Ledger, lost: int, doubled: int, accepted: int) -> None:
    figures.add("totals", "writes attempted", ledger.attempts)
    figures.add("totals", "writes accepted", accepted)
    figures.add("totals", "writes lost", lost)
    figures.add("totals", "writes doubled", doubled)


# ---------------------------------------------------------------------------- kill -9


async def test_kill9_while_writes_wait_in_the_database(
    substrate: SubstrateDSNs, admin_pool: asyncpg.Pool, tmp_path: Path, figures: Figures
) -> None:
    """Writes waiting inside PostgreSQL when the gateway dies commit later, with nobody left to
    tell; their retries (same key) must be answered from the idempotency record, not written
    again. One writer per tenant, each tenant's chain head held by an operator's transaction,
    so every first call has claimed its key and waits when the gateway is killed."""
    writers_n = 8
    tenants = [await make_tenant(admin_pool, f"kill9db{i}") for i in range(writers_n)]
    gateway = HttpGatewayProcess(substrate, tmp_path / "gateway.log")
    await gateway.start()
    ledger = Ledger()
    up = asyncio.Event()
    up.set()
    writers = []
    for tenant in tenants:
        plan = [logical_write(tenant.workspace_id, n) for n in range(scaled(4))]
        for write in plan:
            ledger.plan(write)

        def connect(token: str = tenant.kora_token) -> AbstractAsyncContextManager[Client]:
            return http_session(gateway.url, token)

        writers.append(RetryingWriter(connect, plan, ledger, up))
    tasks: list[asyncio.Task[None]] = []
    try:
        async with admin_pool.acquire() as holder:
            lock = holder.transaction()
            await lock.start()
            try:
                for tenant in tenants:
                    await holder.fetchval(LOCK_CHAIN_HEAD_SQL, tenant.tenant_id)
                tasks = [asyncio.create_task(w.run()) for w in writers]
                orphans = await _wait_for_blocked(admin_pool, writers_n)
                up.clear()
                await gateway.kill9()
                await gateway.start()  # same port: the writers' URL
                up.set()
                # Each retry waits on its key, claimed by the orphaned transaction.
                await _wait_for_blocked(admin_pool, 2 * writers_n)
            finally:
                await lock.rollback()
        await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_SECONDS)
    finally:
        await _stop(gateway, tasks)

    result = await account(admin_pool, ledger)
    audits = [
        await asyncio.to_thread(verify_workspace, substrate.admin, t.workspace_id) for t in tenants
    ]
    unanswered = sum(w.unanswered for w in writers)
    figures.add(SECTION, "kill -9 (writes waiting in PostgreSQL): calls unanswered", unanswered)
    figures.add(
        SECTION, "kill -9 (writes waiting in PostgreSQL): answered by replay", ledger.replays
    )
    survived = result.problems == () and all(a.ok for a in audits)
    _record(figures, "gateway kill -9 (http, writes inside PostgreSQL)", 1, survived)
    _totals(figures, ledger, result.lost, result.doubled, result.accepted)

    assert len(orphans) == writers_n
    assert unanswered == writers_n  # each writer had exactly one call in flight
    assert ledger.refusals == []
    assert result.problems == (), result.problems
    # On one server an entry-point call is a single statement (connection.fetch_in_transaction
    # opens BEGIN ... COMMIT only on Citus): the orphaned transactions committed after their
    # client died, and every retry was answered from their idempotency record: replayed, not
    # written a second time.
    assert ledger.replays == writers_n
    for audit in audits:
        assert audit.ok, audit.to_dict()


async def test_kill9_mid_flight_http_and_stdio(
    substrate: SubstrateDSNs, admin_pool: asyncpg.Pool, tmp_path: Path, figures: Figures
) -> None:
    """Gateways killed at a random point of a busy write stream, over both transports."""
    tenant = await make_tenant(admin_pool, "kill9")
    gateway = HttpGatewayProcess(substrate, tmp_path / "gateway-http.log")
    await gateway.start()
    ledger = Ledger()
    up = asyncio.Event()
    up.set()
    writers: list[RetryingWriter] = []
    per_writer = scaled(12)
    for w in range(10):
        plan = [logical_write(tenant.workspace_id, n) for n in range(per_writer)]
        for write in plan:
            ledger.plan(write)
        if w < 6:

            def connect() -> AbstractAsyncContextManager[Client]:
                return http_session(gateway.url, tenant.kora_token)
        else:
            log = tmp_path / f"gateway-stdio-{w}.log"

            def connect(log: Path = log) -> AbstractAsyncContextManager[Client]:
                return stdio_session(substrate, tenant.kora_token, log)

        writers.append(RetryingWriter(connect, plan, ledger, up))
    total = len(ledger.writes)
    tasks = [asyncio.create_task(w.run()) for w in writers]
    rounds = max(2, scaled(1))
    http_kills = stdio_kills = 0
    try:
        for r in range(1, rounds + 1):
            threshold = total * r // (rounds + 1)
            for _ in range(POLL_ATTEMPTS * 4):
                if len(ledger.acks) >= threshold or all(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.05)
            up.clear()
            await gateway.kill9()
            http_kills += 1
            stdio_kills += kill9_stdio_gateways(tenant.kora_token)
            await gateway.start()
            up.set()
        await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_SECONDS)
    finally:
        await _stop(gateway, tasks)

    result = await account(admin_pool, ledger)
    audit = await asyncio.to_thread(verify_workspace, substrate.admin, tenant.workspace_id)
    unanswered = sum(w.unanswered for w in writers)
    survived = result.problems == () and audit.ok and ledger.refusals == []
    _record(figures, "gateway kill -9 (http, mid-flight)", http_kills, survived)
    _record(figures, "gateway kill -9 (stdio, mid-flight)", stdio_kills, survived)
    figures.add(SECTION, "kill -9 mid-flight: calls unanswered", unanswered)
    figures.add(SECTION, "kill -9 mid-flight: answered by replay", ledger.replays)
    _totals(figures, ledger, result.lost, result.doubled, result.accepted)

    assert stdio_kills >= 1
    assert ledger.refusals == []
    assert result.problems == (), result.problems
    assert result.accepted == total
    assert audit.ok, audit.to_dict()


# ------------------------------------------------------------ a transaction cut mid-way


@pytest.mark.parametrize("tool", ["iso_node_create", "kora__write_agent_scratchpad"])
async def test_backend_terminated_inside_a_write_leaves_nothing(
    tool: str,
    substrate: SubstrateDSNs,
    admin_pool: asyncpg.Pool,
    http_gateway: HttpGatewayProcess,
    figures: Figures,
) -> None:
    tenant = await make_tenant(admin_pool, "cut")
    marker = new_marker()
    key = f"cut-{marker}"
    if tool == "iso_node_create":
        args: dict[str, Any] = {"node_type": "fact", "title": f"cut {marker}"}
    else:
        args = {"kind": "plan", "summary": f"cut {marker}", "content": "a plan"}
    args["idempotency_key"] = key
    head_before = await chain_head(admin_pool, tenant.workspace_id)

    async with http_session(http_gateway.url, tenant.kora_token) as client:
        async with admin_pool.acquire() as holder:
            lock = holder.transaction()
            await lock.start()
            try:
                await holder.fetchval(LOCK_CHAIN_HEAD_SQL, tenant.tenant_id)
                call = asyncio.create_task(client.call_tool(tool, args))
                [pid] = await _wait_for_blocked(admin_pool, 1)
                query = await admin_pool.fetchval(
                    "SELECT query FROM pg_stat_activity WHERE pid = $1", pid
                )
                # cut inside the write itself (the gateway writes through group writes, 0060)
                assert "isokron_api.submit_group" in query
                assert await admin_pool.fetchval("SELECT pg_terminate_backend($1)", pid)
                cut = await asyncio.wait_for(call, HANG_GUARD_SECONDS)
            finally:
                await lock.rollback()

        error = refusal(cut)
        assert error is not None and error["code"] == "unavailable", cut
        events, rows = await marker_counts(admin_pool, tenant.workspace_id)
        assert (events[marker], rows[marker]) == (0, 0)
        assert await chain_head(admin_pool, tenant.workspace_id) == head_before
        assert await admin_pool.fetchval(IDEMPOTENCY_KEY_SQL, tenant.workspace_id, key) == 0

        first = success(await client.call_tool(tool, args))
        again = success(await client.call_tool(tool, args))
    events, rows = await marker_counts(admin_pool, tenant.workspace_id)
    audit = await asyncio.to_thread(verify_workspace, substrate.admin, tenant.workspace_id)
    survived = (
        first["replayed"] is False
        and again["replayed"] is True
        and again["event_id"] == first["event_id"]
        and (events[marker], rows[marker]) == (1, 1)
        and audit.ok
    )
    _record(figures, "backend terminated inside a write", 1, survived)
    figures.add("totals", "writes attempted", 3)
    figures.add("totals", "writes accepted", 1)
    assert first["replayed"] is False and again["replayed"] is True
    assert again["event_id"] == first["event_id"]
    assert (events[marker], rows[marker]) == (1, 1)
    assert await chain_head(admin_pool, tenant.workspace_id) == (
        head_before[0] + 1,
        head_before[1] + 1,
    )
    assert audit.ok, audit.to_dict()


# ------------------------------------------------- PostgreSQL restarted under live clients


class FakeClock:
    """Drives the provider's cache TTL and outage back-off; no test waits on real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Host:
    """Calls provider hooks the way Hermes does, and remembers anything that escaped."""

    def __init__(self, provider: IsoKronMemoryProvider) -> None:
        self.provider = provider
        self.escaped: list[str] = []
        self.calls = 0

    def __call__(self, hook: str, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        try:
            return getattr(self.provider, hook)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - what the host would have seen
            self.escaped.append(f"{hook}: {exc!r}")
            return None


async def _write_until_accepted(
    url: str, token: str, args: dict[str, Any], attempts: int = 100
) -> tuple[dict[str, Any], int]:
    """Write through a fresh session per attempt until the gateway accepts it (the first
    attempts may meet pooled connections the restart broke); returns (result, attempts)."""
    for attempt in range(1, attempts + 1):
        try:
            async with http_session(url, token) as client:
                result = await client.call_tool("iso_node_create", args)
        except Exception:  # noqa: BLE001 - a refused HTTP request while the pool heals
            await asyncio.sleep(0.1)
            continue
        error = refusal(result)
        if error is None:
            return success(result), attempt
        assert error["code"] == "unavailable", error
        await asyncio.sleep(0.1)
    raise AssertionError("the gateway never accepted a write after PostgreSQL came back")


@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")
async def test_postgres_restart_under_live_gateway_and_provider(
    tmp_path: Path, figures: Figures, caplog: pytest.LogCaptureFixture
) -> None:
    """A dedicated embedded PostgreSQL is stopped and started again under a running gateway
    and a running provider: both recover by themselves, the host never sees an exception,
    and every write lands exactly once."""
    caplog.set_level(logging.DEBUG, logger="isokron.provider")
    # Not under tmp_path: the server runs as another user when the tests run as root, and
    # pytest makes its own temporary directories private (0700) whenever a session starts.
    scratch = Path(tempfile.mkdtemp(prefix="isokron-restart-pg-"))
    data_dir = scratch / "pgdata"
    database = "isokron_restart"
    admin = start_embedded(data_dir, database=database)
    try:
        gateway: HttpGatewayProcess | None = None
        provider: IsoKronMemoryProvider | None = None
        try:
            upgrade(admin)
            dsns = SubstrateDSNs.derive(admin)
            pool = await connection.create_pool(admin, min_size=1, max_size=2)
            try:
                tenant: Tenant = await make_tenant(pool, "restart")
            finally:
                await pool.close()
            gateway = HttpGatewayProcess(dsns, tmp_path / "gateway.log", governance_ttl=None)
            await gateway.start()
            gateway_pid = gateway.pid
            clock = FakeClock()
            provider = IsoKronMemoryProvider(
                IsoKronProviderConfig.model_validate(
                    {
                        "reader_dsn": dsns.reader,
                        "mcp_endpoint": gateway.url,
                        "workspace_id": tenant.workspace_id,
                        "service_token": tenant.kora_token,
                    }
                ),
                clock=clock,
            )
            host = Host(provider)
            host(
                "initialize",
                "restart-1",
                platform="cli",
                agent_context="primary",
                hermes_home=str(tmp_path),
            )

            # --- before: everything works
            host("on_turn_start", 1, "hello")
            assert host("system_prompt_block").startswith("§1 Identity (Kora Role Charter v1)")
            host("sync_turn", "q1", "turn 1 used cap_append_event")
            assert provider._writer is not None and provider._writer.pending == 0
            before, _ = await _write_until_accepted(
                gateway.url, tenant.kora_token, {"node_type": "fact", "title": "before the restart"}
            )

            # --- PostgreSQL goes away
            stop_embedded(data_dir)
            async with httpx.AsyncClient(timeout=10) as http:
                health = (await http.get(gateway.health_url)).status_code
            clock.now += 61  # every cached read is stale now
            host("on_turn_start", 2, "hello while the database restarts")
            down_block = host("system_prompt_block")
            assert host("prefetch", "tenant isolation decision", session_id="") == ""
            host("sync_turn", "q2", "turn 2 used cap_iso_node_create")
            host("on_memory_write", "add", "memory", "written while the database was down")
            down_tool = json.loads(
                host("handle_tool_call", "iso_node_create", {"node_type": "fact", "title": "t"})
            )
            queued = provider._writer.pending
            try:
                async with http_session(gateway.url, tenant.kora_token) as client:
                    during = refusal(
                        await client.call_tool(
                            "iso_node_create",
                            {"node_type": "fact", "title": "during", "idempotency_key": "during"},
                        )
                    )
                    during_outcome = f"refused {during['code']}" if during else "accepted"
            except Exception as exc:  # noqa: BLE001 - HTTP 503 (unavailable) from the token check
                during_outcome = f"request failed ({describe(exc)})"

            # --- PostgreSQL comes back (same data directory, same socket)
            assert start_embedded(data_dir, database=database) == admin
            recovered_after = 0
            for round_ in range(1, 121):
                # No back-off to wait out: the provider's watchdog probes every 0.5 s.
                await asyncio.sleep(0.5)
                host("on_turn_start", 2 + round_, "hello again")
                block = host("system_prompt_block")
                # The same turn each round: if a round's write had to wait, its key dedupes it.
                host("sync_turn", "q3", "after the restart, cap_append_event")
                if (
                    block.startswith("§1 Identity (Kora Role Charter v1)")
                    and "could not reach" not in block
                    and provider._writer.pending == 0
                ):
                    recovered_after = round_
                    break
            during_retry, gateway_attempts = await _write_until_accepted(
                gateway.url,
                tenant.kora_token,
                {"node_type": "fact", "title": "during", "idempotency_key": "during"},
            )
            after, _ = await _write_until_accepted(
                gateway.url, tenant.kora_token, {"node_type": "fact", "title": "after the restart"}
            )
            async with httpx.AsyncClient(timeout=10) as http:
                health_after = (await http.get(gateway.health_url)).status_code
            host("on_session_end", [])
            still_running = gateway.process is not None and gateway.process.returncode is None
            same_process = gateway.pid == gateway_pid and gateway.starts == 1
        finally:
            if provider is not None:
                provider.shutdown()
            if gateway is not None:
                await gateway.stop()

        entries_sql = (
            "SELECT summary FROM kronicle.agent_scratchpad_entries WHERE workspace_id = $1 "
            "ORDER BY created_at"
        )
        nodes_sql = (
            "SELECT title FROM kronicle.iso_nodes WHERE workspace_id = $1 ORDER BY created_at"
        )
        conn = await connection.connect(admin)
        try:
            async with connection.workspace_transaction(conn, tenant.workspace_id):
                summaries = [r[0] for r in await conn.fetch(entries_sql, tenant.workspace_id)]
                titles = [r[0] for r in await conn.fetch(nodes_sql, tenant.workspace_id)]
        finally:
            await conn.close()
        audit = await asyncio.to_thread(verify_workspace, admin, tenant.workspace_id)
    finally:
        stop_embedded(data_dir)  # also when the test failed: never leak the server
        shutil.rmtree(scratch, ignore_errors=True)

    hook_failures = [r.getMessage() for r in caplog.records if "hook_failed" in r.getMessage()]
    expected_summaries = [
        "turn 1 used cap_append_event",
        "turn 2 used cap_iso_node_create",
        "[memory.add → memory] written while the database was down",
        "after the restart, cap_append_event",
    ]
    survived = (
        host.escaped == []
        and hook_failures == []
        and recovered_after > 0
        and still_running
        and same_process
        and summaries == expected_summaries
        and titles == ["before the restart", "t", "during", "after the restart"]
        and audit.ok
    )
    _record(figures, "PostgreSQL restart (gateway + provider live)", 1, survived)
    figures.set(SECTION, "PostgreSQL restart: host hook calls", host.calls)
    figures.set(SECTION, "PostgreSQL restart: exceptions seen by the host", len(host.escaped))
    figures.set(SECTION, "PostgreSQL restart: writes queued while down", queued)
    figures.set(SECTION, "PostgreSQL restart: gateway call while down", during_outcome)
    figures.set(SECTION, "PostgreSQL restart: gateway attempts to recover", gateway_attempts)

    assert host.escaped == []
    assert hook_failures == []
    assert health == 503 and health_after == 200
    assert down_block.startswith("§1 Identity (Kora Role Charter v1)")  # verified earlier
    assert "could not reach the substrate just now" in down_block
    assert down_tool["status"] == "queued"  # saved on disk, delivered once it is back
    assert queued == 3  # the turn, the memory write and the model's write wait in the outbox
    assert recovered_after > 0
    assert still_running and same_process  # the gateway recovered without a restart
    assert before["replayed"] is False and after["replayed"] is False
    assert during_retry["node_id"]
    # The provider's queued writes landed once, the model's tool write among them.
    assert summaries == expected_summaries
    assert titles == ["before the restart", "t", "during", "after the restart"]
    assert audit.ok, audit.to_dict()
