"""A node whose due checkpoint waited over a lost record (be2c358) stayed `degraded`, its
checkpoint_error naming a record that was back, until a later commit crossed the *next*
multiple of checkpoint_every (1000 entries by default; an idle node: for ever). Once the
record is restored, the next booking must make the heads it owes. Real `hubi bank serve`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from hubi.bank.client import BankClient
from hubi.bank.engine import BankEngine
from tests.bank_nodes import bank_world, nodes, prepare_bank  # noqa: F401 - fixtures

pytestmark = pytest.mark.xdist_group("test_review27_checkpoint_after_restore")

EVERY = 32  # register entries per checkpoint


def _note(accts: list, i: int) -> bytes:
    return accts[i % 2].note(accts[(i + 1) % 2].id, 1 + i % 50, serial=1 + i // 2)


def test_the_first_booking_after_the_restore_makes_the_waiting_checkpoint(
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
        while eng.register_size() % EVERY < EVERY - 4:  # a few entries short of a checkpoint
            assert eng.book(_note(accts, i)).ok
            i += 1
        size = eng.register_size()
        due = (size // EVERY + 1) * EVERY
    con = sqlite3.connect(path)
    book, n = con.execute("SELECT book, n FROM register WHERE seq = ?", (size - 2,)).fetchone()
    lost = con.execute("SELECT * FROM records WHERE book = ? AND n = ?", (book, n)).fetchone()
    con.execute("DELETE FROM records WHERE book = ? AND n = ?", (book, n))
    con.commit()

    node = nodes(bank_world.home, "BKA", db, name="gap").start()
    client = BankClient(node.url)
    health: dict = {}
    while True:  # book until the checkpoint falls due over the gap
        assert client.upload(_note(accts, i)).outcome == "booked"
        i += 1
        health = httpx.get(node.url + "/health", timeout=10).json()
        if health["detail"]["register_size"] >= due:
            break
        assert i < 200, health
    assert health["status"] == "degraded" and health["detail"]["checkpoint_error"], health
    reached = health["detail"]["register_size"]

    con.execute(f"INSERT INTO records VALUES ({', '.join('?' * len(lost))})", lost)
    con.commit()
    con.close()
    # one booking, far from the next multiple: the record is back, so the heads owed are made
    assert client.upload(_note(accts, i)).outcome == "booked"
    health = httpx.get(node.url + "/health", timeout=10).json()
    assert health["detail"]["register_size"] < due + EVERY, health  # no new multiple crossed
    assert health["detail"]["register_size"] > reached, health
    assert health["detail"]["checkpoint_error"] is None, health
    assert health["status"] == "ok", health
    assert (health["detail"]["latest_checkpoint"] or 0) >= due, health
