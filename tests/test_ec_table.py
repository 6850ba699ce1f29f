"""hubi_core.ec internals: the fixed-base table, blinding, the kernels' edge cases.

The table is generated (tools/gen_p256_table.py), never typed in: regenerating it must give the
committed bytes, whose SHA-256 ec checks before use. Blinding (k + r*n) must not change any
result, whatever r. Kernels are compared with the affine reference formulas and with OpenSSL.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import ec as cec

from hubi_core import ec, ec_ct, ec_vt
from tests.mpy import ROOT, SHARED, micropython_exe, run_mpy

TABLE = SHARED / "hubi_core" / ec.TABLE_NAME


def _gen_module():
    spec = importlib.util.spec_from_file_location(
        "gen_p256_table", ROOT / "tools/gen_p256_table.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ossl_base(k):
    n = cec.derive_private_key(k, cec.SECP256R1()).public_key().public_numbers()
    return (n.x, n.y)


def _slow_mul(k, pt):
    acc = None
    while k:
        if k & 1:
            acc = ec.point_add(acc, pt)
        pt = ec.point_add(pt, pt)
        k >>= 1
    return acc


def test_regenerated_table_equals_committed():
    data = _gen_module().build()
    assert data == TABLE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == ec.TABLE_SHA256
    assert len(data) == ec.TABLE_LEN == 16 + 64 * 16 * 64


def test_generator_check_mode(tmp_path):
    gen = _gen_module()
    assert gen.main(["--check"]) == 0
    out = tmp_path / "t.bin"
    assert gen.main(["--out", str(out)]) == 0
    assert out.read_bytes() == TABLE.read_bytes()
    out.write_bytes(out.read_bytes()[:-1] + b"\x00")
    assert gen.main(["--check", "--out", str(out)]) == 1


def test_table_entries_are_odd_multiples():
    data = TABLE.read_bytes()
    rng = random.Random(3)
    for i, j in [(0, 0), (0, 15), (63, 0), (63, 15)] + [
        (rng.randrange(64), rng.randrange(16)) for _ in range(6)
    ]:
        off = ec.TABLE_HEADER_LEN + (i * ec.ENTRIES + j) * ec.ENTRY_LEN
        x = int.from_bytes(data[off : off + 32], "big")
        y = int.from_bytes(data[off + 32 : off + 64], "big")
        assert (x, y) == _ossl_base((2 * j + 1) * (1 << (5 * i)) % ec.N)


def _corrupt_copy(tmp_path, mutate):
    path = tmp_path / ec.TABLE_NAME
    data = bytearray(TABLE.read_bytes())
    mutate(data)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.__setitem__(5000, d[5000] ^ 1),  # one bit in an entry
        lambda d: d.__setitem__(9, 4),  # header: window width
        lambda d: d.__delitem__(slice(-64, None)),  # truncated
    ],
)
def test_corrupt_table_is_refused(tmp_path, mutate):
    path = _corrupt_copy(tmp_path, mutate)
    try:
        ec.set_table_path(str(path))
        with pytest.raises(ValueError, match="table"):
            ec.mul_base(12345)
        with pytest.raises(ValueError, match="table"):
            ec.mul_add(1, 1, ec.G)
    finally:
        ec.set_table_path(None)
    assert ec.mul_base(12345) == _ossl_base(12345)


@pytest.mark.parametrize(
    "r", [0, 1, 2, 3, (1 << 64) - 1, (1 << 64) - 2, 1 << 63, 0x0123456789ABCDEF, None]
)
def test_blinding_does_not_change_results(r):
    q = _ossl_base(0xC0FFEE)
    for k in (1, 2, 3, 31, 32, ec.N - 1, ec.N - 2, ec.N // 2, 1 << 255, 0x1234567890ABCDEF << 190):
        want = _ossl_base(k)
        assert ec._to_affine(*ec._mul_base_proj(k, r)) == want
        assert ec._to_affine(*ec._mul_proj(k, ec.G, r)) == want
        assert ec._to_affine(*ec._mul_proj(k, q, r)) == _ossl_base(k * 0xC0FFEE % ec.N)


def test_blinded_scalar_range_and_recoding():
    # every blinded scalar is odd and below 2^320, so 64 regular digits cover it
    for k in (1, 2, ec.N - 1, ec.N - 2):
        for r in (0, 1, (1 << 64) - 1, (1 << 64) - 2):
            kb = ec._blind(k, r)
            assert kb & 1 and kb < 1 << 320 and (kb - k) % ec.N == 0
            d, rest = [], kb
            for _ in range(ec.TABLE_WINDOWS - 1):
                x = (rest & 63) - 32
                rest = (rest - x) >> 5
                d.append(x)
            assert 1 <= rest <= 31 and rest & 1
            assert all(x & 1 and -31 <= x <= 31 for x in d)
            assert sum(x << (5 * i) for i, x in enumerate(d)) + (rest << 315) == kb


def test_mul_base_many_and_zero():
    ks = [1, 0, 7, ec.N - 1, ec.N, 2 * ec.N + 3]
    assert ec.mul_base_many(ks) == [
        ec.G,
        None,
        _ossl_base(7),
        ec.point_neg(ec.G),
        None,
        _ossl_base(3),
    ]
    assert ec.mul_base(0) is None and ec.mul_base(ec.N) is None
    assert ec.mul(0, ec.G) is None


def test_mul_rejects_off_curve_points():
    with pytest.raises(ValueError):
        ec.mul(5, (1, 2))
    with pytest.raises(ValueError):
        ec.mul_add(1, 2, (ec.GX, ec.GY + 1))
    with pytest.raises(ValueError):
        ec.mul(5, None)


def test_mul_add_edge_cases():
    q = _ossl_base(5)
    assert ec.mul_add(0, 0, q) is None
    assert ec.mul_add(0, 3, q) == _ossl_base(15)
    assert ec.mul_add(3, 0, q) == _ossl_base(3)
    assert ec.mul_add(5, ec.N - 1, q) is None  # 5G - 5G
    assert ec.mul_add(5, 1, q) == _ossl_base(10)  # 5G + 5G: doubling inside the addition
    assert ec.mul_add(ec.N - 1, 1, ec.G) is None
    rng = random.Random(11)
    for _ in range(12):
        u1, u2, d = rng.randrange(ec.N), rng.randrange(ec.N), rng.randrange(1, ec.N)
        q = _ossl_base(d)
        assert ec.mul_add(u1, u2, q) == ec.point_add(_slow_mul(u1, ec.G), _slow_mul(u2, q))
        x = (u1 + u2 * d) % ec.N
        if x:
            r = _ossl_base(x)[0] % ec.N
            assert ec.verify_x(u1, u2, q, r)
            assert not ec.verify_x(u1, u2, q, (r + 1) % ec.N)


def test_kernels_against_reference():
    rng = random.Random(12)
    for _ in range(6):
        a, b = _ossl_base(rng.randrange(1, ec.N)), _ossl_base(rng.randrange(1, ec.N))
        za, zb = rng.randrange(1, ec.P), rng.randrange(1, ec.P)
        pa = (a[0] * za % ec.P, a[1] * za % ec.P, za)
        pb = (b[0] * zb % ec.P, b[1] * zb % ec.P, zb)
        assert ec._to_affine(*ec_ct.padd(*pa, *pb)) == ec.point_add(a, b)
        assert ec._to_affine(*ec_ct.padd(*pa, *pa)) == ec.point_add(a, a)  # complete: P + P
        assert ec_ct.padd(*pa, pa[0], ec.P - pa[1], pa[2])[2] == 0  # P + (-P) = infinity
        assert ec_ct.padd(0, 1, 0, *pb)[1:] != (0, 0)
        assert ec._to_affine(*ec_ct.padd(0, 1, 0, *pb)) == b  # O + P
        assert ec._to_affine(*ec_ct.pdbl(*pa)) == ec.point_add(a, a)
        assert ec_ct.pdbl(0, 1, 0)[2] == 0
        ja = (a[0] * za * za % ec.P, a[1] * za * za * za % ec.P, za)
        assert ec.point_add(a, a) == _jac_affine(ec_vt._jdbl(*ja))
        assert ec.point_add(a, b) == _jac_affine(ec_vt._jmadd(*ja, *b))
        assert ec.point_add(a, a) == _jac_affine(ec_vt._jmadd(*ja, *a))
        assert ec_vt._jmadd(*ja, a[0], ec.P - a[1])[2] == 0


def test_point_sum():
    rng = random.Random(13)
    pts = [_ossl_base(rng.randrange(1, ec.N)) for _ in range(33)]
    want = None
    for pt in pts:
        want = ec.point_add(want, pt)
    assert ec.point_sum(pts) == want
    assert ec.point_sum(pts + [None]) == want
    assert ec.point_sum([]) is None
    assert ec.point_sum([ec.G, ec.point_neg(ec.G)]) is None
    assert ec.point_sum([ec.G, ec.G, None]) == ec.point_add(ec.G, ec.G)


def _jac_affine(pt):
    x, y, z = pt
    zi = ec.inv_mod(z, ec.P)
    return (x * zi * zi % ec.P, y * zi * zi * zi % ec.P)


def test_inverse_helpers():
    vals = [1, 2, 0, ec.N - 1, 12345, 0]
    inv = ec._batch_inv(vals, ec.N)
    assert inv == [pow(v, -1, ec.N) if v else 0 for v in vals]


def test_decode_point_errors():
    good = ec.encode_point(ec.G, compressed=False)
    assert ec.decode_point(good) == ec.G
    assert ec.decode_point(ec.encode_point(ec.G)) == ec.G
    for bad, msg in [
        (b"\x00", "infinity"),
        (b"\x05" + good[1:], "first byte"),
        (b"\x04" + bytes(64), "not on the P-256 curve"),
        (b"\x04" + ec.P.to_bytes(32, "big") + good[33:], "below the field prime"),
        (b"\x02" + ec.P.to_bytes(32, "big"), "below the field prime"),
        (good[:-1], r"33 \(compressed\) or 65"),
    ]:
        with pytest.raises(ValueError, match=msg):
            ec.decode_point(bad)


@pytest.mark.micropython
def test_mpy_finds_table_next_to_module_after_chdir(tmp_path):
    """Relative MICROPYPATH, then chdir away: the table is still found via __file__."""
    code = (
        "import os\nfrom hubi_core import suite\nos.chdir(%r)\n"
        "print(suite.public_key(3).hex())\n" % str(tmp_path)
    )
    env = {"MICROPYPATH": "shared", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [micropython_exe(), "-X", "heapsize=96k", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    assert proc.stdout.decode().split()[0] == ec.encode_point(_ossl_base(3), False).hex()


@pytest.mark.micropython
def test_mpy_table_is_read_not_loaded(tmp_path):
    """MicroPython reads rows into one small buffer; a corrupt copy is refused there too."""
    path = _corrupt_copy(tmp_path, lambda d: d.__setitem__(40000, d[40000] ^ 0x80))
    good = shutil.copy(TABLE, tmp_path / "good.bin")
    code = r"""
import gc
from hubi_core import ec
print(ec._rowbuf is not None and len(ec._rowbuf))
ec.set_table_path(%r)
try:
    ec.mul_base(5)
    print("accepted")
except ValueError as e:
    print("refused", "sha256" in str(e))
ec.set_table_path(%r)
print(ec.mul_base(5) is not None)
gc.collect()
print(gc.mem_alloc() < 48 * 1024)
""" % (str(path), str(good))
    assert run_mpy(code=code, heapsize="96k").split() == ["1024", "refused", "True", "True", "True"]
