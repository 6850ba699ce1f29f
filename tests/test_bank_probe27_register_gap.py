"""A node whose register has an entry without its record (lost by hand or by a disk) booked
the upload that brought the next checkpoint due, then answered it 500 "internal"
(BankEngineError: register entry N has no record): the uploader was told of a failure for a
note that was booked. The booking now stands and is answered as booked; the checkpoint waits,
named in /health (`degraded`, `checkpoint_error` naming the entry and what to do), and is
made by the next booking once the record is restored (the review of this stop found it made
only at the next multiple of checkpoint_every). Real `hubi bank serve` process."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from hubi.bank.client import BankClient
from hubi.bank.engine import BankEngine
from tests.bank_nodes import bank_world, nodes, prepare_bank  # noqa: F401 - fixtures

pytestmark = pytest.mark.xdist_group("test_bank_probe27_register_gap")

EVERY = 32  # register entries per checkpoint


def _note(accts: list, i: int) -> bytes:
    return accts[i % 2].note(accts[(i + 1) % 2].id, 1 + i % 50, serial=1 + i // 2)


def test_a_checkpoint_over_a_lost_record_waits_and_the_booking_stands(
    bank_world,  # noqa: F811
    nodes,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = tmp_path / "bka.db"
    db = f"sqlite:///{path}"
    accts = list(
        prepare_bank(
            bank_world.home, "BKA", db, accounts=2, funds=10**6, checkpoint_every=EVERY
        ).values()
    )
    with BankEngine.open(db, home=bank_world.home, bank="BKA") as eng:
        i = 0
        while eng.register_size() % EVERY < EVERY - 8:  # a few entries short of a checkpoint
            assert eng.book(_note(accts, i)).ok
            i += 1
        size = eng.register_size()
        due = (size // EVERY + 1) * EVERY
    con = sqlite3.connect(path)
    book, n = con.execute("SELECT book, n FROM register WHERE seq = ?", (size - 3,)).fetchone()
    lost = con.execute("SELECT * FROM records WHERE book = ? AND n = ?", (book, n)).fetchone()
    con.execute("DELETE FROM records WHERE book = ? AND n = ?", (book, n))
    con.commit()

    node = nodes(bank_world.home, "BKA", db, name="gap").start()
    client = BankClient(node.url)
    health = {}
    for j in range(i, i + 8):  # the checkpoint falls due within these: every one is booked
        assert client.upload(_note(accts, j)).outcome == "booked"
        health = httpx.get(node.url + "/health", timeout=10).json()
        if health["detail"]["register_size"] >= due:
            break
    assert health["detail"]["register_size"] >= due, health
    assert health["status"] == "degraded", health
    why = health["detail"]["checkpoint_error"]
    assert f"register entry {size - 3} has no record" in why and "hubi audit" in why, why
    assert (health["detail"]["latest_checkpoint"] or 0) < due
    assert "Traceback" not in node.log_text()

    con.execute(f"INSERT INTO records VALUES ({', '.join('?' * len(lost))})", lost)
    con.commit()
    con.close()
    reached = health["detail"]["register_size"]
    # one booking, far from the next multiple: the record is back, so the heads owed are made
    # (they waited for a booking that crossed the next multiple: up to 1,000 with the default)
    assert client.upload(_note(accts, j + 1)).outcome == "booked"
    health = httpx.get(node.url + "/health", timeout=10).json()
    assert reached < health["detail"]["register_size"] < due + EVERY, health
    assert (health["detail"]["latest_checkpoint"] or 0) >= due, health
    assert health["status"] == "ok" and health["detail"]["checkpoint_error"] is None, health
