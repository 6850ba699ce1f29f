"""Suite 1 under the MicroPython unix port, in a 96 KB heap, against the same vectors and OpenSSL.

Vectors are flattened on the CPython side into one line per case (hex fields, "-" for empty) and
streamed by the MicroPython code with readline, so the JSON never has to fit in the heap.
"""

from __future__ import annotations

import os
import random

import pytest

from hubi_core import suite
from tests.mpy import run_mpy
from tests.test_suite_vectors import ecdh_cases, ecdsa_cases, load

pytestmark = pytest.mark.micropython

HEAP = "96k"


def _hex(b: bytes) -> str:
    return b.hex() if b else "-"


def _result(out: str) -> list[str]:
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT")]
    assert len(lines) == 1, out
    return lines[0].split()[1:]


RUN_ECDSA = r"""
import binascii
from hubi_core import suite
def u(h):
    return b"" if h == "-" else binascii.unhexlify(h)
run = ok = 0
bad = []
with open(%r) as f:
    while True:
        line = f.readline()
        if not line:
            break
        tc, pub, msg, sig, want = line.split()
        run += 1
        if suite.verify(u(pub), u(msg), u(sig)) == (want == "valid"):
            ok += 1
        else:
            bad.append(tc)
print("RESULT", suite.backend(), run, ok, *bad)
"""

RUN_ECDH = r"""
import binascii
from hubi_core import suite
def u(h):
    return b"" if h == "-" else binascii.unhexlify(h)
run = ok = 0
bad = []
with open(%r) as f:
    while True:
        line = f.readline()
        if not line:
            break
        tc, priv, pub, shared, want = line.split()
        run += 1
        try:
            got = binascii.hexlify(suite.ecdh(int(priv, 16), u(pub))).decode()
        except ValueError:
            got = None
        if (got is None) if want == "invalid" else (got == shared):
            ok += 1
        else:
            bad.append(tc)
print("RESULT", suite.backend(), run, ok, *bad)
"""


@pytest.mark.slow
def test_mpy_wycheproof_ecdsa(tmp_path):
    path = tmp_path / "ecdsa.txt"
    path.write_text(
        "".join(
            "%d %s %s %s %s\n" % (tc, _hex(pub), _hex(msg), _hex(sig), res)
            for tc, pub, msg, sig, res in ecdsa_cases()
        )
    )
    backend, run, ok, *bad = _result(run_mpy(code=RUN_ECDSA % str(path), heapsize=HEAP))
    assert backend == "pure"
    assert bad == []
    assert (int(run), int(ok)) == (262, 262)


@pytest.mark.slow
def test_mpy_wycheproof_ecdh(tmp_path):
    path = tmp_path / "ecdh.txt"
    path.write_text(
        "".join(
            "%d %x %s %s %s\n" % (tc, priv, _hex(pub), shared or "-", res)
            for tc, priv, pub, shared, res in ecdh_cases()
        )
    )
    backend, run, ok, *bad = _result(run_mpy(code=RUN_ECDH % str(path), heapsize=HEAP))
    assert backend == "pure"
    assert bad == []
    assert (int(run), int(ok)) == (355, 355)


def test_mpy_rfc6979_exact():
    data = load("rfc6979_p256_sha256.json")
    code = r"""
import hashlib, binascii
from hubi_core import suite
priv = int(%r, 16)
msgs = %r
h = lambda b: binascii.hexlify(b).decode()
print("PUB", h(suite.public_key(priv)))
for m in msgs:
    k = next(suite.rfc6979_nonces(priv, hashlib.sha256(m).digest()))
    print("K", "%%064x" %% k)
    print("SIG", h(suite.sign(priv, m, low_s=False)))
print("BATCH", *[h(s) for s in suite.sign_batch(priv, msgs, low_s=False)])
""" % (data["private_key"], [c["message"].encode() for c in data["cases"]])
    out = run_mpy(code=code, heapsize=HEAP).split("\n")
    pub = "04" + data["public_key"]["x"] + data["public_key"]["y"]
    assert out[0] == "PUB " + pub.lower()
    ks = [ln.split()[1] for ln in out if ln.startswith("K ")]
    sigs = [ln.split()[1] for ln in out if ln.startswith("SIG ")]
    batch = [ln for ln in out if ln.startswith("BATCH")][0].split()[1:]
    expect = [(c["r"] + c["s"]).lower() for c in data["cases"]]
    assert ks == [c["k"].lower() for c in data["cases"]]
    assert sigs == expect
    assert batch == expect


def test_mpy_matches_openssl_in_96k_heap():
    """Random keys and messages: MicroPython's signatures are OpenSSL's, bit for bit."""
    rng = random.Random(0x5EED)
    privs = [suite.generate_private() for _ in range(3)]
    msgs = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 90))) for _ in range(4)]
    code = r"""
import binascii, gc
from hubi_core import suite, ec
h = lambda b: binascii.hexlify(b).decode()
privs = %r
msgs = %r
for p in privs:
    print("PUB", h(suite.public_key(p)), h(suite.public_key(p, compressed=True)))
    print("BATCH", *[h(s) for s in suite.sign_batch(p, msgs)])
    print("ONE", *[h(suite.sign(p, m)) for m in msgs])
print("ECDH", h(suite.ecdh(privs[0], suite.public_key(privs[1]))))
pub = suite.public_key(privs[2])
sig = suite.sign(privs[2], msgs[0])
print("REC", *[h(q) for q in suite.recover(msgs[0], sig)])
gc.collect()
print("HEAP", gc.mem_alloc(), gc.mem_free())
""" % (privs, msgs)
    out = run_mpy(code=code, heapsize=HEAP).splitlines()
    before = suite.backend()
    suite.use_backend("openssl")
    try:
        lines = iter(out)
        for p in privs:
            pub_u, pub_c = next(lines).split()[1:]
            assert pub_u == suite.public_key(p).hex()
            assert pub_c == suite.public_key(p, compressed=True).hex()
            want = [suite.sign(p, m).hex() for m in msgs]
            assert next(lines).split()[1:] == want
            assert next(lines).split()[1:] == want
            for m, s in zip(msgs, want):
                assert suite.verify(suite.public_key(p), m, bytes.fromhex(s))
        assert next(lines).split()[1] == suite.ecdh(privs[0], suite.public_key(privs[1])).hex()
        assert suite.public_key(privs[2]).hex() in next(lines).split()[1:]
        heap = next(lines).split()
        assert int(heap[1]) < 64 * 1024, heap  # code + buffers only: the 64 KB table is not here
    finally:
        suite.use_backend(before)


def test_mpy_verifies_openssl_signatures():
    priv = suite.generate_private()
    before = suite.backend()
    suite.use_backend("openssl")
    try:
        msgs = [os.urandom(n) for n in (0, 1, 32, 100)]
        sigs = [suite.sign(priv, m) for m in msgs]
        high = [suite.sign(priv, m, low_s=False) for m in msgs]
        pub = suite.public_key(priv)
        pubc = suite.public_key(priv, compressed=True)
    finally:
        suite.use_backend(before)
    code = r"""
from hubi_core import suite
pub = %r
pubc = %r
msgs = %r
sigs = %r + %r
ok = [suite.verify(k, m, s) for k in (pub, pubc) for m, s in zip(msgs + msgs, sigs)]
bad = [suite.verify(pub, m + b"x", s) for m, s in zip(msgs, sigs)]
print("RESULT", sum(ok), len(ok), sum(bad))
""" % (pub, pubc, msgs, sigs, high)
    assert _result(run_mpy(code=code, heapsize=HEAP)) == ["16", "16", "0"]
