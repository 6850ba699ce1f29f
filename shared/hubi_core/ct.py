"""Constant-time helpers for secrets (PINs, MACs, key check values)."""


def equal(a, b):
    """True if a == b, in time that depends only on the lengths."""
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b):
        diff |= x ^ y
    return diff == 0
