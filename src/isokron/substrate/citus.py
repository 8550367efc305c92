"""Running the substrate on a Citus cluster: role preparation and ``isokron db distribute``.

Citus opens its connections to the workers as the *current* user, and propagates DDL (roles,
schemas, functions) through those connections. Two consequences shape this module:

* The three roles must exist on every node, committed, before the first migration runs: a
  role created inside the migration's transaction is invisible to the new worker connection
  Citus opens for ``SET LOCAL ROLE isokron_owner``. :func:`prepare_roles` creates them (and the
  database grants) in their own committed statements; ``isokron db upgrade`` calls it first
  whenever the target database has the ``citus`` extension.
* ``isokron_owner`` must be able to log in *to the workers* (the SECURITY DEFINER functions run
  as the owner, so Citus connects as the owner). It keeps no password anyone is told: a random
  one is set and stored only in ``pg_dist_authinfo`` (readable by superusers alone), which is
  where Citus looks up the password of its node-to-node connections. Its privileges are
  unchanged; docs/scaling.md says how to restrict its ``pg_hba.conf`` lines to the cluster.

:func:`distribute` makes the two small shared tables reference tables and distributes every
workspace table by ``workspace_id`` in ONE co-location group, so a workspace's rows, its chain
events and its chain head live in one shard group and an append never spans two nodes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from isokron.errors import ConfigError, SubstrateError, SubstrateUnavailableError
from isokron.substrate.dsn import DatabaseRoles, redact_dsn

log = logging.getLogger("isokron.substrate.citus")

CITUS_PRESENT_SQL = "SELECT extversion FROM pg_extension WHERE extname = 'citus'"
ROLE_EXISTS_SQL = "SELECT 1 FROM pg_roles WHERE rolname = %s"
IS_SUPERUSER_SQL = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
WORKER_COUNT_SQL = "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0"
IS_COORDINATOR_SQL = "SELECT coalesce((SELECT groupid = 0 FROM pg_dist_local_group), true)"
CITUS_TABLE_SQL = (
    "SELECT citus_table_type, colocation_id FROM citus_tables WHERE table_name = %s::regclass"
)
SET_OWNER_AUTHINFO_SQL = """
INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, %s, %s)
ON CONFLICT (nodeid, rolename) DO UPDATE SET authinfo = EXCLUDED.authinfo
"""
OWNER_AUTHINFO_EXISTS_SQL = "SELECT 1 FROM pg_dist_authinfo WHERE nodeid = 0 AND rolename = %s"
CREATE_REFERENCE_TABLE_SQL = "SELECT create_reference_table(%s)"
CREATE_DISTRIBUTED_TABLE_SQL = (
    "SELECT create_distributed_table(%s, 'workspace_id', colocate_with => %s)"
)
ANCHOR_TABLE = "public.actor_registry"
# One transaction places every table; sequential mode lets Citus do that (reference tables
# created and used in the same transaction).
SEQUENTIAL_SQL = "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"
UNSAFE_TRIGGERS_SQL = "SELECT set_config('citus.enable_unsafe_triggers', %s, true)"
SELECT_FOREIGN_KEYS_SQL = """
SELECT n.nspname || '.' || c.relname, con.conname, pg_get_constraintdef(con.oid)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype = 'f' AND (n.nspname || '.' || c.relname) = ANY(%s)
ORDER BY 1, 2
"""
DROP_FOREIGN_KEY_SQL = "ALTER TABLE {} DROP CONSTRAINT {}"
ADD_FOREIGN_KEY_SQL = "ALTER TABLE {} ADD CONSTRAINT {} {}"

#: The two tables every query reads and that are keyed by the workspace itself.
REFERENCE_TABLES: tuple[str, ...] = (
    "public.workspaces",
    "hivex_foundation.tenant",
    "isokron.operation_registry",
    "isokron.state_tables",
)
#: Every other table, distributed by workspace_id, all in the anchor's co-location group.
#: Order matters: a table is distributed after the tables its foreign keys reference.
DISTRIBUTED_TABLES: tuple[str, ...] = (
    ANCHOR_TABLE,
    "isokron.service_tokens",
    "public.kora_role_charter",
    "public.kora_policy_registry",
    "public.kora_capability_matrix",
    "kronicle.workspace_constitution_revisions",
    "kronicle.agent_scratchpad_entries",
    "kronicle.iso_nodes",
    "kronicle.iso_links",
    "kronicle.convention_proposals",
    "kronicle.policy_change_proposals",
    "kronicle.escalations",
    "isokron.idempotency_keys",
    "isokron.quota_windows",
    "hivex_foundation.chain_head",
    "hivex_foundation.event_log",
)
ALL_TABLES: tuple[str, ...] = REFERENCE_TABLES + DISTRIBUTED_TABLES
#: Tables whose only triggers refuse a change and read no table (the append-only guard), so
#: they are safe on a shard; Citus asks for ``citus.enable_unsafe_triggers`` to accept them.
REFUSAL_TRIGGER_TABLES: frozenset[str] = frozenset({"hivex_foundation.event_log"})


@dataclass(frozen=True, slots=True)
class DistributedTable:
    """One line of ``isokron db distribute``'s report."""

    table: str
    kind: str  # "reference" or "distributed"
    colocation_id: int
    created: bool  # False when it was already a Citus table


def citus_version(conn: psycopg.Connection) -> str | None:
    """The installed Citus extension version, or None on plain PostgreSQL."""
    row = conn.execute(CITUS_PRESENT_SQL).fetchone()
    return None if row is None else str(row[0])


def prepare_roles(conn: psycopg.Connection, roles: DatabaseRoles) -> None:
    """Create IsoKron's roles cluster-wide, committed, before migrations (autocommit conn).

    Citus propagates each statement to the workers. ``ALTER ROLE`` is issued for existing roles
    too, so a role that predates the cluster (or a node added later) exists on every node.
    """
    if not conn.execute(IS_SUPERUSER_SQL).fetchone()[0]:  # type: ignore[index]
        raise ConfigError(
            "preparing a Citus cluster creates roles on every node: run `isokron db upgrade` "
            "with a superuser DSN on the coordinator"
        )
    for role in (roles.owner, roles.reader, roles.gateway):
        verb = "ALTER" if conn.execute(ROLE_EXISTS_SQL, (role,)).fetchone() else "CREATE"
        conn.execute(sql.SQL("{} ROLE {} LOGIN").format(sql.SQL(verb), sql.Identifier(role)))
    if conn.execute(OWNER_AUTHINFO_EXISTS_SQL, (roles.owner,)).fetchone() is None:
        _set_owner_secret(conn, roles.owner)
    database = sql.Identifier(conn.info.dbname)
    conn.execute(
        sql.SQL("GRANT CREATE, CONNECT ON DATABASE {} TO {}").format(
            database, sql.Identifier(roles.owner)
        )
    )
    conn.execute(
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}").format(
            database, sql.Identifier(roles.reader), sql.Identifier(roles.gateway)
        )
    )
    conn.execute(
        sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(roles.owner))
    )
    log.info("[isokron.citus.roles] roles ready on every node of %s", conn.info.dbname)


def _set_owner_secret(conn: psycopg.Connection, owner: str) -> None:
    # The owner logs in only as Citus's node-to-node user: nobody is ever shown this password.
    secret = secrets.token_urlsafe(32)
    conn.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(owner), sql.Literal(secret))
    )
    conn.execute(SET_OWNER_AUTHINFO_SQL, (owner, f"password={secret}"))


def distribute(
    dsn: str, *, progress: Callable[[str], None] | None = None
) -> list[DistributedTable]:
    """Make the reference tables and distribute every workspace table (idempotent).

    Runs in ONE transaction: the foreign keys between IsoKron's tables are dropped, the tables
    placed, and the same foreign keys re-created (Citus cannot convert a graph of local tables
    joined by foreign keys one table at a time); a failure leaves the database as it was.
    """
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise SubstrateUnavailableError(
            f"cannot reach PostgreSQL at {redact_dsn(dsn)}: {exc}"
        ) from exc
    with conn:
        _require_cluster(conn, dsn)
        before = {t: _placement(conn, t) for t in ALL_TABLES}
        if any(before[t] is None or before[t][0] != _kind(t) for t in ALL_TABLES):  # type: ignore[index]
            try:
                _place_all(conn, before, progress)
            except psycopg.Error as exc:
                raise SubstrateError(
                    f"could not distribute the substrate (nothing was changed): {exc}"
                ) from exc
        done = []
        for table in ALL_TABLES:
            kind, colocation = _placement(conn, table) or ("?", 0)
            created = before[table] != (kind, colocation)
            done.append(DistributedTable(table, kind, colocation, created=created))
    log.info("[isokron.citus.distribute] %d tables placed", len(done))
    return done


def _place_all(
    conn: psycopg.Connection,
    before: dict[str, tuple[str, int] | None],
    progress: Callable[[str], None] | None,
) -> None:
    with conn.transaction():
        conn.execute(SEQUENTIAL_SQL)
        keys = conn.execute(SELECT_FOREIGN_KEYS_SQL, (list(ALL_TABLES),)).fetchall()
        for table, name, _ in keys:
            conn.execute(
                sql.SQL(DROP_FOREIGN_KEY_SQL).format(_qualified(table), sql.Identifier(name))
            )
        for table in ALL_TABLES:
            if progress:
                progress(table)
            _place(conn, table, before[table])
        for table, name, definition in keys:
            conn.execute(
                sql.SQL(ADD_FOREIGN_KEY_SQL).format(
                    _qualified(table), sql.Identifier(name), sql.SQL(definition)
                )
            )


def _kind(table: str) -> str:
    return "reference" if table in REFERENCE_TABLES else "distributed"


def _qualified(table: str) -> sql.Composable:
    schema, name = table.split(".", 1)
    return sql.Identifier(schema, name)


def _placement(conn: psycopg.Connection, table: str) -> tuple[str, int] | None:
    row = conn.execute(CITUS_TABLE_SQL, (table,)).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def _place(conn: psycopg.Connection, table: str, now: tuple[str, int] | None) -> None:
    if now is not None and now[0] == _kind(table):
        return
    if table in REFUSAL_TRIGGER_TABLES:
        conn.execute(UNSAFE_TRIGGERS_SQL, ("on",))
    if _kind(table) == "reference":
        conn.execute(CREATE_REFERENCE_TABLE_SQL, (table,))
    else:
        anchor = "default" if table == ANCHOR_TABLE else ANCHOR_TABLE
        conn.execute(CREATE_DISTRIBUTED_TABLE_SQL, (table, anchor))
    if table in REFUSAL_TRIGGER_TABLES:
        conn.execute(UNSAFE_TRIGGERS_SQL, ("off",))


def _require_cluster(conn: psycopg.Connection, dsn: str) -> None:
    if citus_version(conn) is None:
        raise ConfigError(
            f"{redact_dsn(dsn)} has no citus extension: `isokron db distribute` runs on a "
            "Citus coordinator (CREATE EXTENSION citus, then add workers with citus_add_node)"
        )
    if not conn.execute(IS_COORDINATOR_SQL).fetchone()[0]:  # type: ignore[index]
        raise ConfigError(f"{redact_dsn(dsn)} is a Citus worker; point the DSN at the coordinator")
    if conn.execute(WORKER_COUNT_SQL).fetchone()[0] == 0:  # type: ignore[index]
        raise ConfigError(
            "the coordinator has no workers yet; add them with "
            "SELECT citus_add_node('host', port) and run this again"
        )
