"""The catalog proves invariant 1 and the Citus-readiness of the schema for EVERY
workspace-keyed table, found from pg_catalog so that a new table cannot be forgotten:
row-level security ENABLED and FORCED, and the workspace/tenant key in the primary key and in
every unique constraint and unique index."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from isokron.substrate.dsn import DatabaseRoles, SubstrateDSNs

KEY_COLUMNS = ("workspace_id", "clerk_org_id", "tenant_id")
# public.workspaces is keyed by its own id (the workspace id); it has none of KEY_COLUMNS.
EXTRA_KEYED = {"public.workspaces": ("id",)}
# hivex_foundation.tenant maps one key to the other: either one counts as the key.
BOTH_KEYS = {"hivex_foundation.tenant": ("tenant_id", "clerk_org_id")}
KNOWN_KEYED = {
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
    "kronicle.iso_links",
    "kronicle.convention_proposals",
    "kronicle.policy_change_proposals",
    "kronicle.escalations",
    "isokron.service_tokens",
    "isokron.idempotency_keys",
    "isokron.quota_windows",
}

SELECT_KEYED_TABLES_SQL = """
SELECT c.oid, n.nspname || '.' || c.relname AS name, c.relrowsecurity, c.relforcerowsecurity,
       array_agg(a.attname::text ORDER BY a.attnum) AS key_columns
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p')
  AND n.nspname IN ('public', 'kronicle', 'hivex_foundation', 'isokron')
  AND position('yoyo' IN c.relname) = 0
  AND (a.attname = ANY(%(keys)s)
       OR (n.nspname || '.' || c.relname, a.attname::text) IN (('public.workspaces', 'id')))
GROUP BY c.oid, n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity
ORDER BY 2
"""
# Every unique index, including the ones backing PRIMARY KEY and UNIQUE constraints, with the
# names of its key columns (an expression column has attnum 0 and yields NULL).
SELECT_UNIQUE_INDEXES_SQL = """
SELECT i.indexrelid::regclass::text AS index_name, i.indisprimary,
       coalesce(con.contype::text, 'index') AS kind,
       array(SELECT a.attname::text FROM unnest(i.indkey[0:i.indnkeyatts - 1]) AS k(attnum)
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
           AS columns
FROM pg_index i
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
WHERE i.indrelid = %(oid)s AND i.indisunique
ORDER BY 1
"""
SELECT_UNIQUE_CONSTRAINTS_SQL = """
SELECT conname, contype,
       array(SELECT a.attname::text FROM unnest(con.conkey) AS k(attnum)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum) AS columns
FROM pg_constraint con
WHERE con.conrelid = %(oid)s AND con.contype IN ('p', 'u', 'x')
"""
SELECT_POLICIES_SQL = """
SELECT polname, polpermissive, pg_get_expr(polqual, polrelid) AS using_expr,
       pg_get_expr(polwithcheck, polrelid) AS check_expr,
       array(SELECT rolname::text FROM pg_roles WHERE oid = ANY(polroles)) AS roles,
       polroles = '{0}' AS to_public
FROM pg_policy WHERE polrelid = %(oid)s
"""


@pytest.fixture(scope="module")
def keyed_tables(substrate: SubstrateDSNs) -> list[dict[str, Any]]:
    with psycopg.connect(substrate.admin) as conn:
        cur = conn.cursor(row_factory=dict_row)
        tables = cur.execute(SELECT_KEYED_TABLES_SQL, {"keys": list(KEY_COLUMNS)}).fetchall()
        for t in tables:
            t["unique_indexes"] = cur.execute(
                SELECT_UNIQUE_INDEXES_SQL, {"oid": t["oid"]}
            ).fetchall()
            t["constraints"] = cur.execute(
                SELECT_UNIQUE_CONSTRAINTS_SQL, {"oid": t["oid"]}
            ).fetchall()
            t["policies"] = cur.execute(SELECT_POLICIES_SQL, {"oid": t["oid"]}).fetchall()
    return tables


def _keys_of(table: dict[str, Any]) -> tuple[str, ...]:
    return (
        BOTH_KEYS.get(table["name"])
        or EXTRA_KEYED.get(table["name"])
        or tuple(c for c in table["key_columns"] if c in KEY_COLUMNS)
    )


def test_the_catalog_query_finds_every_known_workspace_keyed_table(
    keyed_tables: list[dict[str, Any]],
) -> None:
    found = {t["name"] for t in keyed_tables}
    assert found >= KNOWN_KEYED, f"missing from the catalog query: {KNOWN_KEYED - found}"
    # A table found here but not listed above is new: it is still held to every check below.
    assert not any("yoyo" in name for name in found)


def test_every_workspace_keyed_table_has_rls_enabled_and_forced(
    keyed_tables: list[dict[str, Any]],
) -> None:
    not_enabled = [t["name"] for t in keyed_tables if not t["relrowsecurity"]]
    not_forced = [t["name"] for t in keyed_tables if not t["relforcerowsecurity"]]
    assert not_enabled == [], "row-level security is not ENABLED on these tables"
    assert not_forced == [], "row-level security is not FORCED on these tables"


def test_every_workspace_keyed_table_has_a_workspace_isolation_policy(
    keyed_tables: list[dict[str, Any]], roles: DatabaseRoles
) -> None:
    for t in keyed_tables:
        policies = {p["polname"]: p for p in t["policies"]}
        iso = policies.get("workspace_isolation")
        assert iso is not None, f"{t['name']} has no workspace_isolation policy"
        assert iso["to_public"], f"{t['name']}: workspace_isolation must apply to every role"
        for expr in (iso["using_expr"], iso["check_expr"]):
            assert expr is not None and "app.current_workspace_id" in expr, (t["name"], expr)
        # Only the owner may opt in to seeing every workspace; no policy may be wide open.
        for name, p in policies.items():
            if name != "workspace_isolation":
                assert p["roles"] == [roles.owner], (t["name"], name, p["roles"])
            assert p["using_expr"] not in (None, "true"), (t["name"], name)


def test_every_primary_key_and_unique_constraint_includes_the_key(
    keyed_tables: list[dict[str, Any]],
) -> None:
    problems = []
    for t in keyed_tables:
        keys = set(_keys_of(t))
        constraints = t["constraints"]
        assert any(c["contype"] == "p" for c in constraints), f"{t['name']} has no primary key"
        for c in constraints:
            if not keys & set(c["columns"]):
                problems.append(f"{t['name']}: {c['contype']} {c['conname']} {c['columns']}")
    assert problems == [], "constraints without the workspace/tenant key: " + "; ".join(problems)


def test_every_unique_index_includes_the_key(keyed_tables: list[dict[str, Any]]) -> None:
    problems = []
    checked = 0
    for t in keyed_tables:
        keys = set(_keys_of(t))
        for ix in t["unique_indexes"]:
            checked += 1
            if not keys & {c for c in ix["columns"] if c is not None}:
                problems.append(f"{t['name']}: {ix['index_name']} {ix['columns']}")
    assert checked >= len(keyed_tables)  # at least every primary key's index was inspected
    assert problems == [], "unique indexes without the workspace/tenant key: " + "; ".join(problems)


def test_the_checks_do_see_the_partial_unique_index_of_the_charter(
    keyed_tables: list[dict[str, Any]],
) -> None:
    # A guard that the index query is not vacuous: the one-active-charter index is a partial
    # unique index that no constraint backs.
    charter = next(t for t in keyed_tables if t["name"] == "public.kora_role_charter")
    by_name = {ix["index_name"]: ix for ix in charter["unique_indexes"]}
    assert by_name["uq_kora_role_charter_one_active"]["kind"] == "index"
    assert by_name["uq_kora_role_charter_one_active"]["columns"] == ["workspace_id"]
    assert sum(ix["indisprimary"] for ix in charter["unique_indexes"]) == 1
