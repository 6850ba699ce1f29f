"""`hubi audit verify` and `hubi audit restore` run against a database that a live node
(`hubi bank serve`) is booking into. The audit read the register's head and then its rows,
each statement on its own: entries the node committed in between were "outside the register",
so `verify` reported findings that were not there and `restore` put the lost records back but
exited 1 ("the audit still has findings"). The audit now reads one snapshot: only the lost
records are named, the restore ends clean while the node books on, and nothing is booked twice
or overwritten (the audit after the node stops is clean)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hubi.bank.client import BankClient
from hubi.bank.engine import BankEngine
from tests.bank_nodes import bank_world, nodes, prepare_bank  # noqa: F401 - fixtures

pytestmark = pytest.mark.xdist_group("test_audit_probe27_live_restore")

HUBI = [sys.executable, "-c", "from hubi.cli import main; main()"]
LOST = [("BKA-000001", 5), ("BKA-000001", 6), ("BKA-000001", 20), ("BKA-000002", 10)]
FIRST = 120  # notes booked before the loss


def _hubi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUBI, *args], capture_output=True, text=True, timeout=120)


def _note(accts: list, i: int) -> bytes:
    return accts[i % 4].note(accts[(i + 1) % 4].id, 1 + i % 50, serial=1 + i // 4)


def test_restore_and_verify_while_a_node_books(bank_world, nodes, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "bka.db"
    db = f"sqlite:///{path}"
    accts = list(
        prepare_bank(
            bank_world.home, "BKA", db, accounts=4, funds=10**7, checkpoint_every=16
        ).values()
    )
    with BankEngine.open(db, home=bank_world.home, bank="BKA") as eng:
        for i in range(FIRST):
            assert eng.book(_note(accts, i)).ok
    src, backup = sqlite3.connect(path), sqlite3.connect(tmp_path / "backup.db")
    src.backup(backup)
    src.close()
    backup.close()
    con = sqlite3.connect(path)
    for b, n in LOST:
        con.execute("DELETE FROM records WHERE book = ? AND n = ?", (b, n))
    con.commit()
    con.close()

    node = nodes(bank_world.home, "BKA", db, name="live").start()
    stop, booked, failed = threading.Event(), [0], []
    started = threading.Event()

    def book() -> None:
        client = BankClient(node.url)
        i = FIRST
        while not stop.is_set():
            try:
                client.upload(_note(accts, i))
                booked[0] += 1
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                failed.append(repr(exc))
            i += 1
            if booked[0] >= 20:
                started.set()

    booker = threading.Thread(target=book)
    booker.start()
    try:
        assert started.wait(30), failed
        home = ["--db", db, "--home", str(bank_world.home), "--json"]
        seen = _hubi("audit", "verify", *home)
        restored = _hubi(
            "audit", "restore", *home, "--backup", f"sqlite:///{tmp_path / 'backup.db'}"
        )
        during = booked[0]
    finally:
        stop.set()
        booker.join(60)
    assert not failed, (failed[:3], node.log_text()[-2000:])

    doc = json.loads(seen.stdout)
    assert seen.returncode == 1, seen.stderr
    # the lost records and nothing else: no entry the node booked meanwhile is a finding
    assert sorted((f["book"], f["record"]) for f in doc["findings"]) == LOST, doc["summary"]
    assert {f["kind"] for f in doc["findings"]} == {"missing"}

    out = json.loads(restored.stdout)
    assert restored.returncode == 0, (out["after"] or {}).get("summary")
    assert out["ok"] and sorted((r["book"], r["record"]) for r in out["restored"]) == LOST
    assert booked[0] > during >= 20  # the node booked before, during and after

    node.stop()
    after = _hubi("audit", "verify", "--db", db, "--home", str(bank_world.home), "--json")
    assert after.returncode == 0 and json.loads(after.stdout)["ok"], after.stdout[-2000:]
    con = sqlite3.connect(path)
    size = con.execute("SELECT size FROM register_head").fetchone()[0]
    assert size == con.execute("SELECT count(*) FROM register").fetchone()[0]
    assert size == con.execute("SELECT count(*) FROM records").fetchone()[0]
    con.close()
    for text in (seen.stderr, restored.stderr, after.stderr, node.log_text()):
        assert "Traceback" not in text
