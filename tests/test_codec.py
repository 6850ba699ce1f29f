"""Codec: canonical round trips, strict decoding, and field binding (issue: shared core)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubi_core import codec, ec, errors, lsum, suite, verify
from hubi_core.wire import varint
from tests.world import T0, World, make_world

PAYER = "BKA-000000000042"  # 16-character account ids, as in a typical note
PAYEE = "BKB-000000000007"


@pytest.fixture(scope="module")
def world() -> World:
    w = make_world()
    w.open_account(PAYER)
    w.open_account(PAYEE)
    w.open_account("BKA-000000000099")
    return w


def all_objects(w: World) -> list[codec.Obj]:
    """One signed object of every kind."""
    bka = w.banks["BKA"].private
    note = w.note(PAYER, PAYEE, 1250)
    nid = lsum.note_id(PAYER, 1)
    objs = [w.accounts[PAYER].template, w.request(PAYEE, 1250), note]
    objs.append(
        codec.sign(
            codec.Obj(
                codec.SETTLEMENT,
                "BKB",
                7,
                T0,
                {
                    "amount": 1250,
                    "payee": PAYEE,
                    "payer": PAYER,
                    "note_id": nid,
                    "status": codec.STATUS_VERIFIED,
                },
            ),
            w.banks["BKB"].private,
        )
    )
    objs.append(
        codec.sign(
            codec.Obj(
                codec.BALANCE,
                "BKA",
                8,
                T0,
                {
                    "amount": 1250,
                    "payee": PAYEE,
                    "payer": PAYER,
                    "note_id": nid,
                    "balance": b"\x01" * 70,
                },
            ),
            bka,
        )
    )
    objs.append(
        codec.sign(
            codec.Obj(
                codec.RECEIPT,
                PAYEE,
                3,
                T0,
                {
                    "template": w.accounts[PAYEE].template,
                    "amount": 1250,
                    "purpose": "coffee+cake!",
                    "payer": PAYER,
                    "note_id": nid,
                },
            ),
            w.accounts[PAYEE].private,
        )
    )
    objs.append(
        codec.sign(
            codec.Obj(
                codec.ALLOWANCE,
                "BKA",
                9,
                T0,
                {"amount": 50_000, "account": PAYER, "expiry": T0 + 86400, "first_serial": 1},
            ),
            bka,
        )
    )
    objs.append(
        codec.sign(
            codec.Obj(
                codec.REFUSAL,
                "BKA",
                10,
                T0,
                {
                    "payee": PAYEE,
                    "payer": PAYER,
                    "note_id": nid,
                    "reason_code": codec.REASON_INSUFFICIENT_FUNDS,
                    "reason": "insufficient funds",
                },
            ),
            bka,
        )
    )
    objs.append(
        codec.sign(
            codec.Obj(
                codec.ENDORSEMENT,
                "BKB",
                11,
                T0,
                {
                    "note_id": nid,
                    "note_digest": b"\x22" * 32,
                    "verdict": codec.VERDICT_ENDORSE,
                    "seal": b"",
                },
            ),
            w.banks["BKB"].private,
        )
    )
    objs.append(
        codec.sign(
            codec.Obj(
                codec.CHECKPOINT,
                "BKA",
                12,
                T0,
                {"tree_size": 1000, "root": b"\x33" * 32, "seal": b""},
            ),
            bka,
        )
    )
    return objs


def test_every_kind_round_trips_and_verifies(world: World) -> None:
    objs = all_objects(world)
    assert {o.kind for o in objs} == set(codec.SCHEMAS)
    for obj in objs:
        data = codec.encode(obj)
        back = codec.decode(data)
        assert codec.encode(back) == data, obj
        assert back.values.keys() == obj.values.keys() - {"key"} or obj.kind == codec.TEMPLATE
        report = verify.verify_object(back, world.trust)
        assert report.ok, (obj, report.as_dict())


def test_typical_note_fits_420_bytes(world: World) -> None:
    note = world.note(PAYER, PAYEE, 123_456, serial=70_000, purpose="coffee+cake!")
    assert len(PAYER) == len(PAYEE) == 16 and len(b"coffee+cake!") == 12
    data = codec.encode(note)
    assert len(data) <= 420, len(data)
    # four payer signatures on the wire: amount, purpose, payee, lsum
    assert sorted(note.sigs) == ["amount", "lsum", "payee", "purpose"]


def test_note_verification_names_the_field(world: World) -> None:
    data = codec.encode(world.note(PAYER, PAYEE, 1250))
    assert verify.verify_note(data, world.trust, None).ok
    for name, value in (("amount", 9999), ("purpose", "tea"), ("payee", "BKA-000000000099")):
        tampered = codec.decode(data)
        tampered.values[name] = value
        report = verify.verify_note(tampered, world.trust, None)
        # the changed field and the linear sum over it fail; nothing else
        assert set(report.failed) == {name, "lsum"}, report.as_dict()
    # a serial change breaks every signature (the header is under all of them)
    tampered = codec.decode(data)
    tampered.serial += 1
    assert not verify.verify_note(tampered, world.trust, None).ok


def test_field_cut_and_paste_between_notes_is_rejected(world: World) -> None:
    a = world.note(PAYER, PAYEE, 1250, serial=1)
    b = world.note(PAYER, PAYEE, 999_999, serial=2)
    # paste b's amount (value and its genuine payer signature) into a
    forged = codec.decode(codec.encode(a))
    forged.values["amount"] = b["amount"]
    forged.sigs["amount"] = b.sigs["amount"]
    forged_bytes = codec.encode(forged)  # well-formed bytes...
    report = verify.verify_note(forged_bytes, world.trust, None)
    assert not report.ok  # ...but the signature is bound to note b's header
    assert "amount" in report.failed


def test_an_altered_template_stub_fails_after_its_twin_verified(world: World) -> None:
    """The payer key recovered for a note is kept, keyed by the bank's seal and the payer. A
    stub with another currency or bank under the same seal then took that key unchecked: the
    altered note verified once the genuine one had, with the same trust (a bank, an auditor
    and a merchant each keep one for their whole run). It is now checked against the very
    message the seal verified over."""
    data = codec.encode(world.note(PAYER, PAYEE, 1250, serial=3))
    assert verify.verify_note(data, world.trust, None).ok
    for field, value in (("currency", "USD"), ("bank", "BKC")):
        altered = codec.decode(data)
        stub = altered["template"]
        if field == "bank":
            stub.signer = value
        else:
            stub.values[field] = value
        report = verify.verify_note(codec.encode(altered), world.trust, None)
        assert not report.ok and report.failed[0] == "template", (field, report.as_dict())
    assert verify.verify_note(data, world.trust, None).ok  # the genuine one still does


def test_note_signed_by_another_key_fails_template(world: World) -> None:
    note = codec.make_note(world.accounts[PAYER].template, 5, T0, 10, PAYEE)
    codec.sign(note, world.accounts["BKA-000000000099"].private)  # wrong payer key
    report = verify.verify_note(codec.encode(note), world.trust, None)
    assert report.failed[0] == "template"
    assert not report.ok


def test_separating_key_swapped_template_fails(world: World) -> None:
    # a template whose key was replaced by another account's separating key
    tpl = codec.decode(codec.encode(world.accounts[PAYER].template))
    tpl.values["key"] = world.accounts["BKA-000000000099"].template["key"]
    report = verify.verify_object(tpl, world.trust)
    assert report.failed == ["seal"]


def test_every_truncation_is_reported(world: World) -> None:
    data = codec.encode(world.note(PAYER, PAYEE, 1250))
    for cut in range(len(data)):
        with pytest.raises(errors.CodecError) as exc:
            codec.decode(data[:cut])
        assert exc.type in (errors.Truncated, errors.MissingField), (cut, exc.value)
        assert str(exc.value)


def test_strict_decoding_errors(world: World) -> None:
    data = codec.encode(world.note(PAYER, PAYEE, 1250))
    cases = {
        errors.TrailingBytes: None,
        errors.UnknownSuite: bytes([2]) + data[1:],
        errors.UnknownVersion: data[:2] + bytes([9]) + data[3:],
        errors.UnknownKind: data[:1] + bytes([77]) + data[2:],
    }
    for err, bad in cases.items():
        if bad is None:
            continue
        with pytest.raises(err):
            codec.decode(bad)
    with pytest.raises(errors.UnknownTag, match="unknown tag 0x7f"):
        codec.decode(data + bytes([0x7F, 0]))
    # trailing garbage after the last field is an unknown or misordered field: never accepted
    with pytest.raises(errors.CodecError):
        codec.decode(data + b"\x00")
    with pytest.raises(errors.Oversize):
        codec.decode(b"\x01" * 5000)


@pytest.mark.parametrize(
    "char, words",
    [
        ("\x1b", "control character (U+001B)"),  # ESC: starts a terminal escape sequence
        ("\x7f", "control character (U+007F)"),
        ("\x9b", "control character (U+009B)"),  # C1 CSI, which some terminals act on
        ("\u202e", "bidirectional control (U+202E)"),  # RLO: shows the text reversed
        ("\u2066", "bidirectional control (U+2066)"),
        ("\u200f", "bidirectional control (U+200F)"),
    ],
)
def test_text_refuses_control_and_bidirectional_characters(
    world: World, char: str, words: str
) -> None:
    """A purpose is shown on the token, the merchant's terminal and statements: nothing in it
    may act on a terminal or reorder what is shown. Refused when signing and when decoding."""
    with pytest.raises(errors.BadValue, match=rf"purpose contains a {re.escape(words)}"):
        world.note(PAYER, PAYEE, 5, purpose=f"tea{char}")
    good = codec.encode(world.note(PAYER, PAYEE, 5, purpose="tea" + "x" * len(char.encode())))
    bad = good.replace(b"tea" + b"x" * len(char.encode()), b"tea" + char.encode(), 1)
    assert bad != good and len(bad) == len(good)
    with pytest.raises(errors.BadValue, match=re.escape(words)):
        codec.decode(bad)
    # letters of any script, and emoji, stay welcome
    assert codec.decode(codec.encode(world.note(PAYER, PAYEE, 5, purpose="café ☕ 咖啡 قهوة")))


def _fields(data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Split a note into (prefix+header, [(tag, whole field bytes)]) using the schema."""
    obj = codec.decode(data)
    head = len(obj.prefix()) + len(obj.header_bytes())
    out = []
    pos = head
    specs = {f[0]: f for f in codec.SCHEMAS[obj.kind][1]}
    from hubi_core.wire import Reader

    while pos < len(data):
        r = Reader(data, start=pos)
        tag = r.u8("tag")
        length = r.varint("len")
        r.take(length, "value")
        if specs[tag][4] in (codec.SIGNED, codec.COMPUTED):
            r.take(64, "sig")
        out.append((tag, data[pos : r.pos]))
        pos = r.pos
    return data[:head], out


def test_duplicate_and_out_of_order_tags(world: World) -> None:
    head, fields = _fields(codec.encode(world.note(PAYER, PAYEE, 1250)))
    dup = (
        head
        + b"".join(f for _, f in fields[:2])
        + fields[1][1]
        + b"".join(f for _, f in fields[2:])
    )
    with pytest.raises(errors.DuplicateTag, match="amount appears twice"):
        codec.decode(dup)
    swapped = head + fields[0][1] + fields[2][1] + fields[1][1] + b"".join(f for _, f in fields[3:])
    with pytest.raises(errors.TagOrder, match="out of order"):
        codec.decode(swapped)
    missing = head + b"".join(f for t, f in fields if t != codec.T_PAYEE)
    with pytest.raises(errors.MissingField, match="payee"):
        codec.decode(missing)


def test_oversize_length_field(world: World) -> None:
    head, fields = _fields(codec.encode(world.note(PAYER, PAYEE, 1250)))
    huge = head + fields[0][1] + bytes([codec.T_AMOUNT]) + varint(1 << 40)
    with pytest.raises(errors.Oversize, match="amount length"):
        codec.decode(huge)
    long_purpose = bytes([codec.T_PURPOSE]) + varint(65) + b"x" * 65 + b"\x01" * 64
    with pytest.raises(errors.Oversize, match="purpose"):
        codec.decode(
            head + fields[0][1] + fields[1][1] + long_purpose + b"".join(f for _, f in fields[3:])
        )


def test_off_curve_point_is_rejected(world: World) -> None:
    tpl = world.accounts[PAYER].template
    data = codec.encode(tpl)
    key = tpl["key"]
    i = data.index(key)
    # walk x until it is not on the curve
    for delta in range(1, 50):
        bad_key = bytes([key[0]]) + ((int.from_bytes(key[1:], "big") + delta) % ec.P).to_bytes(
            32, "big"
        )
        try:
            ec.decode_point(bad_key)
        except ValueError:
            break
    with pytest.raises(errors.BadPoint, match="key"):
        codec.decode(data[:i] + bad_key + data[i + 33 :])


def test_high_s_signature_is_rejected(world: World) -> None:
    note = world.note(PAYER, PAYEE, 1250)
    data = codec.encode(note)
    sig = note.sigs["amount"]
    s = int.from_bytes(sig[32:], "big")
    high = sig[:32] + (ec.N - s).to_bytes(32, "big")
    # the raw verifier accepts high S (Wycheproof expects it); the note codec does not
    payer_key = verify.recover_payer_key(codec.decode(data), world.trust)
    assert suite.verify(payer_key, codec.field_message(note, "amount"), high)
    with pytest.raises(errors.HighS, match="amount"):
        codec.decode(data.replace(sig, high))


def test_varint_must_be_minimal() -> None:
    from hubi_core.wire import Reader

    with pytest.raises(errors.BadValue, match="not minimal"):
        Reader(b"\x80\x00").varint("n")
    assert Reader(varint(2**64 - 1)).varint("n") == 2**64 - 1
    with pytest.raises(errors.BadValue):
        Reader(b"\xff" * 9 + b"\x02").varint("n")


_CORPUS: dict[int, list[bytes]] = {}


def fuzz_corpus(world: World) -> list[bytes]:
    if id(world) not in _CORPUS:
        _CORPUS[id(world)] = [codec.encode(o) for o in all_objects(world)]
    return _CORPUS[id(world)]


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_only_codec_errors(data: bytes) -> None:
    try:
        codec.decode(data)
    except errors.CodecError:
        pass


@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_fuzz_mutated_objects_only_codec_errors(world: World, data: st.DataObject) -> None:
    objs = fuzz_corpus(world)
    raw = bytearray(data.draw(st.sampled_from(objs)))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and raw:
            del raw[pos : pos + data.draw(st.integers(1, 8))]
        else:
            raw = raw[:pos]
    try:
        obj = codec.decode(bytes(raw))
    except errors.CodecError:
        return
    # whatever decodes must re-encode canonically and verify without crashing
    assert codec.encode(obj) == bytes(raw)
    verify.verify_object(obj, world.trust)


def test_lsum_is_linear() -> None:
    args = ("BKA-000000000042", 7, 1250, "coffee", "BKB-000000000007")
    total = lsum.lsum(*args)
    missing_purpose = (
        total
        - lsum.account_digest(args[0])
        - lsum.serial_digest(7)
        - lsum.amount_digest(1250)
        - lsum.counterparty_digest(args[4])
    ) & lsum.MASK
    assert missing_purpose == lsum.purpose_digest("coffee")
