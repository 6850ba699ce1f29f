"""Key derivation for the keystore: PBKDF2-HMAC-SHA-256 (RFC 8018) and HKDF (RFC 5869).

MicroPython has hashlib.sha256 but no hmac module and no hash copy(), so PBKDF2 is written
here with the HMAC pads prepared once: one iteration is two SHA-256 objects (four compression
functions). The output equals CPython's hashlib.pbkdf2_hmac (tests/test_token_core.py).

Cost (bench/token.md): the default 10,000 iterations take 7-13 ms on the unix port of an
x86-64 host (an unlock, with its two counter writes), 32.5 million x86-64 instructions by
callgrind, projected at about 0.3 s on an ESP32 at 240 MHz (hashlib runs in C, the loop in the
interpreter). Boards can raise kdf_iterations: every 10,000 more add about 0.3 s per PIN entry. The device secret is mixed in after PBKDF2
(HKDF-Extract with the device secret as salt), so a copy of the keystore alone cannot be
brute-forced without the device secret; a full flash dump can (6-digit PIN: 10^6 x 10^4
SHA-256 pairs, minutes on a GPU). That is why ESP32 flash encryption matters (hardware/).
"""

import hashlib

from hubi_core.ct import hmac_sha256


def pbkdf2_sha256(password, salt, iterations, dklen=32):
    if iterations < 1:
        raise ValueError("PBKDF2 needs at least one iteration")
    key = bytes(password)
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    ipad = bytes([b ^ 0x36 for b in key])
    opad = bytes([b ^ 0x5C for b in key])
    out = b""
    block = 1
    sha = hashlib.sha256
    while len(out) < dklen:
        h = sha(ipad)
        h.update(bytes(salt) + block.to_bytes(4, "big"))
        o = sha(opad)
        o.update(h.digest())
        u = o.digest()
        acc = int.from_bytes(u, "big")
        for _ in range(iterations - 1):
            h = sha(ipad)
            h.update(u)
            o = sha(opad)
            o.update(h.digest())
            u = o.digest()
            acc ^= int.from_bytes(u, "big")
        out += acc.to_bytes(32, "big")
        block += 1
    return out[:dklen]


def hkdf_extract(salt, ikm):
    return hmac_sha256(salt, ikm)


def hkdf_expand(prk, info, length=32):
    out = b""
    t = b""
    i = 1
    while len(out) < length:
        t = hmac_sha256(prk, t + info + bytes([i]))
        out += t
        i += 1
    return out[:length]
