"""Pure back end against OpenSSL (cryptography), both directions, plus API behaviour.

Random keys and messages: signatures are bit-for-bit identical between the back ends, each
back end verifies the other's, sign_batch equals sign, recover finds the signer, verify never
raises on junk.
"""

from __future__ import annotations

import os
import random

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec as cec
from cryptography.hazmat.primitives.asymmetric import utils as cutils

from hubi_core import ec, suite
from tests.backends import with_backend

N_RANDOM = 24


def _cases(seed):
    rng = random.Random(seed)
    out = []
    for _ in range(N_RANDOM):
        priv = rng.randrange(1, ec.N)
        msg = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        out.append((priv, msg))
    # edge keys
    out += [(1, b""), (2, b"x"), (ec.N - 1, b"n-1"), (ec.N // 2, b"half")]
    return out


def test_public_keys_identical():
    for priv, _ in _cases(1):
        for comp in (False, True):
            assert with_backend("pure", suite.public_key, priv, comp) == with_backend(
                "openssl", suite.public_key, priv, comp
            )
        key = cec.derive_private_key(priv, cec.SECP256R1()).public_key().public_numbers()
        assert ec.mul_base(priv) == (key.x, key.y)


@pytest.mark.parametrize("low_s", [True, False])
def test_signatures_identical_and_cross_verify(low_s):
    for priv, msg in _cases(2 + low_s):
        a = with_backend("pure", suite.sign, priv, msg, low_s)
        b = with_backend("openssl", suite.sign, priv, msg, low_s)
        assert a == b
        if low_s:
            assert not suite.is_high_s(a)
        pub = with_backend("openssl", suite.public_key, priv)
        assert with_backend("openssl", suite.verify, pub, msg, a)
        assert with_backend("pure", suite.verify, pub, msg, b)
        # and straight through cryptography's own API (DER), no hubi code on the verify side
        r, s = suite.split_sig(a)
        key = cec.EllipticCurvePublicKey.from_encoded_point(cec.SECP256R1(), pub)
        key.verify(cutils.encode_dss_signature(r, s), msg, cec.ECDSA(hashes.SHA256()))


def test_pure_verifies_openssl_random_nonce_signatures(pure):
    for priv, msg in _cases(4)[:10]:
        key = cec.derive_private_key(priv, cec.SECP256R1())
        r, s = cutils.decode_dss_signature(key.sign(msg, cec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        high = r.to_bytes(32, "big") + (ec.N - s).to_bytes(32, "big")  # the other S verifies too
        pub = suite.public_key(priv)
        assert suite.verify(pub, msg, sig) and suite.verify(pub, msg, high)
        assert suite.verify(suite.public_key(priv, compressed=True), msg, sig)
        assert not suite.verify(pub, msg + b"!", sig)
        assert not suite.verify(suite.public_key(priv % (ec.N - 1) + 1), msg, sig)


@pytest.mark.parametrize("backend", ["pure", "openssl"])
def test_sign_batch_equals_sign(backend):
    priv = suite.generate_private()
    msgs = [os.urandom(n) for n in (0, 5, 64, 300)]
    batch = with_backend(backend, suite.sign_batch, priv, msgs)
    assert batch == [with_backend(backend, suite.sign, priv, m) for m in msgs]
    assert batch == with_backend("openssl", suite.sign_batch, priv, msgs)
    assert with_backend(backend, suite.sign_batch, priv, []) == []
    assert with_backend(backend, suite.sign_batch, priv, iter(msgs[:2]), False) == [
        with_backend("openssl", suite.sign, priv, m, False) for m in msgs[:2]
    ]


@pytest.mark.parametrize("backend", ["pure", "openssl"])
def test_recover_returns_signer(backend):
    for priv, msg in _cases(5)[:12]:
        sig = with_backend(backend, suite.sign, priv, msg)
        cands = suite.recover(msg, sig)
        assert 1 <= len(cands) <= 2
        assert with_backend("openssl", suite.public_key, priv) in cands
        for c in cands:
            assert with_backend(backend, suite.verify, c, msg, sig)
    assert suite.recover(b"m", bytes(64)) == []


@pytest.mark.parametrize("backend", ["pure", "openssl"])
def test_ecdh_identical(backend):
    for priv, _ in _cases(6)[:10]:
        other = suite.generate_private()
        pub = with_backend("openssl", suite.public_key, other)
        want = cec.derive_private_key(priv, cec.SECP256R1()).exchange(
            cec.ECDH(), cec.EllipticCurvePublicKey.from_encoded_point(cec.SECP256R1(), pub)
        )
        assert with_backend(backend, suite.ecdh, priv, pub) == want
        pubc = with_backend("openssl", suite.public_key, other, True)
        assert with_backend(backend, suite.ecdh, priv, pubc) == want
        assert (
            with_backend(backend, suite.ecdh, other, with_backend(backend, suite.public_key, priv))
            == want
        )


@pytest.mark.parametrize("backend", ["pure", "openssl"])
def test_verify_never_raises(backend):
    rng = random.Random(7)
    priv = 0x1234
    pub = with_backend("openssl", suite.public_key, priv)
    sig = with_backend("openssl", suite.sign, priv, b"m")
    junk_pubs = [
        b"",
        b"\x04",
        bytes(65),
        b"\x04" + bytes(64),
        b"\x02" + bytes(32),
        b"\x05" + pub[1:],
        pub[:-1],
        pub + b"\x00",
        b"\x04" + ec.P.to_bytes(32, "big") + pub[33:],
        None,
        "text",
        12,
    ]
    junk_sigs = [
        b"",
        bytes(64),
        sig[:-1],
        sig + b"\x00",
        ec.N.to_bytes(32, "big") + sig[32:],
        sig[:32] + ec.N.to_bytes(32, "big"),
        sig[:32] + bytes(32),
        b"\xff" * 64,
        None,
        "x" * 64,
    ]
    junk_pubs += [bytes(rng.randrange(256) for _ in range(rng.choice((33, 65)))) for _ in range(20)]
    for p in junk_pubs:
        assert with_backend(backend, suite.verify, p, b"m", sig) is False
    for s in junk_sigs:
        assert with_backend(backend, suite.verify, pub, b"m", s) is False
    assert with_backend(backend, suite.verify, pub, b"m", bytearray(sig)) is True
    assert with_backend(backend, suite.verify, memoryview(pub), b"m", sig) is True


@pytest.mark.parametrize("backend", ["pure", "openssl"])
def test_bad_inputs_raise_valueerror(backend):
    for bad in (0, ec.N, -1, ec.N + 5):
        with pytest.raises(ValueError):
            with_backend(backend, suite.sign, bad, b"m")
        with pytest.raises(ValueError):
            with_backend(backend, suite.sign_batch, bad, [b"m"])
        with pytest.raises(ValueError):
            with_backend(backend, suite.public_key, bad)
    for bad_pub in (b"\x04" + bytes(64), b"\x02" + ec.P.to_bytes(32, "big"), b"\x00", bytes(10)):
        with pytest.raises(ValueError):
            with_backend(backend, suite.ecdh, 5, bad_pub)


def test_generate_private():
    keys = {suite.generate_private() for _ in range(50)}
    assert len(keys) == 50
    assert all(1 <= k < ec.N for k in keys)


def test_hmac_sha256_matches_stdlib():
    import hmac as std_hmac

    for klen in (0, 1, 32, 63, 64, 65, 200):
        key = os.urandom(klen)
        msg = os.urandom(klen * 3)
        assert suite.hmac_sha256(key, msg) == std_hmac.new(key, msg, "sha256").digest()


def test_backend_switch():
    before = suite.backend()
    with pytest.raises(ValueError):
        suite.use_backend("nope")
    assert suite.backend() == before
