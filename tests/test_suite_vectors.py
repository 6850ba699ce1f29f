"""Suite 1 against outside vectors on CPython, both back ends (pure and OpenSSL).

RFC 6979 A.2.5 (+ the C2SP case that rejects a first nonce candidate), Wycheproof ECDSA P-256
P1363 (262 cases) and Wycheproof ECDH P-256 ecpoint (355 cases). The same vectors run under
MicroPython in test_suite_mpy.py.

ECDH "acceptable" cases: the one in this file is a compressed public key. Suite 1 accepts
33-byte compressed keys everywhere (DESIGN section 3 notes carry compressed keys), so the policy
is fixed, not "either": an acceptable case must succeed with the vector's shared secret.
"""

from __future__ import annotations

import hashlib
import json

from hubi_core import ec, suite
from tests.mpy import vectors_dir


def load(name: str) -> dict:
    return json.loads((vectors_dir() / name).read_text())


def rfc6979_cases() -> tuple[int, list[dict]]:
    data = load("rfc6979_p256_sha256.json")
    return int(data["private_key"], 16), data["cases"]


def ecdsa_cases() -> list[tuple[int, bytes, bytes, bytes, str]]:
    data = load("wycheproof_ecdsa_secp256r1_sha256_p1363_test.json")
    out = []
    for group in data["testGroups"]:
        pub = bytes.fromhex(group["publicKey"]["uncompressed"])
        for t in group["tests"]:
            out.append(
                (t["tcId"], pub, bytes.fromhex(t["msg"]), bytes.fromhex(t["sig"]), t["result"])
            )
    assert len(out) == data["numberOfTests"] == 262
    return out


def ecdh_cases() -> list[tuple[int, int, bytes, str, str]]:
    data = load("wycheproof_ecdh_secp256r1_ecpoint_test.json")
    out = []
    for group in data["testGroups"]:
        for t in group["tests"]:
            out.append(
                (
                    t["tcId"],
                    int(t["private"], 16),
                    bytes.fromhex(t["public"]),
                    t["shared"],
                    t["result"],
                )
            )
    assert len(out) == data["numberOfTests"] == 355
    return out


def test_vector_counts():
    results = [c[4] for c in ecdsa_cases()]
    assert (results.count("valid"), results.count("invalid"), len(results)) == (173, 89, 262)
    results = [c[4] for c in ecdh_cases()]
    assert (results.count("valid"), results.count("invalid"), results.count("acceptable")) == (
        330,
        24,
        1,
    )


def test_rfc6979_exact(backend):
    priv, cases = rfc6979_cases()
    assert len(cases) == 3
    data = load("rfc6979_p256_sha256.json")
    pub = b"\x04" + bytes.fromhex(data["public_key"]["x"]) + bytes.fromhex(data["public_key"]["y"])
    assert suite.public_key(priv) == pub
    for case in cases:
        msg = case["message"].encode()
        k = next(suite.rfc6979_nonces(priv, hashlib.sha256(msg).digest()))
        assert k == int(case["k"], 16), case["message"]
        sig = suite.sign(priv, msg, low_s=False)
        assert sig.hex() == (case["r"] + case["s"]).lower(), case["message"]
        r, s = int(case["r"], 16), int(case["s"], 16)
        low = suite.sign(priv, msg)
        assert suite.split_sig(low) == (r, min(s, ec.N - s))
        assert not suite.is_high_s(low)
        assert suite.verify(pub, msg, sig) and suite.verify(pub, msg, low)
    msgs = [c["message"].encode() for c in cases]
    assert suite.sign_batch(priv, msgs, low_s=False) == [
        bytes.fromhex(c["r"] + c["s"]) for c in cases
    ]


def test_wycheproof_ecdsa_p1363(backend):
    run = passed = 0
    failures = []
    for tc, pub, msg, sig, result in ecdsa_cases():
        run += 1
        got = suite.verify(pub, msg, sig)
        if got == (result == "valid"):
            passed += 1
        else:
            failures.append(tc)
    assert failures == []
    assert (run, passed) == (262, 262)


def test_wycheproof_ecdh_ecpoint(backend):
    run = passed = 0
    failures = []
    for tc, priv, pub, shared, result in ecdh_cases():
        run += 1
        try:
            got = suite.ecdh(priv, pub).hex()
        except ValueError:
            got = None
        ok = got is None if result == "invalid" else got == shared
        if ok:
            passed += 1
        else:
            failures.append(tc)
    assert failures == []
    assert (run, passed) == (355, 355)
