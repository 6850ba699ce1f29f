"""Differential decoding: the token (MicroPython) and the host (CPython) give every input the
same verdict, the same object or the same error words, and never another exception.

Every object kind is encoded, then mutated (bit flips, truncation at every byte, extension,
length fields changed, versions changed, fields duplicated or dropped, other bytes in an
account id); all of it goes through one MicroPython process. The consortium file gets the
same treatment: MicroPython's json module took what CPython's refuses (a missing comma, a
trailing comma, a raw control character in a string) and ran out of memory on deep nesting.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from hubi_core import codec, ec, ids, tokenmsg
from hubi_core.consortium import Consortium
from hubi_core.errors import CodecError, HubiError
from hubi_core.wire import varint
from tests.mpy import run_mpy, vectors_dir
from tests.world import T0, make_world

pytestmark = pytest.mark.micropython

PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
DIGEST = bytes(range(32))

# Runs under MicroPython and CPython alike: decode every case, say the verdict.
VERDICTS = r"""
import json, sys
from hubi_core import codec
from hubi_core.consortium import Consortium
from hubi_core.errors import HubiError


def one(kind, raw):
    try:
        if kind == "object":
            return ["ok", codec.encode(codec.decode(raw)).hex()]
        return ["ok", Consortium.from_json(raw.decode()).to_json()]
    except HubiError as e:
        return ["refused", str(e)]
    except Exception as e:
        return ["CRASH", type(e).__name__ + ": " + str(e)]


with open(sys.argv[1]) as f:
    cases = json.load(f)
print(json.dumps([one(kind, bytes.fromhex(h)) for kind, h in cases]))
"""


def objects() -> list[codec.Obj]:
    """One object of every kind, signed."""
    w = make_world()
    payer = w.open_account(PAYER)
    payee = w.open_account(PAYEE)
    bank = w.banks["BKA"].private

    def signed(kind: int, signer: str, values: dict, priv: int) -> codec.Obj:
        return codec.sign(codec.Obj(kind, signer, 5, T0, values), priv)

    out = [
        payer.template,
        w.note(PAYER, PAYEE, 1250),
        w.request(PAYEE, 1250),
        signed(
            codec.SETTLEMENT,
            "BKA",
            {"amount": 5, "payee": PAYEE, "payer": PAYER, "note_id": DIGEST, "status": 1},
            bank,
        ),
        signed(
            codec.BALANCE,
            "BKA",
            {"amount": 5, "payee": PAYEE, "payer": PAYER, "note_id": DIGEST, "balance": b"\1" * 40},
            bank,
        ),
        signed(
            codec.RECEIPT,
            PAYEE,
            {
                "template": payee.template,
                "amount": 5,
                "purpose": "tea",
                "payer": PAYER,
                "note_id": DIGEST,
            },
            payee.private,
        ),
        signed(
            codec.ALLOWANCE,
            "BKA",
            {"amount": 5, "account": PAYER, "expiry": T0, "first_serial": 3},
            bank,
        ),
        signed(
            codec.REFUSAL,
            "BKA",
            {"payee": PAYEE, "payer": PAYER, "note_id": DIGEST, "reason_code": 2, "reason": "x"},
            bank,
        ),
        signed(
            codec.ENDORSEMENT,
            "BKA",
            {
                "note_id": DIGEST,
                "reason_code": 0,
                "reason": "ok",
                "note_digest": DIGEST,
                "verdict": 1,
                "seal": b"",
            },
            bank,
        ),
        signed(codec.CHECKPOINT, "BKA", {"tree_size": 9, "root": DIGEST, "seal": b""}, bank),
    ]
    assert sorted(o.kind for o in out) == sorted(codec.SCHEMAS)
    return out


def fields(raw: bytes) -> list[tuple[int, int, int, int]]:
    """(start, length-field start, value start, end) of each field of a valid encoding."""
    kind = raw[1]
    at = 4 + raw[3]
    while raw[at] & 0x80:  # serial varint
        at += 1
    at += 1 + 4
    out = []
    while at < len(raw):
        tag = raw[at]
        spec = codec._by_tag(kind, tag)
        n = 0
        shift = 0
        p = at + 1
        while True:
            n |= (raw[p] & 0x7F) << shift
            shift += 7
            p += 1
            if not raw[p - 1] & 0x80:
                break
        end = p + n + (codec.SIG_LEN if spec[4] in (codec.SIGNED, codec.COMPUTED) else 0)
        out.append((at, at + 1, p, end))
        at = end
    assert at == len(raw)
    return out


def mutations(raw: bytes, rnd: random.Random, count: int) -> list[bytes]:
    out = [raw[:i] for i in range(len(raw))]  # truncation at every byte
    out += [raw + bytes([b]) for b in (0, 1, 0x3F, 0xFF)]  # extension
    out += [raw[:2] + bytes([v]) + raw[3:] for v in (0, 2, 0x7F, 0xFF)]  # versions
    out += [raw[:0] + bytes([s]) + raw[1:] for s in (0, 2, 0x68)]  # suites
    for start, lenat, value, end in fields(raw):
        n = value - lenat
        length = int.from_bytes(raw[lenat:value], "little")  # only for one-byte lengths
        for new in (0, 1, 0x7F, 0x80, 4096, 1 << 63) + ((length - 1, length + 1) if n == 1 else ()):
            if new >= 0:
                out.append(raw[:lenat] + varint(new) + raw[value:])
        out.append(raw[:lenat] + bytes([0x80 | raw[lenat], 0]) + raw[lenat + 1 :])  # not minimal
        out.append(raw[:end] + raw[start:end] + raw[end:])  # duplicated
        out.append(raw[:start] + raw[end:])  # dropped
        out.append(raw[:start] + bytes([0x7F]) + raw[start + 1 :])  # unknown tag
    for _ in range(count):
        b = bytearray(raw)
        for _ in range(rnd.randrange(1, 4)):
            i = rnd.randrange(len(b))
            op = rnd.randrange(5)
            if op == 0:
                b[i] ^= 1 << rnd.randrange(8)
            elif op == 1:
                b[i] = rnd.choice((0, 0x7F, 0x80, 0xFF, rnd.randrange(256)))
            elif op == 2:
                b[i:i] = rnd.randbytes(rnd.randrange(1, 4))
            elif op == 3:
                del b[i : i + rnd.randrange(1, 4)]
            else:
                j = min(len(b), i + rnd.randrange(1, 80))
                b[j:j] = b[i:j]
        out.append(bytes(b))
    return out


def other_accounts(raw: bytes) -> list[bytes]:
    """raw with the payer and payee ids swapped for same-length look-alikes: non-ASCII letters
    (which CPython's repr shows and MicroPython's escapes), controls, bidi overrides."""
    out = []
    for old in (PAYER.encode(), PAYEE.encode()):
        if old not in raw:
            continue
        for swap in ("\u0452", "\xe9", "\u202e", "\x7f", "'", '"', "\\", "\U0001f600"):
            new = old[: -len(swap.encode())] + swap.encode()
            out.append(raw.replace(old, new))
    return out


def verdicts_here(cases: list[tuple[str, bytes]]) -> list[list[str]]:
    out = []
    for kind, raw in cases:
        try:
            if kind == "object":
                out.append(["ok", codec.encode(codec.decode(raw)).hex()])
            else:
                out.append(["ok", Consortium.from_json(raw.decode()).to_json()])
        except HubiError as e:
            out.append(["refused", str(e)])
        except Exception as e:  # noqa: BLE001 - the point: no other exception may come out
            out.append(["CRASH", f"{type(e).__name__}: {e}"])
    return out


def verdicts_on_token(cases: list[tuple[str, bytes]], tmp_path: Path) -> list[list[str]]:
    script = tmp_path / "verdicts.py"
    script.write_text(VERDICTS)
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps([[kind, raw.hex()] for kind, raw in cases]))
    return json.loads(run_mpy(script=script, args=[str(spec)], heapsize="64M", timeout=600))


def compare(cases: list[tuple[str, bytes]], tmp_path: Path) -> list[list[str]]:
    here = verdicts_here(cases)
    there = verdicts_on_token(cases, tmp_path)
    assert len(there) == len(cases)
    crashes = [(raw.hex(), v) for (_, raw), v in zip(cases, here + there) if v[0] == "CRASH"]
    assert crashes == []
    differ = [(raw, a, b) for (_, raw), a, b in zip(cases, here, there) if a != b]
    assert differ == [], differ[:5]
    return here


def test_every_kind_mutated_gets_one_verdict_on_both(tmp_path: Path) -> None:
    rnd = random.Random(24)
    cases: list[tuple[str, bytes]] = []
    per_kind = {}
    for obj in objects():
        raw = codec.encode(obj)
        mine = [raw] + mutations(raw, rnd, 300) + other_accounts(raw)
        per_kind[obj.kind] = len(mine)
        cases += [("object", m) for m in mine]
    assert min(per_kind.values()) > 400
    got = compare(cases, tmp_path)
    assert sum(v[0] == "ok" for v in got) >= len(per_kind)
    # the look-alike ids are refused in the same words, non-ASCII shown escaped
    note = codec.encode(objects()[1])
    words = dict(verdicts_here([("object", r) for r in other_accounts(note)[:1]]))
    assert words == {
        "refused": "Note: signer 'BKA-0000000000\\u0452': local part may only use A-Z a-z 0-9 . _"
    }


def consortium_cases() -> list[bytes]:
    w = make_world()
    good = w.consortium.to_json()
    doc = json.loads(good)
    out = [good.encode()]

    def edited(**changes: object) -> bytes:
        d = json.loads(good)
        d.update(changes)
        return json.dumps(d, ensure_ascii=False).encode()

    text = json.dumps(doc, indent=1)  # pretty, as a person edits it: whitespace is fine
    out += [
        text.encode(),
        good.replace(',"epoch"', '"epoch"').encode(),  # a missing comma
        good.replace('"BKB"]', '"BKB",]').encode(),  # a trailing comma
        good.replace('"test"', '"te\tst"').encode(),  # a raw control character in a string
        good.replace('"test"', '"te\\x41st"').encode(),  # not a JSON escape
        good.replace('"epoch":1', '"epoch":01').encode(),  # a leading zero
        good.replace('"epoch":1', '"epoch":1.').encode(),
        good.replace('"epoch":1', '"epoch":NaN').encode(),
        (good + " x").encode(),  # text after the document
        good[:-1].encode(),  # ends early
        ("[" * 100000).encode(),  # deep: CPython's RecursionError, MicroPython's MemoryError
        ('{"a":' * 50000).encode(),
        ("[" * 64 + "]" * 64).encode(),
        ("[" * 65 + "]" * 65).encode(),
        edited(name="t\xe9st"),
        edited(name="a\u0452"),
        edited(name="x" * 200),
        edited(policy={"rule": "m\xe4jority"}),
        edited(policy={"r\xfcle": 1}),
        edited(orderer={"kind": "\u0452tcd"}),
        edited(orderer={"pr\xe9fix": "a/"}),
        edited(orderer={"prefix": "\xe9/"}),
        edited(epoch=1.5),
        edited(signatures={"BKB": "zz", "BKA": "zz"}),  # the first error said is BKA's
    ]
    return out


def test_the_consortium_file_gets_one_verdict_on_both(tmp_path: Path) -> None:
    cases = [("consortium", raw) for raw in consortium_cases()]
    got = [v[1] if v[0] == "refused" else v[0] for v in compare(cases, tmp_path)]
    assert got[:2] == ["ok", "ok"]
    assert got[2:16] == [
        "consortium file is not JSON (expected ',' or a close at byte 416)",
        "consortium file is not JSON (bad value at byte 480)",
        "consortium file is not JSON (bad value at byte 488)",
        "consortium file is not JSON (bad value at byte 488)",
        "consortium file is not JSON (expected ',' or a close at byte 426)",
        "consortium file is not JSON (bad value at byte 425)",
        "consortium file is not JSON (bad value at byte 425)",
        "consortium file is not JSON (text after the document at byte %d)" % (len(cases[0][1]) + 1),
        "consortium file is not JSON (ends early)",
        "consortium file is not JSON (nested more than 64 levels at byte 64)",
        "consortium file is not JSON (nested more than 64 levels at byte 320)",
        "consortium file format must be hubi-consortium/1",
        "consortium file is not JSON (nested more than 64 levels at byte 64)",
        "consortium name 't\\xe9st' may only use A-Z a-z 0-9 . _ -",
    ]
    assert got[16:] == [
        "consortium name 'a\\u0452' may only use A-Z a-z 0-9 . _ -",
        "consortium name '" + "x" * 40 + "'... must be 1-32 characters",
        'policy rule must be "majority", "all" or a count, not \'m\\xe4jority\'',
        "policy has an unknown key 'r\\xfcle'",
        'orderer kind must be "etcd" or "embedded", not \'\\u0452tcd\'',
        "orderer has an unknown key 'pr\\xe9fix'",
        "orderer prefix '\\xe9/' may only use printable ASCII",
        "epoch must be a whole number of at least 1, not 1.5",
        "signature of BKA is not hex",
    ]


def test_ids_are_shown_as_cpython_ascii_shows_them(tmp_path: Path) -> None:
    rnd = random.Random(7)
    pool = ["a", "'", '"', "\\", "\t", "\n", "\r", "\0", "\x1f", "\x7f", "\x80", "\xe9", "\xff"]
    pool += ["\u0452", "\u2028", "\u202e", "\U0001f600", " "]
    texts = ["".join(rnd.choice(pool) for _ in range(rnd.randrange(12))) for _ in range(3000)]
    assert [ids.shown(t) for t in texts] == [ascii(t) for t in texts]
    spec = tmp_path / "texts.json"
    spec.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    script = tmp_path / "shown.py"
    script.write_text(
        "import json, sys\nfrom hubi_core import ids\n"
        "print(json.dumps([ids.shown(t) for t in json.load(open(sys.argv[1]))]))\n"
    )
    assert json.loads(run_mpy(script=script, args=[str(spec)], heapsize="16M")) == [
        ascii(t) for t in texts
    ]
    assert ids.shown("x" * 60) == "'" + "x" * 48 + "'..."  # a huge id: a short message
    with pytest.raises(CodecError, match="bank id 'B\\\\xe9' may only use A-Z and 0-9"):
        ids.check_bank_id("B\xe9")


def test_points_and_scalars_are_validated_on_both(tmp_path: Path) -> None:
    """Every point a decoder takes is on the curve and below p, every signature scalar in
    [1, n-1] and low-S: Wycheproof's ecpoint public keys as a template's key, edge scalars
    as a note's signatures, through both interpreters."""
    vectors = json.loads(
        (vectors_dir() / "wycheproof_ecdh_secp256r1_ecpoint_test.json").read_text()
    )
    p = ec.P
    b = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B

    def on_curve(x: int) -> bool:  # Euler's criterion, not the decoder's square root
        return x < p and pow((x**3 - 3 * x + b) % p, (p - 1) // 2, p) in (0, 1)

    points = {}
    for group in vectors["testGroups"]:
        for t in group["tests"]:
            pub = bytes.fromhex(t["public"])
            points[pub] = len(pub) == 33 and t["result"] != "invalid"
            if len(pub) == 65:  # its x compressed, with both parities
                x = int.from_bytes(pub[1:33], "big")
                for head in (b"\x02", b"\x03"):
                    points.setdefault(head + pub[1:33], on_curve(x))
    for x in (0, 1, 3, p - 1, p, p + 1, (1 << 256) - 1):  # edges of the field
        for head in (b"\x02", b"\x03"):
            points.setdefault(head + x.to_bytes(32, "big"), on_curve(x))
    points[b"\x00"] = False  # infinity
    points[b"\x04" + bytes(64)] = False
    w = make_world()
    tpl = w.open_account(PAYER).template
    raw = codec.encode(tpl)
    key = tpl["key"]
    assert raw.count(key) == 1
    cases = []
    want = []
    for pt, good in points.items():
        tag = codec._T_KEY
        old = bytes([tag, 33]) + key
        cases.append(("object", raw.replace(old, bytes([tag]) + varint(len(pt)) + pt)))
        want.append(good)
    note = codec.encode(w.note(PAYER, PAYEE, 5))
    sig = codec.decode(note).sigs["amount"]
    n = ec.N
    half = n // 2
    for r, s in ((0, 1), (1, 0), (n, 1), (1, n), (n + 1, 1), (1, half), (1, half + 1), (1, n - 1)):
        new = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        cases.append(("object", note.replace(sig, new)))
        want.append(1 <= r < n and 1 <= s <= half)
    got = compare(cases, tmp_path)
    assert [v[0] == "ok" for v in got] == want
    assert sum(want) > 300 and len(want) - sum(want) > 20


def test_a_provisioned_file_name_is_refused_in_the_same_words(tmp_path: Path) -> None:
    names = ["consortium.json", "BKA.pub", "b\xe9.pub", "r\xe9sum\xe9.txt", "\u0452" * 50, "x'y"]
    here = []
    for name in names:
        try:
            here.append(tokenmsg.check_file_name(name))
        except HubiError as e:
            here.append(str(e))
    assert here[:2] == names[:2]
    assert here[2] == "matrix file bank id 'b\\xe9' may only use A-Z and 0-9"
    assert here[3] == (
        "file 'r\\xe9sum\\xe9.txt': only consortium.json and <BANK>.pub can be provisioned"
    )
    assert here[4] == "file '%s'...: only consortium.json and <BANK>.pub can be provisioned" % (
        "\\u0452" * 40
    )
    spec = tmp_path / "names.json"
    spec.write_text(json.dumps(names, ensure_ascii=False), encoding="utf-8")
    script = tmp_path / "names.py"
    script.write_text(
        "import json, sys\nfrom hubi_core import tokenmsg\nfrom hubi_core.errors import HubiError\n"
        "out = []\n"
        "for n in json.load(open(sys.argv[1])):\n"
        "    try:\n"
        "        out.append(tokenmsg.check_file_name(n))\n"
        "    except HubiError as e:\n"
        "        out.append(str(e))\n"
        "print(json.dumps(out))\n"
    )
    assert json.loads(run_mpy(script=script, args=[str(spec)], heapsize="4M")) == here
