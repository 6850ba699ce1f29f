"""NIST P-256 in pure Python for the token (MicroPython) and the host (CPython).

Affine points are (x, y) tuples of ints; None is the point at infinity. Points from outside are
checked (decode_point: encoding, range, on the curve, not infinity; mul/mul_add: on the curve);
scalars are reduced mod n, 0 giving infinity.

- mul_base(k), mul_base_many(ks): k*G for SECRET k (keys, nonces). k is blinded to
  k + r*n (fresh 64-bit r from os.urandom), recoded into 64 odd signed 5-bit digits, and summed
  from the fixed-base table p256_table.bin (tools/gen_p256_table.py) with complete formulas:
  every call reads all 64 rows in order, scans all 16 entries per row with masks and does the
  same 64 additions. Kernels in ec_ct.
- mul(k, pt): k*P for SECRET k (ECDH): same blinding and digits, 5 complete doublings and one
  complete addition of a mask-selected odd multiple per digit. Kernels in ec_ct.
- mul_add(u1, u2, q), verify_x: PUBLIC scalars (verification, recovery), variable time: wNAF and
  Jacobian coordinates, u1*G from single table entries. Kernels in ec_vt.

On MicroPython the table is never loaded: each 1 KB row is read (seek + readinto) into one
preallocated buffer, so signing runs in a 96 KB heap; on an ESP32 the file stays in flash. On
CPython it is loaded once. Its SHA-256 is checked before first use (TABLE_SHA256), and every
secret-path result is checked to lie on the curve.

WHAT PURE MICROPYTHON CANNOT PROTECT. "Same sequence of field operations" is not constant time:
bigint operations (MicroPython mpz, CPython long) take time that depends on operand lengths and
values (normalised limbs, long division in %, small-int fast paths); blinding randomises the
operands of every run but does not stop a single-trace attacker. The interpreter allocates
objects whose sizes follow the values. Memory is never wiped: scalars, nonces and key bytes stay
in the heap (immutable ints/bytes, no zeroisation) until the collector reuses the block. Faults
(glitches) can skip any Python-level check. Production tokens should move scalar multiplication
and key storage into a native module (constant-time C) or a secure element; this code is the
reference and fallback with identical outputs. Not thread-safe on MicroPython (one row buffer).

Kernels use @micropython.native and one @micropython.viper byte scan: ports need the native
emitter (unix, ESP32, ESP32-S3/C3, RP2); .mpy builds need the matching mpy-cross -march.
"""

import hashlib
import os
import sys

_MPY = sys.implementation.name == "micropython"

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
G = (GX, GY)

# Fixed-base table geometry (tools/gen_p256_table.py reads these).
W = 5  # digit width: odd digits in [-31, 31]
ENTRIES = 1 << (W - 1)  # 16 odd multiples per row
BLIND_BITS = 64  # r in k + r*n
# Regular recoding of an odd k < 2^L needs ceil(L / W) digits (the top one in [1, 31]).
TABLE_WINDOWS = (256 + BLIND_BITS + W - 1) // W  # 64: every blinded scalar is < 2^320
ENTRY_LEN = 64
ROW_LEN = ENTRIES * ENTRY_LEN
TABLE_HEADER_LEN = 16
TABLE_MAGIC = b"HUBIP256"
TABLE_VERSION = 1
TABLE_NAME = "p256_table.bin"
TABLE_LEN = TABLE_HEADER_LEN + TABLE_WINDOWS * ROW_LEN
# SHA-256 of p256_table.bin as tools/gen_p256_table.py writes it (a test regenerates it).
TABLE_SHA256 = "eae988b1fd97462785882490b5fd07878362fcc1ee4ffadf183a0992dfa35f54"


# ----------------------------------------------------------------------------- field helpers


def inv_mod(a, m):
    """a^-1 mod m for prime m (P or N) by Fermat: one fixed exponentiation. 0 maps to 0."""
    return pow(a, m - 2, m)


def _batch_inv(vals, m):
    """Inverses of all vals mod prime m with one exponentiation (Montgomery's trick).

    Zeros are allowed and map to 0 (they are skipped in the running product)."""
    n = len(vals)
    pre = [1] * n
    acc = 1
    for i in range(n):
        pre[i] = acc
        v = vals[i] % m
        if v:
            acc = acc * v % m
    inv = pow(acc, m - 2, m)
    out = [0] * n
    for i in range(n - 1, -1, -1):
        v = vals[i] % m
        if v:
            out[i] = inv * pre[i] % m
            inv = inv * v % m
    return out


def is_on_curve(pt):
    if pt is None:
        return False
    x, y = pt
    if not (0 <= x < P and 0 <= y < P):
        return False
    return (y * y - (x * x * x - 3 * x + B)) % P == 0


def y_from_x(x, odd):
    """The curve point's y for x with the given parity, or None if x is not on the curve."""
    if not (0 <= x < P):
        return None
    rhs = (x * x * x - 3 * x + B) % P
    y = pow(rhs, (P + 1) // 4, P)  # P = 3 mod 4
    if y * y % P != rhs:
        return None
    if (y & 1) != odd:
        y = (P - y) % P
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
    if len(data) in (33, 65):
        raise ValueError("point encoding: bad first byte 0x%02x" % data[0])
    raise ValueError("point encoding must be 33 (compressed) or 65 (uncompressed) bytes")


def encode_point(pt, compressed=True):
    if pt is None:
        raise ValueError("cannot encode the point at infinity")
    x, y = pt
    if compressed:
        return bytes([2 + (y & 1)]) + x.to_bytes(32, "big")
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


# ----------------------------------------------------------------------------- affine (public)


def point_neg(pt):
    if pt is None:
        return None
    return (pt[0], (P - pt[1]) % P)


def point_add(a, b):
    """Affine addition of public points (handles doubling and infinity). Reference, slow."""
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


def point_sum(points):
    """Sum of public affine points (None entries allowed) with one inversion at the end.

    Jacobian additions instead of one inversion per point_add: for the 33 points of a CPK
    public key about 10x faster on MicroPython. Variable time (public data only)."""
    X, Y, Z = 0, 1, 0
    for pt in points:
        if pt is not None:
            X, Y, Z = ec_vt._jmadd(X, Y, Z, pt[0], pt[1])
    if Z == 0:
        return None
    zi = inv_mod(Z, P)
    zi2 = zi * zi % P
    return (X * zi2 % P, Y * zi2 * zi % P)


# ----------------------------------------------------------------------------- the table


_table_path = None
_table_checked = False
_table_bytes = None  # CPython: the whole file
# MicroPython: one row buffer and one entry buffer, allocated at import while the heap is whole
_rowbuf = bytearray(ROW_LEN) if _MPY else None
_selbuf = bytearray(ENTRY_LEN) if _MPY else None


def _module_dir():
    try:
        here = __file__
    except NameError:  # frozen module without __file__
        return None
    cut = max(here.rfind("/"), here.rfind("\\"))
    d = here[:cut] if cut >= 0 else "."
    if not (d.startswith("/") or d[1:3] in (":\\", ":/")):
        try:  # absolute, so a later chdir does not lose the table
            cwd = os.getcwd()
            d = cwd.rstrip("/") + "/" + d if d != "." else cwd
        except (AttributeError, OSError):
            pass
    return d


_HERE = _module_dir()  # now, while a relative __file__ still means what it meant at import


def table_path():
    """Path of p256_table.bin: set_table_path(), else next to this module, else on sys.path."""
    global _table_path
    if _table_path is None:
        cands = [_HERE + "/" + TABLE_NAME] if _HERE else []
        for entry in sys.path:
            if isinstance(entry, str):
                cands.append((entry or ".") + "/hubi_core/" + TABLE_NAME)
        for c in cands:
            try:
                os.stat(c)
            except OSError:
                continue
            _table_path = c
            break
        else:
            raise OSError("P-256 table %s not found (looked in %s)" % (TABLE_NAME, cands))
    return _table_path


def set_table_path(path):
    """Boards that keep the table elsewhere in flash call this once at boot."""
    global _table_path, _table_checked, _table_bytes
    _table_path = path
    _table_checked = False
    _table_bytes = None


def _check_header(head):
    if (
        len(head) < TABLE_HEADER_LEN
        or bytes(head[:8]) != TABLE_MAGIC
        or head[8] != TABLE_VERSION
        or head[9] != W
        or (head[10] << 8 | head[11]) != TABLE_WINDOWS
        or (head[12] << 8 | head[13]) != ENTRY_LEN
    ):
        raise ValueError("P-256 table header does not match this ec.py (regenerate the table)")


def _check_table(f):
    """Header and SHA-256 of the whole file, streamed through the row buffer."""
    buf = bytearray(ROW_LEN) if not _MPY else _rowbuf
    f.seek(0)
    h = hashlib.sha256()
    total = 0
    while True:
        got = f.readinto(buf)
        if not got:
            break
        if total == 0:
            _check_header(buf)
        h.update(buf if got == len(buf) else memoryview(buf)[:got])
        total += got
    digest = h.digest()
    hexd = "".join("%02x" % c for c in digest)
    if total != TABLE_LEN or hexd != TABLE_SHA256:
        raise ValueError("P-256 table %s is corrupt or stale (sha256 mismatch)" % table_path())


def _open_table():
    """A file-like object over the table (seek/readinto), checked on first use."""
    global _table_checked, _table_bytes
    if _MPY:
        f = open(table_path(), "rb")  # noqa: SIM115 - the caller closes it
        if not _table_checked:
            try:
                _check_table(f)
            except Exception:
                f.close()
                raise
            _table_checked = True
        return f
    import io

    if _table_bytes is None:
        with open(table_path(), "rb") as fh:
            data = fh.read()
        _check_table(io.BytesIO(data))
        _table_bytes = data
    return io.BytesIO(_table_bytes)


def _row_buffers():
    if _MPY:
        return _rowbuf, _selbuf
    return bytearray(ROW_LEN), bytearray(ENTRY_LEN)


# ----------------------------------------------------------------------------- secret kernels


def _blind(k, r=None):
    """k + r*n with r random (64 bits), r's parity chosen so the result is odd; < 2^320."""
    if r is None:
        r = int.from_bytes(os.urandom(BLIND_BITS // 8), "big")
    r = (r & ((1 << BLIND_BITS) - 2)) | ((k & 1) ^ 1)
    return k + r * N


def _to_affine(X, Y, Z, zinv=None):
    if Z % P == 0:
        return None
    if zinv is None:
        zinv = inv_mod(Z, P)
    pt = (X * zinv % P, Y * zinv % P)
    if not is_on_curve(pt):  # a fault (or a bug) in the ladder: never release such a point
        raise RuntimeError("P-256 scalar multiplication fault: result not on the curve")
    return pt


def _mul_base_proj(k, r=None):
    """Projective k*G (k already in [0, n-1]); r fixes the blinding (tests)."""
    f = _open_table()
    try:
        buf, sel = _row_buffers()
        return ec_ct.comb(f, _blind(k, r), buf, sel)
    finally:
        f.close()


def mul_base(k):
    """k * G for a secret scalar k (blinded fixed-base comb). None if k = 0 mod n."""
    k %= N
    if k == 0:
        return None
    return _to_affine(*_mul_base_proj(k))


def mul_base_many(ks):
    """[k * G for k in ks] for secret scalars with one shared inversion (batch signing)."""
    ks = [k % N for k in ks]
    f = _open_table()
    try:
        buf, sel = _row_buffers()
        pts = [ec_ct.comb(f, _blind(k), buf, sel) if k else (0, 1, 0) for k in ks]
    finally:
        f.close()
    zinv = _batch_inv([pt[2] for pt in pts], P)
    return [_to_affine(pt[0], pt[1], pt[2], zinv[i]) for i, pt in enumerate(pts)]


def _mul_proj(k, pt, r=None):
    return ec_ct.ladder(_blind(k, r), pt[0], pt[1])


def mul(k, pt):
    """k * pt for a secret scalar k and a point pt (checked on the curve). None if k = 0 mod n."""
    if not is_on_curve(pt):
        raise ValueError("point is not on the P-256 curve")
    k %= N
    if k == 0:
        return None
    return _to_affine(*_mul_proj(k, pt))


# ----------------------------------------------------------------------------- public scalars


def mul_add(u1, u2, q):
    """u1 * G + u2 * q for public scalars (verification, recovery); q is checked on the curve."""
    if not is_on_curve(q):
        raise ValueError("point is not on the P-256 curve")
    X, Y, Z = ec_vt.mul_add_jac(u1 % N, u2 % N, q[0], q[1])
    if Z == 0:
        return None
    zi = inv_mod(Z, P)
    zi2 = zi * zi % P
    return (X * zi2 % P, Y * zi2 * zi % P)


def verify_x(u1, u2, q, r):
    """True iff u1*G + u2*q is not infinity and its x coordinate is r mod n (no inversion).

    For ECDSA verification: r in [1, n-1] and q on the curve are the caller's job."""
    X, Y, Z = ec_vt.mul_add_jac(u1 % N, u2 % N, q[0], q[1])
    if Z == 0:
        return False
    zz = Z * Z % P
    if (X - r * zz) % P == 0:
        return True
    # x(R) in [n, p) also reduces to r: then x = r + n
    return r + N < P and (X - (r + N) * zz) % P == 0


# The kernels, imported last (they read the constants above). Eagerly, not on first use: a
# lazy import would depend on the current directory when sys.path holds relative entries.
from hubi_core import ec_ct, ec_vt  # noqa: E402
