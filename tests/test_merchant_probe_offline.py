"""A busy shop's offline life: copies of one note, an outbox grown for years, a home re-inited.

Real SQLite outboxes and the real `hubi merchant` command line; no bank is needed here.
"""

from __future__ import annotations

import json
import sqlite3
import tracemalloc
from pathlib import Path

from hubi.merchant import book
from hubi_core import codec
from tests.test_merchant_support import MERCHANT, T0, Shop, hubi, hubi_json, make_shop
from tests.test_merchant_upload import pay
from tests.test_stripped_copy import stripped_pair


def _pair(shop: Shop, serial: int) -> tuple[bytes, bytes]:
    p = shop.payer()
    with shop.merchant() as m:
        return stripped_pair(p.template, p.private, MERCHANT, m.trust, 77, serial, 500, T0 + 10)


def test_a_copy_without_the_allowance_is_a_duplicate_not_a_double_issuance(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    for serial, first in ((5, 0), (6, 1)):  # the genuine note first, then the stripped one first
        pair = _pair(shop, serial)
        with shop.merchant() as m:
            m.request(500, "snack", expires=10**6, now=T0)
            assert m.accept(pair[first], now=T0 + 20).ok
            again = m.accept(pair[1 - first], now=T0 + 21)
            assert not again.ok
            assert again.verdict.category == "duplicate", again.verdict.reason
            assert "double issuance" not in again.verdict.reason
            assert again.verdict.field == "note_id"
    with shop.merchant() as m:
        assert len(m.notes()) == 2  # one entry per note
        # no evidence kept against an honest payer
        assert all(r["field"] == "note_id" and r["bytes"] == 0 for r in m.outbox.rejects())


def _grow(shop: Shop, n: int) -> None:
    """n rejected scans (with 400 bytes of evidence each) and n book records, made in SQL."""
    with shop.merchant() as m:
        note = codec.decode(pay(m, shop.payer(), 100), codec.NOTE)
        with m.outbox.transaction() as db:
            book.append(db, m.book_keys, note, b"\x00" * 200, T0)
    db = sqlite3.connect(shop.home / "outbox.sqlite")
    with db:
        db.execute(
            "WITH RECURSIVE k(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM k WHERE i <= ?)"
            " INSERT INTO book (n, note_id, body, hchain)"
            " SELECT i, randomblob(32), body, hchain FROM book, k WHERE book.n = 1",
            (n,),
        )
        db.execute(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?)"
            " INSERT INTO rejects (at, field, reason, note_id, bytes)"
            " SELECT ?, 'serial', 'double issuance', randomblob(32), randomblob(400) FROM k",
            (n, T0),
        )
    db.close()


def test_the_status_of_a_big_outbox_is_counted_not_read_whole(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    n = 100_000
    _grow(shop, n)
    with shop.merchant() as m:
        tracemalloc.start()
        try:
            status = m.status()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert status["rejects"] == n and status["book"]["records"] == n + 1
        # reading 100k rejects or parsing 100k records takes tens of MB; counting, a few KB
        assert peak < 5_000_000, f"status() took {peak:,} bytes"
    code, out = hubi_json("merchant", "--home", str(shop.home), "outbox", "--last", "5")
    assert code == 0 and out["rejects"] == n
    assert len(out["items"]) == 1 and len(out["reject_log"]) == 5
    assert [r["id"] for r in out["reject_log"]] == list(range(n - 4, n + 1))
    assert all(r["bytes"] == 400 for r in out["reject_log"])


def test_init_over_a_home_that_lost_its_merchant_json_keeps_the_old_key(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    with shop.merchant() as m:
        pay(m, shop.payer(), 100)
    key = (shop.home / "account.secret").read_bytes()
    cfg = shop.home / "merchant.json"
    saved = tmp_path / "merchant.json.saved"
    cfg.rename(saved)
    other = ("--bank-home", str(shop.bank_home), "--account", "BKB-000000000009")
    code, out = hubi_json("merchant", "--home", str(shop.home), "init", *other)
    assert code == 2 and "outbox" in out["message"] and "merchant.json" in out["message"]
    assert (shop.home / "account.secret").read_bytes() == key and not cfg.exists()
    # merchant.json put back: the shop goes on with its key and its notes
    saved.rename(cfg)
    with shop.merchant() as m:
        assert m.account == MERCHANT and len(m.notes()) == 1
    # a home never used (an init killed before it wrote merchant.json) may be set up again
    fresh = tmp_path / "fresh"
    code, out = hubi_json("merchant", "--home", str(fresh), "init", *other)
    assert code == 0
    cfg2 = fresh / "merchant.json"
    cfg2.unlink()
    code, out = hubi_json("merchant", "--home", str(fresh), "init", *other)
    assert code == 0 and out["account"] == "BKB-000000000009", out


def test_a_bank_of_the_wrong_type_in_merchant_json_is_named(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    cfg = shop.home / "merchant.json"
    doc = json.loads(cfg.read_text())
    for bank in (7, ["BKB"], {"id": "BKB"}):
        cfg.write_text(json.dumps({**doc, "bank": bank}))
        proc = hubi("merchant", "--home", str(shop.home), "outbox")
        assert proc.returncode == 2
        assert "merchant.json is damaged: its bank must be a string" in proc.stderr, proc.stderr
