"""Review of this stop's clock changes: the edges, on real parts.

- A merchant outbox whose kept time (meta 'clock') is damaged past SQLite's integers: every
  `hubi merchant request` and `outbox` was an OverflowError traceback (the real CLI).
- ClockWatch over the real HttpPeerTransport, against a real HTTP server standing for the
  peers: a refusal whose message holds the words "HTTP 401 stale-timestamp" (a note's purpose)
  counted as a stale clock and said this bank's clock was off; and a refusal was never
  forgotten (a node skipped for being degraded got no note to clear it).
- `hubi consortium status` against a real HTTP server: a 401 without JSON for the signed status
  request left the bank "healthy" with its figures gone; a /health whose consortium part is
  not an object was an AttributeError.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hubi.bank.auth import bank_signer
from hubi.consortium.errors import PeerError
from hubi.consortium.service import ClockWatch
from hubi.consortium.supervisor import init_home, status
from hubi.consortium.transport import HttpPeerTransport
from tests.test_merchant_support import hubi, make_shop

pytestmark = pytest.mark.xdist_group("test_review_probe29b_clock")


# ------------------------------------------------------------------------------ merchant
def test_a_damaged_kept_time_is_read_from_the_tables_and_written_over(tmp_path: Path) -> None:
    shop = make_shop(tmp_path / "shop")
    home = str(shop.home)
    first = hubi("merchant", "--home", home, "request", "--amount", "1.00", "--no-qr", "--json")
    assert first.returncode == 0, first.stderr
    db_path = shop.home / "outbox.sqlite"
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'clock'", ("9" * 30,))
    for args in (["request", "--amount", "2.00", "--no-qr"], ["outbox"]):
        r = hubi("merchant", "--home", home, *args, "--json")
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert "warnings" not in json.loads(r.stdout), r.stdout  # the clock is not behind
    with sqlite3.connect(db_path) as db:
        kept = db.execute("SELECT value FROM meta WHERE key = 'clock'").fetchone()[0]
    assert abs(int(kept) - time.time()) < 600, kept  # the next request wrote over the damage


# ------------------------------------------------------------------------------ peers
class _Peer(BaseHTTPRequestHandler):
    """Answers every request with ``reply`` (status, JSON text) of its server."""

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        code, body = self.server.replies.get(self.path.split("?")[0], (404, "not here"))  # type: ignore[attr-defined]
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("home")
    init_home(path, ["BKA", "BKB", "BKC"], seed=b"review probe29b")
    return path


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, tuple[int, str]]]]:
    replies: dict[str, tuple[int, str]] = {}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Peer)
    srv.replies = replies  # type: ignore[attr-defined]
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", replies
    finally:
        srv.shutdown()
        srv.server_close()


def _ask(watch: ClockWatch, *banks: str) -> None:
    for bank in banks:
        with pytest.raises(PeerError):
            watch.validate(bank, b"\x01\x03\x01note", 5.0)


VALIDATE = "/v1/consortium/validate"
STALE = json.dumps({"error": "stale-timestamp", "message": "X-Hubi-Time is 400 s off"})


def test_a_peer_message_holding_the_words_is_no_stale_clock(
    home: Path, server: tuple[str, dict[str, tuple[int, str]]]
) -> None:
    url, replies = server
    purpose = "refund for HTTP 401 stale-timestamp: a note's purpose"
    replies[VALIDATE] = (409, json.dumps({"error": "refused", "message": purpose}))
    transport = HttpPeerTransport(bank_signer(home, "BKA"), {"BKB": url, "BKC": url})
    watch = ClockWatch(transport)
    try:
        _ask(watch, "BKB", "BKC")
        assert watch.clock() is None  # both read the signed request: no clock is off
        replies[VALIDATE] = (401, STALE)
        _ask(watch, "BKB", "BKC")
        clock = watch.clock()
        assert clock is not None and clock["this_bank_off"] is True, clock
        assert clock["refused_by"]["BKB"]["said"] == "X-Hubi-Time is 400 s off", clock
    finally:
        watch.close()


def test_a_refusal_not_repeated_is_forgotten(
    home: Path, server: tuple[str, dict[str, tuple[int, str]]]
) -> None:
    url, replies = server
    replies[VALIDATE] = (401, STALE)
    watch = ClockWatch(HttpPeerTransport(bank_signer(home, "BKA"), {"BKB": url, "BKC": url}), 0.5)
    try:
        _ask(watch, "BKB", "BKC")
        clock = watch.clock()
        assert clock is not None and clock["this_bank_off"] is True, clock
        time.sleep(0.7)  # nothing asked since: the clock may have been put right
        assert watch.clock() is None
        _ask(watch, "BKB")  # refused again: remembered again
        clock = watch.clock()
        assert clock is not None and sorted(clock["refused_by"]) == ["BKB"], clock
    finally:
        watch.close()


# ------------------------------------------------------------------------------ status
@pytest.fixture
def folder(
    tmp_path: Path, home: Path, server: tuple[str, dict[str, tuple[int, str]]]
) -> tuple[Path, dict[str, tuple[int, str]]]:
    url, replies = server
    up = {
        "state": "running",
        "home": str(home),
        "banks": [{"id": "BKA", "url": url + "/bank", "pid": None}],
        "etcd": [{"name": "m0", "url": url + "/etcd", "pid": None}],
    }
    root = tmp_path / "hubi-consortium"
    root.mkdir()
    (root / "up.json").write_text(json.dumps(up))
    replies["/etcd/health"] = (200, '{"health": "true"}')
    return tmp_path, replies


def test_a_signed_status_refused_without_json_is_not_healthy(
    folder: tuple[Path, dict[str, tuple[int, str]]],
) -> None:
    path, replies = folder
    replies["/bank/health"] = (200, '{"status": "ok"}')
    replies["/bank/v1/consortium/status"] = (401, "<html>401 Authorization Required</html>")
    bank = status(path)["banks"][0]
    assert bank["healthy"] is False, bank
    assert "refused this signed status request (HTTP 401)" in bank["error"], bank


def test_a_health_whose_consortium_part_is_no_object_is_read(
    folder: tuple[Path, dict[str, tuple[int, str]]],
) -> None:
    path, replies = folder
    replies["/bank/health"] = (200, '{"status": "ok", "detail": {"consortium": "all of it"}}')
    replies["/bank/v1/consortium/status"] = (200, '{"applied_revision": 3}')
    bank = status(path)["banks"][0]
    assert bank["healthy"] is True and bank["applied_revision"] == 3, bank
    assert "clock" not in bank, bank
