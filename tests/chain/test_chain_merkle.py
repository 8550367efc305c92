"""The RFC 9162 tree against published vectors and against a naive reference.

Vectors (facts, re-typed here, no code copied) come from transparency-dev/merkle,
``proof/verify_test.go`` (github.com/transparency-dev/merkle, the Go library behind Trillian,
Tessera and the Go checksum database): the 8 leaves ``leaves``, the roots of every prefix
``roots``, and the inclusion and consistency proofs ``inclusionProofs``/``consistencyProofs``
(their 1-based leaf numbers are written here as 0-based leaf indexes). The corruption probes
follow the same file's ``corruptInclusionProof``/``corruptConsistencyProof``.
"""

from __future__ import annotations

import hashlib

import pytest

from isokron.chain import merkle
from isokron.errors import ChainError

# transparency-dev/merkle proof/verify_test.go: `leaves`
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
# transparency-dev/merkle proof/verify_test.go: `roots` (root of the first 1..8 leaves)
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# transparency-dev/merkle proof/verify_test.go: `inclusionProofs` {leaf (1-based), size, proof}
INCLUSION = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (2, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
# transparency-dev/merkle proof/verify_test.go: `consistencyProofs` {size1, size2, proof}
CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip
# transparency-dev/merkle proof/verify_test.go: sha256SomeHash
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _store(leaf_hashes: list[bytes]) -> merkle.NodeGetter:
    tree, nodes = merkle.CompactRange(), {}
    for h in leaf_hashes:
        for n in tree.append(h):
            nodes[(n.level, n.index)] = n.hash
    return lambda level, index: nodes[(level, index)]


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, written straight from the definition (the naive reference)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.hash_children(_mth(leaves[:k]), _mth(leaves[k:]))


HASHED = [merkle.leaf_hash(x) for x in LEAVES]
NODE = _store(HASHED)


def test_roots_of_every_prefix_match_the_published_roots() -> None:
    tree = merkle.CompactRange()
    for i, h in enumerate(HASHED):
        tree.append(h)
        assert tree.root() == ROOTS[i]
        assert merkle.subtree_hash(0, i + 1, NODE) == ROOTS[i]
    assert merkle.CompactRange().root() == merkle.EMPTY_ROOT


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_published_ones(leaf: int, size: int, proof: list[str]) -> None:
    path = merkle.inclusion_path(leaf - 1, size, NODE)
    assert [p.hex() for p in path] == proof
    merkle.verify_inclusion(leaf - 1, size, HASHED[leaf - 1], path, ROOTS[size - 1])


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_published_ones(
    first: int, second: int, proof: list[str]
) -> None:
    path = merkle.consistency_path(first, second, NODE)
    assert [p.hex() for p in path] == proof
    merkle.verify_consistency(first, second, ROOTS[first - 1], ROOTS[second - 1], path)


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_corrupted_inclusion_proofs_are_refused(leaf: int, size: int, proof: list[str]) -> None:
    path, root, index, lh = (
        [bytes.fromhex(p) for p in proof],
        ROOTS[size - 1],
        leaf - 1,
        HASHED[leaf - 1],
    )
    probes = [
        (index - 1, size, root, lh, path),
        (index + 1, size, root, lh, path),
        (index ^ 2, size, root, lh, path),
        (index, size * 2, root, lh, path),
        (index, size // 2, root, lh, path),
        (index, size, root, b"WrongLeaf", path),
        (index, size, merkle.EMPTY_ROOT, lh, path),
        (index, size, SOME_HASH, lh, path),
        (index, size, root, lh, [*path, b""]),
        (index, size, root, lh, [*path, root]),
        (index, size, root, lh, [b"", *path]),
        (index, size, root, lh, [root, *path]),
        (index, size, root, lh, path[:-1]),
    ]
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((index, size, root, lh, flipped))
    tried = caught = 0
    for p_index, p_size, p_root, p_leaf, p_path in probes:
        tried += 1
        with pytest.raises(ChainError):
            merkle.verify_inclusion(p_index, p_size, p_leaf, p_path, p_root)
        caught += 1
    print(f"inclusion ({leaf},{size}): corrupted proofs tried {tried}, refused {caught}")


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_corrupted_consistency_proofs_are_refused(
    first: int, second: int, proof: list[str]
) -> None:
    path, r1, r2 = [bytes.fromhex(p) for p in proof], ROOTS[first - 1], ROOTS[second - 1]
    probes = [
        (first - 1, second, r1, r2, path),
        (first + 1, second, r1, r2, path),
        (first ^ 2, second, r1, r2, path),
        (first, second * 2, r1, r2, path),
        (first, second // 2, r1, r2, path),
        (first, second, SOME_HASH, r2, path),
        (first, second, r1, SOME_HASH, path),
        (first, second, r2, r1, path),
        (first, second, r1, r2, []),
        (first, second, r1, r2, [*path, r1]),
        (first, second, r1, r2, [*path, r2]),
        (first, second, r1, r2, [r1, *path]),
        (first, second, r1, r2, [r2, *path]),
        (first, second, r1, r2, [path[0], *path]),
        (first, second, r1, r2, path[:-1]),
    ]
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((first, second, r1, r2, flipped))
    for p1, p2, pr1, pr2, pp in probes:
        if (p1, p2, pr1, pr2) == (first, second, r1, r2) and pp == path:
            continue
        with pytest.raises(ChainError):
            merkle.verify_consistency(p1, p2, pr1, pr2, pp)


def test_edge_cases_from_the_published_suite() -> None:
    # verify_test.go TestVerifyConsistency: sizes that are always consistent, time travel.
    merkle.verify_consistency(0, 0, ROOTS[0], ROOTS[0], [])
    merkle.verify_consistency(0, 1, ROOTS[0], ROOTS[1], [])
    merkle.verify_consistency(1, 1, ROOTS[1], ROOTS[1], [])
    for args in [(1, 0, ROOTS[0], ROOTS[1], []), (2, 1, ROOTS[0], ROOTS[1], []),
                 (1, 2, ROOTS[0], ROOTS[1], []), (1, 1, ROOTS[0], ROOTS[1], []),
                 (1, 1, ROOTS[0], ROOTS[0], [merkle.EMPTY_ROOT])]:  # fmt: skip
        with pytest.raises(ChainError):
            merkle.verify_consistency(*args)  # type: ignore[arg-type]
    # TestVerifyInclusionSingleEntry: a 1-leaf tree's root is its leaf hash, the path empty.
    h = merkle.leaf_hash(b"data")
    merkle.verify_inclusion(0, 1, h, [], h)
    with pytest.raises(ChainError):
        merkle.verify_inclusion(0, 1, b"", [], h)


def test_every_proof_up_to_70_leaves_agrees_with_the_naive_reference() -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(32, "big")) for i in range(70)]
    node = _store(leaves)
    checked = 0
    for size in range(1, 71):
        root = _mth(leaves[:size])
        for i in range(size):
            merkle.verify_inclusion(i, size, leaves[i], merkle.inclusion_path(i, size, node), root)
            checked += 1
        for first in range(1, size + 1):
            path = merkle.consistency_path(first, size, node)
            merkle.verify_consistency(first, size, _mth(leaves[:first]), root, path)
            checked += 1
    print(f"proofs checked against the naive MTH: {checked}")


def test_nodes_needed_is_logarithmic() -> None:
    keys = merkle.nodes_needed(lambda node: merkle.inclusion_path(123_456, 1_000_000, node))
    assert len(keys) <= 2 * 20
