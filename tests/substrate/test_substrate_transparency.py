"""The transparency log in the database: catching up under concurrency, and a superuser
attacking the stored tree and checkpoints (the upgrade of a populated database is in
test_substrate_upgrade_state.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg
import pytest

from isokron.chain import merkle
from isokron.chain.note import Signer
from isokron.errors import ChainError
from isokron.substrate import transparency, writes
from isokron.substrate.tree_audit import verify_workspace_tree


async def _events(conn: asyncpg.Connection, ws: writes.CreatedWorkspace, n: int) -> None:
    for i in range(n):
        await writes.write(
            conn, "append_event", ws.workspace_id, ws.actors["kora"],
            {"event_type": "kora.note.recorded", "payload": {"i": i}},
        )  # fmt: skip


async def _signer(conn: asyncpg.Connection, workspace_id: str) -> Signer:
    signer = Signer.generate(await transparency.origin_of(conn, workspace_id))
    await transparency.register_key(conn, workspace_id, signer.verifier())
    return signer


def _chain_root(dsn: str, tenant: Any, size: int) -> bytes:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT this_event_hash FROM hivex_foundation.event_log "
            "WHERE tenant_id = %s AND seq <= %s ORDER BY seq",
            (tenant, size),
        ).fetchall()
    tree = merkle.CompactRange()
    for (h,) in rows:
        tree.append(merkle.leaf_hash(bytes(h)))
    return tree.root()


async def test_concurrent_catch_ups_and_appends_build_one_correct_tree(
    substrate: Any, admin_pool: asyncpg.Pool, make_workspace: Callable
) -> None:
    ws = await make_workspace("tlog-conc")

    async def appender() -> None:
        async with admin_pool.acquire() as conn:
            await _events(conn, ws, 30)

    async def catcher() -> None:
        for _ in range(10):
            async with admin_pool.acquire() as conn:
                await transparency.catch_up(conn, ws.workspace_id)

    await asyncio.gather(appender(), catcher(), catcher(), catcher())
    async with admin_pool.acquire() as conn:
        head = await transparency.catch_up(conn, ws.workspace_id)
    assert head.root_hash == _chain_root(substrate.admin, ws.tenant_id, head.tree_size)
    assert verify_workspace_tree(substrate.admin, ws.workspace_id) == []


async def test_a_superuser_attacking_the_tree_or_checkpoints_is_caught(
    substrate: Any, admin_pool: asyncpg.Pool, make_workspace: Callable
) -> None:
    ws = await make_workspace("tlog-tamper")
    wid = ws.workspace_id
    async with admin_pool.acquire() as conn:
        await _events(conn, ws, 9)
        signer = await _signer(conn, wid)
        cp = await transparency.sign_tree(conn, wid, signer)
    assert verify_workspace_tree(substrate.admin, wid) == []
    attacks = {
        "edit a stored node": "UPDATE hivex_foundation.merkle_node SET hash = sha256(hash) "
        "WHERE workspace_id = %(w)s AND level = 2 AND idx = 0",
        "delete a stored leaf": "DELETE FROM hivex_foundation.merkle_node "
        "WHERE workspace_id = %(w)s AND level = 0 AND idx = 3",
        "insert a node": "INSERT INTO hivex_foundation.merkle_node VALUES "
        "(%(w)s, 0, 999999, sha256('x'::bytea))",
        "move the stored root": "UPDATE hivex_foundation.merkle_tree SET root_hash = "
        "sha256(root_hash) WHERE workspace_id = %(w)s",
    }
    tried = caught = 0
    for name, statement in attacks.items():
        with psycopg.connect(substrate.admin, autocommit=True) as sql:
            with sql.transaction():
                sql.execute("CREATE TEMP TABLE keep AS SELECT * FROM hivex_foundation.merkle_node "
                            "WHERE workspace_id = %s", (wid,))  # fmt: skip
                sql.execute(
                    "CREATE TEMP TABLE keep_tree AS SELECT * FROM hivex_foundation.merkle_tree "
                    "WHERE workspace_id = %s",
                    (wid,),
                )
            sql.execute(statement, {"w": wid})
            tried += 1
            findings = verify_workspace_tree(substrate.admin, wid)
            caught += bool(findings)
            assert findings, name
            with sql.transaction():  # put the tree back for the next attack
                sql.execute(
                    "DELETE FROM hivex_foundation.merkle_node WHERE workspace_id = %s", (wid,)
                )
                sql.execute("INSERT INTO hivex_foundation.merkle_node SELECT * FROM keep")
                sql.execute(
                    "DELETE FROM hivex_foundation.merkle_tree WHERE workspace_id = %s", (wid,)
                )
                sql.execute("INSERT INTO hivex_foundation.merkle_tree SELECT * FROM keep_tree")
        assert verify_workspace_tree(substrate.admin, wid) == []
    print(f"tree attacks tried {tried}, caught {caught}")

    # A stored tree rewritten under the last checkpoint: the log refuses to sign a head that
    # contradicts what it signed before (verify names the damage).
    with psycopg.connect(substrate.admin, autocommit=True) as sql:
        sql.execute(
            "UPDATE hivex_foundation.merkle_node SET hash = sha256(hash) "
            "WHERE workspace_id = %s AND level = 3 AND idx = 0", (wid,)
        )  # fmt: skip
    async with admin_pool.acquire() as conn:
        await _events(conn, ws, 1)
        with pytest.raises(ChainError, match="refusing to sign"):
            await transparency.sign_tree(conn, wid, signer)
    # A stored checkpoint edited in the database no longer verifies with the log key.
    forged = transparency.StoredCheckpoint(
        cp.tree_size, cp.root_hash, cp.note.replace(f"\n{cp.tree_size}\n", "\n1\n")
    )
    with pytest.raises(ChainError):
        transparency.check_stored(forged, signer.verifier())
