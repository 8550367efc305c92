"""isokron.set_local: the one way a scoping setting is set (it reaches Citus workers).

It is SET LOCAL with bind parameters, granted to the reader for its read transactions. An
adversary holding the reader's DSN tries to use it to set anything else, or to smuggle SQL
through the value; every attempt is refused or stays a harmless string.
"""

from __future__ import annotations

import asyncpg
import pytest

from isokron.substrate import connection
from isokron.substrate.dsn import SubstrateDSNs, database_name, database_roles

SET_LOCAL_SQL = "SELECT isokron.set_local($1, $2, $3)"
HOSTILE_NAMES = (
    "role",
    "session_authorization",
    "search_path",
    "row_security",
    "citus.propagate_set_commands",
    "app.current_workspace_id = 'x'; RESET ROLE; SET x.y",
    "APP.CURRENT_WORKSPACE_ID",
    "isokron.all_workspaces TO on; SET role",
    "",
)
HOSTILE_VALUES = (
    "x'; SET ROLE isokron_owner; --",
    "x\\'; RESET ALL; --",
    "' OR 1=1 --",
)


@pytest.fixture
async def reader(substrate: SubstrateDSNs) -> asyncpg.Connection:
    conn = await connection.connect(substrate.reader)
    yield conn
    await conn.close()


async def test_sets_the_workspace_for_the_transaction_only(reader: asyncpg.Connection) -> None:
    async with reader.transaction():
        assert await reader.fetchval(SET_LOCAL_SQL, "app.current_workspace_id", "ws-1", True)
        assert await reader.fetchval("SELECT current_setting('app.current_workspace_id')") == "ws-1"
    assert await reader.fetchval("SELECT current_setting('app.current_workspace_id', true)") in (
        None,
        "",
    )


async def test_refuses_every_other_setting_and_session_scope(reader: asyncpg.Connection) -> None:
    tried = refused = 0
    for name in HOSTILE_NAMES:
        tried += 1
        async with reader.transaction():
            with pytest.raises(asyncpg.PostgresError) as err:
                await reader.fetchval(SET_LOCAL_SQL, name, "on", True)
        assert err.value.sqlstate == "IKV01", name
        refused += 1
    tried += 1
    with pytest.raises(asyncpg.PostgresError) as err:
        await reader.fetchval(SET_LOCAL_SQL, "app.current_workspace_id", "ws", False)
    assert err.value.sqlstate == "IKV01"
    refused += 1
    print(f"set_local hostile names: tried {tried}, refused {refused}")
    assert tried == refused


async def test_a_hostile_value_stays_a_string(
    reader: asyncpg.Connection, substrate: SubstrateDSNs
) -> None:
    me = database_roles(database_name(substrate.admin)).reader
    for value in HOSTILE_VALUES:
        async with reader.transaction():
            await reader.fetchval(SET_LOCAL_SQL, "app.current_workspace_id", value, True)
            assert await reader.fetchval("SELECT current_user") == me
            assert (
                await reader.fetchval("SELECT current_setting('app.current_workspace_id')") == value
            )
