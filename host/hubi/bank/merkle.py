"""RFC 9162 (Certificate Transparency 2.0) Merkle trees over the bank's register (DESIGN §4).

The register is every record of the bank in booking order; leaf ``m`` is record bytes ``d(m)``.

    MTH({})        = SHA-256()
    MTH({d(0)})    = SHA-256(0x00 || d(0))
    MTH(D[n])      = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   k = largest power of 2 < n

Inclusion proofs follow RFC 9162 §2.1.3.1 (PATH) and are verified by §2.1.3.2; consistency
proofs follow §2.1.4.1 (PROOF/SUBPROOF) and are verified by §2.1.4.2. Roots are computed from leaf
hashes with a compact frontier (one perfect-subtree hash per set bit of the size), so a tree head
over n leaves costs n leaf hashes plus n internal hashes, and extending a checkpoint's frontier by
m leaves costs O(m + log n).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "MerkleError",
    "consistency_proof",
    "consistency_proof_by",
    "inclusion_proof",
    "inclusion_proof_by",
    "leaf_hash",
    "node_hash",
    "root",
    "split",
    "verify_consistency",
    "verify_inclusion",
]


class MerkleError(ValueError):
    """A proof that does not verify, or arguments out of range."""


EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """Incremental tree head: the hashes of the perfect subtrees that make up the first n leaves.

    ``nodes[i]`` is the root of a perfect subtree; sizes are the set bits of ``size``, largest
    first. ``root()`` folds them right to left, which is MTH by RFC 9162's recursion."""

    __slots__ = ("size", "nodes")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()):
        self.size = size
        self.nodes = list(nodes)
        if len(self.nodes) != bin(size).count("1"):
            raise MerkleError(f"frontier of size {size} needs {bin(size).count('1')} nodes")

    def append_hash(
        self, lh: bytes, on_node: Callable[[int, int, bytes], None] | None = None
    ) -> None:
        """Add one leaf, given its leaf hash. ``on_node(level, index, hash)`` hears of every
        perfect subtree this leaf completes: leaves [index << level, (index + 1) << level)."""
        node = lh
        size = self.size
        level = 0
        while size & 1:
            node = node_hash(self.nodes.pop(), node)
            size >>= 1
            level += 1
            if on_node is not None:
                on_node(level, ((self.size + 1) >> level) - 1, node)
        self.nodes.append(node)
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for d in leaves:
            self.append_hash(leaf_hash(d))

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        acc = self.nodes[-1]
        for node in reversed(self.nodes[:-1]):
            acc = node_hash(node, acc)
        return acc

    def to_bytes(self) -> bytes:
        return self.size.to_bytes(8, "big") + b"".join(self.nodes)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Frontier:
        size = int.from_bytes(raw[:8], "big")
        body = raw[8:]
        if len(body) % 32:
            raise MerkleError("frontier bytes are not a whole number of hashes")
        return cls(size, [body[i : i + 32] for i in range(0, len(body), 32)])

    def copy(self) -> Frontier:
        return Frontier(self.size, self.nodes)


def root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    f = Frontier()
    for h in hashes:
        f.append_hash(h)
    return f.root()


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf data."""
    return root_of_hashes([leaf_hash(d) for d in leaves])


# Proof generation works on a leaf-hash accessor so callers can page hashes from a database.
LeafHashes = Callable[[int, int], Sequence[bytes]]  # (start, end) -> leaf hashes of [start, end)


def _as_accessor(hashes: Sequence[bytes] | LeafHashes) -> LeafHashes:
    if callable(hashes):
        return hashes
    seq = hashes
    return lambda a, b: seq[a:b]


# Or on a subtree-hash accessor: (start, end) -> MTH(D[start:end]). Every range the proofs ask
# for is a perfect subtree aligned on its size, or the right edge of the tree, so a store that
# keeps perfect subtrees' hashes answers each in O(log n) (hubi.bank.engine).
SubtreeHash = Callable[[int, int], bytes]


def _by_leaves(hashes: Sequence[bytes] | LeafHashes) -> SubtreeHash:
    get = _as_accessor(hashes)
    return lambda a, b: root_of_hashes(get(a, b)) if b > a else EMPTY_ROOT


def _path(mth: SubtreeHash, m: int, start: int, end: int) -> list[bytes]:
    n = end - start
    if n == 1:
        return []
    k = split(n)
    if m < k:
        return _path(mth, m, start, start + k) + [mth(start + k, end)]
    return _path(mth, m - k, start + k, end) + [mth(start, start + k)]


def inclusion_proof(hashes: Sequence[bytes] | LeafHashes, m: int, n: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1 over leaf hashes (a list or an accessor)."""
    return inclusion_proof_by(_by_leaves(hashes), m, n)


def inclusion_proof_by(mth: SubtreeHash, m: int, n: int) -> list[bytes]:
    """PATH(m, D[n]) over a subtree-hash accessor."""
    if not 0 <= m < n:
        raise MerkleError(f"leaf index {m} not in a tree of size {n}")
    return _path(mth, m, 0, n)


def _subproof(mth: SubtreeHash, m: int, start: int, end: int, b: bool) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if b else [mth(start, end)]
    k = split(n)
    if m <= k:
        return _subproof(mth, m, start, start + k, b) + [mth(start + k, end)]
    return _subproof(mth, m - k, start + k, end, False) + [mth(start, start + k)]


def consistency_proof(hashes: Sequence[bytes] | LeafHashes, m: int, n: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1 (0 < m <= n)."""
    return consistency_proof_by(_by_leaves(hashes), m, n)


def consistency_proof_by(mth: SubtreeHash, m: int, n: int) -> list[bytes]:
    """PROOF(m, D[n]) over a subtree-hash accessor."""
    if not 0 < m <= n:
        raise MerkleError(f"consistency proof needs 0 < first ({m}) <= second ({n})")
    return _subproof(mth, m, 0, n, True)


def verify_inclusion(
    lh: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """RFC 9162 §2.1.3.2; raises MerkleError naming the failure."""
    if index >= size:
        raise MerkleError(f"leaf index {index} >= tree size {size}")
    fn, sn = index, size - 1
    r = lh
    for p in proof:
        if sn == 0:
            raise MerkleError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError("inclusion proof is shorter than the tree is deep")
    if r != root_hash:
        raise MerkleError("inclusion proof does not lead to the tree head's root")


def verify_consistency(
    first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes
) -> None:
    """RFC 9162 §2.1.4.2; raises MerkleError naming the failure."""
    if first > second:
        raise MerkleError(f"first tree ({first}) is larger than the second ({second})")
    if first == second:
        if proof:
            raise MerkleError("proof between equal sizes must be empty")
        if first_root != second_root:
            raise MerkleError("equal sizes but different roots")
        return
    if first == 0:
        raise MerkleError("consistency from the empty tree has no proof (any tree is consistent)")
    proof = list(proof)
    if not proof:
        raise MerkleError("empty consistency proof")
    if first & (first - 1) == 0:  # exact power of two: prepend first_hash
        proof = [first_root] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise MerkleError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError("consistency proof is too short")
    if fr != first_root:
        raise MerkleError("consistency proof does not reproduce the first root")
    if sr != second_root:
        raise MerkleError("consistency proof does not reproduce the second root")
