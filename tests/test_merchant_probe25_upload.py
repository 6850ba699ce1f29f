"""Probe 25 of `hubi merchant upload`: a bank that answers 503, and notes not settled yet when
the first pass took longer than settle_wait.

A real bank node (`hubi bank serve`) whose SQLite database is capped with the store URL's
``max_bytes`` answers 503 ``store-full`` once it is full: the merchant's notes stay pending
with the bank's reason, the run says the bank answered (it is not "unreachable"), and the next
upload, once the bank has room, books them. A real HTTP server that plays a bank slow to
answer checks the extra round for the notes not settled yet.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hubi import kmc
from hubi.bank.engine import BankEngine
from hubi_core import codec
from tests.bank_nodes import NodeProcess, nodes  # noqa: F401  (fixture)
from tests.http_fakes import RecordingBank, serving
from tests.test_merchant_probe24_upload import paid, refusal
from tests.test_merchant_support import Shop, hubi, hubi_json, make_shop
from tests.test_merchant_upload import PAYER, bank_db, pay, prepare


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    return make_shop(tmp_path)


def _db_size(path: str) -> int:
    db = sqlite3.connect(path)
    try:
        return (
            db.execute("PRAGMA page_count").fetchone()[0]
            * db.execute("PRAGMA page_size").fetchone()[0]
        )
    finally:
        db.close()


# ------------------------------------------------------------------ 1. a bank answering 503
def test_a_full_bank_leaves_the_notes_pending_with_its_reason_and_the_next_upload_books_them(
    shop: Shop,
    nodes,  # noqa: F811
) -> None:
    payers = prepare(shop)
    n = 80  # more than the capped database takes
    with shop.merchant() as m:
        notes = [pay(m, payers[PAYER], 100 + i) for i in range(n)]
    path = bank_db(shop)
    size = _db_size(path)
    node: NodeProcess = nodes(shop.bank_home, "BKB", db=f"sqlite:///{path}?max_bytes={size}")
    node.start()
    home = str(shop.home)
    fast = ["--retries", "1", "--backoff", "0.05", "--max-backoff", "0.1"]
    code, rep = hubi_json("merchant", "--home", home, "upload", "--bank", node.url, *fast)
    assert code == 1 and not rep["ok"], rep
    counts = rep["counts"]
    assert counts["pending"] >= 1 and counts["booked"] + counts["pending"] == n, counts
    stopped = rep["stopped"]
    # the bank answered: its reason is said, and it is not called unreachable
    assert "503 store-full" in stopped and "unreachable" not in stopped, stopped
    assert "nothing was stored" in stopped, stopped
    first = next(it for it in rep["items"] if it["state"] == "pending")
    assert "503 store-full" in first["detail"] and "unreachable" not in first["detail"], first
    assert first["attempts"] == 2, first  # the retry was made, then the note was left
    with shop.merchant() as m:
        rows = {r.bytes: r for r in m.notes()}
    left = [r for r in rows.values() if r.state == "pending"]
    assert len(left) == counts["pending"] and all(r.bytes in notes for r in left)
    assert all("503 store-full" in (r.last_error or "") for r in left[:1]), left[0].last_error
    # the table a person reads says it too
    proc = hubi("merchant", "--home", home, "upload", "--bank", node.url, "--retries", "0")
    assert proc.returncode == 1, proc.stderr
    assert "503 store-full" in proc.stderr + proc.stdout, proc.stderr + proc.stdout
    assert "unreachable" not in proc.stderr + proc.stdout, proc.stderr + proc.stdout
    # the bank gets room: the next upload books every note left, once
    node.stop()
    node.db = f"sqlite:///{path}?max_bytes={size + 4 * 1024 * 1024}"
    node.start()
    code, rep = hubi_json("merchant", "--home", home, "upload", "--bank", node.url)
    assert code == 0 and rep["ok"] and rep["counts"]["booked"] == len(left), rep
    node.stop()
    with shop.merchant() as m:
        assert m.outbox.counts()["booked"] == n and m.audit_book() == []
    with BankEngine.open(path, home=shop.bank_home, bank="BKB") as eng:
        assert len(eng.records("BKB-000000000007")) == n


# ---------------------------------------------- 2. an extra round after a slow first pass
class _SlowFirstPass(RecordingBank):
    """Answers "pending" the first time it is asked about a note (after `delay` seconds: a
    slow bank), then bounces it with a signed Refusal."""

    asks: dict[bytes, int] = {}
    delay = 0.0
    key = 0
    shop: Shop | None = None
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        with self.lock:
            self.asks[raw] = self.asks.get(raw, 0) + 1
            asked = self.asks[raw]
        doc: dict[str, Any]
        if asked == 1:
            time.sleep(self.delay)
            doc = {"outcome": "pending", "reason": "waiting for endorsements"}
        else:
            assert self.shop is not None
            ref = refusal(self.shop, raw, codec.REASON_INSUFFICIENT_FUNDS, key=self.key)
            doc = {"outcome": "bounced", "refusal": ref.hex()}
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_notes_asked_about_before_a_slow_first_pass_ended_get_another_round(shop: Shop) -> None:
    """Each answer of the first pass takes 0.6 s and the upload's settle_wait is 0.5 s: the
    first pass ends past the deadline, and its "pending" notes used to get no second ask in
    that upload. They now get one more round, and settle in it."""
    notes = paid(shop, 3)
    key = kmc.load_bank_identity(shop.bank_home, "BKB").private
    handler = type("Bank", (_SlowFirstPass,), {"asks": {}, "delay": 0.6, "key": key, "shop": shop})
    said: list[str] = []
    with serving(handler) as url, shop.merchant() as m:
        rep = m.upload(url, retries=0, base_delay=0.01, settle_wait=0.5, say=said.append)
    assert [it.state for it in rep.items] == ["bounced"] * 3, [it.detail for it in rep.items]
    assert rep.ok and [handler.asks[x] for x in notes] == [2, 2, 2], handler.asks
    with shop.merchant() as m:
        assert [r.state for r in m.notes()] == ["bounced"] * 3
    assert sum(1 for s in said if "bounced" in s) == 3, said


def test_a_zero_settle_wait_still_asks_once_more_and_no_more(
    shop: Shop, fake_bank: tuple[str, type[RecordingBank]]
) -> None:
    """settle_wait 0: the extra round is one round, not a wait: a note that never settles is
    asked twice and left pending for the next run."""
    (note,) = paid(shop, 1)
    url, bank = fake_bank
    bank.answer = (200, {"outcome": "pending", "reason": "waiting for endorsements"})
    with shop.merchant() as m:
        rep = m.upload(url, retries=0, base_delay=0.01, settle_wait=0)
        (row,) = m.notes()
    (item,) = rep.items
    assert bank.got == [note, note] and item.state == "pending" and item.attempts == 2, item
    assert item.detail == "not settled yet (waiting for endorsements): upload again later", item
    assert row.state == "pending" and row.attempts == 2
