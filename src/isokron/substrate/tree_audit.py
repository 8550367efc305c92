"""``isokron verify``'s transparency-log checks: the stored Merkle tree is re-derived from the
chain, and signed checkpoints are confirmed against it.

One streaming pass over the chain's ``this_event_hash`` column rebuilds the tree with a
:class:`~isokron.chain.merkle.CompactRange` (O(log n) memory) while a second server-side cursor
streams the stored nodes in the order the rebuild completes them, so every stored node is
compared without holding the tree in memory. A stored node that differs, is missing or is
extra is a ``merkle_mismatch`` finding; a checkpoint whose root is not the chain's root at its
size is a ``checkpoint_mismatch``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import psycopg

from isokron.chain import Finding, merkle
from isokron.chain.tlog import LogCheckpoint
from isokron.errors import NotFoundError, SubstrateUnavailableError
from isokron.substrate import audit
from isokron.substrate.chain_scan import CONNECT_OPTIONS
from isokron.substrate.dsn import redact_dsn

FETCH_BATCH = 20_000
SELECT_LEAVES_SQL = """
SELECT seq, this_event_hash FROM hivex_foundation.event_log WHERE workspace_id = %s ORDER BY seq
"""
# Completion order of a node: the leaf that completes it, ((idx + 1) << level) - 1, then level.
SELECT_NODES_IN_ORDER_SQL = """
SELECT level, idx, hash FROM hivex_foundation.merkle_node WHERE workspace_id = %s
ORDER BY (idx + 1) * (1::bigint << level), level
"""
SELECT_TREE_SQL = (
    "SELECT tree_size, root_hash FROM hivex_foundation.merkle_tree WHERE workspace_id = %s"
)
MAX_TREE_FINDINGS = 20


def verify_workspace_tree(
    dsn: str, workspace_id: str, checkpoints: Sequence[LogCheckpoint] = ()
) -> list[Finding]:
    """Connect with the admin DSN and run :func:`verify_tree` for one workspace."""
    try:
        conn = psycopg.connect(dsn, **CONNECT_OPTIONS)
    except psycopg.OperationalError as exc:
        raise SubstrateUnavailableError(
            f"cannot reach PostgreSQL at {redact_dsn(dsn)}: {exc}"
        ) from exc
    with conn, conn.transaction():
        conn.execute(audit.SET_SCOPE_SQL, (workspace_id,))
        row = conn.execute(audit.SELECT_TENANT_SQL, (workspace_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"unknown workspace {workspace_id!r}")
        return verify_tree(conn, workspace_id, checkpoints)


def _stored_nodes(conn: psycopg.Connection, workspace_id: str) -> Iterator[tuple[int, int, bytes]]:
    with conn.cursor(name="isokron_merkle_nodes") as cur:
        cur.itersize = FETCH_BATCH
        cur.execute(SELECT_NODES_IN_ORDER_SQL, (workspace_id,))
        for level, idx, digest in cur:
            yield int(level), int(idx), bytes(digest)


def _leaves(conn: psycopg.Connection, workspace_id: str) -> Iterator[bytes]:
    with conn.cursor(name="isokron_merkle_leaves") as cur:
        cur.itersize = FETCH_BATCH
        cur.execute(SELECT_LEAVES_SQL, (workspace_id,))
        for _seq, digest in cur:
            yield merkle.leaf_hash(bytes(digest))


def _finding(message: str, kind: str = "merkle_mismatch") -> Finding:
    return Finding(kind, None, None, message)


def verify_tree(
    conn: psycopg.Connection,
    workspace_id: str,
    checkpoints: Sequence[LogCheckpoint] = (),
) -> list[Finding]:
    """Re-derive the stored tree and confirm ``checkpoints``; return the findings."""
    row = conn.execute(SELECT_TREE_SQL, (workspace_id,)).fetchone()
    stored_size = int(row[0]) if row else 0
    stored_root = bytes(row[1]) if row else merkle.EMPTY_ROOT
    want = {cp.tree_size: cp for cp in checkpoints}
    roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT} if 0 in want else {}
    out: list[Finding] = []
    stored = _stored_nodes(conn, workspace_id)
    pending = next(stored, None)
    tree = merkle.CompactRange()
    for leaf in _leaves(conn, workspace_id):
        for node in tree.append(leaf):
            if tree.size > stored_size or len(out) >= MAX_TREE_FINDINGS:
                continue  # beyond the caught-up tree (nothing stored), or enough said
            key = (node.level, node.index)
            if pending is None or (pending[0], pending[1]) != key:
                out.append(_finding(f"Merkle node {key} is missing from the stored tree"))
                continue
            if pending[2] != node.hash:
                out.append(_finding(f"stored Merkle node {key} differs from the chain's"))
            pending = next(stored, None)
        if tree.size == stored_size and tree.root() != stored_root:
            out.append(_finding(f"the stored tree root at size {stored_size} is not the chain's"))
        if tree.size in want:
            roots[tree.size] = tree.root()
    if pending is not None and len(out) < MAX_TREE_FINDINGS:
        out.append(
            _finding(f"stored Merkle node ({pending[0]}, {pending[1]}) covers no chain event")
        )
    if stored_size > tree.size:
        out.append(
            _finding(f"the stored tree has {stored_size} leaves but the chain {tree.size} events")
        )
    out += _confirm(want, roots, tree.size)
    return out


def checkpoint_findings_from_leaves(
    leaves: Iterator[bytes], checkpoints: Sequence[LogCheckpoint]
) -> list[Finding]:
    """Confirm signed checkpoints against leaf hashes (e.g. of an export bundle)."""
    want = {cp.tree_size: cp for cp in checkpoints}
    roots = {0: merkle.EMPTY_ROOT}
    tree = merkle.CompactRange()
    for leaf in leaves:
        tree.append(leaf)
        if tree.size in want:
            roots[tree.size] = tree.root()
    return _confirm(want, roots, tree.size)


def _confirm(want: dict[int, LogCheckpoint], roots: dict[int, bytes], events: int) -> list[Finding]:
    out = []
    for size, cp in want.items():
        if size not in roots:
            out.append(
                _finding(
                    f"the signed checkpoint at tree size {size} cannot be confirmed: the chain "
                    f"has only {events} events — events were removed (truncation/rollback)",
                    "checkpoint_mismatch",
                )
            )
        elif roots[size] != cp.root_hash:
            out.append(
                _finding(
                    f"the chain's Merkle root at tree size {size} is not the one the signed "
                    "checkpoint records — the chain was rewritten after it was signed",
                    "checkpoint_mismatch",
                )
            )
    return out
