"""Linear collusion against CPK (DESIGN §3): why every issued key carries a separating key.

1,100 colluders pool their issued private keys. Each combined key is a linear function of the
KMC's 1,024 secret scalars (identity -> one row per column), and the row-selection vectors span a
space of dimension 993, so without separating keys a linear solve mod n recovers enough of the
matrix to compute anyone's key. With separating keys the same solve yields nothing usable.
"""

from __future__ import annotations

import flint
import pytest

from hubi_core import cpk, ec, suite

pytestmark = pytest.mark.slow

COLLUDERS = 1100


def selection_vector(identity: str) -> list[int]:
    rows = cpk.identity_rows(identity)
    v = [0] * cpk.CELLS
    for col, row in enumerate(rows):
        v[row * cpk.COLS + col] = 1
    return v


def solve_matrix(vectors: list[list[int]], keys: list[int]) -> tuple[list[int] | None, int]:
    """(a solution m of V m = keys (mod n), free variables 0, or None if the system is
    inconsistent; the rank of V when it is consistent)."""
    ctx = flint.fmpz_mod_ctx(ec.N)
    aug = flint.fmpz_mod_mat([v + [k] for v, k in zip(vectors, keys)], ctx)
    rref, rank = aug.rref()
    m = [0] * cpk.CELLS
    for r in range(rank):
        row = [int(rref[r, c]) for c in range(cpk.CELLS + 1)]
        lead = next(c for c in range(cpk.CELLS + 1) if row[c])
        if lead == cpk.CELLS:
            return None, rank  # 0 = nonzero: the pooled keys are no linear image of a matrix
        m[lead] = row[cpk.CELLS]
    return m, rank


def forge(m: list[int], identity: str) -> int:
    return sum(a * b for a, b in zip(selection_vector(identity), m)) % ec.N


def test_linear_collusion_forges_without_separating_keys_and_fails_with_them() -> None:
    kmc = cpk.PrivateMatrix.generate("BKA", seed=b"collusion")
    public = kmc.public()
    colluders = [f"BKA-colluder{i:05d}" for i in range(COLLUDERS)]
    vectors = [selection_vector(c) for c in colluders]
    targets = ["BKA-000000000042", "BKA-victim.7", "BKA-ceo"]

    # Plain CPK: the colluders know their combined keys. Rank reaches 993 = 1024 - 31.
    plain_keys = [kmc.combined_private(c) for c in colluders]
    m, rank = solve_matrix(vectors, plain_keys)
    assert m is not None
    assert rank == cpk.CELLS - (cpk.COLS - 1) == 993  # consistent: the rank of V itself
    for target in targets:
        forged = forge(m, target)
        assert forged == kmc.combined_private(target)
        # the forged key signs anything the victim's plain-CPK public key accepts
        victim_pub = ec.encode_point(public.combined(target), compressed=False)
        assert suite.verify(
            victim_pub,
            b"pay 1,000,000 to the colluders",
            suite.sign(forged, b"pay 1,000,000 to the colluders"),
        )

    # With separating keys: each colluder holds combined + random s_i, and the victim's public
    # key includes its own separating point. The pooled keys are no linear image of a matrix
    # (the 1,100 - 993 = 107 dependent equations contradict), and solving only an independent
    # subset gives a "matrix" whose forgeries match no one's key.
    issued = [kmc.issue(c) for c in colluders]
    real_keys = [priv for priv, _sep in issued]
    assert solve_matrix(vectors, real_keys)[0] is None
    pivots = _independent_rows(vectors)
    m2, rank2 = solve_matrix([vectors[i] for i in pivots], [real_keys[i] for i in pivots])
    assert m2 is not None and rank2 == len(pivots) == 993  # independent mod n too
    for target in targets:
        priv_t, sep_t = kmc.issue(target)
        victim_pub = public.public_key(target, sep_t)
        forged = forge(m2, target)
        assert forged != priv_t
        assert forged != kmc.combined_private(target)
        assert suite.public_key(forged) != victim_pub
        assert not suite.verify(victim_pub, b"pay", suite.sign(forged, b"pay"))


def _independent_rows(vectors: list[list[int]]) -> list[int]:
    """Indices of a maximal independent subset of the 0/1 vectors, from the pivots of V^T's
    rref modulo a 62-bit prime (word-size arithmetic; the solve mod n above checks that they
    are independent mod n too)."""
    vt = flint.nmod_mat([list(col) for col in zip(*vectors)], (1 << 62) - 57)
    rref, rank = vt.rref()
    return [next(c for c in range(len(vectors)) if int(rref[r, c])) for r in range(rank)]
