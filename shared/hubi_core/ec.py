"""P-256 arithmetic in pure Python (runs on MicroPython and CPython).

Affine points are (x, y) tuples of ints; None is the point at infinity. Public-data helpers
(point_add, mul_add) may take data-dependent branches; secret-scalar paths (mul_base, mul) keep
one operation sequence per scalar length.
"""

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
G = (GX, GY)


def inv_mod(a, m):
    # Fermat inversion: one fixed exponentiation, no data-dependent loop on a.
    return pow(a, m - 2, m)


def is_on_curve(pt):
    if pt is None:
        return False
    x, y = pt
    if not (0 <= x < P and 0 <= y < P):
        return False
    return (y * y - (x * x * x - 3 * x + B)) % P == 0


def y_from_x(x, odd):
    """The curve point's y for x with the given parity, or None if x is not on the curve."""
    rhs = (x * x * x - 3 * x + B) % P
    y = pow(rhs, (P + 1) // 4, P)  # P = 3 mod 4
    if y * y % P != rhs:
        return None
    if (y & 1) != odd:
        y = P - y
    return y


def decode_point(data):
    """SEC1 point (33-byte compressed or 65-byte uncompressed) -> (x, y). ValueError if invalid."""
    data = bytes(data)
    if len(data) == 65 and data[0] == 4:
        x = int.from_bytes(data[1:33], "big")
        y = int.from_bytes(data[33:], "big")
        if x >= P or y >= P:
            raise ValueError("point coordinate not below the field prime")
        if not is_on_curve((x, y)):
            raise ValueError("point is not on the P-256 curve")
        return (x, y)
    if len(data) == 33 and data[0] in (2, 3):
        x = int.from_bytes(data[1:], "big")
        if x >= P:
            raise ValueError("point x coordinate not below the field prime")
        y = y_from_x(x, data[0] & 1)
        if y is None:
            raise ValueError("compressed point is not on the P-256 curve")
        return (x, y)
    if len(data) == 1 and data[0] == 0:
        raise ValueError("point at infinity is not a valid public key")
    raise ValueError("point encoding must be 33 (compressed) or 65 (uncompressed) bytes")


def encode_point(pt, compressed=True):
    if pt is None:
        raise ValueError("cannot encode the point at infinity")
    x, y = pt
    if compressed:
        return bytes([2 + (y & 1)]) + x.to_bytes(32, "big")
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def point_neg(pt):
    if pt is None:
        return None
    return (pt[0], (P - pt[1]) % P)


def point_add(a, b):
    """Affine addition of public points (handles doubling and infinity)."""
    if a is None:
        return b
    if b is None:
        return a
    x1, y1 = a
    x2, y2 = b
    if x1 == x2:
        if (y1 + y2) % P == 0:
            return None
        lam = (3 * x1 * x1 - 3) * inv_mod(2 * y1, P) % P
    else:
        lam = (y2 - y1) * inv_mod(x2 - x1, P) % P
    x3 = (lam * lam - x1 - x2) % P
    return (x3, (lam * (x1 - x3) - y1) % P)


def point_sub(a, b):
    return point_add(a, point_neg(b))


def _mul_public(k, pt):
    acc = None
    while k:
        if k & 1:
            acc = point_add(acc, pt)
        pt = point_add(pt, pt)
        k >>= 1
    return acc


def mul(k, pt):
    """k * pt for a secret scalar k."""
    k %= N
    if k == 0:
        return None
    return _mul_public(k, pt)


def mul_base(k):
    """k * G for a secret scalar k."""
    return mul(k, G)


def mul_add(u1, u2, q):
    """u1 * G + u2 * q for public scalars (signature verification)."""
    return point_add(_mul_public(u1 % N, G), _mul_public(u2 % N, q))
