"""AES-256-GCM (NIST SP 800-38D): 32-byte key, 12-byte nonce, 16-byte tag appended.

``encrypt(key, nonce, plaintext, aad=b"") -> ciphertext || tag``
``decrypt(key, nonce, data, aad=b"") -> plaintext`` (``AuthError``, a ValueError, on a bad tag)

Back ends give identical bytes: 'openssl' (``cryptography``'s AESGCM, CPython) and 'pure'
(counter mode and GHASH in Python over an AES block function: ``cryptolib.aes`` in ECB mode on
MicroPython, ``cryptography``'s AES-ECB on CPython, where it serves to test the pure path). The
default follows ``suite.backend()``. The pure GHASH selects with masks rather than table lookups
and the tag is compared with ``ct.equal``; as everywhere in pure MicroPython, bigint timing and
unwiped memory remain (see ``ec``). Messages here are short (balances, provisioning).
"""

import sys

from hubi_core import ct, suite

_MPY = sys.implementation.name == "micropython"
if _MPY:
    import micropython
else:  # CPython: the decorator is a no-op

    class micropython:  # noqa: N801
        @staticmethod
        def native(f):
            return f


KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
_CHUNK = 256  # counter-mode blocks are made and encrypted this many bytes at a time
_R = 0xE1 << 120  # GCM reduction constant: x^128 = x^7 + x^2 + x + 1, bit-reflected


class AuthError(ValueError):
    """The GCM tag does not match: wrong key, nonce or AAD, or tampered data."""


def _check(key, nonce):
    if len(key) != KEY_LEN:
        raise ValueError("AES-256-GCM key must be 32 bytes, got %d" % len(key))
    if len(nonce) != NONCE_LEN:
        raise ValueError("AES-GCM nonce must be 12 bytes, got %d" % len(nonce))


def _block_encryptor(key):
    """An ECB encryption function (multiple of 16 bytes in, same length out)."""
    try:
        import cryptolib

        return cryptolib.aes(bytes(key), 1).encrypt  # mode 1 = ECB
    except ImportError:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        return Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor().update


@micropython.native
def _gmul(x, h):
    """x * h in GF(2^128), GCM bit order; one fixed sequence of steps per block."""
    r = _R
    z = 0
    v = h
    for byte in x.to_bytes(16, "big"):
        for i in range(7, -1, -1):
            z ^= v & -((byte >> i) & 1)
            v = (v >> 1) ^ (r & -(v & 1))
    return z


def _ghash(h, aad, ctext):
    y = 0
    for data in (aad, ctext):
        for off in range(0, len(data), 16):
            blk = data[off : off + 16]
            if len(blk) < 16:
                blk = bytes(blk) + bytes(16 - len(blk))
            y = _gmul(y ^ int.from_bytes(blk, "big"), h)
    lens = ((len(aad) * 8) << 64) | (len(ctext) * 8)
    return _gmul(y ^ lens, h)


def _ctr(enc, nonce, data):
    """Counter mode from block 2 (block 1 masks the tag), in chunks to bound memory."""
    out = bytearray(len(data))
    ctr = 2
    for off in range(0, len(data), _CHUNK):
        part = data[off : off + _CHUNK]
        nblk = (len(part) + 15) // 16
        blocks = bytearray(16 * nblk)
        for i in range(nblk):
            blocks[16 * i : 16 * i + 12] = nonce
            blocks[16 * i + 12 : 16 * i + 16] = ((ctr + i) & 0xFFFFFFFF).to_bytes(4, "big")
        ctr += nblk
        ks = enc(bytes(blocks))
        n = len(part)
        x = int.from_bytes(part, "big") ^ (int.from_bytes(ks, "big") >> (8 * (16 * nblk - n)))
        out[off : off + n] = x.to_bytes(n, "big")
    return bytes(out)


def _pure_tag(enc, nonce, aad, ctext):
    h = int.from_bytes(enc(bytes(16)), "big")
    mask = int.from_bytes(enc(bytes(nonce) + b"\x00\x00\x00\x01"), "big")
    return (_ghash(h, aad, ctext) ^ mask).to_bytes(16, "big")


def _use_openssl(backend):
    if backend is None:
        backend = suite.backend()
    if backend not in ("openssl", "pure"):
        raise ValueError("unknown back end: %s" % backend)
    return backend == "openssl"


def encrypt(key, nonce, plaintext, aad=b"", backend=None):
    """AES-256-GCM: ciphertext || 16-byte tag."""
    _check(key, nonce)
    plaintext = bytes(plaintext)
    aad = bytes(aad)
    if _use_openssl(backend):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(bytes(key)).encrypt(bytes(nonce), plaintext, aad)
    enc = _block_encryptor(key)
    ctext = _ctr(enc, nonce, plaintext)
    return ctext + _pure_tag(enc, nonce, aad, ctext)


def decrypt(key, nonce, data, aad=b"", backend=None):
    """Inverse of encrypt; AuthError if the tag does not match."""
    _check(key, nonce)
    data = bytes(data)
    aad = bytes(aad)
    if len(data) < TAG_LEN:
        raise AuthError("AES-GCM input is %d bytes, shorter than the 16-byte tag" % len(data))
    if _use_openssl(backend):
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            return AESGCM(bytes(key)).decrypt(bytes(nonce), data, aad)
        except InvalidTag:
            raise AuthError("AES-GCM authentication tag mismatch") from None
    enc = _block_encryptor(key)
    ctext = data[:-TAG_LEN]
    if not ct.equal(_pure_tag(enc, nonce, aad, ctext), data[-TAG_LEN:]):
        raise AuthError("AES-GCM authentication tag mismatch")
    return _ctr(enc, nonce, ctext)
