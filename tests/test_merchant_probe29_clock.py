"""A merchant computer whose wall clock is a day off, running the real `hubi merchant upload`.

The command runs under libfaketime (preloaded: its own wall clock, monotonic time left real)
against a real HTTP server playing a busy bank on the right clock.

Found: a 503 whose Retry-After is an HTTP date was counted from the merchant's own clock. One
day behind, the upload stopped at once ("the bank asks to wait 1 day") though the bank asked
for two seconds; one day ahead, it did not wait at all and asked again at once. The date is
now counted from the reply's Date header (the bank's clock, as the Retry-After is).
"""

from __future__ import annotations

import json
import os
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import libfaketime
import pytest

from tests.http_fakes import serving
from tests.test_merchant_support import T0, Shop, hubi_json, make_shop

pytestmark = pytest.mark.xdist_group("test_merchant_probe29_clock")

FAKETIME_SO = os.path.join(
    os.path.dirname(libfaketime.__file__), "vendor/libfaketime/src/libfaketime.so.1"
)
DAY = 86400


def fake_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset: int) -> None:
    """Children started by this test (hubi() copies os.environ) see their clock `offset` off."""
    (tmp_path / "faketime").write_text(f"{offset:+d}\n")
    monkeypatch.setenv("LD_PRELOAD", FAKETIME_SO)
    monkeypatch.setenv("DONT_FAKE_MONOTONIC", "1")
    monkeypatch.setenv("FAKETIME_NO_CACHE", "1")
    monkeypatch.setenv("FAKETIME_TIMESTAMP_FILE", str(tmp_path / "faketime"))


class BusyBank(BaseHTTPRequestHandler):
    """Answers the first note with 503 and Retry-After two seconds on (an HTTP date, with the
    server's own Date header beside it), every later one with a plain 400; notes when."""

    seen: list[float] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        self.rfile.read(int(self.headers.get("content-length") or 0))
        with self.lock:
            self.seen.append(time.time())
            first = len(self.seen) == 1
        if first:
            status, doc = 503, {"error": "busy", "message": "come back in a moment"}
        else:
            status, doc = 400, {"error": "bad-note", "message": "seen enough"}
        body = json.dumps(doc).encode()
        self.send_response(status)  # sends Date: this (right) clock
        if first:
            self.send_header("retry-after", formatdate(time.time() + 2, usegmt=True))
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    shop = make_shop(tmp_path / "shop")
    with shop.merchant() as m:
        m.request(500, "coffee", expires=10**6, now=T0)
        assert m.accept(shop.payer().note(500), now=T0 + 1).ok
    return shop


@pytest.mark.parametrize("offset", [-DAY, DAY], ids=["a-day-behind", "a-day-ahead"])
def test_an_http_date_retry_after_is_counted_on_the_banks_clock(
    shop: Shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset: int
) -> None:
    bank = type("Bank", (BusyBank,), {"seen": []})
    fake_clock(tmp_path, monkeypatch, offset)
    with serving(bank) as url:
        code, out = hubi_json(
            "merchant", "--home", str(shop.home), "upload", "--bank", url,
            "--backoff", "0.01", "--max-backoff", "10", "--retries", "2",
        )  # fmt: skip
    (item,) = out["items"]
    assert "asks to wait" not in item["detail"], item  # no day's wait read into two seconds
    assert len(bank.seen) == 2, (bank.seen, out)  # asked again, once the bank said so
    waited = bank.seen[1] - bank.seen[0]
    assert 1.0 <= waited < 4.0, (waited, out)  # the whole-second date: one to two seconds
    assert code == 1 and "bad-note" in item["detail"], out
