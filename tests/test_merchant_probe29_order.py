"""The merchant's notes keep the order they were scanned in when the computer's clock steps back.

The real `hubi merchant scan`, `outbox` and `upload` run under libfaketime (preloaded: their
own wall clock, rewritten between commands) against a real HTTP server playing the bank.

Found: the outbox listed and uploaded notes by `scanned_at`, the wall time of the scan. A
clock set back a day between two scans put the later notes first, in `outbox` and in the order
they went to the bank. Notes are now listed and walked in the order the outbox kept them.
"""

from __future__ import annotations

import os
from pathlib import Path

import libfaketime
import pytest

from hubi.merchant import request as req_mod
from tests.http_fakes import RecordingBank, serving
from tests.test_merchant_support import Shop, hubi_json, make_shop

pytestmark = pytest.mark.xdist_group("test_merchant_probe29_order")

FAKETIME_SO = os.path.join(
    os.path.dirname(libfaketime.__file__), "vendor/libfaketime/src/libfaketime.so.1"
)
DAY = 86400


def set_clock(tmp_path: Path, offset: int) -> None:
    """Step the wall clock of the children started from now on to `offset` s off the real one."""
    (tmp_path / "faketime").write_text(f"{offset:+d}\n")


def fake_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset: int = 0) -> None:
    """Children started by this test (hubi() copies os.environ) read their wall clock from
    the file set_clock() writes; monotonic time stays real."""
    set_clock(tmp_path, offset)
    monkeypatch.setenv("LD_PRELOAD", FAKETIME_SO)
    monkeypatch.setenv("DONT_FAKE_MONOTONIC", "1")
    monkeypatch.setenv("FAKETIME_NO_CACHE", "1")
    monkeypatch.setenv("FAKETIME_TIMESTAMP_FILE", str(tmp_path / "faketime"))


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    return make_shop(tmp_path / "shop")


def test_notes_scanned_across_a_clock_step_back_list_and_upload_in_scan_order(
    shop: Shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = str(shop.home)
    payer = shop.payer()
    notes = [payer.note(100 * (i + 1)) for i in range(3)]
    fake_clock(tmp_path, monkeypatch)
    for i, (offset, note) in enumerate(zip((0, -DAY, -DAY), notes, strict=True)):
        set_clock(tmp_path, offset)  # the second scan finds the clock set back a day
        amount = f"{i + 1}.00"
        code, out = hubi_json(
            "merchant", "--home", home, "request", "--amount", amount, "--purpose", "coffee",
            "--no-qr",
        )  # fmt: skip
        assert code == 0, out
        png = req_mod.save_png(note, tmp_path / f"note-{i}.png")
        code, out = hubi_json("merchant", "--home", home, "scan", str(png), "--no-qr")
        assert code == 0 and out["accepted"] == 1, out
    code, listed = hubi_json("merchant", "--home", home, "outbox")
    assert code == 0, listed
    items = listed["items"]
    when = {it["amount"]: it["scanned_at"] for it in items}
    assert when[100] > when[200] + DAY - 600, when  # the clock did step back between them
    assert [it["amount"] for it in items] == [100, 200, 300], items  # scan order, not clock's
    bank = type("Bank", (RecordingBank,), {"got": []})
    with serving(bank) as url:
        code, out = hubi_json("merchant", "--home", home, "upload", "--bank", url, "--retries", "0")
    assert bank.got == notes, out  # to the bank in the order they were taken
    assert [it["note_id"] for it in out["items"]] == [it["note_id"] for it in items]
