"""ECIES for suite 1 (DESIGN section 3): ephemeral P-256 ECDH, HKDF-SHA-256, AES-256-GCM.

Used for encrypted balances (key = rG, beta = ENC_bank(key)), the payer's new balance in a
BalanceNotice, and the provisioning message to a token.

    seal(pub, plaintext, info=b"") -> blob
    open_sealed(priv, blob, info=b"") -> plaintext

Blob layout (|| is concatenation, offsets in bytes):
    [0]        0x01                suite byte
    [1:34]     E                   ephemeral public key e*G, SEC1 compressed (33 bytes)
    [34:-16]   C                   AES-256-GCM ciphertext, as long as the plaintext (may be 0)
    [-16:]     T                   GCM tag
so a blob is at least 50 bytes.

Key schedule:
    Z     = x coordinate of e*R, 32 bytes big-endian       (R: recipient public key)
    salt  = b"hubi ecies v1"                               (13 ASCII bytes)
    PRK   = HMAC-SHA-256(salt, Z)                          (HKDF-Extract, RFC 5869)
    ctx   = 0x01 || E || Rc || info                        (Rc: R SEC1 compressed, 33 bytes;
                                                            info: the caller's context bytes)
    OKM   = HKDF-Expand(PRK, ctx, 44)
    key   = OKM[0:32], nonce = OKM[32:44]
    C||T  = AES-256-GCM(key, nonce, plaintext, aad = 0x01 || E)
A fresh ephemeral key per blob gives a fresh (key, nonce) pair, so the nonce need not travel.
E and Rc in ctx bind the blob to its ephemeral key and to its recipient (as HPKE does); info
lets callers separate uses (e.g. b"balance" || account id), and must match to open.

Errors are ValueError subclasses: BadSuite (byte 0), BadPoint (bytes 1..33, or the recipient
key given to seal), ShortBlob (fewer than 50 bytes), AuthFailed (tag mismatch: wrong key or
info, or tampered bytes). Back ends follow ``suite`` (OpenSSL on CPython, pure on MicroPython);
both produce and accept the same blobs.
"""

from hubi_core import aesgcm, ec, suite

SUITE_BYTE = 0x01
SALT = b"hubi ecies v1"
POINT_LEN = 33
HEADER_LEN = 1 + POINT_LEN
OVERHEAD = HEADER_LEN + aesgcm.TAG_LEN  # 50
_OKM_LEN = aesgcm.KEY_LEN + aesgcm.NONCE_LEN


class EciesError(ValueError):
    """Base class of ECIES failures."""


class BadSuite(EciesError):
    pass


class BadPoint(EciesError):
    pass


class ShortBlob(EciesError):
    pass


class AuthFailed(EciesError):
    pass


def hkdf_extract(salt, ikm):
    """HKDF-Extract with SHA-256 (RFC 5869 section 2.2)."""
    return suite.hmac_sha256(salt, ikm)


def hkdf_expand(prk, info, length):
    """HKDF-Expand with SHA-256 (RFC 5869 section 2.3)."""
    if length > 255 * 32:
        raise ValueError("HKDF-SHA-256 output is at most 8160 bytes")
    out = b""
    t = b""
    i = 1
    while len(out) < length:
        t = suite.hmac_sha256(prk, t + info + bytes([i]))
        out += t
        i += 1
    return out[:length]


def hkdf(ikm, salt, info, length):
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def _key_nonce(z, header, recipient, info):
    okm = hkdf(z, SALT, header + recipient + bytes(info), _OKM_LEN)
    return okm[: aesgcm.KEY_LEN], okm[aesgcm.KEY_LEN :]


def seal(pub, plaintext, info=b""):
    """Encrypt plaintext to the P-256 public key pub (33 or 65 SEC1 bytes); returns the blob."""
    try:
        recipient = ec.encode_point(ec.decode_point(pub), compressed=True)
    except (ValueError, TypeError) as exc:
        raise BadPoint("ecies: recipient public key: %s" % exc) from None
    eph = suite.generate_private()
    header = bytes([SUITE_BYTE]) + suite.public_key(eph, compressed=True)
    z = suite.ecdh(eph, recipient)
    key, nonce = _key_nonce(z, header, recipient, info)
    return header + aesgcm.encrypt(key, nonce, plaintext, header)


def open_sealed(priv, blob, info=b""):
    """Decrypt a blob made by seal() for the public key of priv (an int in [1, n-1])."""
    suite.check_private(priv)
    blob = bytes(blob)
    if len(blob) < OVERHEAD:
        raise ShortBlob("ecies: blob is %d bytes, at least %d needed" % (len(blob), OVERHEAD))
    if blob[0] != SUITE_BYTE:
        raise BadSuite("ecies: byte 0 is suite 0x%02x, expected 0x01" % blob[0])
    header = blob[:HEADER_LEN]
    if header[1] not in (2, 3):
        raise BadPoint("ecies: bytes 1..33: ephemeral key must be SEC1 compressed")
    try:
        z = suite.ecdh(priv, header[1:])
    except ValueError as exc:
        raise BadPoint("ecies: bytes 1..33: ephemeral key: %s" % exc) from None
    recipient = suite.public_key(priv, compressed=True)
    key, nonce = _key_nonce(z, header, recipient, info)
    try:
        return aesgcm.decrypt(key, nonce, blob[HEADER_LEN:], header)
    except aesgcm.AuthError:
        raise AuthFailed(
            "ecies: authentication tag mismatch (wrong key or info, or tampered blob)"
        ) from None
