"""A hot backup of a primary that lost a record: the primary's replication log joins register
entries to records, so the entry was left out and the backup took the entries after it, looked
up to date, and could never supply the lost record later. The backup now holds everything
before the gap, names the entry (its /health error), and takes the rest once the primary's
operator restores the record. Real `hubi bank serve` primary, real backup store."""

from __future__ import annotations

import sqlite3

import pytest

from hubi.bank.replica import RegisterGap
from tests.bank_nodes import prepare_bank
from tests.test_bank_probe_replica import _replica, _upload, bank_world, nodes  # noqa: F401

pytestmark = pytest.mark.xdist_group("test_bank_probe27_replica_gap")


def test_a_backup_stops_at_a_record_the_primary_lost(bank_world, nodes, tmp_path):  # noqa: F811
    world = bank_world
    db = tmp_path / "bka.db"
    accts = prepare_bank(world.home, "BKA", str(db), accounts=3, funds=10_000)
    primary = nodes(world.home, "BKA", str(db), name="primary").start()
    _upload(primary.url, accts, [10, 11, 12, 13, 14, 15], first_serial=1)
    con = sqlite3.connect(db)
    size = con.execute("SELECT size FROM register_head").fetchone()[0]
    gap = size - 4
    book, n = con.execute("SELECT book, n FROM register WHERE seq = ?", (gap,)).fetchone()
    lost = con.execute("SELECT * FROM records WHERE book = ? AND n = ?", (book, n)).fetchone()
    con.execute("DELETE FROM records WHERE book = ? AND n = ?", (book, n))
    con.commit()
    replica = _replica(world, primary.url, tmp_path / "rep.db")
    try:
        with pytest.raises(RegisterGap, match=f"register entry {gap} came without its record"):
            replica.catch_up()
        assert replica.store.next_seq() == gap  # everything before the gap, nothing after
        assert replica.store.count() == gap
        with pytest.raises(RegisterGap):  # asked again: still there
            replica.pull_once()
        con.execute(f"INSERT INTO records VALUES ({', '.join('?' * len(lost))})", lost)
        con.commit()
        replica.catch_up()  # restored at the primary: the backup takes the rest
        assert replica.store.next_seq() == size and replica.store.count() == size
    finally:
        con.close()
        replica.close()
