"""A bank node whose database is full (a real `hubi bank serve` on a SQLite file capped with
the store URL's ``max_bytes``, which fails writes exactly as a full disk does): uploads get 503
``store-full`` naming the cause and the remedy, nothing accepted before is lost or half-booked,
and once there is room (the node restarted with a larger cap) the refused note books."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubi.bank import audit as audit_mod
from hubi.bank.client import BankClient, BankError
from hubi.bank.engine import BankEngine
from hubi.bank.store import Store
from tests import bank_nodes
from tests.bank_nodes import prepare_bank

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes


def test_a_full_database_answers_store_full_and_loses_nothing(
    tmp_path: Path, bank_world, nodes
) -> None:
    home = bank_world.home
    db = f"sqlite:///{tmp_path}/bank.db"
    accts = prepare_bank(home, "BKA", db, accounts=2, funds=10**6)
    a, b = accts["BKA-000001"], accts["BKA-000002"]
    with Store(db) as store:  # about 30 bookings of room beyond what is there
        c = store.conn()
        used = (
            c.execute("PRAGMA page_count").fetchone()[0]
            * c.execute("PRAGMA page_size").fetchone()[0]
        )
    node = nodes(home, "BKA", db=f"{db}?max_bytes={used + 64 * 1024}").start()
    booked: list[bytes] = []
    refused = None
    with BankClient(node.url, timeout=30) as client:
        for serial in range(1, 500):
            note = a.note(b.id, 7, serial)
            try:
                assert client.upload(note).booked
            except BankError as exc:
                refused = (note, exc)
                break
            booked.append(note)
        assert refused is not None, "the database never filled"
        note, exc = refused
        assert (exc.status, exc.code) == (503, "store-full"), exc
        assert "database or disk is full" in exc.message and "max_bytes" in exc.message
        assert len(booked) >= 5
        # still full: the same note is refused the same way, and the node stays up
        with pytest.raises(BankError, match="store-full"):
            client.upload(note)
        assert client.health()["status"] == "ok"
    node.stop()
    # everything answered booked is booked once, the refused note not at all, the books clean
    with BankEngine.open(db, home=home, bank="BKA") as eng:
        assert eng.balance(a.id) == 10**6 - 7 * len(booked)
        assert eng.balance(b.id) == 10**6 + 7 * len(booked)
        report = audit_mod.audit(eng.store, trust=eng.trust, keys=eng.keys)
        assert report.ok, [f.as_dict() for f in report.findings][:5]
    # room again (a larger cap): the refused note books, once
    node.db = f"{db}?max_bytes={used + 1024 * 1024}"
    node.start()
    with BankClient(node.url, timeout=30) as client:
        out = client.upload(refused[0])
        assert out.booked and not out.duplicate
    node.stop()
    with BankEngine.open(db, home=home, bank="BKA") as eng:
        assert eng.balance(a.id) == 10**6 - 7 * (len(booked) + 1)
