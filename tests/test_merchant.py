"""The merchant library and command line: home set-up, requests, receipts, outbox, scanning."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from hubi import qrscan
from hubi.merchant import (
    Merchant,
    MerchantError,
    format_amount,
    import_identity,
    init_from_bank_home,
    parse_amount,
)
from hubi.merchant.outbox import Outbox
from hubi.merchant.scan import MultiCollector, scan_objects
from hubi_core import codec, lsum, qrparts, suite
from hubi_core.verify import verify_object
from tests.test_merchant_support import (
    MERCHANT,
    PAYER,
    T0,
    Shop,
    frames,
    hubi,
    hubi_json,
    make_shop,
)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    return make_shop(tmp_path_factory.mktemp("merchant"))


def test_amounts() -> None:
    assert parse_amount("12.50") == 1250 and parse_amount("1,000") == 100000
    assert parse_amount(3) == 300 and parse_amount("0.01") == 1
    assert parse_amount("12,345.6") == 1234560 and parse_amount(" .5 ") == 50
    for bad in ("1.234", "-1", "0", "abc", "nan", "1e30", "1e3", "+1", "١٢"):
        with pytest.raises(ValueError):
            parse_amount(bad)
    # A decimal comma is refused, not dropped: '1,5' asked 15.00 of a customer who meant 1.50.
    for comma in ("1,5", "1,50", "12,34.5", "1,2345"):
        with pytest.raises(ValueError, match="a comma only separates thousands"):
            parse_amount(comma)
    assert format_amount(123456, "CNY") == "1,234.56 CNY" and format_amount(5) == "0.05"


def test_request_is_signed_and_its_png_reads_back(shop: Shop) -> None:
    with shop.merchant() as m:
        req = m.request(1250, "coffee", expires=600, now=T0)
        obj = codec.decode(req.bytes, codec.REQUEST)
        assert (obj.signer, obj["amount"], obj["purpose"], obj["expiry"]) == (
            MERCHANT,
            1250,
            "coffee",
            T0 + 600,
        )
        assert verify_object(obj, m.trust).ok
        assert qrscan.collect([req.png]) == req.bytes
        assert m.open_request().serial == req.serial
        assert m.outbox.cancel_request(req.serial)
        assert m.outbox.request(req.serial).state == "cancelled"
        assert not m.outbox.cancel_request(req.serial)


def test_receipt_shares_the_serial_counter_and_verifies(shop: Shop) -> None:
    with shop.merchant() as m:
        r1 = m.request(777, None, expires=600, now=T0)
        note = shop.payer().note(777, purpose=None)
        res = m.accept(note, now=T0 + 10)
        assert res.ok, res.verdict.message()
        rc = codec.decode(res.receipt, codec.RECEIPT)
        assert rc.serial == r1.serial + 1  # one counter per signer: requests and receipts
        n = codec.decode(note)
        assert (rc["payer"], rc["amount"], rc["note_id"]) == (
            PAYER,
            777,
            lsum.note_id(PAYER, n.serial),
        )
        assert "purpose" not in rc.values
        assert verify_object(rc, m.trust).ok
        assert qrscan.collect([res.receipt_png]) == res.receipt
        assert m.receipt_of(lsum.note_id(PAYER, n.serial)) == res.receipt
        r2 = m.request(1, None, now=T0)
        assert r2.serial == rc.serial + 1


def test_accept_is_one_transaction(shop: Shop) -> None:
    """If anything fails inside the acceptance transaction, nothing of it is kept."""
    with shop.merchant() as m:
        req = m.request(4242, "x", expires=600, now=T0)
        note = codec.decode(shop.payer().note(4242, purpose="x"))
        info = {
            "note_id": lsum.note_id(note.signer, note.serial),
            "payer": note.signer,
            "serial": note.serial,
            "payee": MERCHANT,
            "amount": 4242,
            "currency": "CNY",
            "purpose": "x",
            "time": note.time,
        }

        def boom(_serial: int) -> bytes:
            raise RuntimeError("power cut while signing the receipt")

        before = m.outbox.counts()
        with pytest.raises(RuntimeError):
            m.outbox.accept(info, note.raw, MERCHANT, req.serial, boom)
        assert m.outbox.counts() == before
        assert m.outbox.request(req.serial).state == "open"


def test_several_notes_and_foreign_frames_in_one_batch(shop: Shop, tmp_path: Path) -> None:
    payer = shop.payer("BKA-batch.payer")
    with shop.merchant() as m:
        notes = []
        for i, px in enumerate((240, 400, 240)):
            m.request(300 + i, "tea", expires=10**6, now=T0)
            notes.append(payer.note(300 + i, purpose="tea"))
            frames(notes[-1], tmp_path, px, prefix=f"{i}-")
        paths = sorted(tmp_path.glob("*.png"))
        rng = np.random.default_rng(5)
        paths = [paths[i] for i in rng.permutation(len(paths))]  # interleaved, any order
        seen = []
        results = m.scan([*paths, np.full((200, 200), 255, np.uint8)], progress=seen.append)
        assert sorted(r.note_bytes for r in results) == sorted(notes)
        assert all(r.ok for r in results)
        assert seen[-1].frames == len(paths) + 1 and seen[-1].done == 3


def test_multicollector_ignores_bad_and_conflicting_parts() -> None:
    msg = bytes(range(256)) * 2
    parts = qrparts.split(msg, 5)
    col = MultiCollector()
    assert col.add(b"\xa5garbage") is None and col.errors
    evil = bytearray(parts[1])
    evil[12] ^= 1  # CRC no longer matches
    assert col.add(bytes(evil)) is None
    out = [col.add(p) for p in parts[::-1]]
    assert [o for o in out if o] == [msg]
    assert col.add(parts[0]) is None  # a repeat after completion
    assert list(scan_objects([], limit=1)) == []


def test_init_refuses_a_key_that_is_not_the_templates(shop: Shop, tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_bytes(suite.generate_private().to_bytes(32, "big"))
    tpl = tmp_path / "t"
    tpl.write_bytes((shop.home / "template.bin").read_bytes())
    with pytest.raises(MerchantError, match="does not belong"):
        import_identity(tmp_path / "m2", key, tpl, shop.bank_home / "trust")
    assert not (tmp_path / "m2").exists()  # a refused init leaves no half-made home behind
    broken = tmp_path / "broken-trust"
    shutil.copytree(shop.bank_home / "trust", broken)
    (broken / "consortium.json").write_text("{")
    with pytest.raises(
        ValueError, match=f"trust bundle {broken}: consortium.json is not valid JSON"
    ):
        import_identity(tmp_path / "m2", key, tpl, broken)
    assert not (tmp_path / "m2").exists()
    with pytest.raises(MerchantError, match="already holds a merchant"):
        init_from_bank_home(shop.home, shop.bank_home, MERCHANT)
    with pytest.raises(MerchantError, match="merchant init"):
        Merchant.open(tmp_path / "nothing")
    # the hex form of a real key is accepted
    key.write_text(
        (shop.home / "account.secret").read_bytes().hex(),
    )
    import_identity(tmp_path / "m3", key, tpl, shop.bank_home / "trust")
    with Merchant.open(tmp_path / "m3") as m:
        assert m.account == MERCHANT


def test_cli_errors_and_outbox_json(shop: Shop, tmp_path: Path) -> None:
    h = str(shop.home)
    code, out = hubi_json("merchant", "--home", h, "request", "--amount", "1.234")
    assert code == 2 and "decimal" in out["message"]
    # an expiry past what a 32-bit time holds was "expiry: time out of range" after the checks
    proc = hubi("merchant", "--home", h, "request", "--amount", "1", "--expires", "9" * 20)
    assert proc.returncode == 2 and "Invalid value for '--expires'" in proc.stderr, proc.stderr
    code, out = hubi_json("merchant", "--home", h, "scan")
    assert code == 2 and "exactly one" in out["message"]
    code, out = hubi_json("merchant", "--home", h, "scan", "--camera", "97", "--timeout", "1")
    assert code == 2 and "camera 97" in out["message"]  # no such camera: a clear error
    blank = tmp_path / "blank.png"
    qrscan.cv2.imwrite(str(blank), np.full((100, 100), 255, np.uint8))
    code, out = hubi_json("merchant", "--home", h, "scan", "--image", str(blank))
    assert code == 2 and out["error"] == "no note found"
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    proc = hubi("merchant", "--home", h, "scan", "--image", str(text))
    said = " ".join(proc.stderr.split())
    assert f"skipped {text}: not an image OpenCV can read" in said, said
    assert said.count(str(text)) == 1, said  # named once ("skipped X: X: …" before)
    with shop.merchant() as m:
        m.request(5555, None, expires=600, now=T0)
        assert m.accept(shop.payer().note(5555, purpose=None), now=T0).ok
    code, out = hubi_json("merchant", "--home", h, "outbox")
    assert code == 0 and out["account"] == MERCHANT and out["items"]
    assert {"pending", "booked"} <= set(out["notes"])
    proc = hubi("merchant", "--home", str(tmp_path / "none"), "outbox")
    assert proc.returncode == 2 and "merchant init" in proc.stderr
    # a purpose is printed as typed: '[/x]' used to end the command in a MarkupError after
    # the request was signed
    proc = hubi("merchant", "--home", h, "request", "--amount", "3", "--purpose", "[/x]", "--no-qr")
    assert proc.returncode == 0 and "for '[/x]'" in proc.stdout, proc.stderr
    # the key never shows up in any output
    secret = (shop.home / "account.secret").read_bytes().hex()
    proc = hubi("merchant", "--home", h, "request", "--amount", "2", "--json")
    assert secret not in proc.stdout + proc.stderr


def test_outbox_is_wal_and_keeps_exact_bytes(shop: Shop) -> None:
    # the Outbox first: run alone, this test is the one that creates the file
    with Outbox(shop.home / "outbox.sqlite") as ob:
        for row in ob.notes():
            assert codec.encode(codec.decode(row.bytes)) == row.bytes
        assert ob.integrity() == "ok"
    db = sqlite3.connect(shop.home / "outbox.sqlite")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_an_outbox_a_newer_hubi_wrote_is_refused_untouched(tmp_path: Path) -> None:
    Outbox(tmp_path / "outbox.sqlite").close()
    db = sqlite3.connect(tmp_path / "outbox.sqlite")
    db.execute("UPDATE meta SET value = '7' WHERE key = 'schema'")
    db.commit()
    db.close()
    before = (tmp_path / "outbox.sqlite").read_bytes()
    with pytest.raises(MerchantError, match=r"schema version 7, newer than this build knows \(1\)"):
        Outbox(tmp_path / "outbox.sqlite")
    assert (tmp_path / "outbox.sqlite").read_bytes() == before


def _edit(home: Path, **values: object) -> None:
    cfg = json.loads((home / "merchant.json").read_text())
    cfg.update(values)
    (home / "merchant.json").write_text(json.dumps(cfg))


def test_a_damaged_merchant_home_is_named(shop: Shop, tmp_path: Path) -> None:
    """A home with a file gone or damaged: the error says which (a damaged outbox was a
    sqlite3 traceback, a damaged merchant.json a bare JSON error)."""
    from click.testing import CliRunner

    from hubi.cli import main

    def broken(name: str, damage) -> Path:  # noqa: ANN001 - a callable on the copy's path
        home = tmp_path / name
        shutil.copytree(shop.home, home)
        damage(home)
        return home

    cases = [
        (broken("outbox", lambda h: (h / "outbox.sqlite").write_bytes(b"garbage" * 100)),
         "outbox", "cannot open the outbox"),
        (broken("cfg", lambda h: (h / "merchant.json").write_text("{bad")),
         "outbox", "merchant.json is damaged: it is not valid JSON (Expecting property name"),
        (broken("cfg2", lambda h: (h / "merchant.json").write_text("{}")),
         "outbox", "merchant.json is damaged: it needs account (a string)"),
        (broken("cfg3", lambda h: (h / "merchant.json").write_text("[1, 2]")),
         "outbox", "merchant.json is damaged: it must be a JSON object"),
        # fields that were read and then ignored (or never read) when they disagreed
        (broken("int", lambda h: _edit(h, account=7)),
         "outbox", "merchant.json is damaged: it needs account (a string)"),
        (broken("cur", lambda h: _edit(h, currency="EUR")),
         "request", "template.bin is for currency CNY, merchant.json says EUR"),
        (broken("bank", lambda h: _edit(h, bank="BKZ")),
         "request", "template.bin is for bank BKB, merchant.json says BKZ"),
        (broken("tplname", lambda h: _edit(h, template="other.bin")),
         "outbox", "merchant.json names template 'other.bin': a merchant home keeps it as"
         " template.bin"),
        (broken("tpl", lambda h: (h / "template.bin").unlink()),
         "request", "has no template.bin"),
        (broken("key", lambda h: (h / "account.secret").unlink()),
         "request", "has no account.secret"),
    ]  # fmt: skip
    for home, command, words in cases:
        args = ["merchant", "--home", str(home), command, "--json"]
        if command == "request":
            args += ["--amount", "1"]
        result = CliRunner().invoke(main, args)
        out = json.loads(result.stdout)
        assert result.exit_code == 2 and out["error"] == "MerchantError", (home, result.stdout)
        assert str(home) in out["message"] and words in out["message"], out


def test_scan_takes_a_note_saved_as_a_file(tmp_path: Path) -> None:
    """`hubi token pay --out` saves the note as a file, `hubi token note` prints it as hex;
    `scan --image` read only images and skipped both ("not an image OpenCV can read")."""
    shop = make_shop(tmp_path / "shop")
    h = str(shop.home)
    with shop.merchant() as m:
        m.request(4321, "tea", expires=600)
    raw = shop.payer().note(4321, purpose="tea", time=int(time.time()))
    (tmp_path / "n.bin").write_bytes(raw)
    (tmp_path / "n.hex").write_text(raw.hex() + "\n")
    code, out = hubi_json("merchant", "--home", h, "scan", "--image", str(tmp_path / "n.bin"))
    assert code == 0 and out["accepted"] == 1, out
    assert out["results"][0]["note"]["amount"] == 4321, out
    # the same note again, from its hex: read, and refused as the duplicate it is
    code, out = hubi_json("merchant", "--home", h, "scan", "--image", str(tmp_path / "n.hex"))
    assert code == 1 and out["results"][0]["field"] == "note_id", out
