"""Records and books without a database: bytes, chains, signatures, sealed balances."""

from __future__ import annotations

import dataclasses

import pytest

from hubi.bank import records as rec
from hubi_core import codec, ecies, lsum, suite
from tests.world import make_world

W = make_world()
ALICE = W.open_account("BKA-alice")
BOB = W.open_account("BKA-bob")
KEYS = rec.BookKeys("BKA", W.banks["BKA"].private)


def _note(serial: int, amount: int = 250, purpose: str = "tea") -> bytes:
    return codec.encode(W.note("BKA-alice", "BKA-bob", amount, serial=serial, purpose=purpose))


def _chain(count: int) -> tuple[rec.Head, list[tuple[rec.Record, bytes, bytes]]]:
    head = rec.Head("BKA-alice")
    out = []
    bal = 10_000
    for i in range(1, count + 1):
        raw = _note(i, 100 + i)
        note = codec.decode(raw)
        r, body, hc = rec.append(
            KEYS,
            head,
            kind=rec.DEBIT,
            time=1_760_000_000 + i,
            delta=-note["amount"],
            lsum=lsum.of_note(note),
            evidence=raw,
            balance=bal,
        )
        bal -= note["amount"]
        st, sig = rec.sign_heads(KEYS, r.time, [(r.book, r.n, hc)])
        head = rec.next_head(r, hc, st, sig)
        out.append((r, body, hc))
    return head, out


def test_body_round_trip_and_fixed_offsets() -> None:
    head, chain = _chain(3)
    for r, body, _ in chain:
        assert rec.Record.parse(body) == r
        assert rec.body_n(body) == r.n
        assert body[22:38] == r.lsum and body[38:54] == r.ecode
        assert body[54:118] == r.sig8 and body[118:182] == r.sig9
    assert head.n == 3


def test_chain_equations() -> None:
    head, chain = _chain(5)
    ecode, h = rec.ZERO16, rec.ZERO32
    for r, body, hc in chain:
        ecode = rec.xor16(ecode, r.lsum)
        assert r.ecode == ecode
        h = rec.chain_hash(h, r.n, body)
        assert hc == h
    assert head.hchain == h and head.ecode == ecode
    # the XOR chain gives a lost record's lsum back
    assert rec.xor16(chain[1][0].ecode, chain[3][0].ecode) == rec.xor16(
        chain[2][0].lsum, chain[3][0].lsum
    )


def test_signatures_are_suite_bytes_and_verify() -> None:
    _, chain = _chain(2)
    r = chain[1][0]
    msg = rec.sig8_message("BKA", r.book, r.n, r.ecode)
    assert r.sig8 == suite.sign(W.banks["BKA"].private, msg)  # RFC 6979 low-S: the same bytes
    assert suite.verify(KEYS.public_key, rec.sig9_message("BKA", r.book, r.n, r.coded_bal), r.sig9)
    v = rec.BookVerifier("BKA", W.trust.bank_key("BKA"))
    assert v.check_record(r) == []
    assert v.check_record(dataclasses.replace(r, n=7)) == ["sig8", "sig9"]  # n is signed
    assert v.check_record(dataclasses.replace(r, ecode=bytes(16))) == ["sig8"]
    # high S is refused although the raw verifier accepts it (one encoding per record)
    s = int.from_bytes(r.sig8[32:], "big")
    high = r.sig8[:32] + (suite.ec.N - s).to_bytes(32, "big")
    assert suite.verify(KEYS.public_key, rec.sig8_message("BKA", r.book, r.n, r.ecode), high)
    assert v.check_record(dataclasses.replace(r, sig8=high)) == ["sig8"]
    assert "secret" in repr(KEYS) and str(W.banks["BKA"].private) not in repr(KEYS)


def test_sealed_balances_open_with_ecies() -> None:
    _, chain = _chain(3)
    bal = 10_000
    for r, _, _ in chain:
        bal += r.delta
        info = rec.balance_info(r.book, r.n, r.kind, r.lsum)
        assert ecies.open_sealed(W.banks["BKA"].private, r.coded_bal, info) == bal.to_bytes(
            8, "big", signed=True
        )
        assert KEYS.open_balance(info, r.coded_bal) == bal
        with pytest.raises(ecies.AuthFailed):  # bound to its record: moved elsewhere it fails
            KEYS.open_balance(rec.balance_info(r.book, r.n + 1, r.kind, r.lsum), r.coded_bal)
    other = rec.BookKeys("BKB", W.banks["BKB"].private)
    with pytest.raises(ecies.AuthFailed):
        other.open_balance(rec.balance_info(r.book, r.n, r.kind, r.lsum), r.coded_bal)
    negative = KEYS.seal_balance(b"x", -123_456)
    assert KEYS.open_balance(b"x", negative) == -123_456
    # fresh-ephemeral sealing to any key, also in the ecies format
    priv = ALICE.private
    blob = rec.seal_to(suite.public_key(priv), b"12345678", b"hubi/balance/1\x00BKA-alice")
    assert ecies.open_sealed(priv, blob, b"hubi/balance/1\x00BKA-alice") == b"12345678"
    assert rec.seal_to(suite.public_key(priv), b"12345678")[1:34] != blob[1:34]


def test_sealing_context_rotates() -> None:
    keys = rec.BookKeys("BKA", W.banks["BKA"].private)
    first = keys.seal_balance(b"a", 1)[:34]
    for _ in range(rec.SEAL_ROTATE - 1):
        keys.seal_balance(b"a", 1)
    assert keys.seal_balance(b"b", 2)[:34] != first


def test_parse_errors_name_what_is_wrong() -> None:
    _, chain = _chain(1)
    body = chain[0][1]
    with pytest.raises(rec.RecordFormatError, match="shorter"):
        rec.Record.parse(body[:100])
    with pytest.raises(rec.RecordFormatError, match="version"):
        rec.Record.parse(b"\x09" + body[1:])
    with pytest.raises(rec.RecordFormatError, match="trailing"):
        rec.Record.parse(body + b"\x00")
    with pytest.raises(rec.RecordFormatError, match="evidence truncated"):
        rec.Record.parse(body[:-1])


def test_head_statement() -> None:
    st = rec.head_message("BKA", 5, [("BKA-alice", 3, b"\x01" * 32), ("BKA-bob", 9, b"\x02" * 32)])
    keeper, t, entries = rec.parse_head(st)
    assert (keeper, t) == ("BKA", 5)
    assert entries == [("BKA-alice", 3, b"\x01" * 32), ("BKA-bob", 9, b"\x02" * 32)]
    with pytest.raises(rec.RecordFormatError):
        rec.parse_head(st[:-1])
    with pytest.raises(rec.RecordFormatError):
        rec.parse_head(b"nope" + st)


def test_append_refuses_bad_input() -> None:
    with pytest.raises(rec.ChainError, match="kind"):
        rec.append(
            KEYS,
            rec.Head("BKA-alice"),
            kind=99,
            time=0,
            delta=1,
            lsum=bytes(16),
            evidence=b"",
            balance=0,
        )
    with pytest.raises(rec.ChainError, match="lsum"):
        rec.append(
            KEYS,
            rec.Head("BKA-alice"),
            kind=rec.DEBIT,
            time=0,
            delta=1,
            lsum=b"",
            evidence=b"",
            balance=0,
        )
    with pytest.raises(rec.ChainError, match="64-bit"):
        rec.append(
            KEYS,
            rec.Head("BKA-alice"),
            kind=rec.CREDIT,
            time=0,
            delta=1,
            lsum=bytes(16),
            evidence=b"",
            balance=(1 << 63) - 1,
        )


def test_sign_many_is_sign_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch signer (libcrypto k*G, RFC 6979 nonces in Python, one blinded inversion) gives
    exactly suite.sign's bytes, for batches of every size and with the plain path forced."""
    import os

    msgs = [os.urandom(i % 97) for i in range(70)]
    want = [suite.sign(KEYS._priv, m) for m in msgs]
    assert rec._basemul() is not None  # CPython with a system libcrypto: the fast path runs
    for size in (1, 2, 3, 4, 17, 70):
        assert KEYS.sign_many(msgs[:size]) == want[:size]
    assert all(KEYS.verify(m, s) for m, s in zip(msgs, KEYS.sign_many(msgs)))
    other = rec.BookKeys("BKB", W.banks["BKB"].private)
    assert other.sign_many(msgs[:5]) == [suite.sign(W.banks["BKB"].private, m) for m in msgs[:5]]
    monkeypatch.setattr(rec, "_BASEMUL_STATE", [None])
    assert KEYS.sign_many(msgs[:9]) == want[:9]


def test_rfc6979_first_nonce_matches_suite() -> None:
    import hashlib

    for i in range(20):
        digest = hashlib.sha256(b"m%d" % i).digest()
        assert KEYS._rfc6979.first(digest) == next(suite.rfc6979_nonces(KEYS._priv, digest))
    # a digest above the group order is reduced first (bits2octets)
    high = (suite.ec.N + 5).to_bytes(32, "big")
    assert KEYS._rfc6979.first(high) == next(suite.rfc6979_nonces(KEYS._priv, high))


def test_heads_statement_covers_every_book_with_one_signature() -> None:
    heads = [(f"BKA-{i:06d}", i + 1, bytes([i]) * 32) for i in range(37)]
    signed = rec.sign_heads_many(KEYS, 1_760_000_000, heads)
    assert len({sig for _, sig in signed}) == 1  # one signature for all
    root_msgs = {rec.head_signed(st) for st, _ in signed}
    assert len(root_msgs) == 1
    for (book, n, hc), (st, sig) in zip(heads, signed):
        assert rec.parse_head(st) == ("BKA", 1_760_000_000, [(book, n, hc)])
        assert KEYS.verify_head(st, sig)
    st, sig = signed[5]
    # another book's leaf, a changed path, a changed index: not under the signed root
    tail = len(rec.head_signed(st))
    leaf = 1 + len(heads[5][0]) + 8 + 32
    other_leaf = signed[6][0][tail : tail + leaf]
    with pytest.raises(rec.RecordFormatError, match="signed root"):  # book 6's head, 5's path
        rec.parse_head(st[:tail] + other_leaf + st[tail + leaf :])
    moved = bytearray(st)  # book 5's path claimed for another index
    moved[tail + leaf + 3] ^= 1
    with pytest.raises(rec.RecordFormatError, match="signed root"):
        rec.parse_head(bytes(moved))
    bad = bytearray(st)
    bad[-1] ^= 1
    with pytest.raises(rec.RecordFormatError, match="signed root"):
        rec.parse_head(bytes(bad))
    with pytest.raises(rec.RecordFormatError):
        rec.parse_head(st[:-1])
    # a changed root or time breaks the signature, not the parse
    forged = bytearray(st)
    forged[tail - 33] ^= 1
    assert not KEYS.verify_head(bytes(forged), sig)
    assert not KEYS.verify_head(b"nope", sig)
    # the one-book statement still parses and verifies as before
    st1, sig1 = rec.sign_heads(KEYS, 5, [("BKA-alice", 3, b"\x01" * 32)])
    assert rec.head_signed(st1) == st1 and KEYS.verify_head(st1, sig1)
    assert rec.parse_head(signed[0][0])[2] == [heads[0]]
    single = rec.sign_heads_many(KEYS, 7, [("BKA-alice", 3, b"\x01" * 32)])
    assert rec.parse_head(single[0][0])[2] == [("BKA-alice", 3, b"\x01" * 32)]


def test_balance_key_schedule_is_ecies() -> None:
    """The cached-PRK sealing is HKDF exactly as hubi_core.ecies: ecies opens what it seals."""
    for i in range(5):
        info = rec.balance_info("BKA-alice", i + 1, rec.DEBIT, bytes([i]) * 16)
        blob = KEYS.seal_balance(info, 1000 * i - 7)
        assert ecies.open_sealed(W.banks["BKA"].private, blob, info) == (1000 * i - 7).to_bytes(
            8, "big", signed=True
        )
        assert KEYS.open_balance(info, blob) == 1000 * i - 7
