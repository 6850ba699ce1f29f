"""Merchant.open and the images written again from the outbox.

- Opening a merchant home checked each trust matrix's 1024 points with a square root in
  Python per point (about 0.19 s a command on an idle machine). hubi.kmc.public_matrix now
  has OpenSSL decode them (the same refusal of a point off the curve) and keeps a checked
  matrix in the process by its file's SHA-256. Checked here: the same points as before, the
  same refusals with the same words, a tampered file never served from the cache, and
  every good matrix taken by the fast path.
- restore_request_pngs and restore_receipt_pngs are one loop (merchant.core._redraw): a
  receipt row with no bytes is passed over as its docstring says (it was drawn as a QR code
  of nothing, an image for no receipt).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hubi import kmc, qrscan
from hubi_core import cpk, ec
from tests.test_merchant_probe25r_receipt_damaged import _kept
from tests.test_merchant_support import make_shop

pytestmark = pytest.mark.xdist_group("test_merchant_probe29_open")


def _bundle(tmp_path: Path) -> Path:
    home = tmp_path / "bank"
    kmc.create_home(home, ["BKA", "BKB"], seed=b"probe29-open" * 3)
    return home / "trust"


def _error(call: object) -> str:
    try:
        call()  # type: ignore[operator]
    except ValueError as exc:
        return str(exc)
    raise AssertionError("no ValueError")


def test_points_and_refusals_are_the_pure_python_ones(tmp_path: Path) -> None:
    trust = _bundle(tmp_path)
    raw = (trust / "matrices" / "BKA.pub").read_bytes()
    kmc._CHECKED.clear()
    fast = kmc.public_matrix(raw)
    pure = cpk.PublicMatrix.from_bytes(raw)
    assert fast.to_bytes() == raw and fast.digest() == pure.digest()
    assert [fast._point(i) for i in range(cpk.CELLS)] == [pure._point(i) for i in range(cpk.CELLS)]
    g = ec.encode_point(ec.G)
    assert fast.public_key("BKA-000000000042", g) == pure.public_key("BKA-000000000042", g)

    off = len(raw) - cpk.CELLS * cpk.POINT_LEN
    cell = off + 700 * cpk.POINT_LEN
    x = int.from_bytes(raw[cell + 1 : cell + 33], "big")
    while ec.y_from_x(x, 0) is not None:  # an x with no point on the curve
        x += 1
    tampered = {
        "off the curve": raw[: cell + 1] + x.to_bytes(32, "big") + raw[cell + 33 :],
        "x past the prime": raw[: cell + 1] + (ec.P + 2).to_bytes(32, "big") + raw[cell + 33 :],
        "uncompressed tag": raw[:cell] + b"\x04" + raw[cell + 1 :],
        "infinity tag": raw[:cell] + b"\x00" + raw[cell + 1 :],
        "short": raw[:-1],
    }
    for what, bad in tampered.items():
        kmc._CHECKED.clear()
        expected = _error(lambda bad=bad: cpk.PublicMatrix.from_bytes(bad))
        assert _error(lambda bad=bad: kmc.public_matrix(bad)) == expected, what
        if what != "short":
            assert "point 700 invalid" in expected, (what, expected)

    # a bundle loaded whole, then one of its matrices tampered in place: loaded again in the
    # same process, it is checked again (another digest), not taken from the cache
    assert kmc.load_trust(trust)
    (trust / "matrices" / "BKA.pub").write_bytes(tampered["off the curve"])
    with pytest.raises(kmc.TrustBundleError, match="point 700 invalid"):
        kmc.load_trust(trust)


def test_a_good_matrix_is_checked_by_openssl_and_once_per_process(tmp_path: Path) -> None:
    """The fast path takes every good matrix (the pure-Python square roots, 1,024 a matrix,
    were 98 % of Merchant.open, 0.4 s cold; about 0.1 s now, measured by hand, not timed
    here), and a process checks the same bytes once."""
    trust = _bundle(tmp_path)
    for bank in ("BKA", "BKB"):
        raw = (trust / "matrices" / f"{bank}.pub").read_bytes()
        fast = kmc._fast_matrix(raw)
        assert fast is not None, bank  # OpenSSL decoded every point: no fallback
        assert fast.to_bytes() == raw
    kmc._CHECKED.clear()
    first = kmc.load_trust(trust)
    again = kmc.load_trust(trust)
    assert all(again.matrices[b] is first.matrices[b] for b in ("BKA", "BKB"))


def test_the_one_redraw_loop_for_receipts_and_requests(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    good_png, good, _ = _kept(shop, tmp_path, "a", 1250)
    empty_png, _, empty_serial = _kept(shop, tmp_path, "b", 700)
    with shop.merchant() as m:
        outbox = m.home.outbox_path
    db = sqlite3.connect(outbox)
    db.execute("UPDATE notes SET receipt = ? WHERE receipt_serial = ?", (b"", empty_serial))
    db.commit()
    db.close()
    good_png.unlink()
    empty_png.unlink()
    with shop.merchant() as m:
        assert m.restore_receipt_pngs() == ([good_png], 0)
        assert qrscan.decode_image(good_png) == [good]
        assert not empty_png.exists(), "a receipt of no bytes drawn as a QR code of nothing"

        # requests: newest first, at most `limit`, the rest counted as still missing
        issued = [m.request(100 + i, "tea", expires=600) for i in range(3)]
        paths = [m.request_path(r.serial) for r in issued]
        for p in paths:
            p.unlink()
        drawn, left = m.restore_request_pngs(limit=2)
        assert [s for s, _ in drawn] == [issued[2].serial, issued[1].serial] and left == 1
        assert [p for _, p in drawn] == [paths[2], paths[1]]
        assert qrscan.decode_image(paths[2]) == [issued[2].bytes]
        assert m.restore_request_pngs() == ([(issued[0].serial, paths[0])], 0)
