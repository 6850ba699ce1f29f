"""Public-data kernels for hubi_core.ec: u1*G + u2*Q for signature verification and recovery.

Variable time on purpose (the scalars and points are public): width-5 NAF for u2*Q in Jacobian
coordinates (a = -3) with the exceptional cases (P = Q, P = -Q, infinity) handled by branches,
and u1*G as a sum of single fixed-base table entries (no doublings). Only ``ec`` calls these.
"""

import sys

from hubi_core import ec
from hubi_core.ec import ENTRIES, ENTRY_LEN, TABLE_HEADER_LEN, N, P

if sys.implementation.name == "micropython":
    import micropython
else:  # CPython: the decorator is a no-op

    class micropython:  # noqa: N801
        @staticmethod
        def native(f):
            return f


VERIFY_WINDOWS = (257 + ec.W - 1) // ec.W  # public u1 < n made odd (< 2^257): 52 rows


@micropython.native
def _jdbl(X, Y, Z):
    """Jacobian doubling, a = -3 (dbl-2001-b). Infinity (Z = 0) stays infinity."""
    p = P
    delta = Z * Z % p
    gamma = Y * Y % p
    beta = X * gamma % p
    alpha = 3 * (X - delta) * (X + delta) % p
    X3 = (alpha * alpha - 8 * beta) % p
    Z3 = ((Y + Z) * (Y + Z) - gamma - delta) % p
    Y3 = (alpha * (4 * beta - X3) - 8 * (gamma * gamma % p)) % p
    return X3, Y3, Z3


@micropython.native
def _jadd(X1, Y1, Z1, X2, Y2, Z2):
    """Jacobian addition with the exceptional cases (public data only: it branches)."""
    if Z1 == 0:
        return X2, Y2, Z2
    if Z2 == 0:
        return X1, Y1, Z1
    p = P
    z1z1 = Z1 * Z1 % p
    z2z2 = Z2 * Z2 % p
    u1 = X1 * z2z2 % p
    u2 = X2 * z1z1 % p
    s1 = Y1 * (Z2 * z2z2 % p) % p
    s2 = Y2 * (Z1 * z1z1 % p) % p
    h = (u2 - u1) % p
    r = (s2 - s1) % p
    if h == 0:
        if r == 0:
            return _jdbl(X1, Y1, Z1)
        return 0, 1, 0
    hh = h * h % p
    hhh = h * hh % p
    v = u1 * hh % p
    X3 = (r * r - hhh - 2 * v) % p
    Y3 = (r * (v - X3) - s1 * hhh) % p
    Z3 = Z1 * Z2 % p * h % p
    return X3, Y3, Z3


@micropython.native
def _jmadd(X1, Y1, Z1, x2, y2):
    """Jacobian + affine addition with the exceptional cases (public data only)."""
    if Z1 == 0:
        return x2, y2, 1
    p = P
    z1z1 = Z1 * Z1 % p
    u2 = x2 * z1z1 % p
    s2 = y2 * (Z1 * z1z1 % p) % p
    h = (u2 - X1) % p
    r = (s2 - Y1) % p
    if h == 0:
        if r == 0:
            return _jdbl(X1, Y1, Z1)
        return 0, 1, 0
    hh = h * h % p
    hhh = h * hh % p
    v = X1 * hh % p
    X3 = (r * r - hhh - 2 * v) % p
    Y3 = (r * (v - X3) - Y1 * hhh) % p
    Z3 = Z1 * h % p
    return X3, Y3, Z3


def _wnaf(k):
    """Width-5 NAF of 0 <= k < 2^256, least significant first, as (bytearray of d + 16, count).

    A bytearray, not a list: no 4 KB list reallocations in a small heap."""
    out = bytearray(258)
    i = 0
    while k:
        if k & 1:
            d = k & 31
            if d >= 16:
                d -= 32
            k -= d
        else:
            d = 0
        out[i] = d + 16
        i += 1
        k >>= 1
    return out, i


@micropython.native
def mul_add_jac(u1, u2, qx, qy):
    """Jacobian u1*G + u2*Q for public u1, u2 in [0, n-1] (variable time)."""
    X = 0
    Y = 1
    Z = 0
    if u2:
        # odd multiples Q .. 15Q (Jacobian)
        mx = [qx]
        my = [qy]
        mz = [1]
        dx, dy, dz = _jdbl(qx, qy, 1)
        for t in range(1, 8):
            a, b, c = _jadd(mx[t - 1], my[t - 1], mz[t - 1], dx, dy, dz)
            mx.append(a)
            my.append(b)
            mz.append(c)
        naf, count = _wnaf(u2)
        for i in range(count - 1, -1, -1):
            X, Y, Z = _jdbl(X, Y, Z)
            d = naf[i] - 16
            if d > 0:
                j = d >> 1
                X, Y, Z = _jadd(X, Y, Z, mx[j], my[j], mz[j])
            elif d < 0:
                j = (-d) >> 1
                X, Y, Z = _jadd(X, Y, Z, mx[j], P - my[j], mz[j])
    if u1:
        k = u1 if u1 & 1 else u1 + N  # odd, < 2^257
        f = ec._open_table()
        try:
            ent = bytearray(ENTRY_LEN)
            fb = int.from_bytes
            last = VERIFY_WINDOWS - 1
            for i in range(VERIFY_WINDOWS):
                if i < last:
                    d = (k & 63) - 32
                    k = (k - d) >> 5
                else:
                    d = k
                j = ((d if d > 0 else -d) - 1) >> 1
                f.seek(TABLE_HEADER_LEN + (i * ENTRIES + j) * ENTRY_LEN)
                if f.readinto(ent) != ENTRY_LEN:
                    raise ValueError("P-256 table truncated")
                x2 = fb(ent[:32], "big")
                y2 = fb(ent[32:], "big")
                if d < 0:
                    y2 = P - y2
                X, Y, Z = _jmadd(X, Y, Z, x2, y2)
        finally:
            f.close()
    return X, Y, Z
