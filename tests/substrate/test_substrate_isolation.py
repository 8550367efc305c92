"""Invariant 1: reads are isolated. For EVERY workspace-keyed table (found in pg_catalog), the
reader role sees the rows of the workspace named by app.current_workspace_id and nothing else;
with the setting missing it sees zero rows; tables it has no grant on refuse the SELECT."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from isokron.governance.seeds import default_seed
from isokron.substrate import connection, writes
from isokron.substrate.dsn import DatabaseRoles, SubstrateDSNs

KEY_COLUMNS = ("workspace_id", "clerk_org_id", "tenant_id")
QUOTA_ROWS = [{"bucket": "writes", "limit": 60, "window_seconds": 60}]
# Tables the reader must not read at all (secrets' metadata and gateway bookkeeping).
READER_INVISIBLE = {
    "isokron.service_tokens",
    "isokron.idempotency_keys",
    "isokron.quota_windows",
}

SELECT_KEYED_TABLES_SQL = """
SELECT n.nspname AS schema_name, c.relname AS table_name,
       (array_agg(a.attname::text ORDER BY array_position($2::text[], a.attname::text)))[1]
           AS key_column,
       has_table_privilege($3, c.oid, 'SELECT') AS reader_can_select
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p')
  AND n.nspname IN ('public', 'kronicle', 'hivex_foundation', 'isokron')
  AND position('yoyo' IN c.relname) = 0
  AND (a.attname = ANY($1::text[]) OR (n.nspname = 'public' AND c.relname = 'workspaces'
                                        AND a.attname = 'id'))
GROUP BY n.nspname, c.relname, c.oid
ORDER BY 1, 2
"""
# clerk_org_id before tenant_id: hivex_foundation.tenant is compared by workspace id.
KEY_ORDER = ["workspace_id", "clerk_org_id", "id", "tenant_id"]


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    key: str
    reader_can_select: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def sql_name(self) -> str:
        # Names come from pg_catalog, not from input; quoting keeps odd names safe anyway.
        return '"{}"."{}"'.format(self.schema.replace('"', '""'), self.name.replace('"', '""'))

    def key_of(self, ws: writes.CreatedWorkspace) -> str:
        return str(ws.tenant_id) if self.key == "tenant_id" else ws.workspace_id


@dataclass(frozen=True)
class World:
    a: writes.CreatedWorkspace
    b: writes.CreatedWorkspace
    tables: tuple[Table, ...]


async def _populate(admin: asyncpg.Pool, gateway: asyncpg.Connection, prefix: str) -> Any:
    ws_id = f"{prefix}-{uuid4().hex[:8]}"
    async with admin.acquire() as conn:
        ws = await writes.create_workspace(conn, ws_id, f"Isolation {prefix}", seed=default_seed())
    kora, operator = ws.actors["kora"], ws.operator_actor_id
    async with admin.acquire() as conn:
        issued = await writes.issue_token(conn, ws_id, operator, kora, label=prefix)
    token_hash = writes.token_sha256(issued.token)

    async def agent(op: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return await writes.write_with_token(gateway, op, token_hash, args, **kw)

    await agent(
        "write_scratchpad_entry",
        writes.scratchpad_args(
            kind="observation", summary="secret of " + prefix, content="only " + prefix
        ),
    )
    n1 = await agent("iso_node_create", {"node_type": "fact", "title": f"{prefix} one"})
    n2 = await agent("iso_node_create", {"node_type": "fact", "title": f"{prefix} two"})
    await agent(
        "iso_link_create",
        {"from_node_id": n1["node_id"], "to_node_id": n2["node_id"], "link_type": "supports"},
    )
    await agent("propose_convention", {"title": "c", "body": "convention of " + prefix})
    await agent(
        "propose_policy_change",
        {"policy_key": "policy.kora_rate_limit_per_minute", "proposed_value": 30},
    )
    await agent(
        "raise_escalation",
        {"tool": "iso_node_create", "reason": "needs a person", "request": {}},
    )
    await agent("append_event", {"event_type": "kora.note.recorded"}, idempotency_key="k-1")
    await connection.run(
        gateway, "SELECT isokron_api.admit_write($1, $2::jsonb)", token_hash, QUOTA_ROWS
    )
    return ws


@pytest.fixture(scope="module")
async def world(substrate: SubstrateDSNs, admin_pool: asyncpg.Pool, roles: DatabaseRoles) -> World:
    gateway = await connection.connect(substrate.gateway)
    try:
        a = await _populate(admin_pool, gateway, "iso-a")
        b = await _populate(admin_pool, gateway, "iso-b")
    finally:
        await gateway.close()
    async with admin_pool.acquire() as conn:
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        rows = await conn.fetch(SELECT_KEYED_TABLES_SQL, list(KEY_COLUMNS), KEY_ORDER, roles.reader)
    tables = tuple(
        Table(r["schema_name"], r["table_name"], r["key_column"], r["reader_can_select"])
        for r in rows
    )
    return World(a=a, b=b, tables=tables)


async def _superuser_count(admin: asyncpg.Pool, table: Table, key: str) -> int:
    # The admin DSN is a superuser, which row-level security does not apply to.
    return await admin.fetchval(
        f"SELECT count(*) FROM {table.sql_name} WHERE {table.key}::text = $1", key
    )


def test_the_catalog_lists_every_table_and_the_reader_grants_are_deliberate(world: World) -> None:
    names = {t.qualified for t in world.tables}
    assert len(names) >= 18
    assert {"public.workspaces", "hivex_foundation.event_log", "kronicle.iso_links"} <= names
    assert {t.qualified for t in world.tables if not t.reader_can_select} == READER_INVISIBLE


async def test_every_workspace_keyed_table_holds_rows_of_both_workspaces(
    world: World, admin_pool: asyncpg.Pool
) -> None:
    empty = []
    for t in world.tables:
        for ws in (world.a, world.b):
            if await _superuser_count(admin_pool, t, t.key_of(ws)) == 0:
                empty.append(f"{t.qualified} for {ws.workspace_id}")
    assert empty == [], "the setup wrote no row into: " + ", ".join(empty)


async def test_reader_without_the_setting_sees_zero_rows(
    world: World, substrate: SubstrateDSNs
) -> None:
    conn = await connection.connect(substrate.reader)
    try:
        assert (
            await conn.fetchval("SELECT current_setting('app.current_workspace_id', true)") is None
        )
        seen = {}
        for t in world.tables:
            if t.reader_can_select:
                seen[t.qualified] = await conn.fetchval(f"SELECT count(*) FROM {t.sql_name}")
        assert seen and all(n == 0 for n in seen.values()), seen

        # A transaction-local setting does not outlive its transaction (pooled connections).
        async with connection.workspace_transaction(conn, world.a.workspace_id):
            assert await conn.fetchval("SELECT count(*) FROM kronicle.iso_nodes") == 2
        for t in world.tables:
            if t.reader_can_select:
                assert await conn.fetchval(f"SELECT count(*) FROM {t.sql_name}") == 0, t
        # An empty setting is no workspace either.
        async with connection.workspace_transaction(conn, ""):
            for t in world.tables:
                if t.reader_can_select:
                    assert await conn.fetchval(f"SELECT count(*) FROM {t.sql_name}") == 0, t
    finally:
        await conn.close()


@pytest.mark.parametrize("scope", ["a", "b"])
async def test_reader_scoped_to_one_workspace_sees_exactly_its_rows(
    world: World, reader_pool: asyncpg.Pool, admin_pool: asyncpg.Pool, scope: str
) -> None:
    mine, other = (world.a, world.b) if scope == "a" else (world.b, world.a)
    async with reader_pool.acquire() as conn:
        for t in world.tables:
            if not t.reader_can_select:
                continue
            async with connection.workspace_transaction(conn, mine.workspace_id):
                total = await conn.fetchval(f"SELECT count(*) FROM {t.sql_name}")
                of_other = await conn.fetchval(
                    f"SELECT count(*) FROM {t.sql_name} WHERE {t.key}::text = $1",
                    t.key_of(other),
                )
            expected = await _superuser_count(admin_pool, t, t.key_of(mine))
            assert of_other == 0, f"{t.qualified}: {other.workspace_id}'s rows are visible"
            assert total == expected > 0, f"{t.qualified}: saw {total}, expected {expected}"


async def test_tables_without_a_reader_grant_refuse_the_select(
    world: World, reader_pool: asyncpg.Pool
) -> None:
    refused = []
    async with reader_pool.acquire() as conn:
        for t in world.tables:
            if t.reader_can_select:
                continue
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with connection.workspace_transaction(conn, world.a.workspace_id):
                    await conn.fetchval(f"SELECT count(*) FROM {t.sql_name}")
            refused.append(t.qualified)
    assert set(refused) == READER_INVISIBLE


async def test_reader_reads_of_tenant_keyed_tables_follow_the_workspace(
    world: World, reader_pool: asyncpg.Pool
) -> None:
    # event_log and chain_head resolve the workspace through hivex_foundation.tenant.
    async with reader_pool.acquire() as conn:
        async with connection.workspace_transaction(conn, world.b.workspace_id):
            tenants = await conn.fetch("SELECT DISTINCT tenant_id FROM hivex_foundation.event_log")
            head = await conn.fetch("SELECT tenant_id FROM hivex_foundation.chain_head")
    assert [r["tenant_id"] for r in tenants] == [world.b.tenant_id]
    assert [r["tenant_id"] for r in head] == [world.b.tenant_id]


async def test_the_owner_role_is_bound_by_forced_rls(
    world: World, admin_pool: asyncpg.Pool, roles: DatabaseRoles
) -> None:
    async with admin_pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(f'SET LOCAL ROLE "{roles.owner}"')
            for t in world.tables:
                n = await conn.fetchval(f"SELECT count(*) FROM {t.sql_name}")
                assert n == 0, f"the table owner sees {n} rows of {t.qualified} unscoped"
        async with conn.transaction():
            await conn.execute(f'SET LOCAL ROLE "{roles.owner}"')
            await conn.execute("SELECT isokron.set_local('isokron.all_workspaces', 'on', true)")
            for t in world.tables:
                for ws in (world.a, world.b):
                    n = await conn.fetchval(
                        f"SELECT count(*) FROM {t.sql_name} WHERE {t.key}::text = $1", t.key_of(ws)
                    )
                    assert n > 0, f"the owner's opt-in policy does not show {t.qualified}"


async def test_the_owner_opt_in_is_not_available_to_the_reader(
    world: World, reader_pool: asyncpg.Pool
) -> None:
    async with reader_pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("SELECT isokron.set_local('isokron.all_workspaces', 'on', true)")
            for t in world.tables:
                if t.reader_can_select:
                    assert await conn.fetchval(f"SELECT count(*) FROM {t.sql_name}") == 0, t


def test_key_values_are_what_the_tables_store(world: World) -> None:
    # Guards the helper above: every table compares by workspace id (the event log and chain
    # head carry it since migration 0011); the tenant table by its clerk_org_id.
    event_log = next(t for t in world.tables if t.qualified == "hivex_foundation.event_log")
    tenant = next(t for t in world.tables if t.qualified == "hivex_foundation.tenant")
    workspaces = next(t for t in world.tables if t.qualified == "public.workspaces")
    assert event_log.key == "workspace_id" and event_log.key_of(world.a) == world.a.workspace_id
    assert all(t.key != "tenant_id" for t in world.tables)
    assert tenant.key == "clerk_org_id" and tenant.key_of(world.a) == world.a.workspace_id
    assert workspaces.key == "id"
