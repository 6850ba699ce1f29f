"""Probe 25r of the receipt images written again from the outbox: an outbox row whose receipt
was damaged into bytes too long for one QR code (segno's DataOverflowError, a ValueError) made
every `scan`, `outbox` and `upload` stop with a traceback before its own work, and kept every
other missing receipt image from being written. Now that row is passed over (its image cannot
be drawn) and the others are written. Real `hubi` processes, real PNGs read back with zxing-cpp.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from hubi import qrscan
from tests.test_merchant_support import Shop, frames, hubi, hubi_json, make_shop


def _kept(shop: Shop, tmp_path: Path, name: str, amount: int) -> tuple[Path, bytes, int]:
    """A request and the payer's note for it, scanned: the receipt's PNG, bytes and serial."""
    folder = tmp_path / name
    folder.mkdir()
    with shop.merchant() as m:
        m.request(amount, "coffee", expires=600)
        frames(shop.payer().note(amount, time=int(time.time())), folder)
        (res,) = m.scan(sorted(folder.iterdir()))
    assert res.ok and res.receipt_png is not None, res
    return Path(res.receipt_png), bytes(res.receipt), int(res.receipt_serial)


def test_a_receipt_too_long_for_a_qr_code_does_not_stop_the_commands(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    good_png, good, _ = _kept(shop, tmp_path, "a", 1250)
    bad_png, _, bad_serial = _kept(shop, tmp_path, "b", 700)
    with shop.merchant() as m:
        outbox = m.home.outbox_path
    db = sqlite3.connect(outbox)
    db.execute(
        "UPDATE notes SET receipt = ? WHERE receipt_serial = ?", (b"\x01" * 4000, bad_serial)
    )
    db.commit()
    db.close()
    good_png.unlink()
    bad_png.unlink()
    home = str(shop.home)
    code, listed = hubi_json("merchant", "--home", home, "outbox")
    assert code == 0 and len(listed["items"]) == 2, listed
    assert listed["receipts_rewritten"] == [str(good_png)], listed
    assert qrscan.decode_image(good_png) == [good]
    assert not bad_png.exists()
    proc = hubi("merchant", "--home", home, "outbox")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
