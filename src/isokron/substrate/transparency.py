"""The transparency log in the database: the Merkle tree's nodes, signed checkpoints, proofs.

The tree (``hivex_foundation.merkle_node``, migration 0030) is caught up from the chain by
:func:`catch_up`, which the checkpoint and prove paths run first: it reads only the events
appended since the last catch-up (seq > tree_size), computes their leaf and interior nodes with
:class:`isokron.chain.merkle.CompactRange` and inserts them in batches, under the row lock of
the workspace's ``merkle_tree`` row. The append path itself is untouched: the bench
(``bench/transparency.py``) reports what catching up costs per event beside an append.

A proof reads the O(log n) nodes it needs in one query (``merkle.nodes_needed``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from isokron.chain import merkle, tlog
from isokron.chain.note import Signer, Verifier
from isokron.chain.tlog import LogCheckpoint, open_checkpoint, sign_checkpoint
from isokron.errors import ChainError, ConflictError, NotFoundError
from isokron.substrate.connection import workspace_transaction
from isokron.substrate.database_errors import DRIVER_ERRORS, translate

log = logging.getLogger("isokron.substrate.transparency")

T = TypeVar("T")
CATCH_UP_BATCH = 20_000

SELECT_TENANT_SQL = "SELECT tenant_id FROM hivex_foundation.tenant WHERE clerk_org_id = $1"
ENSURE_TREE_SQL = """
INSERT INTO hivex_foundation.merkle_tree (workspace_id, tree_size, root_hash)
VALUES ($1, 0, sha256(''::bytea)) ON CONFLICT (workspace_id) DO NOTHING
"""
LOCK_TREE_SQL = """
SELECT tree_size, root_hash FROM hivex_foundation.merkle_tree WHERE workspace_id = $1 FOR UPDATE
"""
SELECT_TREE_SQL = """
SELECT tree_size, root_hash FROM hivex_foundation.merkle_tree WHERE workspace_id = $1
"""
UPDATE_TREE_SQL = """
UPDATE hivex_foundation.merkle_tree SET tree_size = $2, root_hash = $3, updated_at = now()
WHERE workspace_id = $1
"""
SELECT_NEW_LEAVES_SQL = """
SELECT seq, this_event_hash FROM hivex_foundation.event_log
WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""
INSERT_NODES_SQL = """
INSERT INTO hivex_foundation.merkle_node (workspace_id, level, idx, hash)
SELECT $1, l, i, h FROM unnest($2::smallint[], $3::bigint[], $4::bytea[]) AS n(l, i, h)
"""
SELECT_NODES_SQL = """
SELECT n.level, n.idx, n.hash FROM hivex_foundation.merkle_node n
JOIN unnest($2::smallint[], $3::bigint[]) AS k(l, i) ON n.level = k.l AND n.idx = k.i
WHERE n.workspace_id = $1
"""
SELECT_LOG_KEY_SQL = """
SELECT origin, verifier_key FROM hivex_foundation.log_keys WHERE workspace_id = $1
"""
INSERT_LOG_KEY_SQL = """
INSERT INTO hivex_foundation.log_keys (workspace_id, origin, verifier_key) VALUES ($1, $2, $3)
"""
SELECT_CHECKPOINT_SQL = """
SELECT tree_size, root_hash, note FROM hivex_foundation.log_checkpoints
WHERE workspace_id = $1 AND tree_size = $2
"""
SELECT_LATEST_CHECKPOINT_SQL = """
SELECT tree_size, root_hash, note FROM hivex_foundation.log_checkpoints
WHERE workspace_id = $1 ORDER BY tree_size DESC LIMIT 1
"""
INSERT_CHECKPOINT_SQL = """
INSERT INTO hivex_foundation.log_checkpoints (workspace_id, tree_size, root_hash, note)
VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, tree_size) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class TreeHead:
    """The stored tree's size and root."""

    tree_size: int
    root_hash: bytes


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint the log signed: its size, root and signed note text."""

    tree_size: int
    root_hash: bytes
    note: str


async def _tenant(conn: asyncpg.Connection, workspace_id: str) -> UUID:
    tenant = await conn.fetchval(SELECT_TENANT_SQL, workspace_id)
    if tenant is None:
        raise NotFoundError(f"unknown workspace {workspace_id!r}; `isokron workspace list`")
    return UUID(str(tenant))


async def _nodes(
    conn: asyncpg.Connection, workspace_id: str, keys: list[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    rows = await conn.fetch(
        SELECT_NODES_SQL, workspace_id, [k[0] for k in keys], [k[1] for k in keys]
    )
    return {(r["level"], r["idx"]): bytes(r["hash"]) for r in rows}


async def compute(
    conn: asyncpg.Connection, workspace_id: str, fn: Callable[[merkle.NodeGetter], T]
) -> T:
    """Run a tree computation over stored nodes, fetching all it needs in one query."""
    keys = merkle.nodes_needed(fn)
    stored = await _nodes(conn, workspace_id, keys)

    def node(level: int, index: int) -> bytes:
        try:
            return stored[(level, index)]
        except KeyError:
            raise ChainError(
                f"the Merkle tree of {workspace_id!r} lacks node ({level}, {index}): it was "
                "deleted outside IsoKron; `isokron verify` names the damage"
            ) from None

    return fn(node)


async def root_at(conn: asyncpg.Connection, workspace_id: str, size: int) -> bytes:
    """MTH of the first ``size`` leaves from stored nodes."""
    if size == 0:
        return merkle.EMPTY_ROOT
    return await compute(conn, workspace_id, lambda node: merkle.subtree_hash(0, size, node))


async def catch_up(
    conn: asyncpg.Connection, workspace_id: str, *, progress: Callable[[int], None] | None = None
) -> TreeHead:
    """Extend the stored tree with every event appended since the last catch-up."""
    try:
        async with workspace_transaction(conn, workspace_id):
            await _tenant(conn, workspace_id)  # an unknown workspace is a clean NotFoundError
            await conn.execute(ENSURE_TREE_SQL, workspace_id)
            row = await conn.fetchrow(LOCK_TREE_SQL, workspace_id)
            size = int(row["tree_size"])
            frontier_keys = merkle.CompactRange.frontier_nodes(size)
            stored = await _nodes(conn, workspace_id, frontier_keys)
            if len(stored) != len(frontier_keys):
                raise ChainError(
                    f"the Merkle tree of {workspace_id!r} lost nodes of its right edge; "
                    "`isokron verify` names the damage"
                )
            tree = merkle.CompactRange(size, [stored[k] for k in frontier_keys])
            while True:
                rows = await conn.fetch(
                    SELECT_NEW_LEAVES_SQL, workspace_id, tree.size, CATCH_UP_BATCH
                )
                if not rows:
                    break
                levels, idxs, hashes = [], [], []
                for r in rows:
                    if r["seq"] != tree.size + 1:
                        raise ChainError(
                            f"the chain of {workspace_id!r} jumps from seq {tree.size} to "
                            f"{r['seq']}; `isokron verify` names the gap"
                        )
                    for n in tree.append(merkle.leaf_hash(bytes(r["this_event_hash"]))):
                        levels.append(n.level)
                        idxs.append(n.index)
                        hashes.append(n.hash)
                await conn.execute(INSERT_NODES_SQL, workspace_id, levels, idxs, hashes)
                if progress is not None:
                    progress(tree.size)
            head = TreeHead(tree.size, tree.root())
            if head.tree_size != size:
                await conn.execute(UPDATE_TREE_SQL, workspace_id, head.tree_size, head.root_hash)
                log.info(
                    "[isokron.tlog.catch_up] workspace=%s from=%d to=%d",
                    workspace_id,
                    size,
                    head.tree_size,
                )
            return head
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc


async def tree_head(conn: asyncpg.Connection, workspace_id: str) -> TreeHead:
    """The stored tree's size and root, without catching up."""
    async with workspace_transaction(conn, workspace_id):
        row = await conn.fetchrow(SELECT_TREE_SQL, workspace_id)
    if row is None:
        return TreeHead(0, merkle.EMPTY_ROOT)
    return TreeHead(int(row["tree_size"]), bytes(row["root_hash"]))


# ---------------------------------------------------------------- keys
def log_origin(workspace_id: str, tenant_id: UUID) -> str:
    """The log's origin line and key name: unique per workspace and per database."""
    return f"isokron/{workspace_id}/{tenant_id}"


async def origin_of(conn: asyncpg.Connection, workspace_id: str) -> str:
    async with workspace_transaction(conn, workspace_id):
        return log_origin(workspace_id, await _tenant(conn, workspace_id))


async def registered_key(conn: asyncpg.Connection, workspace_id: str) -> Verifier | None:
    """The log's verifier key as registered in the database, if any."""
    async with workspace_transaction(conn, workspace_id):
        await _tenant(conn, workspace_id)
        row = await conn.fetchrow(SELECT_LOG_KEY_SQL, workspace_id)
    return None if row is None else Verifier.parse(row["verifier_key"])


async def register_key(conn: asyncpg.Connection, workspace_id: str, verifier: Verifier) -> None:
    """Record the log's public key (once; a different key later is refused)."""
    async with workspace_transaction(conn, workspace_id):
        row = await conn.fetchrow(SELECT_LOG_KEY_SQL, workspace_id)
        if row is None:
            await conn.execute(INSERT_LOG_KEY_SQL, workspace_id, verifier.name, verifier.encode())
        elif row["verifier_key"] != verifier.encode():
            raise ConflictError(
                f"workspace {workspace_id!r} already has log key {row['verifier_key']}; "
                "a log keeps one key so that old checkpoints stay verifiable"
            )


# ---------------------------------------------------------------- checkpoints
async def _latest(conn: asyncpg.Connection, workspace_id: str) -> StoredCheckpoint | None:
    row = await conn.fetchrow(SELECT_LATEST_CHECKPOINT_SQL, workspace_id)
    if row is None:
        return None
    return StoredCheckpoint(int(row["tree_size"]), bytes(row["root_hash"]), row["note"])


async def sign_tree(
    conn: asyncpg.Connection, workspace_id: str, signer: Signer, *, size: int | None = None
) -> StoredCheckpoint:
    """Catch up, then sign (and keep) the checkpoint at ``size`` (default: the whole tree).

    Refuses to sign if the tree no longer agrees with the latest checkpoint signed before:
    a log must never sign two inconsistent checkpoints.
    """
    key = await registered_key(conn, workspace_id)
    if key is None or key != signer.verifier():
        raise ConflictError(
            f"this private key is not the log key of {workspace_id!r}; "
            f"run `isokron log key init {workspace_id}` or give the right --key-file"
        )
    head = await catch_up(conn, workspace_id)
    size = head.tree_size if size is None else size
    if not 0 <= size <= head.tree_size:
        raise NotFoundError(f"the log of {workspace_id!r} has {head.tree_size} events, not {size}")
    async with workspace_transaction(conn, workspace_id):
        existing = await conn.fetchrow(SELECT_CHECKPOINT_SQL, workspace_id, size)
        if existing is not None:
            return StoredCheckpoint(size, bytes(existing["root_hash"]), existing["note"])
        latest = await _latest(conn, workspace_id)
        if latest is not None and latest.tree_size <= head.tree_size:
            if await root_at(conn, workspace_id, latest.tree_size) != latest.root_hash:
                raise ChainError(
                    f"refusing to sign: the tree no longer matches the checkpoint signed at "
                    f"size {latest.tree_size} — the chain was rewritten (`isokron verify`)"
                )
        root = await root_at(conn, workspace_id, size)
        note = sign_checkpoint(LogCheckpoint(signer.name, size, root), signer)
        await conn.execute(INSERT_CHECKPOINT_SQL, workspace_id, size, root, note)
    log.info("[isokron.tlog.checkpoint] workspace=%s size=%d", workspace_id, size)
    return StoredCheckpoint(size, root, note)


async def latest_checkpoint(conn: asyncpg.Connection, workspace_id: str) -> StoredCheckpoint:
    """The latest checkpoint the log signed (what the gateway's proofs are against)."""
    async with workspace_transaction(conn, workspace_id):
        await _tenant(conn, workspace_id)
        latest = await _latest(conn, workspace_id)
    if latest is None:
        raise NotFoundError(
            f"the log of {workspace_id!r} has no signed checkpoint yet; the operator runs "
            f"`isokron checkpoint {workspace_id}`"
        )
    return latest


async def stored_checkpoint(
    conn: asyncpg.Connection, workspace_id: str, size: int
) -> StoredCheckpoint | None:
    async with workspace_transaction(conn, workspace_id):
        row = await conn.fetchrow(SELECT_CHECKPOINT_SQL, workspace_id, size)
    return None if row is None else StoredCheckpoint(size, bytes(row["root_hash"]), row["note"])


# ---------------------------------------------------------------- proofs
async def prove_inclusion(
    conn: asyncpg.Connection, workspace_id: str, seq: int, checkpoint: StoredCheckpoint
) -> dict[str, Any]:
    """The inclusion proof of event ``seq`` in the tree of ``checkpoint`` (JSON shape)."""
    size = checkpoint.tree_size
    if not 1 <= seq <= size:
        raise NotFoundError(
            f"seq {seq} is not in the signed checkpoint of size {size} of {workspace_id!r}"
            + ("; sign a newer one with `isokron checkpoint`" if seq > size else "")
        )
    index = seq - 1
    async with workspace_transaction(conn, workspace_id):
        leaf, path = await compute(
            conn,
            workspace_id,
            lambda node: (node(0, index), merkle.inclusion_path(index, size, node)),
        )
    return tlog.inclusion_document(
        tree_size=size, leaf_index=index, leaf=leaf, path=path, checkpoint=checkpoint.note
    )


async def prove_consistency(
    conn: asyncpg.Connection,
    workspace_id: str,
    first: StoredCheckpoint,
    second: StoredCheckpoint,
) -> dict[str, Any]:
    """The consistency proof from ``first`` to ``second`` (JSON shape, both notes included)."""
    if not 0 < first.tree_size <= second.tree_size:
        raise NotFoundError(
            f"no consistency proof from size {first.tree_size} to size {second.tree_size}"
        )
    async with workspace_transaction(conn, workspace_id):
        path = await compute(
            conn,
            workspace_id,
            lambda node: merkle.consistency_path(first.tree_size, second.tree_size, node),
        )
    return tlog.consistency_document(
        first=first.tree_size,
        second=second.tree_size,
        first_root=first.root_hash,
        second_root=second.root_hash,
        path=path,
        first_checkpoint=first.note,
        second_checkpoint=second.note,
    )


def check_stored(checkpoint: StoredCheckpoint, key: Verifier) -> None:
    """Refuse a stored checkpoint whose note does not verify (edited in the database)."""
    cp, _ = open_checkpoint(checkpoint.note, key)
    if (cp.tree_size, cp.root_hash) != (checkpoint.tree_size, checkpoint.root_hash):
        raise ChainError("a stored checkpoint's columns disagree with its signed note")
