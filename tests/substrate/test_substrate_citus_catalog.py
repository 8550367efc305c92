"""The catalog refuses everything known to break the substrate on Citus (issue 13).

Each check reads pg_catalog of the migrated database (PostgreSQL 15 and 16 in CI) and returns
the offending objects; the last test plants one offender of each kind in a rolled-back
transaction and proves every check catches its own. What Citus does with each offender was
seen on a real Citus 12.1 cluster (docs/scaling.md):

* a policy with a subquery: ``create_reference_table``/``create_distributed_table`` refuse it;
* a trigger on a table that becomes a reference or distributed table: refused unless
  ``citus.enable_unsafe_triggers``; only the event log's append-only refusal triggers (which
  read no table) are accepted, by ``isokron db distribute``;
* a function whose signature uses a table's row type: dropped when the table is distributed;
* a primary key or unique index without the distribution column: refused;
* ``set_config`` of a scoping setting in a function: never reaches the worker that evaluates
  row-level security (``isokron.set_local`` does);
* a foreign key between distributed tables that does not carry the workspace key: refused;
* an UPDATE that assigns a VOLATILE function's value (clock_timestamp(), random(), ...):
  "functions used in UPDATE queries on distributed tables must not be VOLATILE";
* an SQL-language function that queries a distributed table: "could not create distributed
  plan" once its parameters are used (PL/pgSQL plans the same query fine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from isokron.substrate.citus import (
    DISTRIBUTED_TABLES,
    REFERENCE_TABLES,
    REFUSAL_TRIGGER_TABLES,
    citus_version,
)
from isokron.substrate.dsn import SubstrateDSNs

SCHEMAS = ["public", "kronicle", "hivex_foundation", "isokron", "isokron_api"]
DISTRIBUTION_COLUMN = "workspace_id"
#: The event log's append-only guard: it raises, reads no table, and is safe on a shard.
ALLOWED_TRIGGERS = {
    ("hivex_foundation.event_log", "event_log_append_only"),
    ("hivex_foundation.event_log", "event_log_no_truncate"),
}

# With only pg_catalog on the search path, regclass and regprocedure print schema-qualified names.
QUALIFY_NAMES_SQL = "SET search_path = pg_catalog"
SELECT_TABLES_SQL = """
SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s) AND position('yoyo' IN c.relname) = 0
ORDER BY 1
"""
SELECT_POLICIES_WITH_SUBQUERIES_SQL = """
SELECT p.polrelid::regclass::text || ' ' || p.polname FROM pg_policy p
WHERE coalesce(p.polqual::text, '') LIKE '%%{SUBLINK%%'
   OR coalesce(p.polwithcheck::text, '') LIKE '%%{SUBLINK%%'
ORDER BY 1
"""
SELECT_TRIGGERS_SQL = """
SELECT t.tgrelid::regclass::text, t.tgname FROM pg_trigger t
WHERE NOT t.tgisinternal AND t.tgrelid::regclass::text = ANY(%s)
ORDER BY 1, 2
"""
SELECT_ROW_TYPE_SIGNATURES_SQL = """
SELECT p.oid::regprocedure::text FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY(%s)
  AND EXISTS (
      SELECT 1 FROM unnest(array_append(coalesce(p.proallargtypes, p.proargtypes::oid[]),
                                        p.prorettype)) AS a(typ)
      JOIN pg_type ty ON ty.oid = a.typ
      JOIN pg_class c ON c.oid = ty.typrelid
      WHERE c.relkind IN ('r', 'p'))
ORDER BY 1
"""
SELECT_UNIQUE_WITHOUT_KEY_SQL = """
SELECT i.indexrelid::regclass::text FROM pg_index i
WHERE i.indisunique AND i.indrelid::regclass::text = ANY(%s)
  AND NOT EXISTS (
      SELECT 1 FROM pg_attribute a
      WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) AND a.attname = %s)
ORDER BY 1
"""
SELECT_SCOPING_SET_CONFIG_SQL = """
SELECT p.oid::regprocedure::text FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY(%s)
  AND p.prosrc ~ 'set_config\\(\\s*''(app\\.current_workspace_id|isokron\\.[a-z_]+)'''
ORDER BY 1
"""
SELECT_FOREIGN_KEYS_SQL = """
SELECT con.conrelid::regclass::text, con.conname, con.confrelid::regclass::text,
       (SELECT array_agg(a.attname::text) FROM pg_attribute a
        WHERE a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey)),
       (SELECT array_agg(a.attname::text) FROM pg_attribute a
        WHERE a.attrelid = con.confrelid AND a.attnum = ANY(con.confkey))
FROM pg_constraint con
WHERE con.contype = 'f' AND con.conrelid::regclass::text = ANY(%s)
ORDER BY 1, 2
"""
SELECT_MISSING_KEY_COLUMN_SQL = """
SELECT t FROM unnest(%s::text[]) AS t
WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                  WHERE a.attrelid = t::regclass AND a.attname = %s AND NOT a.attisdropped)
"""

SELECT_SQL_FUNCTIONS_READING_TABLES_SQL = """
SELECT p.oid::regprocedure::text FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_language l ON l.oid = p.prolang
WHERE n.nspname = ANY(%s) AND l.lanname = 'sql'
  AND EXISTS (SELECT 1 FROM unnest(%s::text[]) AS t(name) WHERE position(t.name IN p.prosrc) > 0)
ORDER BY 1
"""

SELECT_VOLATILE_IN_UPDATE_SQL = r"""
SELECT p.oid::regprocedure::text FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY(%s)
  AND p.prosrc ~* 'UPDATE\s+[a-z_.]+\s+SET\s[^;]*(clock_timestamp|random|timeofday)\('
ORDER BY 1
"""

Check = Callable[[psycopg.Connection], list[str]]


def tables_not_placed(conn: psycopg.Connection) -> list[str]:
    """Tables that `isokron db distribute` would leave local on the coordinator."""
    placed = set(REFERENCE_TABLES) | set(DISTRIBUTED_TABLES)
    return [t for (t,) in conn.execute(SELECT_TABLES_SQL, (SCHEMAS,)) if t not in placed]


def distributed_without_key(conn: psycopg.Connection) -> list[str]:
    return [
        t
        for (t,) in conn.execute(
            SELECT_MISSING_KEY_COLUMN_SQL, (list(DISTRIBUTED_TABLES), DISTRIBUTION_COLUMN)
        )
    ]


def policies_with_subqueries(conn: psycopg.Connection) -> list[str]:
    return [p for (p,) in conn.execute(SELECT_POLICIES_WITH_SUBQUERIES_SQL)]


def triggers_on_citus_tables(conn: psycopg.Connection) -> list[str]:
    tables = list(REFERENCE_TABLES) + list(DISTRIBUTED_TABLES)
    found = conn.execute(SELECT_TRIGGERS_SQL, (tables,)).fetchall()
    return [f"{t} {name}" for t, name in found if (t, name) not in ALLOWED_TRIGGERS]


def test_allowed_triggers_are_on_tables_distributed_with_them() -> None:
    assert {t for t, _ in ALLOWED_TRIGGERS} <= REFUSAL_TRIGGER_TABLES


def row_type_signatures(conn: psycopg.Connection) -> list[str]:
    return [f for (f,) in conn.execute(SELECT_ROW_TYPE_SIGNATURES_SQL, (SCHEMAS,))]


def unique_without_distribution_key(conn: psycopg.Connection) -> list[str]:
    return [
        i
        for (i,) in conn.execute(
            SELECT_UNIQUE_WITHOUT_KEY_SQL, (list(DISTRIBUTED_TABLES), DISTRIBUTION_COLUMN)
        )
    ]


def scoping_with_set_config(conn: psycopg.Connection) -> list[str]:
    return [f for (f,) in conn.execute(SELECT_SCOPING_SET_CONFIG_SQL, (SCHEMAS,))]


def foreign_keys_across_shards(conn: psycopg.Connection) -> list[str]:
    """Foreign keys of distributed tables must target a reference table or carry the key."""
    bad = []
    for table, name, target, cols, target_cols in conn.execute(
        SELECT_FOREIGN_KEYS_SQL, (list(DISTRIBUTED_TABLES),)
    ):
        if target in REFERENCE_TABLES:
            continue
        if DISTRIBUTION_COLUMN not in cols or DISTRIBUTION_COLUMN not in target_cols:
            bad.append(f"{table} {name} -> {target}")
    return bad


def sql_functions_reading_distributed_tables(conn: psycopg.Connection) -> list[str]:
    return [
        f
        for (f,) in conn.execute(
            SELECT_SQL_FUNCTIONS_READING_TABLES_SQL, (SCHEMAS, list(DISTRIBUTED_TABLES))
        )
    ]


def volatile_functions_in_updates(conn: psycopg.Connection) -> list[str]:
    return [f for (f,) in conn.execute(SELECT_VOLATILE_IN_UPDATE_SQL, (SCHEMAS,))]


CHECKS: dict[str, Check] = {
    "tables_not_placed": tables_not_placed,
    "distributed_without_key": distributed_without_key,
    "policies_with_subqueries": policies_with_subqueries,
    "triggers_on_citus_tables": triggers_on_citus_tables,
    "row_type_signatures": row_type_signatures,
    "unique_without_distribution_key": unique_without_distribution_key,
    "scoping_with_set_config": scoping_with_set_config,
    "foreign_keys_across_shards": foreign_keys_across_shards,
    "sql_functions_reading_distributed_tables": sql_functions_reading_distributed_tables,
    "volatile_functions_in_updates": volatile_functions_in_updates,
}


@pytest.fixture(scope="module")
def catalog(substrate: SubstrateDSNs) -> Iterator[psycopg.Connection]:
    with psycopg.connect(substrate.admin) as conn:
        conn.execute(QUALIFY_NAMES_SQL)
        yield conn


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_nothing_known_to_break_citus(catalog: psycopg.Connection, check: str) -> None:
    offenders = CHECKS[check](catalog)
    assert offenders == [], f"{check}: {offenders}"


# One planted offender per check, each made in the same rolled-back transaction.
PLANTED: dict[str, tuple[str, str]] = {
    "tables_not_placed": (
        "CREATE TABLE kronicle.forgotten (workspace_id TEXT PRIMARY KEY)",
        "kronicle.forgotten",
    ),
    "distributed_without_key": (
        "ALTER TABLE kronicle.iso_links RENAME COLUMN workspace_id TO ws",
        "kronicle.iso_links",
    ),
    "policies_with_subqueries": (
        "CREATE POLICY planted ON kronicle.iso_nodes USING (workspace_id = "
        "(SELECT w.id FROM public.workspaces w LIMIT 1))",
        "kronicle.iso_nodes planted",
    ),
    "triggers_on_citus_tables": (
        "CREATE TRIGGER planted BEFORE INSERT ON public.workspaces FOR EACH ROW "
        "EXECUTE FUNCTION hivex_foundation.refuse_event_log_change()",
        "public.workspaces planted",
    ),
    "row_type_signatures": (
        "CREATE FUNCTION isokron.planted(n kronicle.iso_nodes) RETURNS INT "
        "LANGUAGE sql AS 'SELECT 1'",
        "isokron.planted(kronicle.iso_nodes)",
    ),
    "unique_without_distribution_key": (
        "CREATE UNIQUE INDEX planted ON kronicle.escalations (escalation_id)",
        "kronicle.planted",
    ),
    "scoping_with_set_config": (
        "CREATE FUNCTION isokron_api.planted(p TEXT) RETURNS TEXT LANGUAGE sql AS "
        "$$ SELECT set_config('app.current_workspace_id', p, true) $$",
        "isokron_api.planted(text)",
    ),
    "foreign_keys_across_shards": (
        "ALTER TABLE kronicle.iso_links ADD CONSTRAINT planted FOREIGN KEY (created_by) "
        "REFERENCES kronicle.iso_nodes (node_id)",
        "kronicle.iso_links planted -> kronicle.iso_nodes",
    ),
    "sql_functions_reading_distributed_tables": (
        "CREATE FUNCTION isokron.planted(p TEXT) RETURNS BIGINT LANGUAGE sql AS "
        "$$ SELECT count(*) FROM kronicle.iso_nodes WHERE workspace_id = p $$",
        "isokron.planted(text)",
    ),
    "volatile_functions_in_updates": (
        "CREATE FUNCTION isokron_api.planted(p TEXT) RETURNS VOID LANGUAGE plpgsql AS $$ BEGIN "
        "UPDATE kronicle.escalations SET decided_at = clock_timestamp() WHERE workspace_id = p; "
        "END $$",
        "isokron_api.planted(text)",
    ),
}


def test_every_check_catches_a_planted_offender(substrate: SubstrateDSNs) -> None:
    """Each check fails on its own offender: the checks above cannot pass vacuously.

    On a Citus cluster (ISOKRON_TEST_CITUS_WORKERS) Citus itself refuses some of the planted
    DDL on the distributed tables; that counts as caught too, and is reported separately.
    """
    caught = by_citus = 0
    with psycopg.connect(substrate.admin) as conn:
        conn.execute(QUALIFY_NAMES_SQL)
        on_citus = citus_version(conn) is not None
        for check, (ddl, offender) in sorted(PLANTED.items()):
            with conn.transaction(force_rollback=True):
                try:
                    with conn.transaction():
                        if check == "foreign_keys_across_shards":
                            conn.execute(
                                "CREATE UNIQUE INDEX planted_target ON kronicle.iso_nodes (node_id)"
                            )
                        conn.execute(ddl)  # type: ignore[arg-type]
                except psycopg.Error:
                    if not on_citus:
                        raise
                    by_citus += 1
                    caught += 1
                    continue
                found = CHECKS[check](conn)
            assert offender in found, f"{check} missed {offender}: {found}"
            caught += 1
    print(
        f"citus catalog checks: planted {len(PLANTED)}, caught {caught} "
        f"(refused by Citus itself: {by_citus})"
    )
    assert caught == len(PLANTED) == len(CHECKS)
