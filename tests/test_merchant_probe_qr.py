"""Forged and altered input to the merchant and `hubi note show`: one image holding QR codes of
two objects, and an outbox row whose note bytes were swapped for another note.

Real parts: PNGs drawn by segno and read by the real scanner (zxing-cpp), `hubi` child
processes, a real HTTP server playing the bank, the real SQLite outbox.
"""

from __future__ import annotations

import io
import shutil
import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import segno

from hubi import objects
from hubi.merchant import Merchant
from hubi.merchant import upload as up
from hubi_core.qrparts import MixedMessages
from tests.test_merchant_support import Shop, hubi, make_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    return make_shop(tmp_path_factory.mktemp("probe-qr"))


def _qr(payload: bytes) -> np.ndarray:
    buf = io.BytesIO()
    segno.make_qr(payload, error="m", mode="byte", boost_error=False).save(
        buf, kind="png", scale=4, border=4
    )
    return cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)


def _side_by_side(path: Path, *payloads: bytes) -> Path:
    imgs = [_qr(p) for p in payloads]
    h = max(i.shape[0] for i in imgs)
    cv2.imwrite(
        str(path),
        np.hstack([np.pad(i, ((0, h - i.shape[0]), (0, 0)), constant_values=255) for i in imgs]),
    )
    return path


def test_an_image_with_two_objects_is_refused_not_read_as_the_first(
    shop: Shop, tmp_path: Path
) -> None:
    """`note show` (and `bank book`, `token pay --request`, `token notice`, which read files
    the same way) took the first QR code zxing reported and said nothing of the other: a
    picture of two notes showed (or booked) one of them."""
    a = shop.payer().note(100)
    b = shop.payer().note(999_999)
    two = _side_by_side(tmp_path / "two.png", a, b)
    with pytest.raises(MixedMessages, match="QR codes of more than one object"):
        objects.read_object_bytes(two)
    beside_url = _side_by_side(tmp_path / "url.png", b"https://example.com/pay", a)
    with pytest.raises(MixedMessages, match="QR codes of more than one object"):
        objects.read_object_bytes(beside_url)
    proc = hubi("note", "show", str(two))
    said = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2 and "Traceback" not in said, said
    assert f"{two}: QR codes of more than one object" in said and "one at a time" in said, said
    # the same note twice in one picture is one note
    assert objects.read_object_bytes(_side_by_side(tmp_path / "twice.png", a, a)) == a


def test_a_row_whose_bytes_are_another_note_is_not_uploaded(
    shop: Shop, tmp_path: Path, fake_bank
) -> None:
    """The outbox row's note bytes replaced by another genuine note (another shop's, another
    amount, another payer's serial): upload sent those bytes to the bank as the row's note."""
    url, handler = fake_bank
    home = tmp_path / "home"
    shutil.copytree(shop.home, home)
    now = int(time.time())
    serials = []
    with Merchant.open(home) as m:
        for amount in (700, 701, 702, 703):
            m.request(amount, "tea", 3600)
            assert m.accept(shop.payer().note(amount, purpose="tea", time=now)).ok
            serials.append(shop.payer().serial)
        good = shop.payer().note(704, purpose="tea", time=now)
        m.request(704, "tea", 3600)
        assert m.accept(good).ok
    payer = shop.payer()
    swaps = [
        payer.note(700, payee="BKB-000000000008", purpose="tea", time=now),  # another shop's
        payer.note(9_999, purpose="tea", time=now, serial=serials[1]),  # same id, amount
        payer.note(702, purpose="tea", time=now, serial=9_000),  # another note of the payer
        shop.payer("BKA-000000000043").note(703, purpose="tea", time=now, serial=4),
    ]
    db = sqlite3.connect(home / "outbox.sqlite")
    try:
        rowids = [r[0] for r in db.execute("SELECT rowid FROM notes ORDER BY rowid")]
        for rowid, raw in zip(rowids, swaps, strict=False):
            db.execute("UPDATE notes SET bytes = ? WHERE rowid = ?", (raw, rowid))
        db.commit()
    finally:
        db.close()
    with Merchant.open(home) as m:
        report = up.upload(m, url, retries=0, settle_wait=0)
    assert handler.got == [good], [len(g) for g in handler.got]  # only the intact note
    details = [it.detail for it in report.items]
    assert details[0] == (
        f"damaged outbox row {rowids[0]}: its note's payee is 'BKB-000000000008', this shop's"
        " account is 'BKB-000000000007'; not uploaded"
    ), details
    assert (
        f"damaged outbox row {rowids[1]}: its note's amount is 9999, the row is 701" in (details[1])
    ), details
    assert f"damaged outbox row {rowids[2]}: its note's note_id is" in details[2], details
    assert f"damaged outbox row {rowids[3]}: its note's note_id is" in details[3], details
