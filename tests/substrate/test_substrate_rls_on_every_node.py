"""Row-level security holds on every node that stores workspace rows (issue 13).

On one PostgreSQL server that node is the server itself. On a Citus cluster
(ISOKRON_TEST_CITUS_WORKERS) the rows live in shards on the workers, and each shard must carry
the table's FORCEd policies: this test connects to every worker directly, as the reader and as
the owner, and reads every shard. An adversary with a worker's address and a role's login gets
nothing without naming a workspace, and one workspace's rows only when naming it.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from citus_support import citus_workers
from isokron.substrate.citus import REFERENCE_TABLES
from isokron.substrate.dsn import (
    DatabaseRoles,
    SubstrateDSNs,
    database_name,
    database_roles,
    with_user,
)
from isokron.substrate.writes import CreatedWorkspace

SCHEMAS = ["public", "kronicle", "hivex_foundation", "isokron"]
#: Shards are hidden from pg_class on a Citus worker unless this is off.
SHOW_SHARDS_SQL = "SELECT set_config('citus.override_table_visibility', 'off', false)"
SELECT_DATA_TABLES_SQL = """
SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity,
       pg_get_userbyid(c.relowner), has_table_privilege(%s, c.oid, 'SELECT')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s) AND position('yoyo' IN c.relname) = 0
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""
GLOBAL_TABLES = {"operation_registry", "state_tables"}


def _base_name(relname: str) -> str:
    # A shard is its table's name and a shard id: event_log_102008.
    head, _, tail = relname.rpartition("_")
    return head if tail.isdigit() and head else relname


def _node_dsns(admin: str) -> list[str]:
    workers = citus_workers()
    if not workers:
        return [admin]
    parts = psycopg.conninfo.conninfo_to_dict(admin)
    return [
        psycopg.conninfo.make_conninfo(**{**parts, "host": host, "port": str(port)})
        for host, port in workers
    ]


@pytest.fixture(scope="module")
def nodes(substrate: SubstrateDSNs) -> Iterator[list[str]]:
    yield _node_dsns(substrate.admin)


@pytest.fixture(scope="module")
def roles(substrate: SubstrateDSNs) -> DatabaseRoles:
    return database_roles(database_name(substrate.admin))


def _data_tables(node: str, roles: DatabaseRoles) -> list[tuple]:
    with psycopg.connect(node, autocommit=True) as conn:
        if citus_workers():
            conn.execute(SHOW_SHARDS_SQL)
        return conn.execute(SELECT_DATA_TABLES_SQL, (roles.reader, SCHEMAS)).fetchall()


def test_every_table_and_shard_has_forced_rls_and_the_owner(
    nodes: list[str], roles: DatabaseRoles
) -> None:
    checked = 0
    for node in nodes:
        for schema, rel, rls, forced, owner, _ in _data_tables(node, roles):
            if _base_name(rel) in GLOBAL_TABLES:
                continue
            assert (rls, forced, owner) == (True, True, roles.owner), f"{node} {schema}.{rel}"
            checked += 1
    print(f"tables/shards with FORCEd RLS owned by {roles.owner}: {checked} on {len(nodes)} nodes")
    assert checked >= 18 * len(nodes)


async def test_no_role_reads_a_row_on_a_node_without_naming_the_workspace(
    nodes: list[str], roles: DatabaseRoles, workspace: CreatedWorkspace
) -> None:
    tried = held = 0
    for node in nodes:
        readable = [
            (s, r)
            for s, r, *_, can_select in _data_tables(node, roles)
            if can_select and _base_name(r) not in GLOBAL_TABLES
        ]
        # The owner logs in only on a cluster (Citus's node-to-node user); on one server it cannot.
        for role in (roles.reader, roles.owner) if citus_workers() else (roles.reader,):
            with psycopg.connect(with_user_conninfo(node, role)) as conn:
                for schema, rel in readable:
                    table = sql.Identifier(schema, rel)
                    with conn.transaction():
                        tried += 1
                        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
                        held += rows.fetchone() == (0,)
    print(f"unscoped reads of tables/shards on every node: tried {tried}, saw nothing {held}")
    assert tried == held and tried > 0


def with_user_conninfo(node: str, role: str) -> str:
    """``node`` (a URL or a conninfo string) logged in as ``role``."""
    if "://" in node:
        return with_user(node, role)
    parts = psycopg.conninfo.conninfo_to_dict(node)
    return psycopg.conninfo.make_conninfo(**{**parts, "user": role})


def test_the_shared_tables_are_reference_tables_on_a_cluster(substrate: SubstrateDSNs) -> None:
    if not citus_workers():
        assert REFERENCE_TABLES  # plain PostgreSQL: nothing is distributed
        return
    with psycopg.connect(substrate.admin) as conn:
        conn.execute("SET search_path = pg_catalog")
        kinds = dict(
            conn.execute("SELECT table_name::text, citus_table_type FROM public.citus_tables")
        )
    assert all(kinds[t] == "reference" for t in REFERENCE_TABLES), kinds
    assert all(v in ("reference", "distributed") for v in kinds.values()), kinds
