"""A consortium node stops at once: stop() wakes its debit publisher (it waited up to 0.5 s on
its queue) and its applier, and a node stopped and started again still publishes its debits.
A fenced node (its database lock lost) validates no note for its peers: it endorsed from books
that may be another node's now, reserving serial blocks in a database it may not write.

Real parts: an embedded consortium of four banks over the SQLite orderer (same node code as the
bank node processes), real engines and states.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hubi import kmc as kmc_mod
from hubi.bank.backend import EngineBackend
from hubi.consortium.errors import NotEndorsed
from hubi.consortium.node import NodeFenced
from hubi.consortium.service import ConsortiumBackend, EmbeddedConsortium
from tests.consortium_support import BANKS4, close_embedded, load_trust, make_home

pytestmark = pytest.mark.xdist_group("test_consortium_probe29_node")

# generous: a stop now takes about the SQLite orderer's poll (0.05 s); it took up to 0.5 s
STOP_BOUND = 0.3


@pytest.fixture
def world(tmp_path: Path):
    accounts = make_home(tmp_path / "home", BANKS4)
    ec = EmbeddedConsortium(
        tmp_path / "home",
        settle_timeout=20.0,
        prune_interval=None,
        checkpoint_interval=3600.0,
        trust=load_trust(tmp_path / "home"),
    )
    ec.start()
    try:
        yield ec, accounts
    finally:
        close_embedded(ec)


def _settled(out: dict[str, Any]) -> None:
    assert out["outcome"] == "booked", out
    assert out["status"] == "settled", out


def test_stop_is_immediate_and_debits_are_published_after_a_restart(world) -> None:
    ec, acc = world
    payer = acc["BKA-000001"]
    # a note paid from BKA: BKA's applier debits it and its publisher claims the result, then
    # waits on its empty queue again (a fresh 0.5 s wait, before the fix)
    _settled(ec.submit("BKB", payer.note("BKB-000001", 10)))
    node = ec.nodes["BKA"]
    t0 = time.monotonic()
    node.stop()
    took = time.monotonic() - t0
    assert took < STOP_BOUND, f"stopping BKA's node took {took:.3f} s"

    # stopped and started again, several times: the wake-up left nothing that stops the
    # publisher later (each cycle's note needs BKA's debit result in the log to settle)
    for i in range(3):
        node.start()
        _settled(ec.submit("BKC", payer.note("BKC-000001", 20 + i)))
        t0 = time.monotonic()
        node.stop()
        took = time.monotonic() - t0
        assert took < STOP_BOUND, f"cycle {i}: stopping BKA's node took {took:.3f} s"

    # a note ordered while BKA's node is stopped is debited and published once it starts
    # again: nothing is lost by the stop
    out: dict[str, Any] = {}
    upload = threading.Thread(
        target=lambda: out.update(ec.submit("BKD", payer.note("BKD-000001", 30)))
    )
    upload.start()
    time.sleep(0.5)  # ordered (BKA still endorses), not yet debited: its applier is stopped
    assert upload.is_alive(), out
    node.start()
    upload.join(30.0)
    assert not upload.is_alive(), "the note did not settle after BKA's node started again"
    _settled(out)


def test_four_nodes_stop_quickly_one_after_the_other(world) -> None:
    ec, acc = world
    # each bank pays once, so that every node's publisher has just claimed a result
    for payer, payee in [
        ("BKA-000001", "BKB-000001"),
        ("BKB-000001", "BKC-000001"),
        ("BKC-000001", "BKD-000001"),
        ("BKD-000001", "BKA-000001"),
    ]:
        _settled(ec.submit(payee[:3], acc[payer].note(payee, 5)))
    t0 = time.monotonic()
    for n in ec.nodes.values():
        n.stop()
    took = time.monotonic() - t0
    assert took < 2 * STOP_BOUND, f"stopping four nodes one after the other took {took:.3f} s"


def _serials(home: Path, bank: str) -> dict[str, int]:
    """The serial counters in `bank`'s books (blocks reserved so far, by kind)."""
    db = kmc_mod.bank_dir(home, bank) / "bank.db"
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT name, value FROM counters").fetchall())


def test_a_fenced_node_validates_nothing_for_its_peers(world, tmp_path: Path) -> None:
    ec, acc = world
    home = tmp_path / "home"
    cnode = ec.nodes["BKC"]
    # the bank node's own fencing path (hubi.bank.server's lock watchdog calls this)
    backend = ConsortiumBackend(EngineBackend(cnode.engine), cnode)
    before = _serials(home, "BKC")
    backend.fence("the node lost its lock on its database (test)")
    note = acc["BKC-000001"].note("BKA-000001", 7)
    with pytest.raises(NodeFenced, match="fenced: the node lost its lock"):
        cnode.validate(note, "BKA")
    # a note BKC pays, uploaded at BKA: BKC's endorsement is needed and BKC gives none
    with pytest.raises(NotEndorsed, match="BKC"):
        ec.submit("BKA", note)
    assert cnode.validations["answered"] == 0
    assert _serials(home, "BKC") == before, "a fenced node reserved serials"
    assert cnode.unavailable() is not None and "fenced" in cnode.unavailable()
    # the lock back: it validates again, and the same note settles
    backend.fence(None)
    _settled(ec.submit("BKA", note))
    assert cnode.validations["answered"] >= 1
