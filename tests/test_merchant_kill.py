"""The outbox survives kill -9 between scan and upload; upload never loses or duplicates a note.

Real `hubi merchant scan` and `hubi merchant upload` processes are killed with SIGKILL at
seeded points: after the k-th note they reported (plus a few milliseconds, so some kills land
inside the next note's transaction) or after a random time (start-up, decoding, HTTP). After
every kill the outbox is checked from scratch; then the command is run again to the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from hubi.bank.auth import Signer
from hubi.bank.client import BankClient
from hubi_core import codec, lsum, verify
from tests.bank_nodes import nodes  # noqa: F401  (fixture)
from tests.test_merchant_support import HUBI, MERCHANT, ROOT, T0, Shop, env, frames, make_shop
from tests.test_merchant_upload import PAYER, POOR, pay, prepare

pytestmark = pytest.mark.slow


def run_and_kill(
    args: list[str], markers: tuple[str, ...], kill_after: int, rng: random.Random
) -> tuple[str, int, int]:
    """Start `hubi args`; SIGKILL it a few ms after its kill_after-th line starting with one
    of markers (kill_after 0: after a random time instead). Returns (where, lines, status)."""
    proc = subprocess.Popen(
        [*HUBI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**env(), "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
    )
    assert proc.stdout is not None
    seen = 0
    try:
        if kill_after == 0:  # somewhere in start-up (imports, opening the outbox)
            delay = rng.uniform(0.05, 0.6)
            time.sleep(delay)
            where = f"{delay:.2f}s"
        else:
            for line in proc.stdout:
                if line.startswith(markers):
                    seen += 1
                    if seen >= kill_after:
                        break
            delay = rng.uniform(0.0, 0.02)
            time.sleep(delay)
            where = f"line {seen}+{delay * 1000:.0f}ms"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        status = proc.wait(30)
    return where, seen, status


def check_outbox(shop: Shop, notes: set[bytes]) -> int:
    """Every invariant of a (possibly just killed) outbox; returns the number of notes kept."""
    db = sqlite3.connect(shop.home / "outbox.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute(
            "SELECT note_id, payer, serial, bytes, sha256, receipt, receipt_serial,"
            " request_serial FROM notes"
        ).fetchall()
        paid = dict(
            db.execute("SELECT serial, note_id FROM requests WHERE state = 'paid'").fetchall()
        )
        counter = db.execute("SELECT serial FROM counter").fetchone()
    finally:
        db.close()
    with shop.merchant() as m:
        trust = m.trust
    serials = set()
    for nid, payer, serial, raw, digest, receipt, rserial, req in rows:
        raw = bytes(raw)
        assert raw in notes, "a note in the outbox that was never shown"
        assert hashlib.sha256(raw).digest() == bytes(digest)
        assert bytes(nid) == lsum.note_id(payer, serial)
        r = codec.decode(bytes(receipt), codec.RECEIPT)  # the receipt landed with the note
        assert r.serial == rserial and r["note_id"] == bytes(nid)
        assert verify.verify_object(r, trust).ok
        assert bytes(paid[req]) == bytes(nid)  # and its request was marked paid
        serials.add(rserial)
    assert len(serials) == len(rows)
    assert set(map(bytes, paid.values())) == {bytes(r[0]) for r in rows}
    if rows:
        assert counter[0] >= max(serials)
    return len(rows)


def test_kill9_during_scan_keeps_the_outbox_whole(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    rng = random.Random(0x5CA9)
    payer = shop.payer()
    folder = tmp_path / "frames"
    folder.mkdir()
    notes = []
    n = 20
    with shop.merchant() as m:
        for i in range(n):  # customers queueing: one open request each
            m.request(1000 + i, "coffee", expires=10**6, now=T0)
            note = payer.note(1000 + i)
            notes.append(note)
            frames(note, folder, 240 if i % 3 == 0 else 400, prefix=f"n{i:02d}-")
    args = ["merchant", "--home", str(shop.home), "scan", "--image", str(folder), "--no-qr"]
    history: list[tuple[str, int, int]] = []
    kept = 0
    for trial in range(6):
        # every run reads the folder from the start: notes kept earlier come first (duplicates)
        k = 0 if trial and rng.random() < 0.25 else min(n, kept + rng.randint(1, 4))
        where, _, status = run_and_kill(args, ("ACCEPTED", "REJECTED"), k, rng)
        now_kept = check_outbox(shop, set(notes))
        assert now_kept >= kept  # what was kept stays kept
        kept = now_kept
        history.append((where, status, kept))
    killed_midway = [h for h in history if h[1] == -signal.SIGKILL and 0 < h[2] < n]
    assert len(killed_midway) >= 3, history
    proc = subprocess.run(
        [*HUBI, *args, "--json"], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120
    )
    out = json.loads(proc.stdout)
    fresh = [r for r in out["results"] if r["accepted"]]
    dups = [r for r in out["results"] if r["category"] == "duplicate"]
    assert len(fresh) + len(dups) == n and len(dups) == kept
    assert check_outbox(shop, set(notes)) == n
    print(f"\nscan kills (where, status, notes kept): {history}; the last run added {len(fresh)}")


def test_kill9_during_upload_never_loses_or_duplicates(tmp_path: Path, nodes) -> None:  # noqa: F811
    shop = make_shop(tmp_path)
    payers = prepare(shop)
    node = nodes(shop.bank_home, "BKB").start()
    rng = random.Random(0x0B10AD)
    n = 24  # several notes go up within the few ms after a line: room for 3 kills midway
    with shop.merchant() as m:
        notes = [pay(m, payers[PAYER], 100 + i) for i in range(n - 1)]
        notes.append(pay(m, payers[POOR], 50))  # one bounces
        account_key = m.identity.private
        template = m.identity.template
    args = ["merchant", "--home", str(shop.home), "upload", "--bank", node.url]
    history: list[tuple[str, int, int]] = []
    done = 0
    for trial in range(7):
        left = n - done
        k = 0 if (trial and rng.random() < 0.2) or left < 2 else rng.randint(1, min(3, left - 1))
        where, _, status = run_and_kill(args, ("[",), k, rng)
        with shop.merchant() as m:
            rows = m.notes()
            assert sorted(r.bytes for r in rows) == sorted(notes)  # nothing lost, ever
            booked = [r for r in rows if r.state == "booked"]
            assert len(m.book()) == len(booked) and m.audit_book() == []
            done = sum(1 for r in rows if r.state != "pending")
        history.append((where, status, done))
    assert sum(1 for h in history if h[1] == -signal.SIGKILL and 0 < h[2] < n) >= 3, history
    final = subprocess.run(
        [*HUBI, *args, "--json"], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120
    )
    assert final.returncode == 0, final.stdout + final.stderr
    with shop.merchant() as m:
        rows = m.notes()
        assert sorted(r.bytes for r in rows) == sorted(notes)
        assert m.outbox.counts() == {"pending": 0, "booked": n - 1, "bounced": 1, "refused": 0}
        assert m.book_balance() == sum(range(100, 100 + n - 1)) and m.audit_book() == []
        # notes whose first answer a kill swallowed: the bank answered them again, same outcome
        replayed = sum(1 for r in rows if r.outcome and r.outcome.get("duplicate"))
    # the bank booked each note exactly once, however often it was uploaded
    signer = Signer(MERCHANT, account_key, codec.encode(template))
    with BankClient(node.url, signer=signer) as c:
        recs = c.book_all(MERCHANT)
    assert len(recs) == n - 1
    print(
        f"\nupload kills (where, status, notes answered): {history};"
        f" {replayed} answer(s) lost to a kill and given again by the bank"
    )
