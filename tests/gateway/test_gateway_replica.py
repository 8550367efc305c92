"""Reads from a streaming replica while writes go to the primary (issue 13, docs/scaling.md).

A real primary and a hot-standby replica made with PostgreSQL's own ``pg_basebackup`` (see
``tests/replica_cluster.py``). The gateway is started with ``--reader-dsn`` on the replica and
``--gateway-dsn`` on the primary; the provider's reads (its session context) get the replica's
reader DSN. Proved here: the reads work on the replica, row-level security holds there, the
replica refuses writes, and what a reader sees right after a write — NOT read-your-writes by
default (asynchronous replication), read-your-writes with ``synchronous_commit =
remote_apply`` and the replica named in ``synchronous_standby_names``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import psycopg
import pytest
from gateway_harness import Gateways, Tenant, data_of, make_tenant

from isokron.errors import SubstrateError
from isokron.provider.context import render_context_async
from isokron.substrate import connection, reads
from isokron.substrate.dsn import SubstrateDSNs, database_roles, with_database, with_user
from isokron.substrate.migrate import upgrade
from replica_cluster import PrimaryAndReplica

DATABASE = "isokron"
SAMPLE_WRITES = 40
READ_TABLES = (
    "public.workspaces",
    "public.actor_registry",
    "public.kora_role_charter",
    "public.kora_policy_registry",
    "public.kora_capability_matrix",
    "hivex_foundation.tenant",
    "hivex_foundation.event_log",
    "hivex_foundation.chain_head",
    "kronicle.workspace_constitution_revisions",
    "kronicle.agent_scratchpad_entries",
    "kronicle.iso_nodes",
)


@pytest.fixture(scope="module")
def pair() -> Iterator[PrimaryAndReplica]:
    servers = PrimaryAndReplica.start()
    try:
        with psycopg.connect(servers.primary_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        upgrade(with_database(servers.primary_dsn, DATABASE))
        servers.wait_caught_up()
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def dsns(pair: PrimaryAndReplica) -> SubstrateDSNs:
    """Admin and gateway on the primary; the reader on the replica."""
    primary = with_database(pair.primary_dsn, DATABASE)
    replica = with_database(pair.replica_dsn, DATABASE)
    return SubstrateDSNs.derive(primary, reader=with_user(replica, database_roles(DATABASE).reader))


@pytest.fixture(scope="module")
async def primary_pool(dsns: SubstrateDSNs) -> AsyncIterator[asyncpg.Pool]:
    pool = await connection.create_pool(dsns.admin, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def replica_pool(dsns: SubstrateDSNs) -> AsyncIterator[asyncpg.Pool]:
    pool = await connection.create_pool(dsns.reader, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def tenants(primary_pool: asyncpg.Pool, pair: PrimaryAndReplica) -> tuple[Tenant, Tenant]:
    made = (await make_tenant(primary_pool, "rep-a"), await make_tenant(primary_pool, "rep-b"))
    pair.wait_caught_up()
    return made


@pytest.fixture(scope="module")
async def gateway(
    dsns: SubstrateDSNs, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateways]:
    gw = Gateways("http", dsns, tmp_path_factory.mktemp("gw-replica"))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.close()


async def test_gateway_writes_to_the_primary_and_reads_from_the_replica(
    gateway: Gateways, tenants: tuple[Tenant, Tenant], pair: PrimaryAndReplica
) -> None:
    tenant = tenants[0]
    kora = await gateway.session(tenant.kora_token)
    marker = f"replica-{uuid.uuid4().hex[:8]}"
    node = data_of(await kora.call("iso_node_create", {"node_type": "source", "title": marker}))
    note = data_of(
        await kora.call(
            "kora__write_agent_scratchpad",
            {"kind": "observation", "summary": marker, "content": "seen on the replica"},
        )
    )
    pair.wait_caught_up()
    found = data_of(await kora.call("iso_node_search", {"query": marker}))
    assert [n["node_id"] for n in found["nodes"]] == [node["node_id"]]
    got = data_of(await kora.call("iso_node_get", {"node_id": node["node_id"]}))
    assert got["node"]["title"] == marker
    own = data_of(await kora.call("kora__read_agent_scratchpad", {"limit": 5}))
    assert note["entry_id"] in [e["entry_id"] for e in own["entries"]]
    row = data_of(await kora.call("kora__read_kora_capability_row", {}))
    assert row["actor_kind"] == "kora" and row["count"] == 49
    with psycopg.connect(pair.replica_dsn, autocommit=True) as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


async def test_provider_session_context_reads_from_the_replica(
    dsns: SubstrateDSNs, tenants: tuple[Tenant, Tenant]
) -> None:
    block, ctx = await render_context_async(dsns.reader, tenants[0].workspace_id)
    assert ctx["identity_error"] is None
    assert ctx["role_charter"]["version"] >= 1
    assert len(ctx["policies"]) == reads.EXPECTED_POLICY_COUNT
    assert ctx["capability_matrix_row"]["granted"]
    assert ctx["recent_chain_events"]
    assert block


async def test_row_level_security_holds_on_the_replica(
    replica_pool: asyncpg.Pool, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    tried = caught = 0
    async with replica_pool.acquire() as conn:
        for table in READ_TABLES:
            # No workspace named: nothing at all.
            tried += 1
            unscoped = await conn.fetchval(f"SELECT count(*) FROM {table}")
            caught += unscoped == 0
            assert unscoped == 0, table
            # Scoped to A: A's rows only, never B's.
            async with reads.scoped(conn, a.workspace_id):
                keys = await conn.fetch(f"SELECT * FROM {table} LIMIT 1000")
            tried += 1
            leaked = [r for r in keys if b.workspace_id in {str(v) for v in dict(r).values()}]
            caught += not leaked
            assert not leaked, table
        for secret in ("isokron.service_tokens", "isokron.idempotency_keys"):
            tried += 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetchval(f"SELECT count(*) FROM {secret}")
            caught += 1
    print(f"replica RLS probes: tried {tried}, held {caught}")
    assert tried == caught


async def test_the_replica_refuses_every_write(
    dsns: SubstrateDSNs, tenants: tuple[Tenant, Tenant]
) -> None:
    replica_admin = with_user(dsns.reader, "postgres")
    conn = await connection.connect(replica_admin)
    try:
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("DELETE FROM kronicle.iso_nodes")
        # The write entry point itself: the replica is read-only (SQLSTATE 25006).
        with pytest.raises(SubstrateError) as refused:
            await connection.run(
                conn,
                "SELECT isokron_api.write_as('append_event', $1, $2::uuid, $3::jsonb)",
                tenants[0].workspace_id,
                str(tenants[0].actors["kora"]),
                {"event_type": "kora.note.recorded"},
            )
        assert refused.value.sqlstate == "25006", refused.value
    finally:
        await conn.close()


async def _node_seen_on_replica(replica_pool: asyncpg.Pool, ws: str, node_id: str) -> bool:
    try:
        node = await reads.read_iso_node(replica_pool, ws, uuid.UUID(node_id))
    except SubstrateError:
        return False
    return node is not None


async def test_a_read_right_after_a_write_is_not_read_your_writes_by_default(
    gateway: Gateways,
    tenants: tuple[Tenant, Tenant],
    pair: PrimaryAndReplica,
    replica_pool: asyncpg.Pool,
) -> None:
    tenant = tenants[0]
    kora = await gateway.session(tenant.kora_token)
    # Deterministic: with replay paused (a lagging replica), a committed write is not visible.
    pair.pause_replay(True)
    try:
        node = data_of(await kora.call("iso_node_create", {"node_type": "source", "title": "lag"}))
        assert not await _node_seen_on_replica(replica_pool, tenant.workspace_id, node["node_id"])
    finally:
        pair.pause_replay(False)
    pair.wait_caught_up()
    assert await _node_seen_on_replica(replica_pool, tenant.workspace_id, node["node_id"])
    # Measured, not asserted: how often an immediate read misses the write on a healthy replica.
    missed = 0
    started = time.perf_counter()
    for i in range(SAMPLE_WRITES):
        made = data_of(
            await kora.call("iso_node_create", {"node_type": "source", "title": f"s{i}"})
        )
        missed += not await _node_seen_on_replica(
            replica_pool, tenant.workspace_id, made["node_id"]
        )
    elapsed = time.perf_counter() - started
    print(
        f"async replica: {missed}/{SAMPLE_WRITES} reads right after a write missed it "
        f"({SAMPLE_WRITES / elapsed:.0f} write+read pairs/s)"
    )


async def test_remote_apply_gives_read_your_writes(
    gateway: Gateways,
    tenants: tuple[Tenant, Tenant],
    pair: PrimaryAndReplica,
    replica_pool: asyncpg.Pool,
) -> None:
    tenant = tenants[1]
    kora = await gateway.session(tenant.kora_token)
    pair.set_synchronous(remote_apply=True)
    try:
        # The commit waits until the replica has applied it: with replay paused it cannot
        # finish (the primary's backend waits on SyncRep), and once it returns the replica has it.
        pair.pause_replay(True)
        try:
            pending = asyncio.create_task(
                kora.call("iso_node_create", {"node_type": "source", "title": "sync"})
            )
            await asyncio.to_thread(pair.wait_for_sync_rep_wait)
            assert not pending.done()
        finally:
            pair.pause_replay(False)
        made = data_of(await pending)
        assert await _node_seen_on_replica(replica_pool, tenant.workspace_id, made["node_id"])
        missed = 0
        for i in range(SAMPLE_WRITES):
            made = data_of(
                await kora.call("iso_node_create", {"node_type": "source", "title": f"r{i}"})
            )
            missed += not await _node_seen_on_replica(
                replica_pool, tenant.workspace_id, made["node_id"]
            )
        print(f"remote_apply replica: {missed}/{SAMPLE_WRITES} reads right after a write missed it")
        assert missed == 0
    finally:
        pair.set_synchronous(remote_apply=False)
