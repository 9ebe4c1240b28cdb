"""The Merkle log against RFC 9162 2.1 and the published vectors of transparency-dev/merkle.

Vector data (hex values, sizes, indices) is copied from github.com/transparency-dev/merkle:
testonly/constants.go (leaves, node hashes, roots, compact trees), proof/verify_test.go
(inclusion and consistency proofs), rfc6962/rfc6962_test.go (hasher) and proof/proof_test.go
(which nodes make up each proof). Their 1-based leaf numbers are written here as 0-based indices.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    DictNodes,
    NodeSource,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    subtree_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# testonly/constants.go: LeafInputs.
LEAF_INPUTS = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]

# testonly/constants.go: NodeHashes, indexed [level][index].
NODE_HASHES = [
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [
        h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
    ],
]

# testonly/constants.go: RootHashes, indexed by tree size from 0.
ROOTS = [
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

# testonly/constants.go: CompactTrees, the peaks of each tree size as (level, index).
COMPACT_TREES: list[list[tuple[int, int]]] = [
    [],
    [(0, 0)],
    [(1, 0)],
    [(1, 0), (0, 2)],
    [(2, 0)],
    [(2, 0), (0, 4)],
    [(2, 0), (1, 2)],
    [(2, 0), (1, 2), (0, 6)],
    [(3, 0)],
]

# proof/verify_test.go: inclusionProofs as (index, size, proof).
INCLUSION_VECTORS: list[tuple[int, int, list[bytes]]] = [
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]

# proof/verify_test.go: consistencyProofs as (old size, new size, proof).
CONSISTENCY_VECTORS: list[tuple[int, int, list[bytes]]] = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]

# proof/verify_test.go: sha256SomeHash, a 32-byte value that is no node of these trees.
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


def node(level: int, index: int) -> tuple[int, int]:
    """The leaf range [start, end) of the perfect node (level, index)."""
    return index << level, (index + 1) << level


# proof/proof_test.go: the nodes of each proof, as leaf ranges; a range that is no perfect
# node is one the Go code "rehashes" from the perfect nodes of the right edge.
INCLUSION_LAYOUT: list[tuple[int, int, list[tuple[int, int]]]] = [
    (1, 0, []),
    (2, 0, [node(0, 1)]),
    (2, 1, [node(0, 0)]),
    (3, 1, [node(0, 0), node(0, 2)]),
    (7, 0, [node(0, 1), node(1, 1), (4, 7)]),
    (7, 1, [node(0, 0), node(1, 1), (4, 7)]),
    (7, 2, [node(0, 3), node(1, 0), (4, 7)]),
    (7, 3, [node(0, 2), node(1, 0), (4, 7)]),
    (7, 4, [node(0, 5), node(0, 6), node(2, 0)]),
    (7, 5, [node(0, 4), node(0, 6), node(2, 0)]),
    (7, 6, [node(1, 2), node(2, 0)]),
    (4, 2, [node(0, 3), node(1, 0)]),
    (5, 3, [node(0, 2), node(1, 0), node(0, 4)]),
    (6, 3, [node(0, 2), node(1, 0), node(1, 2)]),
    (6, 4, [node(0, 5), node(2, 0)]),
    (15, 10, [node(0, 11), node(1, 4), (12, 15), node(3, 0)]),
    (31, 24, [node(0, 25), node(1, 13), (28, 31), node(3, 2), node(4, 0)]),
    (95, 81, [node(0, 80), node(1, 41), node(2, 21), (88, 95), node(4, 4), node(6, 0)]),
]

CONSISTENCY_LAYOUT: list[tuple[int, int, list[tuple[int, int]]]] = [
    (1, 2, [node(0, 1)]),
    (1, 4, [node(0, 1), node(1, 1)]),
    (1, 6, [node(0, 1), node(1, 1), node(1, 2)]),
    (2, 3, [node(0, 2)]),
    (2, 8, [node(1, 1), node(2, 1)]),
    (3, 7, [node(0, 2), node(0, 3), node(1, 0), (4, 7)]),
    (4, 7, [(4, 7)]),
    (5, 7, [node(0, 4), node(0, 5), node(0, 6), node(2, 0)]),
    (6, 7, [node(1, 2), node(0, 6), node(2, 0)]),
    (7, 8, [node(0, 6), node(0, 7), node(1, 2), node(2, 0)]),
    (1, 1, []),
    (2, 2, []),
    (3, 3, []),
    (4, 4, []),
    (5, 5, []),
    (7, 7, []),
    (8, 8, []),
    (2, 4, [node(1, 1)]),
    (3, 5, [node(0, 2), node(0, 3), node(1, 0), node(0, 4)]),
    (3, 6, [node(0, 2), node(0, 3), node(1, 0), node(1, 2)]),
    (4, 6, [node(1, 2)]),
    (1, 7, [node(0, 1), node(1, 1), (4, 7)]),
    (10, 15, [node(1, 4), node(1, 5), (12, 15), node(3, 0)]),
    (24, 31, [node(3, 2), (24, 31), node(4, 0)]),
    (
        81,
        95,
        [node(0, 80), node(0, 81), node(1, 41), node(2, 21), (88, 95), node(4, 4), node(6, 0)],
    ),
]


@dataclass
class SizeGuard:
    """A NodeSource that fails the test if asked for a perfect node absent from a tree of
    `size` leaves, and records what it was asked."""

    nodes: NodeSource
    size: int
    asked: list[tuple[int, int]] = field(default_factory=list)

    def perfect_node(self, level: int, index: int) -> bytes:
        assert level >= 0 and index >= 0, (level, index)
        assert (index + 1) << level <= self.size, f"({level}, {index}) not in {self.size} leaves"
        self.asked.append((level, index))
        return self.nodes.perfect_node(level, index)


def build(hashes: Sequence[bytes]) -> tuple[DictNodes, list[CompactRange]]:
    """Append the leaf hashes one by one; the stored nodes and the right edge after each size."""
    nodes = DictNodes()
    edge = CompactRange()
    edges = [CompactRange()]
    for hash_ in hashes:
        nodes.store(edge.append(hash_))
        edges.append(CompactRange(edge.size, list(edge.peaks)))
    return nodes, edges


def flip(value: bytes, i: int = 0, bit: int = 0) -> bytes:
    """`value` with bit `bit` of byte `i` flipped."""
    return value[:i] + bytes([value[i] ^ (1 << bit)]) + value[i + 1 :]


VECTOR_HASHES = [leaf_hash(leaf) for leaf in LEAF_INPUTS]
VECTOR_NODES, VECTOR_EDGES = build(VECTOR_HASHES)


# --- Published vectors -------------------------------------------------------------------


def test_empty_root_is_sha256_of_nothing() -> None:
    assert ROOTS[0] == EMPTY_ROOT
    assert len(EMPTY_ROOT) == HASH_SIZE
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert tree_root(DictNodes(), 0) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT
    assert subtree_hash(DictNodes(), 5, 5) == EMPTY_ROOT


def test_hasher_vectors() -> None:
    # rfc6962/rfc6962_test.go
    assert leaf_hash(b"") == h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(b"L123456") == h(
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert node_hash(b"N123", b"N456") == h(
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )
    assert leaf_hash(b"") != EMPTY_ROOT


def test_appending_the_vector_leaves_stores_exactly_the_published_nodes() -> None:
    expected = {
        (level, index): hash_
        for level, row in enumerate(NODE_HASHES)
        for index, hash_ in enumerate(row)
    }
    assert VECTOR_NODES.hashes == expected


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_roots_match_the_vectors(size: int) -> None:
    assert root_from_leaf_hashes(VECTOR_HASHES[:size]) == ROOTS[size]
    assert tree_root(SizeGuard(VECTOR_NODES, size), size) == ROOTS[size]
    assert VECTOR_EDGES[size].root() == ROOTS[size]
    peaks = [NODE_HASHES[level][index] for level, index in COMPACT_TREES[size]]
    assert VECTOR_EDGES[size].peaks == peaks
    assert CompactRange.from_nodes(SizeGuard(VECTOR_NODES, size), size) == VECTOR_EDGES[size]


def test_size_8_root_is_the_one_design_md_names() -> None:
    assert tree_root(VECTOR_NODES, 8).hex().startswith("5dc9da79")


def inclusion_tampers(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    """The corruptions of proof/verify_test.go (corruptInclusionProof), plus 32-byte garbage."""
    probes = [
        ("index - 1", index - 1, size, proof, root, leaf),
        ("index + 1", index + 1, size, proof, root, leaf),
        ("index ^ 2", index ^ 2, size, proof, root, leaf),
        ("size * 2", index, size * 2, proof, root, leaf),
        ("size // 2", index, size // 2, proof, root, leaf),
        ("wrong leaf", index, size, proof, root, b"WrongLeaf"),
        ("flipped leaf", index, size, proof, root, flip(leaf)),
        ("empty root", index, size, proof, EMPTY_ROOT, leaf),
        ("random root", index, size, proof, SOME_HASH, leaf),
        ("trailing garbage", index, size, [*proof, b""], root, leaf),
        ("trailing hash", index, size, [*proof, SOME_HASH], root, leaf),
        ("trailing root", index, size, [*proof, root], root, leaf),
        ("preceding garbage", index, size, [b"", *proof], root, leaf),
        ("preceding hash", index, size, [SOME_HASH, *proof], root, leaf),
        ("preceding root", index, size, [root, *proof], root, leaf),
    ]
    for i in range(len(proof)):
        wrong = [*proof[:i], flip(proof[i], 0, 3), *proof[i + 1 :]]
        probes.append((f"modified proof[{i}] bit 3", index, size, wrong, root, leaf))
    if proof:
        probes.append(("removed component", index, size, proof[:-1], root, leaf))
    if len(proof) > 1:
        inserted = [proof[0], SOME_HASH, *proof[1:]]
        probes.append(("inserted component", index, size, inserted, root, leaf))
    return probes


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_inclusion_vectors(index: int, size: int, proof: list[bytes]) -> None:
    leaf = VECTOR_HASHES[index]
    root = ROOTS[size]
    assert inclusion_proof(SizeGuard(VECTOR_NODES, size), index, size) == proof
    assert verify_inclusion(leaf, index, size, proof, root)
    for desc, p_index, p_size, p_proof, p_root, p_leaf in inclusion_tampers(
        index, size, proof, root, leaf
    ):
        assert not verify_inclusion(p_leaf, p_index, p_size, p_proof, p_root), desc


def consistency_tampers(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    """The corruptions of proof/verify_test.go (corruptConsistencyProof), plus 32-byte garbage."""
    probes = [
        ("old size - 1", old_size - 1, new_size, old_root, new_root, proof),
        ("old size + 1", old_size + 1, new_size, old_root, new_root, proof),
        ("old size ^ 2", old_size ^ 2, new_size, old_root, new_root, proof),
        ("new size * 2", old_size, new_size * 2, old_root, new_root, proof),
        ("new size // 2", old_size, new_size // 2, old_root, new_root, proof),
        ("wrong old root", old_size, new_size, b"WrongRoot", new_root, proof),
        ("wrong new root", old_size, new_size, old_root, b"WrongRoot", proof),
        ("flipped old root", old_size, new_size, flip(old_root), new_root, proof),
        ("flipped new root", old_size, new_size, old_root, flip(new_root), proof),
        ("swapped roots", old_size, new_size, new_root, old_root, proof),
        ("empty proof", old_size, new_size, old_root, new_root, []),
        ("trailing garbage", old_size, new_size, old_root, new_root, [*proof, b""]),
        ("trailing hash", old_size, new_size, old_root, new_root, [*proof, SOME_HASH]),
        ("trailing old root", old_size, new_size, old_root, new_root, [*proof, old_root]),
        ("trailing new root", old_size, new_size, old_root, new_root, [*proof, new_root]),
        ("preceding garbage", old_size, new_size, old_root, new_root, [b"", *proof]),
        ("preceding hash", old_size, new_size, old_root, new_root, [SOME_HASH, *proof]),
        ("preceding old root", old_size, new_size, old_root, new_root, [old_root, *proof]),
        ("preceding new root", old_size, new_size, old_root, new_root, [new_root, *proof]),
        ("preceding proof[0]", old_size, new_size, old_root, new_root, [proof[0], *proof]),
        ("truncated proof", old_size, new_size, old_root, new_root, proof[:-1]),
    ]
    for i in range(len(proof)):
        wrong = [*proof[:i], flip(proof[i], 0, 4), *proof[i + 1 :]]
        probes.append((f"modified proof[{i}] bit 4", old_size, new_size, old_root, new_root, wrong))
    return probes


@pytest.mark.parametrize(("old_size", "new_size", "proof"), CONSISTENCY_VECTORS)
def test_consistency_vectors(old_size: int, new_size: int, proof: list[bytes]) -> None:
    old_root, new_root = ROOTS[old_size], ROOTS[new_size]
    assert consistency_proof(SizeGuard(VECTOR_NODES, new_size), old_size, new_size) == proof
    assert verify_consistency(old_size, new_size, old_root, new_root, proof)
    if not proof:
        return
    for desc, p_old_size, p_new_size, p_old_root, p_new_root, p_proof in consistency_tampers(
        old_size, new_size, old_root, new_root, proof
    ):
        assert not verify_consistency(p_old_size, p_new_size, p_old_root, p_new_root, p_proof), desc


# The vector leaves, then leaves named by their index as the Go tests' genEntries names them.
LAYOUT_HASHES = VECTOR_HASHES + [leaf_hash(str(i).encode()) for i in range(8, 128)]
LAYOUT_NODES, _ = build(LAYOUT_HASHES)


@pytest.mark.parametrize(("size", "index", "ranges"), INCLUSION_LAYOUT)
def test_inclusion_proofs_are_made_of_the_published_nodes(
    size: int, index: int, ranges: list[tuple[int, int]]
) -> None:
    expected = [root_from_leaf_hashes(LAYOUT_HASHES[start:end]) for start, end in ranges]
    assert inclusion_proof(SizeGuard(LAYOUT_NODES, size), index, size) == expected


@pytest.mark.parametrize(("old_size", "new_size", "ranges"), CONSISTENCY_LAYOUT)
def test_consistency_proofs_are_made_of_the_published_nodes(
    old_size: int, new_size: int, ranges: list[tuple[int, int]]
) -> None:
    expected = [root_from_leaf_hashes(LAYOUT_HASHES[start:end]) for start, end in ranges]
    assert consistency_proof(SizeGuard(LAYOUT_NODES, new_size), old_size, new_size) == expected


# --- Properties ----------------------------------------------------------------------------

# Distinct leaves, so no two subtrees share a hash and every tampering must be caught; the
# length is drawn first so that trees of every size up to 48 are as likely as small ones.
leaf_lists = st.integers(0, 48).flatmap(
    lambda n: st.lists(st.binary(max_size=12), unique=True, min_size=n, max_size=n)
)


@settings(deadline=None)
@given(leaf_lists)
def test_every_way_to_the_root_agrees(leaves: list[bytes]) -> None:
    hashes = [leaf_hash(leaf) for leaf in leaves]
    nodes, edges = build(hashes)
    for size in range(len(hashes) + 1):
        expected = root_from_leaf_hashes(hashes[:size])
        guard = SizeGuard(nodes, size)
        assert tree_root(guard, size) == expected
        assert len(guard.asked) == size.bit_count()  # one lookup per peak
        assert edges[size].root() == expected
        assert CompactRange.from_nodes(SizeGuard(nodes, size), size) == edges[size]


@settings(deadline=None)
@given(leaf_lists)
def test_append_returns_each_perfect_node_once_when_it_completes(leaves: list[bytes]) -> None:
    hashes = [leaf_hash(leaf) for leaf in leaves]
    edge = CompactRange()
    seen: set[tuple[int, int]] = set()
    for size, hash_ in enumerate(hashes):
        created = edge.append(hash_)
        assert created[0] == (0, size, hash_)
        for level, index, node_value in created:
            start, end = node(level, index)
            assert end == size + 1  # the nodes that complete with this leaf, no others
            assert node_value == root_from_leaf_hashes(hashes[start:end])
            assert (level, index) not in seen
            seen.add((level, index))
    n = len(hashes)
    assert len(seen) == sum(n >> level for level in range(n.bit_length()))


@settings(deadline=None)
@given(leaf_lists, st.data())
def test_subtree_hash_of_any_range_is_the_mth_of_that_range(
    leaves: list[bytes], data: st.DataObject
) -> None:
    hashes = [leaf_hash(leaf) for leaf in leaves]
    nodes, _ = build(hashes)
    end = data.draw(st.integers(0, len(hashes)))
    start = data.draw(st.integers(0, end))
    guard = SizeGuard(nodes, end)
    assert subtree_hash(guard, start, end) == root_from_leaf_hashes(hashes[start:end])


@settings(deadline=None)
@given(leaf_lists.filter(bool), st.data())
def test_inclusion_proofs_verify_and_tampering_fails(
    leaves: list[bytes], data: st.DataObject
) -> None:
    hashes = [leaf_hash(leaf) for leaf in leaves]
    nodes, _ = build(hashes)
    roots = [root_from_leaf_hashes(hashes[:size]) for size in range(len(hashes) + 1)]
    size = data.draw(st.integers(1, len(hashes)), label="size")
    proofs = [inclusion_proof(SizeGuard(nodes, size), index, size) for index in range(size)]
    for index, proof in enumerate(proofs):
        assert verify_inclusion(hashes[index], index, size, proof, roots[size])

    index = data.draw(st.integers(0, size - 1), label="index")
    proof, root, leaf = proofs[index], roots[size], hashes[index]
    for desc, p_index, p_size, p_proof, p_root, p_leaf in inclusion_tampers(
        index, size, proof, root, leaf
    ):
        # A proof fixes the path, not the size: index 0 of 3 leaves and of 4 share a shape.
        if desc.startswith("size"):
            continue
        assert not verify_inclusion(p_leaf, p_index, p_size, p_proof, p_root), desc
    for other in range(size):
        if other != index:
            assert not verify_inclusion(leaf, other, size, proof, root), other
            assert not verify_inclusion(hashes[other], index, size, proof, root), other
    for other_size in range(index + 1, len(hashes) + 1):
        if other_size != size:
            assert not verify_inclusion(leaf, index, other_size, proof, roots[other_size])


@settings(deadline=None)
@given(leaf_lists, st.data())
def test_consistency_proofs_verify_and_tampering_fails(
    leaves: list[bytes], data: st.DataObject
) -> None:
    hashes = [leaf_hash(leaf) for leaf in leaves]
    nodes, _ = build(hashes)
    n = len(hashes)
    roots = [root_from_leaf_hashes(hashes[:size]) for size in range(n + 1)]
    for new_size in range(n + 1):
        guard = SizeGuard(nodes, new_size)
        for old_size in range(new_size + 1):
            proof = consistency_proof(guard, old_size, new_size)
            assert verify_consistency(old_size, new_size, roots[old_size], roots[new_size], proof)

    new_size = data.draw(st.integers(0, n), label="new_size")
    old_size = data.draw(st.integers(0, new_size), label="old_size")
    proof = consistency_proof(nodes, old_size, new_size)
    old_root, new_root = roots[old_size], roots[new_size]
    if not proof:
        assert old_size in (0, new_size)
        assert not verify_consistency(old_size, new_size, old_root, new_root, [SOME_HASH])
        return
    for desc, p_old_size, p_new_size, p_old_root, p_new_root, p_proof in consistency_tampers(
        old_size, new_size, old_root, new_root, proof
    ):
        # A proof fixes a shape, not the sizes; other sizes are checked with their own roots.
        if "size" in desc:
            continue
        assert not verify_consistency(p_old_size, p_new_size, p_old_root, p_new_root, p_proof), desc
    for other_new in range(2, n + 1):
        for other_old in range(1, other_new):
            if (other_old, other_new) != (old_size, new_size):
                assert not verify_consistency(
                    other_old, other_new, roots[other_old], roots[other_new], proof
                ), (other_old, other_new)


# --- Adversarial and edge cases ------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "size"), [(0, 0), (1, 0), (3, 0), (2, 1), (8, 7), (7, 7), (-1, 3)]
)
def test_inclusion_proof_out_of_range_raises(index: int, size: int) -> None:
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(VECTOR_NODES, index, size)


@pytest.mark.parametrize(("old_size", "new_size"), [(5, 0), (9, 8), (2, 1), (-1, 3), (-2, -1)])
def test_consistency_proof_out_of_range_raises(old_size: int, new_size: int) -> None:
    with pytest.raises(ValueError, match="cannot precede"):
        consistency_proof(VECTOR_NODES, old_size, new_size)


def test_other_out_of_range_sizes_raise() -> None:
    with pytest.raises(ValueError):
        tree_root(VECTOR_NODES, -1)
    with pytest.raises(ValueError):
        subtree_hash(VECTOR_NODES, 3, 2)
    with pytest.raises(ValueError):
        subtree_hash(VECTOR_NODES, -1, 2)
    with pytest.raises(ValueError):
        CompactRange.from_nodes(VECTOR_NODES, -1)
    with pytest.raises(ValueError):
        CompactRange(size=3, peaks=[SOME_HASH])
    with pytest.raises(ValueError):
        CompactRange(size=-1)
    with pytest.raises(ValueError):
        CompactRange().append(b"raw leaf bytes, not a leaf hash")


def test_proofs_from_the_empty_tree_and_to_the_same_size_are_empty() -> None:
    for size in range(9):
        assert consistency_proof(SizeGuard(VECTOR_NODES, size), 0, size) == []
        assert consistency_proof(SizeGuard(VECTOR_NODES, size), size, size) == []
        assert verify_consistency(0, size, EMPTY_ROOT, ROOTS[size], [])
        assert verify_consistency(size, size, ROOTS[size], ROOTS[size], [])


def test_verify_inclusion_single_entry() -> None:
    # proof/verify_test.go TestVerifyInclusionSingleEntry
    hash_ = leaf_hash(b"data")
    assert verify_inclusion(hash_, 0, 1, [], hash_)
    assert not verify_inclusion(b"", 0, 1, [], hash_)
    assert not verify_inclusion(hash_, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], b"")
    assert not verify_inclusion(hash_, 0, 1, [hash_], hash_)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1), (-1, 1)])
def test_verify_inclusion_rejects_nonsense(index: int, size: int) -> None:
    # proof/verify_test.go TestVerifyInclusion probes, plus a negative index.
    assert not verify_inclusion(SOME_HASH, index, size, [], b"")
    assert not verify_inclusion(b"", index, size, [], EMPTY_ROOT)
    assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


@pytest.mark.parametrize("length", [0, 1, HASH_SIZE - 1, HASH_SIZE + 1, 64])
def test_proof_elements_of_the_wrong_length_fail(length: int) -> None:
    index, size, proof = INCLUSION_VECTORS[1]
    bad = b"\x01" * length
    for i in range(len(proof)):
        wrong = [*proof[:i], bad, *proof[i + 1 :]]
        assert not verify_inclusion(VECTOR_HASHES[index], index, size, wrong, ROOTS[size])
    assert not verify_inclusion(bad, index, size, proof, ROOTS[size])
    assert not verify_inclusion(VECTOR_HASHES[index], index, size, proof, bad)

    old_size, new_size, proof = CONSISTENCY_VECTORS[2]
    for i in range(len(proof)):
        wrong = [*proof[:i], bad, *proof[i + 1 :]]
        assert not verify_consistency(old_size, new_size, ROOTS[old_size], ROOTS[new_size], wrong)
    assert not verify_consistency(old_size, new_size, bad, ROOTS[new_size], proof)
    assert not verify_consistency(old_size, new_size, ROOTS[old_size], bad, proof)


# Roots that are no tree's: the Go tests' "don't care" roots, made 32 bytes long.
ROOT_A, ROOT_B = leaf_hash(b"don't care 1"), leaf_hash(b"don't care 2")


@pytest.mark.parametrize(
    ("old_size", "new_size", "old_root", "new_root", "proof", "valid"),
    [
        # proof/verify_test.go TestVerifyConsistency; a size-0 head must carry EMPTY_ROOT here.
        (0, 0, ROOT_A, ROOT_B, [], False),
        (1, 1, ROOT_A, ROOT_B, [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
        (0, 1, EMPTY_ROOT, ROOT_B, [], True),
        (1, 1, ROOT_B, ROOT_B, [], True),
        (1, 0, ROOT_A, ROOT_B, [], False),
        (2, 1, ROOT_A, ROOT_B, [], False),
        (1, 2, ROOT_A, ROOT_B, [], False),
        (0, 0, EMPTY_ROOT, ROOT_B, [], False),
        (1, 1, EMPTY_ROOT, ROOT_B, [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        # Beyond the Go table: size 0 with a root that is not the empty tree's, negative sizes.
        (0, 0, ROOT_A, ROOT_A, [], False),
        (0, 3, ROOT_A, ROOTS[3], [], False),
        (-1, 3, EMPTY_ROOT, ROOTS[3], [], False),
        (-1, -1, ROOT_A, ROOT_A, [], False),
    ],
)
def test_verify_consistency_edge_cases(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: list[bytes],
    valid: bool,
) -> None:
    assert verify_consistency(old_size, new_size, old_root, new_root, proof) is valid


def test_extra_and_missing_elements_fail() -> None:
    index, size, proof = INCLUSION_VECTORS[2]
    leaf, root = VECTOR_HASHES[index], ROOTS[size]
    for wrong in ([], proof[:-1], proof[1:], [*proof, proof[-1]], [*proof, *proof], proof[::-1]):
        assert not verify_inclusion(leaf, index, size, wrong, root)
    old_size, new_size, proof = CONSISTENCY_VECTORS[4]
    old_root, new_root = ROOTS[old_size], ROOTS[new_size]
    for wrong in ([], proof[:-1], proof[1:], [*proof, proof[-1]], [*proof, *proof], proof[::-1]):
        assert not verify_consistency(old_size, new_size, old_root, new_root, wrong)


def test_perfect_old_tree_with_its_root_in_the_proof_fails() -> None:
    # RFC 9162 2.1.4.2 step 2 adds a perfect old tree's root itself; a proof that carries it too
    # is one element too long.
    proof = consistency_proof(VECTOR_NODES, 4, 8)
    assert verify_consistency(4, 8, ROOTS[4], ROOTS[8], proof)
    assert not verify_consistency(4, 8, ROOTS[4], ROOTS[8], [ROOTS[4], *proof])


def test_size_zero_and_missing_nodes() -> None:
    assert CompactRange.from_nodes(DictNodes(), 0) == CompactRange()
    assert inclusion_proof(SizeGuard(VECTOR_NODES, 1), 0, 1) == []
    with pytest.raises(KeyError):
        tree_root(DictNodes(), 1)
