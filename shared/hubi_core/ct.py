"""Helpers for secrets: constant-time comparison (PINs, MACs, key check values) and HMAC.

HMAC-SHA-256 lives here, not in ``suite``, so code that only needs a MAC (the token's records
and key derivation) does not load the elliptic-curve code: ``suite.hmac_sha256`` is this one.
"""

import hashlib


def equal(a, b):
    """True if a == b, in time that depends only on the lengths."""
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b):
        diff |= x ^ y
    return diff == 0


def hmac_sha256(key, msg):
    """HMAC-SHA-256 (RFC 2104); MicroPython has no hmac module."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    k = int.from_bytes(key, "big") << (8 * (64 - len(key)))  # right-padded with zeros
    inner = hashlib.sha256((k ^ _IPAD).to_bytes(64, "big"))
    inner.update(msg)
    outer = hashlib.sha256((k ^ _OPAD).to_bytes(64, "big"))
    outer.update(inner.digest())
    return outer.digest()


_IPAD = int.from_bytes(b"\x36" * 64, "big")
_OPAD = int.from_bytes(b"\x5c" * 64, "big")
