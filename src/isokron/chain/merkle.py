"""RFC 9162 Merkle tree over a tenant's chain: hashes, incremental building, proofs.

The leaves are the chain's events in ``seq`` order; leaf index = seq - 1 and

    leaf hash   = SHA-256(0x00 || this_event_hash)          (32-byte event hash as the entry)
    interior    = SHA-256(0x01 || left || right)
    empty tree  = SHA-256("")

Stored form: every *perfect* subtree node is kept as ``(level, index)`` — level 0 are the leaf
hashes, the node at ``(level, index)`` covers leaves ``[index·2^level, (index+1)·2^level)``.
A tree of n leaves has fewer than 2n such nodes, and any RFC 9162 subtree hash, inclusion path
or consistency path is a combination of O(log n) of them, so a proof reads O(log n) rows.

Pure Python (hashlib only), no I/O: the proof functions take a node getter, and
:func:`nodes_needed` tells a caller which nodes to fetch in one query first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from isokron.errors import ChainError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "NodeGetter",
    "consistency_path",
    "hash_children",
    "inclusion_path",
    "leaf_hash",
    "nodes_needed",
    "root_from_inclusion",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"

#: Returns the stored hash of the perfect subtree node at (level, index).
NodeGetter = Callable[[int, int], bytes]


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 leaf hash of one entry (for IsoKron: an event's 32-byte ``this_event_hash``)."""
    return hashlib.sha256(_LEAF + bytes(entry)).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash."""
    return hashlib.sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_hash(start: int, end: int, node: NodeGetter) -> bytes:
    """MTH(D[start:end]) for a range the RFC recursion produces (start aligned), via ``node``."""
    size = end - start
    if size <= 0:
        raise ChainError(f"empty subtree [{start}, {end})")
    if size & (size - 1) == 0 and start % size == 0:
        level = size.bit_length() - 1
        return node(level, start >> level)
    k = _split(size)
    return hash_children(subtree_hash(start, start + k, node), subtree_hash(start + k, end, node))


def inclusion_path(index: int, size: int, node: NodeGetter) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[size]): the audit path of leaf ``index`` (0-based)."""
    if not 0 <= index < size:
        raise ChainError(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree_hash(start + k, end, node))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, node))
            start += k
    path.reverse()  # the recursion appends from the top; the path is listed leaf-first
    return path


def consistency_path(first: int, second: int, node: NodeGetter) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(first, D[second]) for 0 < first <= second."""
    if not 0 < first <= second:
        raise ChainError(f"no consistency proof from size {first} to size {second}")
    path: list[bytes] = []
    start, end, m, complete = 0, second, first, True
    while True:
        if m == end - start:
            if not complete:
                path.append(subtree_hash(start, end, node))
            break
        k = _split(end - start)
        if m <= k:
            path.append(subtree_hash(start + k, end, node))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, node))
            start, m, complete = start + k, m - k, False
    path.reverse()
    return path


def nodes_needed(compute: Callable[[NodeGetter], object]) -> list[tuple[int, int]]:
    """The (level, index) nodes ``compute`` reads, found by a dry run with placeholder hashes.

    Lets a caller fetch every node a proof needs in one query, then run ``compute`` for real.
    """
    seen: dict[tuple[int, int], None] = {}

    def record(level: int, index: int) -> bytes:
        seen[(level, index)] = None
        return EMPTY_ROOT

    compute(record)
    return list(seen)


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ChainError(f"{name} must be {HASH_SIZE} bytes")


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root implied by an audit path; raises ChainError if malformed."""
    if not 0 <= index < size:
        raise ChainError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash("leaf hash", leaf)
    fn, sn, r = index, size - 1, bytes(leaf)
    for p in path:
        _check_hash("audit path entry", p)
        if sn == 0:
            raise ChainError("the audit path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ChainError("the audit path is shorter than the tree is deep")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> None:
    """Raise ChainError unless ``path`` proves leaf ``index`` is in the tree with ``root``."""
    _check_hash("root hash", root)
    if root_from_inclusion(index, size, leaf, path) != root:
        raise ChainError(
            f"the inclusion proof of leaf {index} does not lead to the root of tree size {size}"
        )


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: raise ChainError unless tree ``second`` extends tree ``first``."""
    _check_hash("first root", first_root)
    _check_hash("second root", second_root)
    if first < 0 or second < first:
        raise ChainError(
            f"tree size {second} is smaller than {first}: a log never shrinks (rollback or fork)"
        )
    if first == second:
        if path:
            raise ChainError("a consistency proof between equal sizes must be empty")
        if first_root != second_root:
            raise ChainError(f"two different roots for the same tree size {first}: a fork")
        return
    if first == 0:
        if path:
            raise ChainError("a consistency proof from the empty tree must be empty")
        return
    if not path:
        raise ChainError("the consistency proof is empty")
    for c in path:
        _check_hash("consistency path entry", c)
    nodes = list(path)
    if first & (first - 1) == 0:
        nodes.insert(0, bytes(first_root))
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            raise ChainError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != first_root or sr != second_root:
        raise ChainError(
            f"the consistency proof does not show that tree size {second} extends size {first}"
        )


@dataclass(frozen=True, slots=True)
class Node:
    """One perfect subtree node: covers leaves [index·2^level, (index+1)·2^level)."""

    level: int
    index: int
    hash: bytes


class CompactRange:
    """The right edge of a growing tree: O(log n) hashes, enough to append and take the root.

    ``append`` returns the nodes that became complete (the leaf first, then its parents) in
    the order a stored tree should hold them; ``root`` is MTH of everything appended so far.
    """

    __slots__ = ("_frontier", "size")

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        if len(frontier) != bin(size).count("1"):
            raise ChainError(f"a compact range of size {size} needs {bin(size).count('1')} hashes")
        self.size = size
        self._frontier = list(frontier)  # perfect subtree roots, largest (leftmost) first

    @staticmethod
    def frontier_nodes(size: int) -> list[tuple[int, int]]:
        """The (level, index) of the perfect subtrees that make up a tree of ``size`` leaves."""
        out, start = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                out.append((level, start >> level))
                start += 1 << level
        return out

    def append(self, leaf: bytes) -> list[Node]:
        """Add one leaf hash; return the newly complete nodes, leaf first."""
        index = self.size
        h = bytes(leaf)
        made = [Node(0, index, h)]
        level = 0
        while index >> level & 1:
            h = hash_children(self._frontier.pop(), h)
            level += 1
            made.append(Node(level, index >> level, h))
        self._frontier.append(h)
        self.size += 1
        return made

    def extend(self, leaves: Iterable[bytes]) -> Iterator[Node]:
        """Append many leaf hashes, yielding every node that becomes complete."""
        for leaf in leaves:
            yield from self.append(leaf)

    def root(self) -> bytes:
        """MTH of the leaves appended so far (SHA-256("") for none)."""
        if not self._frontier:
            return EMPTY_ROOT
        r = self._frontier[-1]
        for h in reversed(self._frontier[:-1]):
            r = hash_children(h, r)
        return r
