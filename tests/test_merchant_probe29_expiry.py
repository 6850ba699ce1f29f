"""A merchant whose clock is set back: expired requests stay expired, and the clock is named.

The real `hubi merchant request` and `outbox` run under libfaketime (their own wall clock,
rewritten between commands).

Found: the commands judged a request still open by this computer's clock alone (expiry >
now). Set back a day, a request that had run out became "open" again: its missing image was
drawn anew into HOME/qr, a QR a customer could pay. And a request made on a clock a day behind
was signed with an expiry already past for every token on the right time, without a word.
A request is now judged by the later of the clock and the newest time the outbox already
wrote, and `request` names a clock behind that time (JSON "warnings", a line on stderr).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.test_merchant_probe29_order import DAY, fake_clock, set_clock
from tests.test_merchant_support import Shop, hubi, hubi_json, make_shop

pytestmark = pytest.mark.xdist_group("test_merchant_probe29_expiry")


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    return make_shop(tmp_path / "shop")


def request(home: str, amount: str, *more: str) -> dict:
    code, out = hubi_json(
        "merchant", "--home", home, "request", "--amount", amount, "--no-qr", *more
    )
    assert code == 0, out
    return out


def test_a_request_seen_expired_does_not_come_back_open_when_the_clock_is_set_back(
    shop: Shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = str(shop.home)
    fake_clock(tmp_path, monkeypatch)
    first = request(home, "1.00", "--expires", "60")
    assert "warnings" not in first, first  # a clock on time says nothing
    png = Path(first["request"]["png"])
    set_clock(tmp_path, DAY)  # a day on: the first request has long run out
    later = request(home, "2.00")
    assert "warnings" not in later, later
    png.unlink()  # the cashier cleared the old image away
    set_clock(tmp_path, 0)  # and the clock is set back a day
    code, out = hubi_json("merchant", "--home", home, "outbox")
    assert code == 0, out
    assert not png.exists(), out  # an expired request's QR is not drawn again
    assert out.get("requests_rewritten", []) == [], out
    # a request still payable by every clock is drawn again as before
    Path(later["request"]["png"]).unlink()
    code, out = hubi_json("merchant", "--home", home, "outbox")
    assert out["requests_rewritten"] == [later["request"]["png"]], out


def test_a_request_made_on_a_clock_behind_the_outbox_names_the_clock(
    shop: Shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = str(shop.home)
    fake_clock(tmp_path, monkeypatch)
    request(home, "1.00")
    set_clock(tmp_path, -DAY)
    out = request(home, "2.00")
    (warning,) = out["warnings"]
    assert "clock" in warning and "24.0 hours behind" in warning, warning
    assert out["request"]["time"] < request_time(shop, 1) - DAY + 600  # made all the same
    # in a terminal: a line on stderr, the request shown all the same
    proc = hubi("merchant", "--home", home, "request", "--amount", "3.00", "--no-qr")
    assert proc.returncode == 0, proc.stderr
    assert "warning: this computer's clock" in proc.stderr and "behind" in proc.stderr
    assert "request #3" in proc.stdout


def test_an_outbox_of_an_older_hubi_is_read_from_its_tables(
    shop: Shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No meta 'clock' (written by a hubi before this one): the newest request's time says."""
    home = str(shop.home)
    fake_clock(tmp_path, monkeypatch, DAY)
    request(home, "1.00")
    db = sqlite3.connect(shop.home / "outbox.sqlite")
    with db:
        assert db.execute("DELETE FROM meta WHERE key = 'clock'").rowcount == 1
    db.close()
    set_clock(tmp_path, 0)
    (warning,) = request(home, "2.00")["warnings"]
    assert "behind" in warning, warning


def request_time(shop: Shop, serial: int) -> int:
    db = sqlite3.connect(shop.home / "outbox.sqlite")
    try:
        return db.execute("SELECT time FROM requests WHERE serial = ?", (serial,)).fetchone()[0]
    finally:
        db.close()


def test_a_clock_once_set_ahead_is_forgotten_when_the_operator_says_it_is_right(
    shop: Shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clock set ten years ahead for one request left that time in the outbox: every request
    after the clock was put right warned that it was behind, for ever. `--clock-is-right`
    forgets the later time; the warning says so."""
    home = str(shop.home)
    fake_clock(tmp_path, monkeypatch, 3650 * DAY)
    request(home, "1.00")
    set_clock(tmp_path, 0)  # put right
    (warning,) = request(home, "2.00")["warnings"]
    assert "--clock-is-right" in warning, warning
    assert "warnings" not in request(home, "3.00", "--clock-is-right")
    assert "warnings" not in request(home, "4.00")  # and from then on
