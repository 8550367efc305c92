"""Invariants 2 and 3 as GRANTs and triggers: the reader can only SELECT, the gateway can only
execute its entry points, and the event log is append-only for every role (the owner too)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from uuid import uuid4

import asyncpg
import pytest

from isokron.errors import SubstrateError
from isokron.governance.seeds import default_seed
from isokron.substrate import connection, writes
from isokron.substrate.dsn import DatabaseRoles, SubstrateDSNs

SCHEMAS = ("public", "kronicle", "hivex_foundation", "isokron", "isokron_api")
SELECT_ALL_TABLES_SQL = """
SELECT n.nspname AS schema_name, c.relname AS table_name,
       (SELECT a.attname FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attgenerated = ''
        ORDER BY a.attnum LIMIT 1) AS first_column
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1::text[])
ORDER BY 1, 2
"""
SELECT_EXECUTABLE_FUNCTIONS_SQL = """
SELECT p.oid::regprocedure::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY($2::text[]) AND has_function_privilege($1, p.oid, 'EXECUTE')
ORDER BY 1
"""
GATEWAY_FUNCTIONS = {
    "isokron_api.write(bytea,text,jsonb,text,text)",
    "isokron_api.authenticate_token(bytea)",
    "isokron_api.admit_write(bytea,jsonb)",
    "isokron_api.token_issued_at(bytea)",
    "isokron_api.maintain(text)",
    "isokron_api.submit_group(text,bytea[],jsonb)",
}
# Pure functions (no table access) the reader uses to re-compute row records (invariant 4).
READER_FUNCTIONS = [
    "hivex_foundation.row_field(text,text)",
    "hivex_foundation.row_record(text,bytea[])",
    # The one-statement reads (0070, 0071): invoker rights, so RLS applies to what they read.
    "isokron.recall_nodes(text,text,integer)",
    "isokron.session_context(text,text,bigint,bigint,boolean)",
    "isokron.session_read_limit(isokron.session_policy[],text)",
    # The scoping helper: SET LOCAL with bind parameters, which reaches Citus workers (0040).
    "isokron.set_local(text,text,boolean)",
]
APPEND_ONLY_SQLSTATE = "IKA01"


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    first_column: str

    @property
    def sql_name(self) -> str:
        return '"{}"."{}"'.format(self.schema.replace('"', '""'), self.name.replace('"', '""'))

    def statements(self) -> dict[str, str]:
        col = '"{}"'.format(self.first_column.replace('"', '""'))
        return {
            "INSERT": f"INSERT INTO {self.sql_name} DEFAULT VALUES",
            "UPDATE": f"UPDATE {self.sql_name} SET {col} = {col}",
            "DELETE": f"DELETE FROM {self.sql_name}",
            "TRUNCATE": f"TRUNCATE {self.sql_name}",
            "SELECT": f"SELECT count(*) FROM {self.sql_name}",
        }


@pytest.fixture(scope="module")
async def all_tables(admin_pool: asyncpg.Pool) -> tuple[Table, ...]:
    rows = await admin_pool.fetch(SELECT_ALL_TABLES_SQL, list(SCHEMAS))
    tables = tuple(Table(r["schema_name"], r["table_name"], r["first_column"]) for r in rows)
    assert len(tables) >= 18
    return tables


@pytest.fixture(scope="module")
async def ws(admin_pool: asyncpg.Pool) -> writes.CreatedWorkspace:
    async with admin_pool.acquire() as conn:
        return await writes.create_workspace(
            conn, f"roles-{uuid4().hex[:8]}", "Roles", seed=default_seed()
        )


@pytest.fixture
async def reader(substrate: SubstrateDSNs) -> AsyncIterator[asyncpg.Connection]:
    conn = await connection.connect(substrate.reader)
    yield conn
    await conn.close()


@pytest.fixture
async def gateway(substrate: SubstrateDSNs) -> AsyncIterator[asyncpg.Connection]:
    conn = await connection.connect(substrate.gateway)
    yield conn
    await conn.close()


async def _refused(conn: asyncpg.Connection, sql: str, workspace_id: str | None = None) -> bool:
    """True when ``sql`` is refused for lack of a privilege. Always rolled back.

    A row-level security refusal has the same SQLSTATE (42501) but would mean the privilege
    WAS granted, so only "permission denied" counts.
    """
    tx = conn.transaction()
    await tx.start()
    try:
        if workspace_id is not None:
            await conn.execute(connection.SET_WORKSPACE_SQL, workspace_id)
        await conn.execute(sql)
    except asyncpg.InsufficientPrivilegeError as exc:
        return str(exc).startswith("permission denied")
    finally:
        await tx.rollback()
    return False


async def _unrefused(
    conn: asyncpg.Connection, tables: tuple[Table, ...], verbs: tuple[str, ...], ws_id: str
) -> list[str]:
    allowed = []
    for t in tables:
        for verb in verbs:
            if not await _refused(conn, t.statements()[verb], ws_id):
                allowed.append(f"{verb} {t.schema}.{t.name}")
    return allowed


SELECT_TABLE_PRIVILEGES_SQL = """
SELECT n.nspname || '.' || c.relname AS name, p.privilege
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES',
                        'TRIGGER']) AS p(privilege)
WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname = ANY($2::text[])
  AND has_table_privilege($1, c.oid, p.privilege)
  -- An extension's own objects (Citus's metadata views in public) are not IsoKron's tables.
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


@pytest.mark.parametrize(("role", "allowed"), [("reader", {"SELECT"}), ("gateway", set())])
async def test_table_privileges_in_the_catalog(
    admin_pool: asyncpg.Pool, roles: DatabaseRoles, role: str, allowed: set[str]
) -> None:
    rows = await admin_pool.fetch(SELECT_TABLE_PRIVILEGES_SQL, getattr(roles, role), list(SCHEMAS))
    extra = [f"{r['privilege']} on {r['name']}" for r in rows if r["privilege"] not in allowed]
    assert extra == [], f"{role} holds: " + ", ".join(extra)


# ------------------------------------------------------------------------------ the reader
async def test_reader_cannot_insert_update_delete_or_truncate_any_table(
    reader: asyncpg.Connection, all_tables: tuple[Table, ...], ws: writes.CreatedWorkspace
) -> None:
    allowed = await _unrefused(
        reader, all_tables, ("INSERT", "UPDATE", "DELETE", "TRUNCATE"), ws.workspace_id
    )
    assert allowed == [], "the reader role was allowed: " + ", ".join(allowed)


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_reader_cannot_create_tables_views_or_functions(
    reader: asyncpg.Connection, schema: str
) -> None:
    name = f"{schema}.evil_{uuid4().hex[:6]}"
    assert await _refused(reader, f"CREATE TABLE {name} (x int)")
    assert await _refused(reader, f"CREATE VIEW {name} AS SELECT 1 AS x")
    assert await _refused(
        reader, f"CREATE FUNCTION {name}() RETURNS int LANGUAGE sql AS 'SELECT 1'"
    )


async def test_reader_cannot_create_a_schema(reader: asyncpg.Connection) -> None:
    assert await _refused(reader, f"CREATE SCHEMA evil_{uuid4().hex[:6]}")


async def test_reader_can_select_its_workspace_and_execute_only_pure_functions(
    reader: asyncpg.Connection,
    admin_pool: asyncpg.Pool,
    ws: writes.CreatedWorkspace,
    roles: DatabaseRoles,
) -> None:
    async with connection.workspace_transaction(reader, ws.workspace_id):
        assert await reader.fetchval("SELECT count(*) FROM public.kora_policy_registry") == 31
    executable = await admin_pool.fetch(SELECT_EXECUTABLE_FUNCTIONS_SQL, roles.reader, SCHEMAS[1:])
    assert [r[0] for r in executable] == READER_FUNCTIONS
    assert await _refused(
        reader, "SELECT isokron_api.write(sha256('x'::bytea), 'append_event', '{}'::jsonb)"
    )


# ----------------------------------------------------------------------------- the gateway
async def test_gateway_cannot_select_or_insert_any_table(
    gateway: asyncpg.Connection, all_tables: tuple[Table, ...], ws: writes.CreatedWorkspace
) -> None:
    allowed = await _unrefused(
        gateway,
        all_tables,
        ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"),
        ws.workspace_id,
    )
    assert allowed == [], "the gateway role was allowed: " + ", ".join(allowed)


async def test_gateway_executes_exactly_its_entry_points(
    admin_pool: asyncpg.Pool, roles: DatabaseRoles
) -> None:
    rows = await admin_pool.fetch(SELECT_EXECUTABLE_FUNCTIONS_SQL, roles.gateway, SCHEMAS[1:])
    assert {r[0] for r in rows} == GATEWAY_FUNCTIONS


async def test_gateway_cannot_append_to_the_chain_directly(
    gateway: asyncpg.Connection, ws: writes.CreatedWorkspace
) -> None:
    assert await _refused(
        gateway,
        f"SELECT hivex_foundation.append_chain_event('{ws.tenant_id}'::uuid, "
        f"'{ws.actors['kora']}'::uuid, 'kora.forged.event', '{{}}'::jsonb)",
    )
    assert await _refused(
        gateway, f"SELECT hivex_foundation.erase_event_payload('{ws.tenant_id}'::uuid, 1, 'x')"
    )


async def test_gateway_can_call_write_with_a_token_and_not_without(
    gateway: asyncpg.Connection, admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace
) -> None:
    async with admin_pool.acquire() as conn:
        issued = await writes.issue_token(
            conn, ws.workspace_id, ws.operator_actor_id, ws.actors["kora"]
        )
    result = await writes.write_with_token(
        gateway, "append_event", writes.token_sha256(issued.token), {"event_type": "kora.gw.ok"}
    )
    assert result["replayed"] is False and result["seq"] > ws.events
    # Naming an actor is the owner's entry point, not the gateway's.
    with pytest.raises(SubstrateError, match="permission denied"):
        await writes.write(
            gateway, "append_event", ws.workspace_id, ws.actors["kora"], {"event_type": "kora.x"}
        )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT isokron_api.write_as('set_policies', $1, $2::uuid, '{}'::jsonb, NULL)",
        "SELECT isokron_api.create_workspace($1 || '-x', 'x', '[]'::jsonb) "
        "WHERE $2::uuid IS NOT NULL",
        "SELECT isokron_api.erase_event_payload($1, 1, 'x') WHERE $2::uuid IS NOT NULL",
        "SELECT isokron.run_op('set_policies', $1, $2::uuid, '{}'::jsonb, NULL)",
        "SELECT hivex_foundation.append_chain_event("
        "gen_random_uuid(), $2::uuid, 'kora.x', '{}'::jsonb) WHERE $1 IS NOT NULL",
    ],
    ids=["write_as", "create_workspace", "erase_event_payload", "run_op", "append"],
)
async def test_gateway_cannot_call_operator_functions(
    gateway: asyncpg.Connection, ws: writes.CreatedWorkspace, sql: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await gateway.fetchval(sql, ws.workspace_id, str(ws.operator_actor_id))


# ---------------------------------------------------------------------------- append-only
EVENT_LOG_CHANGES = {
    "UPDATE": "UPDATE hivex_foundation.event_log SET event_type = 'kora.edited' "
    "WHERE tenant_id = $1",
    "DELETE": "DELETE FROM hivex_foundation.event_log WHERE tenant_id = $1",
    "TRUNCATE": "TRUNCATE hivex_foundation.event_log",
}


async def _event_count(admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace) -> int:
    return await admin_pool.fetchval(
        "SELECT count(*) FROM hivex_foundation.event_log WHERE tenant_id = $1", ws.tenant_id
    )


async def _rolled_back(
    conn: asyncpg.Connection, attempt: Callable[[], Awaitable[None]]
) -> BaseException | None:
    """Run ``attempt`` in a transaction that is rolled back whatever happens; its error."""
    tx = conn.transaction()
    await tx.start()
    try:
        await attempt()
    except asyncpg.PostgresError as exc:
        return exc
    finally:
        await tx.rollback()
    return None


async def _change(conn: asyncpg.Connection, verb: str, ws: writes.CreatedWorkspace) -> None:
    sql = EVENT_LOG_CHANGES[verb]
    if "$1" in sql:
        await conn.execute(sql, ws.tenant_id)
    else:
        await conn.execute(sql)


@pytest.mark.parametrize("verb", list(EVENT_LOG_CHANGES))
@pytest.mark.parametrize("as_role", ["owner", "superuser"])
async def test_event_log_changes_are_refused_for_the_owner_and_the_superuser(
    admin_pool: asyncpg.Pool,
    ws: writes.CreatedWorkspace,
    verb: str,
    as_role: str,
    roles: DatabaseRoles,
) -> None:
    before = await _event_count(admin_pool, ws)
    assert before >= 5
    async with admin_pool.acquire() as conn:

        async def attempt() -> None:
            if as_role == "owner":
                await conn.execute(f'SET LOCAL ROLE "{roles.owner}"')
                # Make every row visible to the owner, so the trigger really meets them.
                await conn.execute("SELECT isokron.set_local('isokron.all_workspaces', 'on', true)")
                assert (
                    await conn.fetchval(
                        "SELECT count(*) FROM hivex_foundation.event_log WHERE tenant_id = $1",
                        ws.tenant_id,
                    )
                    == before
                )
            await _change(conn, verb, ws)

        error = await _rolled_back(conn, attempt)
    assert isinstance(error, asyncpg.PostgresError), f"{as_role} {verb} was not refused"
    assert error.sqlstate == APPEND_ONLY_SQLSTATE, error
    assert "append-only" in str(error)
    assert await _event_count(admin_pool, ws) == before


async def test_the_erasure_exception_cannot_rewrite_an_event(
    admin_pool: asyncpg.Pool, ws: writes.CreatedWorkspace
) -> None:
    # Even with the erasure switch on, only a tombstone that keeps every hashed field passes.
    async with admin_pool.acquire() as conn:
        for change in (
            "SET payload = '{\"forged\": true}'::jsonb, payload_erased = true, "
            "payload_digest = sha256('x'::bytea)",
            "SET payload = '{}'::jsonb, payload_erased = true, event_type = 'kora.forged'",
            "SET payload = '{\"forged\": true}'::jsonb",  # not marked erased
            # marked erased, digest kept, but not the substrate's tombstone shape
            'SET payload = \'{"rewritten": "anything"}\'::jsonb, payload_erased = true',
            "SET payload = jsonb_build_object('erased', true, 'reason', 'x', "
            "'erased_at', 'now', 'extra', 1), payload_erased = true",
        ):

            async def attempt(change: str = change) -> None:
                await conn.execute(
                    "SELECT isokron.set_local('isokron.erasing_payload', 'on', true)"
                )
                await conn.execute(
                    f"UPDATE hivex_foundation.event_log {change} WHERE tenant_id = $1 AND seq = 2",
                    ws.tenant_id,
                )

            error = await _rolled_back(conn, attempt)
            assert isinstance(error, asyncpg.PostgresError), change
            assert error.sqlstate == APPEND_ONLY_SQLSTATE, change


@pytest.mark.parametrize("verb", list(EVENT_LOG_CHANGES))
@pytest.mark.parametrize("role", ["reader", "gateway"])
async def test_event_log_changes_are_refused_for_the_reader_and_the_gateway(
    substrate: SubstrateDSNs,
    admin_pool: asyncpg.Pool,
    ws: writes.CreatedWorkspace,
    verb: str,
    role: str,
) -> None:
    before = await _event_count(admin_pool, ws)
    conn = await connection.connect(getattr(substrate, role))
    try:

        async def attempt() -> None:
            await conn.execute(connection.SET_WORKSPACE_SQL, ws.workspace_id)
            await _change(conn, verb, ws)

        error = await _rolled_back(conn, attempt)
    finally:
        await conn.close()
    assert isinstance(error, asyncpg.InsufficientPrivilegeError), f"{role} {verb}: {error!r}"
    assert await _event_count(admin_pool, ws) == before
