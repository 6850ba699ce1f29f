"""`hubi merchant scan --request N` with N past SQLite's integers (a typo, a pasted id) died
with an OverflowError traceback. It is now "no request #N in the outbox", as for any other
serial the outbox does not hold, and the note waits for a scan against the right request.
Real `hubi` processes, a real signed note drawn as the token draws it."""

from __future__ import annotations

import time
from pathlib import Path

from hubi.merchant import Merchant
from tests.test_merchant_support import frames, hubi, hubi_json, make_shop


def test_a_request_serial_past_sqlite_is_no_request_not_a_traceback(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    folder = tmp_path / "f"
    folder.mkdir()
    with shop.merchant() as m:
        serial = m.request(500, "coffee", expires=600).serial
    frames(shop.payer().note(500, time=int(time.time())), folder)
    h = str(shop.home)
    for bad in (str(1 << 63), "9" * 40, "-1"):
        code, out = hubi_json("merchant", "--home", h, "scan", "--image", str(folder),
                              "--request", bad)  # fmt: skip
        assert code == 2, out
        assert out["message"] == f"no request #{bad} in the outbox", out
    with Merchant.open(shop.home) as m:
        assert m.outbox.pending() == []  # nothing was kept against a request that is not there
    code, out = hubi_json("merchant", "--home", h, "scan", "--image", str(folder),
                          "--request", str(serial))  # fmt: skip
    assert code == 0, out


def test_outbox_last_past_sqlite_means_all_not_a_traceback(tmp_path: Path) -> None:
    """`hubi merchant outbox --last N`: N past SQLite's integers was an OverflowError
    traceback; the newest N of fewer notes are all of them."""
    shop = make_shop(tmp_path)
    folder = tmp_path / "f"
    folder.mkdir()
    with shop.merchant() as m:
        m.request(500, "coffee", expires=600)
    frames(shop.payer().note(500, time=int(time.time())), folder)
    code, out = hubi_json("merchant", "--home", str(shop.home), "scan", "--image", str(folder))
    assert code == 0, out
    for last in ("9" * 30, str(1 << 63), "1"):
        code, out = hubi_json("merchant", "--home", str(shop.home), "outbox", "--last", last)
        assert code == 0 and len(out["items"]) == 1, out
    proc_out = hubi("merchant", "--home", str(shop.home), "outbox", "--last", "9" * 30)
    assert proc_out.returncode == 0 and "Traceback" not in proc_out.stderr, proc_out.stderr
