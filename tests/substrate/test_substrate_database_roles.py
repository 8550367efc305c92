"""Two IsoKron databases on one server share no power (issue 9, item 6).

Each database has its own owner, reader and gateway roles, named after it. Database 1's roles
can connect to database 2 (PostgreSQL grants CONNECT to PUBLIC by default) but can neither read
nor write anything there: no table, no function, not even with a valid token of database 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg
import pytest

from isokron.governance.seeds import default_seed
from isokron.substrate import connection, writes
from isokron.substrate.dsn import SubstrateDSNs, database_name, database_roles, with_database
from isokron.substrate.migrate import upgrade

STATE_TABLES_SQL = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'kronicle', 'hivex_foundation', 'isokron')
  AND position('yoyo' IN c.relname) = 0
ORDER BY 1
"""


def test_role_names_are_per_database_and_fit_postgresql() -> None:
    a, b = database_roles("isokron"), database_roles("Isokron")
    assert a != b  # distinct names however close the spelling
    for roles in (a, b, database_roles("x" * 200), database_roles("é ü/%")):
        for name in (roles.owner, roles.reader, roles.gateway):
            assert len(name) <= 63 and name.isascii() and name.startswith("isokron_")
    dsns = SubstrateDSNs.derive("postgresql://postgres@127.0.0.1:5432/acme")
    assert dsns.reader.startswith(f"postgresql://{database_roles('acme').reader}@")
    assert dsns.gateway.startswith(f"postgresql://{database_roles('acme').gateway}@")


@pytest.fixture(scope="module")
async def two(fresh_database: Callable[[], str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("one", "two"):
        admin = fresh_database()
        upgrade(admin)
        conn = await connection.connect(admin)
        try:
            ws = await writes.create_workspace(conn, f"iso-{name}", seed=default_seed())
            token = await writes.issue_token(
                conn, ws.workspace_id, ws.operator_actor_id, ws.actors["kora"]
            )
        finally:
            await conn.close()
        out[name] = {
            "dsns": SubstrateDSNs.derive(admin),
            "ws": ws,
            "hash": writes.token_sha256(token.token),
        }
    return out


def _as(role_dsn: str, other_admin: str) -> str:
    """role_dsn's user, pointed at other_admin's database."""
    return with_database(role_dsn, database_name(other_admin))


async def test_database_ones_roles_can_neither_read_nor_write_database_two(
    two: dict[str, Any],
) -> None:
    one, other = two["one"], two["two"]
    with psycopg.connect(other["dsns"].admin) as conn:
        tables = [r[0] for r in conn.execute(STATE_TABLES_SQL)]
    assert len(tables) >= 18
    tried = refused = 0
    for role in ("reader", "gateway"):
        dsn = _as(getattr(one["dsns"], role), other["dsns"].admin)
        conn = await asyncpg.connect(dsn)
        try:
            for table in tables:
                for sql in (f"SELECT count(*) FROM {table}", f"DELETE FROM {table}"):
                    tried += 1
                    try:
                        async with conn.transaction():
                            await conn.execute(
                                "SELECT isokron.set_local('app.current_workspace_id', $1, true)",
                                other["ws"].workspace_id,
                            )
                            await conn.execute(sql)
                    except asyncpg.InsufficientPrivilegeError:
                        refused += 1
            for sql, args in (
                (
                    "SELECT isokron_api.write($1, 'append_event', '{}')",
                    (other["hash"],),
                ),
                ("SELECT isokron_api.admit_write($1, '[]')", (other["hash"],)),
                ("SELECT isokron_api.token_issued_at($1)", (other["hash"],)),
                ("SELECT isokron_api.maintain($1)", (other["ws"].workspace_id,)),
                ("SELECT isokron_api.authenticate_token($1)", (other["hash"],)),
            ):
                tried += 1
                try:
                    await conn.execute(sql, *args)
                except asyncpg.InsufficientPrivilegeError:
                    refused += 1
        finally:
            await conn.close()
    assert refused == tried, f"{tried - refused} of {tried} cross-database attempts were allowed"
    # Database 2's own gateway role, with its own token, still writes there.
    gw = await connection.connect(other["dsns"].gateway)
    try:
        done = await writes.write_with_token(
            gw, "append_event", other["hash"], {"event_type": "kora.x.y"}
        )
    finally:
        await gw.close()
    assert done["seq"] > 0


def test_the_two_databases_roles_differ(two: dict[str, Any]) -> None:
    one = database_roles(database_name(two["one"]["dsns"].admin))
    other = database_roles(database_name(two["two"]["dsns"].admin))
    assert {one.owner, one.reader, one.gateway}.isdisjoint(
        {other.owner, other.reader, other.gateway}
    )


async def test_what_postgresql_still_lets_any_role_do(two: dict[str, Any]) -> None:
    """docs/security.md §4 lists what PostgreSQL allows every role; assert it stays true."""
    one, other = two["one"], two["two"]
    conn = await asyncpg.connect(_as(one["dsns"].gateway, other["dsns"].admin))
    try:
        # PUBLIC's default CONNECT and TEMP, and the catalogs.
        names = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relname = 'kora_policy_registry'"
        )
        assert len(names) == 1
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE probe (x int) ON COMMIT DROP")
        # Its own password (then back to none).
        await conn.execute("ALTER ROLE CURRENT_USER PASSWORD 'changed-by-the-holder'")
        await conn.execute("ALTER ROLE CURRENT_USER PASSWORD NULL")
    finally:
        await conn.close()
