"""The codec gives identical bytes and verdicts under MicroPython and CPython."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubi_core import codec, lsum
from hubi_core.errors import CodecError
from tests.mpy import ROOT, run_mpy
from tests.world import T0, make_world

pytestmark = pytest.mark.micropython


def test_codec_identical_on_micropython(tmp_path: Path) -> None:
    w = make_world()
    payer = w.open_account("BKA-000000000042")
    payee = w.open_account("BKB-000000000007")
    note = w.note(payer.id, payee.id, 1250)
    req = w.request(payee.id, 1250)
    tampered = codec.decode(codec.encode(note))
    tampered.values["amount"] = 5
    tampered_bytes = codec.encode(tampered)
    # the purpose's bytes swapped for a right-to-left override and a C1 control: refused there too
    plain = codec.encode(w.note(payer.id, payee.id, 7, serial=2, purpose="tea-xyz"))
    refuse = [
        plain.replace(b"xyz", "\u202e".encode()),
        plain.replace(b"-xy", b"-" + "\x9b".encode()),
        # a QR code of a web address: said to be text, not just "unknown suite 104"
        b"https://example.com/pay?id=0123456789abcdefghijklmnopqrstuvwxyz",
        b"\x07\x01\x02\x03",  # not text: the suite alone
        # a text file typed by a person ends with a newline: still text, shown on one line
        b"garbage\n",
        b"two\twords\r\n",
    ]
    spec = {
        "matrices": {b: k.public.to_bytes().hex() for b, k in w.kmcs.items()},
        "consortium": w.consortium.to_json(),
        "build": [
            {
                "kind": "template",
                "priv": hex(w.banks["BKA"].private),
                "bank": "BKA",
                "serial": 1,
                "time": T0,
                "account": payer.id,
                "currency": "CNY",
                "key": payer.template["key"].hex(),
            },
            {
                "kind": "note",
                "priv": hex(payer.private),
                "template": codec.encode(payer.template).hex(),
                "serial": 1,
                "time": note.time,
                "amount": 1250,
                "payee": payee.id,
                "purpose": "coffee+cake!",
            },
            {
                "kind": "request",
                "priv": hex(payee.private),
                "template": codec.encode(payee.template).hex(),
                "serial": 1,
                "time": req.time,
                "amount": 1250,
                "expiry": req["expiry"],
                "purpose": "coffee+cake!",
            },
        ],
        "decode": [codec.encode(note).hex(), codec.encode(req).hex(), tampered_bytes.hex()],
        "refuse": [b.hex() for b in refuse],
    }
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    out = json.loads(
        run_mpy(script=ROOT / "tests" / "mpy_scripts" / "codec_roundtrip.py", args=[str(spec_path)])
    )
    assert out["encoded"] == [
        codec.encode(payer.template).hex(),
        codec.encode(note).hex(),
        codec.encode(req).hex(),
    ]
    assert out["reencoded"] == spec["decode"]
    assert out["verified"] == [[True, []], [True, []], [False, ["amount", "lsum"]]]
    assert out["lsum"] == lsum.lsum("BKA-000000000042", 7, 1250, "coffee", "BKB-000000000007")
    assert out["note_id"] == lsum.note_id("BKA-000000000042", 7).hex()
    text = (
        'unknown suite 104 (this build knows suite 1); these bytes are text, not a hubi object: "'
    )
    assert out["refused"] == [
        "purpose contains a bidirectional control (U+202E)",
        "purpose contains a control character (U+009B)",
        text + 'https://example.com/pay?id=0123456789abc..."',
        "unknown suite 7 (this build knows suite 1)",
        text.replace("104", "103") + 'garbage"',
        "unknown suite 116 (this build knows suite 1); these bytes are text, not a hubi object: "
        '"two words"',
    ]
    for raw, words in zip(refuse[2:], out["refused"][2:]):  # the same words on CPython
        with pytest.raises(CodecError) as caught:
            codec.decode(raw)
        assert str(caught.value) == words
