"""RFC 9162 Merkle trees: our frontier, proofs and verifiers against the RFC's own definitions,
the Certificate Transparency reference vectors, and trees computed by hand."""

from __future__ import annotations

import hashlib

import pytest

from hubi.bank import merkle


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- RFC 9162 §2.1.1-2.1.4, transcribed literally (recursive, on leaf data) -------------------
def mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return H(b"")
    if n == 1:
        return H(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return H(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def proof(m: int, d: list[bytes]) -> list[bytes]:
    return subproof(m, d, True)


# --- Certificate Transparency reference data (RFC 6962 test vectors, same hashing as 9162) ----
CT_LEAVES = [
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
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [  # (leaf index, tree size, path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7", "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b", "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0", "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip


def test_ct_reference_roots() -> None:
    hashes = [merkle.leaf_hash(d) for d in CT_LEAVES]
    for n in range(0, 9):
        assert merkle.root_of_hashes(hashes[:n]).hex() == CT_ROOTS[n]
        assert merkle.root(CT_LEAVES[:n]).hex() == CT_ROOTS[n]
        assert mth(CT_LEAVES[:n]).hex() == CT_ROOTS[n]


def test_ct_reference_inclusion_paths() -> None:
    hashes = [merkle.leaf_hash(d) for d in CT_LEAVES]
    for index, size, want in CT_INCLUSION:
        got = merkle.inclusion_proof(hashes, index, size)
        assert [p.hex() for p in got] == want
        merkle.verify_inclusion(hashes[index], index, size, got, bytes.fromhex(CT_ROOTS[size]))


def test_hand_computed_trees() -> None:
    a, b, c, d, e = (H(b"\x00" + x) for x in (b"a", b"b", b"c", b"d", b"e"))
    ab = H(b"\x01" + a + b)
    cd = H(b"\x01" + c + d)
    abcd = H(b"\x01" + ab + cd)
    leaves = [b"a", b"b", b"c", b"d", b"e"]
    assert merkle.root(leaves[:1]) == a
    assert merkle.root(leaves[:2]) == ab
    assert merkle.root(leaves[:3]) == H(b"\x01" + ab + c)  # unbalanced: left is the 2-leaf tree
    assert merkle.root(leaves[:4]) == abcd
    assert merkle.root(leaves) == H(b"\x01" + abcd + e)
    hashes = [a, b, c, d, e]
    assert merkle.inclusion_proof(hashes, 2, 5) == [d, ab, e]
    assert merkle.inclusion_proof(hashes, 4, 5) == [abcd]
    assert merkle.consistency_proof(hashes, 3, 5) == [c, d, ab, e]
    assert merkle.consistency_proof(hashes, 4, 5) == [e]  # 4 is a power of two: root(4) implied
    assert merkle.consistency_proof(hashes, 2, 4) == [cd]


@pytest.mark.parametrize("size", list(range(1, 41)) + [63, 64, 65, 100])
def test_against_rfc_definitions(size: int) -> None:
    data = [bytes([i % 256, i // 256]) * (i % 3 + 1) for i in range(size)]
    hashes = [merkle.leaf_hash(x) for x in data]
    r = merkle.root(data)
    assert r == mth(data)
    f = merkle.Frontier()
    for m in range(size):
        f.append_hash(hashes[m])
        assert f.root() == mth(data[: m + 1])
        assert merkle.Frontier.from_bytes(f.to_bytes()).root() == f.root()
    for m in range(size):
        p = merkle.inclusion_proof(hashes, m, size)
        assert p == path(m, data)
        merkle.verify_inclusion(hashes[m], m, size, p, r)
    for m in range(1, size + 1):
        p = merkle.consistency_proof(hashes, m, size)
        assert p == proof(m, data)
        merkle.verify_consistency(m, size, p, mth(data[:m]), r)


def test_tampered_proofs_fail() -> None:
    data = [bytes([i]) for i in range(13)]
    hashes = [merkle.leaf_hash(x) for x in data]
    r = merkle.root(data)
    p = merkle.inclusion_proof(hashes, 6, 13)
    with pytest.raises(merkle.MerkleError, match="root"):
        merkle.verify_inclusion(hashes[7], 6, 13, p, r)  # another leaf
    with pytest.raises(merkle.MerkleError):
        merkle.verify_inclusion(hashes[6], 5, 13, p, r)  # another index
    with pytest.raises(merkle.MerkleError, match="shorter"):
        merkle.verify_inclusion(hashes[6], 6, 13, p[:-1], r)
    with pytest.raises(merkle.MerkleError, match="longer"):
        merkle.verify_inclusion(hashes[6], 6, 13, p + [r], r)
    bad = list(p)
    bad[1] = H(b"x")
    with pytest.raises(merkle.MerkleError):
        merkle.verify_inclusion(hashes[6], 6, 13, bad, r)
    with pytest.raises(merkle.MerkleError, match="13"):
        merkle.verify_inclusion(hashes[0], 13, 13, [], r)
    c = merkle.consistency_proof(hashes, 5, 13)
    r5 = merkle.root(data[:5])
    merkle.verify_consistency(5, 13, c, r5, r)
    with pytest.raises(merkle.MerkleError, match="first root"):
        merkle.verify_consistency(5, 13, c, merkle.root(data[:4]), r)
    with pytest.raises(merkle.MerkleError, match="second root"):
        merkle.verify_consistency(5, 13, c, r5, merkle.root(data[:12]))
    with pytest.raises(merkle.MerkleError):
        merkle.verify_consistency(5, 13, c[:-1], r5, r)
    with pytest.raises(merkle.MerkleError, match="empty"):
        merkle.verify_consistency(5, 13, [], r5, r)
    # a rewritten past: same size, one leaf changed, is inconsistent with the old head
    data2 = list(data)
    data2[2] = b"forged"
    hashes2 = [merkle.leaf_hash(x) for x in data2]
    with pytest.raises(merkle.MerkleError):
        merkle.verify_consistency(
            5, 13, merkle.consistency_proof(hashes2, 5, 13), r5, merkle.root(data2)
        )
    with pytest.raises(merkle.MerkleError):
        merkle.inclusion_proof(hashes, 13, 13)
    with pytest.raises(merkle.MerkleError):
        merkle.consistency_proof(hashes, 0, 13)


def test_proofs_from_a_paged_accessor() -> None:
    data = [bytes([i]) for i in range(37)]
    hashes = [merkle.leaf_hash(x) for x in data]
    calls = []

    def get(a: int, b: int) -> list[bytes]:
        calls.append((a, b))
        return hashes[a:b]

    assert merkle.inclusion_proof(get, 20, 37) == merkle.inclusion_proof(hashes, 20, 37)
    assert merkle.consistency_proof(get, 9, 37) == merkle.consistency_proof(hashes, 9, 37)
    assert calls
