"""Probe 24 of `hubi merchant scan` and `outbox`: a shop whose clock is far off.

A request's expiry is the merchant's clock; a note's time is the payer's token's. With the shop's
clock days behind, every note came out 'expired' with nothing said about the clock. Real notes,
real QR frames, the real `hubi` command.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hubi_core import codec
from tests.test_merchant_support import T0, frames, hubi_json, make_shop


def test_a_note_far_ahead_of_this_clock_is_expired_with_a_word_about_the_clock(
    tmp_path: Path,
) -> None:
    shop = make_shop(tmp_path)
    payer = shop.payer()
    with shop.merchant() as m:
        # the shop's clock reads T0; the token's reads three days later
        m.request(1250, "coffee", expires=300, now=T0)
        res = m.accept(payer.note(1250, time=T0 + 3 * 86400), now=T0 + 20)
        assert not res.ok and res.verdict.category == "expired", res.verdict.message()
        reason = res.verdict.reason
        assert reason.startswith("expired: the note was signed at"), reason
        assert "3.0 days ahead of this computer's clock" in reason, reason
        assert "set it and make a new request" in reason, reason
        # a note just late, with the clocks agreeing: the plain reason, nothing about clocks
        res = m.accept(payer.note(1250, time=T0 + 400), now=T0 + 420)
        assert res.verdict.category == "expired" and "clock" not in res.verdict.reason
        assert m.outbox.counts()["pending"] == 0  # nothing was taken
        # and the note whose time fits is still taken (the request stayed open)
        assert m.accept(payer.note(1250, time=T0 + 100), now=T0 + 420).ok


def test_cli_scan_of_a_note_from_a_token_hours_ahead_says_so(tmp_path: Path) -> None:
    """`hubi merchant scan` of a real QR frame: this computer's clock is the clock (no `now`
    passed anywhere); the token's note is signed 5 hours later than it."""
    shop = make_shop(tmp_path)
    with shop.merchant() as m:
        m.request(1250, "coffee", expires=300)
    note = shop.payer().note(1250, time=int(time.time()) + 5 * 3600)
    folder = tmp_path / "frames"
    folder.mkdir()
    frames(note, folder)
    code, out = hubi_json("merchant", "--home", str(shop.home), "scan", "--image", str(folder))
    assert code == 1, out
    (r,) = out["results"]
    assert (r["category"], r["field"], r["accepted"]) == ("expired", "expiry", False), r
    assert "hours ahead of this computer's clock" in r["reason"], r["reason"]
    assert r["note"]["serial"] == codec.decode(note).serial


def test_a_note_for_a_request_paid_meanwhile_is_kept_and_named_not_a_crash(
    tmp_path: Path,
) -> None:
    """Two counters on one shop home: counter A sends request #n to a token over the link; while
    its payer types the PIN, counter B scans another customer's note for the same amount, which
    pays #n (the latest open request that fits). A's token then answers with its signed note:
    `accept(note, request_serial=n)` raised MerchantError, `request --port` died with a
    traceback, and the note the token had signed was kept nowhere. It is now a rejection that
    says so, with the note's bytes in the reject log."""
    from hubi.merchant import MerchantError

    shop = make_shop(tmp_path)
    with shop.merchant() as m:
        n = m.request(1250, "coffee", expires=600, now=T0).serial
        first = shop.payer().note(1250)
        assert m.accept(first, now=T0 + 5).ok  # counter B's customer
        late = shop.payer("BKA-000000000043").note(1250)  # counter A's customer
        res = m.accept(late, request_serial=n, now=T0 + 9)
        v = res.verdict
        assert not res.ok and (v.category, v.field) == ("no-request", "request"), v.message()
        assert f"request #{n} is paid, not open" in v.reason and "reject log" in v.reason
        assert res.request_serial == n and v.note_info()["payer"] == "BKA-000000000043"
        log = m.outbox.rejects()[-1]
        assert log["field"] == "request" and log["bytes"] == len(late)
        assert log["note_id"] == v.note_info()["note_id"]
        assert [r.bytes for r in m.notes()] == [first]  # the request is not paid twice
        # a forged note for it is named forged first; a request that never was is a usage error
        forged = bytearray(shop.payer("BKA-000000000043").note(1250))
        forged[-10] ^= 1
        assert m.accept(bytes(forged), request_serial=n).verdict.category == "altered"
        with pytest.raises(MerchantError, match=f"no request #{n + 100} in the outbox"):
            m.accept(late, request_serial=n + 100)
