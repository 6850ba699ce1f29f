"""ECIES (P-256 ECDH + HKDF-SHA-256 + AES-256-GCM) and its building blocks.

The documented key schedule is re-derived here with cryptography's own ECDH, HKDF and AESGCM,
so the format in ecies.py's docstring is what the code does. Blobs made on CPython (either back
end) open under MicroPython and the other way round.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec as cec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hubi_core import aesgcm, ec, ecies, suite
from tests.backends import BACKENDS, with_backend
from tests.mpy import run_mpy

# ----------------------------------------------------------------------------- HKDF, GCM


def test_hkdf_rfc5869_case1():
    ikm = bytes([0x0B] * 22)
    salt = bytes(range(13))
    info = bytes(range(0xF0, 0xFA))
    prk = ecies.hkdf_extract(salt, ikm)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = ecies.hkdf_expand(prk, info, 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_matches_cryptography():
    for length in (1, 32, 44, 64, 100):
        ikm, salt, info = os.urandom(32), os.urandom(13), os.urandom(20)
        want = HKDF(hashes.SHA256(), length, salt, info).derive(ikm)
        assert ecies.hkdf(ikm, salt, info, length) == want


GCM_KAT = [
    # McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13 and 14 (AES-256)
    (bytes(32), bytes(12), b"", b"", "530f8afbc74536b9a963b4f1c4cb738b"),
    (
        bytes(32),
        bytes(12),
        bytes(16),
        b"",
        "cea7403d4d606b6e074ec5d3baf39d18" + "d0d1c8a799996bf0265b98b5d48ab919",
    ),
]


@pytest.mark.parametrize("impl", BACKENDS)
def test_gcm_known_answers(impl):
    for key, nonce, pt, aad, want in GCM_KAT:
        assert aesgcm.encrypt(key, nonce, pt, aad, backend=impl).hex() == want
        assert aesgcm.decrypt(key, nonce, bytes.fromhex(want), aad, backend=impl) == pt


def test_gcm_pure_equals_openssl():
    for n in (0, 1, 15, 16, 17, 255, 256, 257, 700):
        for alen in (0, 1, 16, 34, 50):
            key, nonce = os.urandom(32), os.urandom(12)
            pt, aad = os.urandom(n), os.urandom(alen)
            a = aesgcm.encrypt(key, nonce, pt, aad, backend="pure")
            assert a == AESGCM(key).encrypt(nonce, pt, aad)
            assert aesgcm.decrypt(key, nonce, a, aad, backend="pure") == pt


@pytest.mark.parametrize("impl", BACKENDS)
def test_gcm_rejects(impl):
    key, nonce = os.urandom(32), os.urandom(12)
    data = aesgcm.encrypt(key, nonce, b"hello world", b"aad", backend=impl)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(aesgcm.AuthError):
            aesgcm.decrypt(key, nonce, bytes(bad), b"aad", backend=impl)
    with pytest.raises(aesgcm.AuthError):
        aesgcm.decrypt(key, nonce, data, b"aaD", backend=impl)
    with pytest.raises(aesgcm.AuthError):
        aesgcm.decrypt(key, nonce, data[:15], b"aad", backend=impl)
    with pytest.raises(ValueError, match="32 bytes"):
        aesgcm.encrypt(key[:16], nonce, b"", backend=impl)
    with pytest.raises(ValueError, match="12 bytes"):
        aesgcm.encrypt(key, nonce + b"\x00", b"", backend=impl)


# ----------------------------------------------------------------------------- ECIES


def _reference_open(priv: int, blob: bytes, info: bytes) -> bytes:
    """The docstring's key schedule with cryptography only."""
    key = cec.derive_private_key(priv, cec.SECP256R1())
    eph = cec.EllipticCurvePublicKey.from_encoded_point(cec.SECP256R1(), blob[1:34])
    z = key.exchange(cec.ECDH(), eph)
    rc = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    okm = HKDF(hashes.SHA256(), 44, b"hubi ecies v1", b"\x01" + blob[1:34] + rc + info).derive(z)
    return AESGCM(okm[:32]).decrypt(okm[32:], blob[34:], blob[:34])


@pytest.mark.parametrize("seal_with", BACKENDS)
@pytest.mark.parametrize("open_with", BACKENDS)
def test_round_trip_across_backends(seal_with, open_with):
    priv = suite.generate_private()
    for compressed in (False, True):
        pub = with_backend("openssl", suite.public_key, priv, compressed)
        for n in (0, 1, 8, 16, 33, 300):
            pt = os.urandom(n)
            info = os.urandom(n % 7)
            blob = with_backend(seal_with, ecies.seal, pub, pt, info)
            assert len(blob) == ecies.OVERHEAD + n == 50 + n
            assert blob[0] == 1 and blob[1] in (2, 3)
            assert ec.decode_point(blob[1:34])
            assert with_backend(open_with, ecies.open_sealed, priv, blob, info) == pt
            assert _reference_open(priv, blob, info) == pt


def test_blobs_are_fresh(backend):
    pub = suite.public_key(12345)
    a, b = ecies.seal(pub, b"same"), ecies.seal(pub, b"same")
    assert a != b and a[1:34] != b[1:34]


def test_tampering_is_rejected(backend):
    priv = suite.generate_private()
    blob = ecies.seal(suite.public_key(priv), b"balance: 1234.56", b"acct-7")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01  # byte 1: 02 <-> 03, the other y
        with pytest.raises(ecies.EciesError) as info:
            ecies.open_sealed(priv, bytes(bad), b"acct-7")
        if i == 0:
            assert isinstance(info.value, ecies.BadSuite)
        elif i >= 34 or i == 1:
            assert isinstance(info.value, ecies.AuthFailed)
        else:  # another x: either not on the curve or the wrong shared secret
            assert isinstance(info.value, ecies.BadPoint | ecies.AuthFailed)
    with pytest.raises(ecies.AuthFailed, match="tag mismatch"):
        ecies.open_sealed(priv, blob, b"acct-8")
    with pytest.raises(ecies.AuthFailed):
        ecies.open_sealed(priv % (ec.N - 1) + 1, blob, b"acct-7")
    assert ecies.open_sealed(priv, blob, b"acct-7") == b"balance: 1234.56"


def test_error_classes_and_messages(backend):
    priv = 0xABCDEF
    blob = ecies.seal(suite.public_key(priv), b"x")
    cases = [
        (blob[:49], ecies.ShortBlob, "at least 50"),
        (b"", ecies.ShortBlob, "blob is 0 bytes"),
        (b"\x02" + blob[1:], ecies.BadSuite, "byte 0 is suite 0x02"),
        (blob[:1] + b"\x04" + blob[2:], ecies.BadPoint, "compressed"),
        # x = 1 is not on P-256 (x = 0 is)
        (blob[:1] + b"\x02" + (1).to_bytes(32, "big") + blob[34:], ecies.BadPoint, "bytes 1..33"),
        (blob[:1] + b"\x02" + ec.P.to_bytes(32, "big") + blob[34:], ecies.BadPoint, "1..33"),
    ]
    for data, cls, msg in cases:
        with pytest.raises(cls, match=msg) as info:
            ecies.open_sealed(priv, data)
        assert isinstance(info.value, ValueError)
    for bad_pub in (b"\x04" + bytes(64), b"", b"\x03" + (1).to_bytes(32, "big"), b"\x00"):
        with pytest.raises(ecies.BadPoint, match="recipient public key"):
            ecies.seal(bad_pub, b"x")
    with pytest.raises(ValueError):
        ecies.open_sealed(0, blob)


# ----------------------------------------------------------------------------- MicroPython


@pytest.mark.micropython
def test_mpy_interop_both_ways():
    priv = suite.generate_private()
    pub = with_backend("openssl", suite.public_key, priv)
    info = b"balance|acct-42"
    plain = [b"", b"1234", os.urandom(100)]
    # CPython -> MicroPython, sealed with each back end
    from_cpy = [with_backend(be, ecies.seal, pub, p, info) for be in BACKENDS for p in plain]
    code = r"""
import binascii
from hubi_core import ecies, suite
priv = %d
pub = %r
info = %r
h = lambda b: binascii.hexlify(b).decode()
for blob in %r:
    print("OPEN", h(ecies.open_sealed(priv, blob, info)) or "-")
for p in %r:
    print("SEAL", h(ecies.seal(pub, p, info)))
blob = ecies.seal(pub, b"x", info)
bad = bytearray(blob)
bad[40] ^= 1
for data in (bytes(bad), blob[:49], b"\x07" + blob[1:]):
    try:
        ecies.open_sealed(priv, data, info)
        print("ERR accepted")
    except ecies.EciesError as e:
        print("ERR", type(e).__name__)
try:
    ecies.open_sealed(priv, blob, b"other")
except ValueError as e:
    print("ERR", type(e).__name__)
""" % (priv, pub, info, from_cpy, plain)
    out = run_mpy(code=code, heapsize="96k").splitlines()
    opened = [ln.split()[1] for ln in out if ln.startswith("OPEN")]
    assert opened == [(p.hex() or "-") for _ in BACKENDS for p in plain]
    sealed = [bytes.fromhex(ln.split()[1]) for ln in out if ln.startswith("SEAL")]
    assert len(sealed) == len(plain)
    for blob, p in zip(sealed, plain):
        for be in BACKENDS:
            assert with_backend(be, ecies.open_sealed, priv, blob, info) == p
        assert _reference_open(priv, blob, info) == p
    errors = [ln.split()[1] for ln in out if ln.startswith("ERR")]
    assert errors == ["AuthFailed", "ShortBlob", "BadSuite", "AuthFailed"]
