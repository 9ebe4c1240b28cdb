"""The ledger's Merkle log: RFC 9162 (Certificate Transparency v2), section 2.1.

Names follow the RFC. `D[start:end]` is the list of leaves (transactions) with indices
`start <= i < end`, counted from 0; `MTH(D[start:end])` is the Merkle Tree Hash of that list;
a tree of `size` leaves is `D[0:size]`. Every hash is SHA-256, `HASH_SIZE` bytes.

Stored trees are addressed by perfect nodes: the node at `(level, index)` is the hash of the
perfect subtree of `2**level` leaves `D[index * 2**level : (index + 1) * 2**level]`; level 0 holds
the leaf hashes. A perfect node is final once it exists (once `(index + 1) * 2**level <= size`),
so an append-only store of them serves roots and proofs for every past size. Pure: no I/O.
"""

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

HASH_SIZE = 32

# MTH({}) = HASH() (RFC 9162 2.1.1).
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

# Domain separation between leaves and interior nodes (RFC 9162 2.1.1).
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(leaf: bytes) -> bytes:
    """MTH({d(0)}) = SHA-256(0x00 || leaf): the hash of one leaf's raw bytes."""
    return hashlib.sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node from its children's hashes."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


class NodeSource(Protocol):
    """Where stored perfect nodes come from (a database table, a dict)."""

    def perfect_node(self, level: int, index: int) -> bytes:
        """Hash of the perfect subtree of height `level` covering leaves
        `[index * 2**level, (index + 1) * 2**level)`; level 0 is the leaf hashes."""
        ...


@dataclass
class DictNodes:
    """A `NodeSource` over a dict `{(level, index): hash}`, for tests and in-memory ledgers."""

    hashes: dict[tuple[int, int], bytes] = field(default_factory=dict)

    def perfect_node(self, level: int, index: int) -> bytes:
        """The stored hash at `(level, index)`; `KeyError` if it was never stored."""
        return self.hashes[(level, index)]

    def store(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        """Store `(level, index, hash)` triples, such as those `CompactRange.append` returns."""
        for level, index, hash_ in nodes:
            self.hashes[(level, index)] = hash_


def _largest_power_of_two_below(n: int) -> int:
    """The RFC's k: the largest power of two smaller than n, so k < n <= 2k (needs n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_perfect(start: int, end: int) -> bool:
    """Whether `D[start:end]` (non-empty) is exactly one perfect node."""
    n = end - start
    return n & (n - 1) == 0 and start % n == 0


def _is_hash(value: object) -> bool:
    # Proofs and roots arrive from other parties; anything but 32 bytes is malformed.
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def subtree_hash(nodes: NodeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for leaf indices `0 <= start <= end`, from stored perfect nodes.

    Asks `nodes` only for perfect nodes inside `[start, end)`, so only for nodes that exist
    in any tree of `end` leaves or more. A range aligned as the RFC's subtrees are (the left
    part of every split perfect) costs at most log2(end - start) + 1 lookups; an unaligned
    range is split as the RFC splits it, down to the perfect nodes it contains.
    """
    if not 0 <= start <= end:
        raise ValueError(f"leaf range [{start}, {end}) is not a range of leaf indices")
    if start == end:
        return EMPTY_ROOT
    if _is_perfect(start, end):
        n = end - start
        return nodes.perfect_node(n.bit_length() - 1, start // n)
    k = _largest_power_of_two_below(end - start)
    return node_hash(subtree_hash(nodes, start, start + k), subtree_hash(nodes, start + k, end))


def tree_root(nodes: NodeSource, size: int) -> bytes:
    """MTH(D[0:size]): the root of the tree of the first `size` leaves (`EMPTY_ROOT` for 0)."""
    if size < 0:
        raise ValueError(f"tree size {size} is negative")
    return subtree_hash(nodes, 0, size)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH of the leaves whose leaf hashes are `hashes`, straight from RFC 9162 2.1.1.

    The reference definition: split at the largest power of two below n, recurse. O(n) hashes.
    """
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = _largest_power_of_two_below(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


def inclusion_proof(nodes: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 2.1.3.1: the audit path of leaf `index` (m, counted from 0) in
    the tree of the first `size` leaves (n), nearest sibling first. Needs `0 <= index < size`.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of {size} leaves")
    return _path(nodes, index, 0, size)


def _path(nodes: NodeSource, m: int, start: int, end: int) -> list[bytes]:
    """PATH(m, D[start:end]), m counted from `start`."""
    n = end - start
    if n == 1:
        return []
    k = _largest_power_of_two_below(n)
    if m < k:
        return [*_path(nodes, m, start, start + k), subtree_hash(nodes, start + k, end)]
    return [*_path(nodes, m - k, start + k, end), subtree_hash(nodes, start, start + k)]


def consistency_proof(nodes: NodeSource, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 2.1.4.1: proves the tree of the first `old_size` leaves (m) is
    a prefix of the tree of the first `new_size` leaves (n). Needs `0 <= old_size <= new_size`.

    The RFC defines the proof for 0 < m < n; for m = n (nothing to prove) and m = 0 (the empty
    tree is a prefix of every tree) it is empty, which `verify_consistency` accepts.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"tree size {old_size} cannot precede tree size {new_size}")
    if old_size == 0:
        return []
    return _subproof(nodes, old_size, 0, new_size, True)


def _subproof(nodes: NodeSource, m: int, start: int, end: int, b: bool) -> list[bytes]:
    """SUBPROOF(m, D[start:end], b), m counted from `start`; b: whether MTH(D[start:start+m])
    is a head the verifier already holds."""
    n = end - start
    if m == n:
        return [] if b else [subtree_hash(nodes, start, end)]
    k = _largest_power_of_two_below(n)
    if m <= k:
        return [*_subproof(nodes, m, start, start + k, b), subtree_hash(nodes, start + k, end)]
    return [*_subproof(nodes, m - k, start + k, end, False), subtree_hash(nodes, start, start + k)]


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether `proof` shows the leaf with hash `leaf_hash` at `index` (from 0) in the tree of
    `size` leaves with root `root`: the algorithm of RFC 9162 2.1.3.2, step for step.

    Returns False, never raises, on any malformed input (sizes, hash lengths, proof length).
    """
    if not (_is_hash(leaf_hash) and _is_hash(root) and all(_is_hash(p) for p in proof)):
        return False
    # 1. leaf_index >= tree_size fails.
    if not 0 <= index < size:
        return False
    # 2.
    fn, sn = index, size - 1
    # 3.
    r = leaf_hash
    # 4.
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    # 5.
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether `proof` shows the tree of `old_size` leaves with root `old_root` is a prefix of
    the tree of `new_size` leaves with root `new_root`: for 0 < old_size < new_size the
    algorithm of RFC 9162 2.1.4.2, step for step.

    Outside the RFC's range: old_size = 0 holds with an empty proof when `old_root` is
    `EMPTY_ROOT`; old_size = new_size holds with an empty proof when the roots are equal.
    Returns False, never raises, on any malformed input (sizes, hash lengths, proof length).
    """
    if not (_is_hash(old_root) and _is_hash(new_root) and all(_is_hash(c) for c in proof)):
        return False
    if not 0 <= old_size <= new_size:
        return False
    if old_size == 0:
        # The empty tree is a prefix of every tree; only its root is to check.
        return not proof and old_root == EMPTY_ROOT and (new_size > 0 or new_root == EMPTY_ROOT)
    if old_size == new_size:
        return not proof and old_root == new_root
    # 1.
    if not proof:
        return False
    path = list(proof)
    # 2. A perfect old tree is a node of the new one, so its root is left out of the proof.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3.
    fn, sn = old_size - 1, new_size - 1
    # 4.
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    # 7.
    return fr == old_root and sr == new_root and sn == 0


@dataclass
class CompactRange:
    """The right edge of the tree of the first `size` leaves: the hashes of its maximal perfect
    subtrees ("peaks"), left to right, one per set bit of `size` (largest first).

    Enough to append leaves and compute the root without reading the rest of the tree.
    """

    size: int = 0
    peaks: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"tree size {self.size} is negative")
        if len(self.peaks) != self.size.bit_count():
            raise ValueError(
                f"a tree of {self.size} leaves has {self.size.bit_count()} peaks, "
                f"not {len(self.peaks)}"
            )

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add the leaf with hash `leaf_hash` (a `leaf_hash(...)`, not raw leaf bytes) at index
        `size`. Returns every perfect node that now exists and did not before, as
        `(level, index, hash)`, the leaf itself first as `(0, old size, leaf_hash)`.
        """
        if not _is_hash(leaf_hash):
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf_hash)}")
        created = [(0, self.size, leaf_hash)]
        level, index, hash_ = 0, self.size, leaf_hash
        # An odd index is a right child: its left sibling is the last peak, now complete.
        while index & 1:
            hash_ = node_hash(self.peaks.pop(), hash_)
            level, index = level + 1, index >> 1
            created.append((level, index, hash_))
        self.peaks.append(hash_)
        self.size += 1
        return created

    def root(self) -> bytes:
        """MTH(D[0:size]): the peaks folded right to left, as the RFC's splits nest them."""
        if not self.peaks:
            return EMPTY_ROOT
        root = self.peaks[-1]
        for peak in reversed(self.peaks[:-1]):
            root = node_hash(peak, root)
        return root

    @classmethod
    def from_nodes(cls, nodes: NodeSource, size: int) -> "CompactRange":
        """The right edge of the tree of the first `size` leaves, read from stored perfect
        nodes (one lookup per peak)."""
        if size < 0:
            raise ValueError(f"tree size {size} is negative")
        peaks = []
        start = 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                peaks.append(nodes.perfect_node(level, start >> level))
                start += 1 << level
        return cls(size, peaks)
