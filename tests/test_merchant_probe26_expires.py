"""`hubi merchant request --expires` took up to ten years: a request signed for one sale stayed
payable long after the price or the cashier changed. It now takes at most a day (86400 s),
says so, and a refused request leaves nothing behind. A purpose that is not UTF-8 is named
too. Real `hubi` processes."""

from __future__ import annotations

from pathlib import Path

from hubi.merchant import Merchant
from tests.test_merchant_support import hubi, hubi_json, make_shop


def test_a_request_payable_for_more_than_a_day_is_refused(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    h = str(shop.home)
    for expires in ("86401", str(10 * 365 * 86400)):
        png = tmp_path / f"req-{expires}.png"
        proc = hubi("merchant", "--home", h, "request", "--amount", "1", "--expires", expires,
                    "--png", str(png), "--no-qr")  # fmt: skip
        assert proc.returncode == 2, proc.stdout + proc.stderr
        said = " ".join(proc.stderr.split())
        assert f"Invalid value for '--expires': {expires} seconds is more than a day" in said
        assert not png.exists()
    with Merchant.open(shop.home) as m:  # nothing was signed or kept
        assert m.outbox.requests() == []
    code, out = hubi_json("merchant", "--home", h, "request", "--amount", "1", "--expires",
                          "86400", "--no-qr")  # fmt: skip
    assert code == 0 and out["ok"], out
    req = out["request"]
    assert req["expiry"] - req["time"] == 86400, req
    help_text = " ".join(hubi("merchant", "request", "--help").stdout.split())
    assert "1 to 86400 (a day" in help_text


def test_a_purpose_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    """A purpose typed in another locale (byte 0xFF on the command line) was refused as
    "'utf-8' codec can't encode characters in position 2-2", naming nothing."""
    shop = make_shop(tmp_path)
    code, out = hubi_json("merchant", "--home", str(shop.home), "request", "--amount", "1",
                          "--purpose", "te\udcffa")  # fmt: skip
    assert code == 2, out
    assert out["message"].startswith("--purpose 'te\\udcffa': not UTF-8 text"), out
    with Merchant.open(shop.home) as m:
        assert m.outbox.requests() == []
