"""Probe 25 of `hubi merchant scan`: the receipt image of a note that was kept.

A scan killed after the note went into the outbox but before its receipt's PNG was written
left that image missing for good (its bytes are in the outbox), and a receipt image that could
not be written (HOME/qr not a folder) made the scan fail with the note already kept. Now the
scan says the note was accepted and why the image is missing, and the next `scan`, `outbox` or
`upload` writes every missing receipt image again from the outbox. Real `hubi` processes, real
QR frames, real PNGs read back with zxing-cpp.
"""

from __future__ import annotations

import time
from pathlib import Path

from hubi import qrscan
from tests.test_merchant_support import Shop, frames, hubi, hubi_json, make_shop


def _scan_one(shop: Shop, tmp_path: Path, name: str, amount: int, png: Path) -> tuple[int, dict]:
    """A request (its PNG at `png`), the payer's note for it as QR frames, `hubi merchant scan`."""
    with shop.merchant() as m:
        m.request(amount, "coffee", expires=600, png=png)
    note = shop.payer().note(amount, time=int(time.time()))
    folder = tmp_path / name
    folder.mkdir()
    frames(note, folder)
    return hubi_json("merchant", "--home", str(shop.home), "scan", "--image", str(folder))


def _reads_back(path: Path, receipt: bytes) -> None:
    assert path.is_file(), path
    assert qrscan.decode_image(path) == [receipt], path


def test_a_receipt_image_lost_after_its_note_was_kept_is_written_again(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    code, out = _scan_one(shop, tmp_path, "a", 1250, tmp_path / "req-a.png")
    assert code == 0, out
    (r,) = out["results"]
    first = Path(r["receipt"]["png"])
    receipt = bytes.fromhex(r["receipt"]["hex"])
    _reads_back(first, receipt)
    # the image is gone, as when the scan is killed between the note and its image
    first.unlink()
    home = str(shop.home)
    code, listed = hubi_json("merchant", "--home", home, "outbox")
    assert code == 0 and listed["receipts_rewritten"] == [str(first)], listed
    _reads_back(first, receipt)
    # nothing missing: nothing written, nothing said
    proc = hubi("merchant", "--home", home, "outbox")
    assert proc.returncode == 0 and "written again" not in proc.stderr, proc.stderr
    # the next scan writes it before it reads the new note, and says so
    first.unlink()
    with shop.merchant() as m:
        m.request(700, "coffee", expires=600, png=tmp_path / "req-b.png")
    folder = tmp_path / "b"
    folder.mkdir()
    frames(shop.payer().note(700, time=int(time.time())), folder)
    proc = hubi("merchant", "--home", home, "scan", "--image", str(folder), "--no-qr")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"receipt image written again from the outbox: {first}" in proc.stderr, proc.stderr
    _reads_back(first, receipt)
    # and an upload does it too (the bank is not there: the notes stay pending)
    first.unlink()
    code, rep = hubi_json("merchant", "--home", home, "upload", "--bank", "http://127.0.0.1:9",
                          "--retries", "0")  # fmt: skip
    assert code == 1 and rep["receipts_rewritten"] == [str(first)], rep
    _reads_back(first, receipt)
    with shop.merchant() as m:
        assert m.outbox.counts()["pending"] == 2


def test_a_receipt_image_that_cannot_be_written_does_not_make_a_kept_note_look_lost(
    tmp_path: Path,
) -> None:
    """HOME/qr is a file, not a folder: the note is kept, so the scan must say it was accepted
    (it said "error" and exit 2, and a cashier would take another payment); the image is
    written by the next command once HOME/qr can hold it."""
    shop = make_shop(tmp_path)
    qr = shop.home / "qr"
    if qr.exists():
        for p in qr.iterdir():
            p.unlink()
        qr.rmdir()
    qr.write_text("not a folder")
    code, out = _scan_one(shop, tmp_path, "a", 990, tmp_path / "req.png")
    assert code == 0 and out["accepted"] == 1, out
    (r,) = out["results"]
    assert r["accepted"] and r["receipt"]["png"] is None, r
    assert r["receipt_png_error"].startswith("receipt image not written: "), r
    receipt = bytes.fromhex(r["receipt"]["hex"])
    with shop.merchant() as m:
        (row,) = m.notes()
        assert row.receipt == receipt
    # HOME/qr still a file: the outbox is listed all the same, and the image named as missing
    code, listed = hubi_json("merchant", "--home", str(shop.home), "outbox")
    assert code == 0 and listed["receipts_rewritten"] == [], listed
    assert "receipts_error" in listed and len(listed["items"]) == 1, listed
    qr.unlink()
    code, listed = hubi_json("merchant", "--home", str(shop.home), "outbox")
    (path,) = listed["receipts_rewritten"]
    assert code == 0 and Path(path).name == f"receipt-{r['receipt']['serial']:06d}.png", listed
    _reads_back(Path(path), receipt)
