"""Crypto suite 1: NIST P-256, SHA-256, ECDSA with RFC 6979 nonces, raw 64-byte r||s signatures.

One API on both interpreters. On CPython the `cryptography` package (OpenSSL) does the heavy
lifting; elsewhere (MicroPython) the pure implementation in ``ec`` does. Both give the same bytes:
tests compare them. Private keys are ints in [1, n-1]; public keys are SEC1 bytes.

Pure back end (the token): nonces are RFC 6979 (deterministic, so both back ends agree bit for
bit); k*G runs through ``ec``'s blinded fixed-base comb; ``sign_batch`` signs several messages
with one shared field inversion and one shared (blinded) inversion of the nonces mod n.
The limits of pure MicroPython (bigint timing, heap never wiped, no fault resistance) are listed
in ``ec``'s docstring: production tokens should use a native module or a secure element.
"""

import hashlib
import os

from hubi_core import ec
from hubi_core.ct import hmac_sha256

SUITE_ID = 1
SIG_LEN = 64
HALF_N = ec.N >> 1


def _sha256(data):
    return hashlib.sha256(data).digest()


def _bits2int(digest):
    # SHA-256 and P-256 are both 256 bits: no shift needed.
    return int.from_bytes(digest, "big")


def rfc6979_nonces(priv, digest):
    """Yield candidate nonces per RFC 6979 section 3.2 (HMAC-SHA-256)."""
    x = priv.to_bytes(32, "big")
    h = (_bits2int(digest) % ec.N).to_bytes(32, "big")
    v = b"\x01" * 32
    k = b"\x00" * 32
    k = hmac_sha256(k, v + b"\x00" + x + h)
    v = hmac_sha256(k, v)
    k = hmac_sha256(k, v + b"\x01" + x + h)
    v = hmac_sha256(k, v)
    while True:
        v = hmac_sha256(k, v)
        cand = int.from_bytes(v, "big")
        if 1 <= cand < ec.N:
            yield cand
        k = hmac_sha256(k, v + b"\x00")
        v = hmac_sha256(k, v)


def check_private(priv):
    if not isinstance(priv, int) or not (1 <= priv < ec.N):
        raise ValueError("private key must be an integer in [1, n-1]")
    return priv


def generate_private():
    """A fresh private key: 32 bytes from os.urandom, rejected until in [1, n-1]."""
    while True:
        k = int.from_bytes(os.urandom(32), "big")
        if 1 <= k < ec.N:
            return k


def _random_unit():
    # a random element of [1, n-1] for multiplicative blinding (bias irrelevant here)
    return int.from_bytes(os.urandom(32), "big") % (ec.N - 1) + 1


def split_sig(sig):
    if len(sig) != SIG_LEN:
        raise ValueError("signature must be 64 bytes r||s")
    return int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")


def is_high_s(sig):
    return int.from_bytes(sig[32:64], "big") > HALF_N


def _join_sig(r, s):
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# ----------------------------------------------------------------------------- pure back end


def _pure_public_key(priv):
    return ec.encode_point(ec.mul_base(priv), compressed=False)


def _finish(priv, e, k, kinv, pt, low_s):
    """(r, s) from a nonce point, or None if r or s is 0 (next RFC 6979 candidate then)."""
    if pt is None:
        return None
    r = pt[0] % ec.N
    if r == 0:
        return None
    s = kinv * (e + r * priv) % ec.N
    if s == 0:
        return None
    if low_s and s > HALF_N:
        s = ec.N - s
    return _join_sig(r, s)


def _pure_sign_batch(priv, digests, low_s):
    n = ec.N
    gens = [rfc6979_nonces(priv, d) for d in digests]
    ks = [next(g) for g in gens]
    pts = ec.mul_base_many(ks)
    # k^-1 = beta * (k * beta)^-1 with a fresh random beta per nonce: the inversion never sees k
    betas = [_random_unit() for _ in ks]
    kinvs = ec._batch_inv([k * b % n for k, b in zip(ks, betas)], n)
    out = []
    for i in range(len(ks)):
        e = _bits2int(digests[i]) % n
        sig = _finish(priv, e, ks[i], kinvs[i] * betas[i] % n, pts[i], low_s)
        while sig is None:  # probability about 2^-255: the next candidate, one at a time
            k = next(gens[i])
            b = _random_unit()
            kinv = ec.inv_mod(k * b % n, n) * b % n
            sig = _finish(priv, e, k, kinv, ec.mul_base(k), low_s)
        out.append(sig)
    return out


def _pure_verify(pub, digest, sig):
    try:
        q = ec.decode_point(pub)
        r, s = split_sig(sig)
    except ValueError:
        return False
    if not (1 <= r < ec.N and 1 <= s < ec.N):
        return False
    w = ec.inv_mod(s, ec.N)
    e = _bits2int(digest) % ec.N
    return ec.verify_x(e * w % ec.N, r * w % ec.N, q, r)


def _pure_ecdh(priv, pub):
    q = ec.decode_point(pub)
    shared = ec.mul(priv, q)
    if shared is None:
        raise ValueError("ECDH result is the point at infinity")
    return shared[0].to_bytes(32, "big")


# ----------------------------------------------------------------------------- OpenSSL back end

_ossl = None
try:  # CPython with `cryptography`: same results, much faster.
    from cryptography.exceptions import InvalidSignature as _InvalidSignature
    from cryptography.hazmat.primitives import hashes as _hashes
    from cryptography.hazmat.primitives.asymmetric import ec as _cec
    from cryptography.hazmat.primitives.asymmetric import utils as _cutils

    _ossl = True
except ImportError:  # MicroPython, or CPython without cryptography
    _ossl = None

_backend = "openssl" if _ossl else "pure"


def backend():
    return _backend


def use_backend(name):
    """Select 'openssl' or 'pure' (tests run both and compare)."""
    global _backend
    if name == "openssl" and not _ossl:
        raise ValueError("the openssl back end needs the cryptography package")
    if name not in ("openssl", "pure"):
        raise ValueError("unknown back end: %s" % name)
    _backend = name


if _ossl:
    _CURVE = _cec.SECP256R1()

    # Parsed key objects, cached: a bank verifies the same few keys (its peers', its customers')
    # over and over, and parsing + validating a point costs more than the verification.
    _KEY_CACHE_MAX = 4096
    _pub_cache = {}
    _priv_cache = {}

    def _ossl_private(priv):
        # Signing keys are few (a bank's own key, a merchant's); deriving one costs a scalar
        # multiplication, so keep the parsed objects (in this process only, never written out).
        key = _priv_cache.get(priv)
        if key is None:
            key = _cec.derive_private_key(priv, _CURVE)
            if len(_priv_cache) >= 64:
                _priv_cache.clear()
            _priv_cache[priv] = key
        return key

    def _ossl_public(pub):
        key = _pub_cache.get(pub)
        if key is not None:
            return key
        if len(pub) == 65 or len(pub) == 33:
            ec.decode_point(pub)  # our own validation first: same error text on both back ends
            key = _cec.EllipticCurvePublicKey.from_encoded_point(_CURVE, bytes(pub))
            if len(_pub_cache) >= _KEY_CACHE_MAX:
                _pub_cache.clear()
            _pub_cache[bytes(pub)] = key
            return key
        raise ValueError("point encoding must be 33 (compressed) or 65 (uncompressed) bytes")

    def _ossl_public_key(priv):
        from cryptography.hazmat.primitives import serialization

        return (
            _ossl_private(priv)
            .public_key()
            .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        )

    def _ossl_sign(priv, msg, low_s):
        der = _ossl_private(priv).sign(
            bytes(msg), _cec.ECDSA(_hashes.SHA256(), deterministic_signing=True)
        )
        r, s = _cutils.decode_dss_signature(der)
        if low_s and s > HALF_N:
            s = ec.N - s
        return _join_sig(r, s)

    def _ossl_verify(pub, msg, sig):
        if len(sig) != SIG_LEN:
            return False
        r, s = split_sig(sig)
        if not (1 <= r < ec.N and 1 <= s < ec.N):
            return False
        try:
            key = _ossl_public(pub)
            key.verify(_cutils.encode_dss_signature(r, s), bytes(msg), _cec.ECDSA(_hashes.SHA256()))
            return True
        except (ValueError, _InvalidSignature):
            return False

    def _ossl_ecdh(priv, pub):
        key = _ossl_public(pub)
        return _ossl_private(priv).exchange(_cec.ECDH(), key)


# ----------------------------------------------------------------------------- public API


def public_key(priv, compressed=False):
    """SEC1 public key of `priv`: 65 bytes uncompressed (default) or 33 compressed."""
    check_private(priv)
    if _backend == "openssl":
        pub = _ossl_public_key(priv)
    else:
        pub = _pure_public_key(priv)
    if compressed:
        return ec.encode_point(ec.decode_point(pub), compressed=True)
    return pub


def sign(priv, msg, low_s=True):
    """ECDSA-SHA-256 over msg with an RFC 6979 nonce; 64-byte r||s (low-S unless low_s=False)."""
    check_private(priv)
    if _backend == "openssl":
        return _ossl_sign(priv, msg, low_s)
    return _pure_sign_batch(priv, [_sha256(msg)], low_s)[0]


def sign_batch(priv, msgs, low_s=True):
    """[sign(priv, m, low_s) for m in msgs], the same bytes, faster on the pure back end.

    The note signer signs every field of a note with one key: the nonce points share one field
    inversion and the nonces one (blinded) inversion mod n."""
    check_private(priv)
    msgs = list(msgs)
    if _backend == "openssl":
        return [_ossl_sign(priv, m, low_s) for m in msgs]
    if not msgs:
        return []
    return _pure_sign_batch(priv, [_sha256(m) for m in msgs], low_s)


def verify(pub, msg, sig):
    """True if sig is a valid signature of msg under pub; False for anything malformed."""
    try:
        pub = bytes(pub)
        sig = bytes(sig)
    except (TypeError, ValueError):
        return False
    if len(sig) != SIG_LEN or len(pub) not in (33, 65):
        return False
    if _backend == "openssl":
        return _ossl_verify(pub, msg, sig)
    return _pure_verify(pub, _sha256(msg), sig)


def verify_digest(pub, digest, sig):
    """verify() for a message given as its SHA-256 digest (pure back end on every interpreter).

    A token hashes each signed message while its decoder is loaded and checks the signatures
    after releasing it (firmware core.pay)."""
    try:
        pub = bytes(pub)
        sig = bytes(sig)
    except (TypeError, ValueError):
        return False
    if len(sig) != SIG_LEN or len(pub) not in (33, 65) or len(digest) != 32:
        return False
    return _pure_verify(pub, bytes(digest), sig)


def recover(msg, sig):
    """Public keys (65-byte SEC1) for which sig is valid over msg: 0, 1 or 2 candidates.

    ECDSA public-key recovery (SEC 1 v2 section 4.1.6), used so a note need not carry the
    payer's separating public key. Candidates come in the order y even, y odd.
    """
    r, s = split_sig(sig)
    if not (1 <= r < ec.N and 1 <= s < ec.N):
        return []
    e = _bits2int(_sha256(msg)) % ec.N
    rinv = ec.inv_mod(r, ec.N)
    out = []
    xs = (r, r + ec.N) if r + ec.N < ec.P else (r,)
    for x in xs:
        for odd in (0, 1):
            y = ec.y_from_x(x, odd)
            if y is None:
                continue
            q = ec.mul_add((-e * rinv) % ec.N, s * rinv % ec.N, (x, y))
            if q is not None:
                out.append(ec.encode_point(q, compressed=False))
    return out


def ecdh(priv, pub):
    """32-byte x coordinate of priv * pub. ValueError if pub is not a valid P-256 point.

    pub is SEC1: 65 bytes uncompressed or 33 bytes compressed (both accepted on both back ends;
    Wycheproof lists compressed keys as "acceptable", suite 1 accepts them deterministically)."""
    check_private(priv)
    if _backend == "openssl":
        return _ossl_ecdh(priv, bytes(pub))
    return _pure_ecdh(priv, bytes(pub))
