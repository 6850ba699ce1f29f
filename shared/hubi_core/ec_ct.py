"""Secret-scalar kernels for hubi_core.ec: one fixed sequence of field operations per call.

Only ``ec`` calls these (with blinded, odd scalars < 2^320); see ``ec``'s docstring for the
method and for what pure MicroPython cannot protect. Kept apart from ``ec`` so that MicroPython
compiles each module from source within a small heap.
"""

# Formulas: Renes, Costello, Batina, "Complete addition formulas for prime order elliptic
# curves" (EUROCRYPT 2016), algorithms 4 (addition), 5 (mixed addition), 6 (doubling), a = -3,
# homogeneous projective coordinates (X : Y : Z), infinity = (0 : 1 : 0). They have no
# exceptional cases, so the comb and the ladder never branch on data. Additions and
# subtractions are left unreduced (Python ints do not overflow); every product that feeds
# another product is reduced mod p, and each output coordinate is reduced once.
#
# Digits: Joye-Tunstall regular recoding. For odd k, d = (k mod 2^(W+1)) - 2^W is odd in
# [-(2^W - 1), 2^W - 1] and (k - d) / 2^W is odd again, so all digits are odd (never zero) and
# the last one is the positive remainder. The sign is applied by choosing y or p - y through a
# tuple index (both are computed). The entry is copied out of its row by `select`, which reads
# every byte of every entry and keeps one entry by mask: on MicroPython a viper (machine code)
# loop, so it makes no bigint garbage; on CPython the same with int masks. Every call therefore
# touches the same bytes in the same order, whatever the digit.

import sys

from hubi_core.ec import (
    ENTRIES,
    ROW_LEN,
    TABLE_HEADER_LEN,
    TABLE_WINDOWS,
    B,
    P,
    W,
)

_MPY = sys.implementation.name == "micropython"
if _MPY:
    import micropython
else:  # CPython: the decorator is a no-op

    class micropython:  # noqa: N801
        @staticmethod
        def native(f):
            return f


_MASK256 = (1 << 256) - 1

if _MPY:
    # Machine-code byte scan (viper): no bigint garbage, no data-dependent branch or address.

    @micropython.viper
    def select(src: ptr8, j: int, n: int, size: int, out: ptr8):  # noqa: F821
        """out = entry j of the n entries of `size` bytes in src, reading every entry."""
        for i in range(size):
            out[i] = 0
        o = 0
        for t in range(n):
            m = (((t ^ j) - 1) >> 16) & 0xFF  # 0xFF if t == j else 0
            for i in range(size):
                out[i] = out[i] | (src[o + i] & m)
            o += size

    @micropython.viper
    def wipe(buf: ptr8, n: int):  # noqa: F821
        """Zero n bytes of buf."""
        for i in range(n):
            buf[i] = 0

else:

    def select(src, j, n, size, out):
        """out = entry j of the n entries of `size` bytes in src, reading every entry."""
        acc = 0
        for t in range(n):
            acc |= int.from_bytes(src[t * size : (t + 1) * size], "big") & -(t == j)
        out[:] = acc.to_bytes(size, "big")

    def wipe(buf, n):
        """Zero n bytes of buf."""
        buf[:n] = bytes(n)


@micropython.native
def comb(f, k, buf, sel):
    """Projective (X, Y, Z) of k*G for odd 0 < k < 2^320; reads all rows of f in order.

    buf: a ROW_LEN bytearray for one table row; sel: a 64-byte bytearray for one entry."""
    p = P
    b = B
    fb = int.from_bytes
    mask = _MASK256
    X = 0
    Y = 1
    Z = 0  # start at infinity: the complete formulas need no special first step
    last = TABLE_WINDOWS - 1
    f.seek(TABLE_HEADER_LEN)
    for i in range(TABLE_WINDOWS):
        if i < last:
            d = (k & 63) - 32  # odd, in [-31, 31]
            k = (k - d) >> 5
        else:
            d = k  # odd, in [1, 31]
        neg = (d >> 8) & 1
        j = (((d ^ -neg) + neg) - 1) >> 1  # |d| = 2j + 1
        if f.readinto(buf) != ROW_LEN:
            raise ValueError("P-256 table truncated")
        select(buf, j, ENTRIES, 64, sel)  # scan every entry, keep one by mask
        e = fb(sel, "big")
        x2 = e >> 256
        y2 = e & mask
        y2 = (y2, p - y2)[neg]
        # complete mixed addition, Renes-Costello-Batina 2016 algorithm 5 (a = -3)
        t0 = X * x2 % p
        t1 = Y * y2 % p
        t3 = (x2 + y2) * (X + Y) - t0 - t1
        t4 = (y2 * Z + Y) % p
        Y3 = (x2 * Z + X) % p
        X3 = 3 * (Y3 - b * Z % p)
        Z3 = t1 - X3
        X3 = t1 + X3
        t2 = 3 * Z
        Y3 = 3 * ((b * Y3 - t2 - t0) % p)
        t0 = 3 * t0 - t2
        t3 %= p
        X = (t3 * X3 - t4 * Y3) % p
        Y = (X3 * Z3 + t0 * Y3) % p
        Z = (t4 * Z3 + t3 * t0) % p
    wipe(sel, 64)  # the last selected entry tells the top digit
    return X, Y, Z


@micropython.native
def padd(X1, Y1, Z1, X2, Y2, Z2):
    """Complete projective addition, Renes-Costello-Batina 2016 algorithm 4 (a = -3)."""
    p = P
    b = B
    t0 = X1 * X2 % p
    t1 = Y1 * Y2 % p
    t2 = Z1 * Z2 % p
    t3 = ((X1 + Y1) * (X2 + Y2) - t0 - t1) % p
    t4 = ((Y1 + Z1) * (Y2 + Z2) - t1 - t2) % p
    Y3 = ((X1 + Z1) * (X2 + Z2) - t0 - t2) % p
    X3 = 3 * (Y3 - b * t2 % p)
    Z3 = t1 - X3
    X3 = t1 + X3
    t2 = 3 * t2
    Y3 = 3 * ((b * Y3 - t2 - t0) % p)
    t0 = 3 * t0 - t2
    return (
        (t3 * X3 - t4 * Y3) % p,
        (X3 * Z3 + t0 * Y3) % p,
        (t4 * Z3 + t3 * t0) % p,
    )


@micropython.native
def pdbl(X, Y, Z):
    """Exception-free projective doubling, Renes-Costello-Batina 2016 algorithm 6 (a = -3)."""
    p = P
    b = B
    t0 = X * X % p
    t1 = Y * Y % p
    t2 = Z * Z % p
    t3 = 2 * (X * Y % p)
    Z3 = 2 * (X * Z % p)
    Y3 = 3 * (b * t2 % p - Z3)
    X3 = t1 - Y3
    Y3 = (X3 * (t1 + Y3)) % p
    X3 = X3 * t3 % p
    t2 = 3 * t2
    Z3 = 3 * ((b * Z3 - t2 - t0) % p)
    t0 = 3 * t0 - t2
    Y3 = (Y3 + t0 * Z3) % p
    t0 = 2 * (Y * Z % p)
    X3 = (X3 - t0 * Z3) % p
    Z3 = 4 * t0 * t1 % p
    return X3, Y3, Z3


@micropython.native
def ladder(k, x, y):
    """Projective k*(x, y) for odd 0 < k < 2^320: 64 windows of 5 doublings + 1 addition."""
    p = P
    fb = int.from_bytes
    mask = _MASK256
    # odd multiples (x, y), 3(x, y) .. 31(x, y), projective, as 96-byte X || Y || Z entries
    tab = bytearray(ENTRIES * 96)
    sel = bytearray(96)
    dx, dy, dz = pdbl(x, y, 1)
    X = x
    Y = y
    Z = 1
    for t in range(ENTRIES):
        if t:
            X, Y, Z = padd(X, Y, Z, dx, dy, dz)
        o = 96 * t
        tab[o : o + 32] = X.to_bytes(32, "big")
        tab[o + 32 : o + 64] = Y.to_bytes(32, "big")
        tab[o + 64 : o + 96] = Z.to_bytes(32, "big")
    # regular recoding, stored low to high as d + 32
    digits = bytearray(TABLE_WINDOWS)
    last = TABLE_WINDOWS - 1
    for i in range(last):
        d = (k & 63) - 32
        k = (k - d) >> 5
        digits[i] = d + 32
    digits[last] = k + 32
    X = 0
    Y = 1
    Z = 0
    for i in range(last, -1, -1):
        for _ in range(W):
            X, Y, Z = pdbl(X, Y, Z)
        d = digits[i] - 32
        neg = (d >> 8) & 1
        j = (((d ^ -neg) + neg) - 1) >> 1
        select(tab, j, ENTRIES, 96, sel)
        e = fb(sel, "big")
        x2 = e >> 512
        y2 = (e >> 256) & mask
        z2 = e & mask
        y2 = (y2, p - y2)[neg]
        X, Y, Z = padd(X, Y, Z, x2, y2, z2)
    wipe(sel, 96)  # the scratch entry and the multiples of the point
    wipe(tab, ENTRIES * 96)
    return X, Y, Z
