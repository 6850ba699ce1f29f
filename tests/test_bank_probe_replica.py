"""Hot backup probed as a hostile or broken primary would treat it (real primary processes).

- A primary restored from an older copy of its database: the replica asked it for entries past
  its register, got none, and waited without a word (/health all well) — then took what the
  primary booked next under numbers it already held. It now stops and says the primary went
  back in time.
- A primary serving, under a new sequence number, a record (book, n) the replica holds with
  other bytes: skipped without a word (INSERT ... ON CONFLICT DO NOTHING), so the backup and the
  primary disagreed silently. It now stops and names the record.
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading

import pytest

from hubi import kmc
from hubi.bank.client import BankClient
from hubi.bank.replica import Replica, ReplicaError, ReplicaStore
from tests import bank_nodes
from tests.bank_nodes import prepare_bank

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes


def _upload(url: str, accts: dict, amounts: list[int], first_serial: int) -> None:
    a = list(accts.values())
    c = BankClient(url)
    for i, amount in enumerate(amounts):
        payer, payee = a[i % len(a)], a[(i + 1) % len(a)]
        assert c.upload(payer.note(payee.id, amount, serial=first_serial + i)).booked


def _replica(world, url: str, path) -> Replica:
    key = kmc.load_trust(world.home / "trust").bank_key("BKA")
    return Replica("BKA", url, ReplicaStore(str(path)), world.bank_signer("BKA"), key)


def test_a_primary_gone_back_in_time_stops_the_replica(bank_world, nodes, tmp_path):
    world = bank_world
    db = tmp_path / "bka.db"
    accts = prepare_bank(world.home, "BKA", str(db), accounts=3, funds=10_000)
    shutil.copy(db, tmp_path / "old.db")  # the copy the operator will wrongly restore
    primary = nodes(world.home, "BKA", str(db), name="primary").start()
    _upload(primary.url, accts, [10, 11, 12, 13], first_serial=1)
    replica = _replica(world, primary.url, tmp_path / "rep.db")
    try:
        replica.catch_up()
        held = replica.store.count()
        primary.stop()
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"bka.db{suffix}").unlink(missing_ok=True)
        shutil.copy(tmp_path / "old.db", db)
        primary.start()
        with pytest.raises(ReplicaError, match="went back in time"):
            replica.pull_once()
        assert replica.store.count() == held  # nothing of the rewritten history taken
    finally:
        replica.close()


class _Primary(http.server.BaseHTTPRequestHandler):
    """Serves a fixed replication log (set ``log``), whatever `from` is asked."""

    log: bytes = b"{}"

    def do_GET(self) -> None:  # noqa: N802 - the handler's API
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.log)))
        self.end_headers()
        self.wfile.write(self.log)

    def log_message(self, *args: object) -> None:
        pass


def test_a_record_rewritten_under_a_new_number_stops_the_replica(bank_world, nodes, tmp_path):
    world = bank_world
    # two real histories of BKA: the same account funded with other amounts
    dbs = [tmp_path / "a.db", tmp_path / "b.db"]
    for db, funds in zip(dbs, (10_000, 20_000), strict=True):
        prepare_bank(world.home, "BKA", str(db), accounts=2, funds=funds)
    logs = []
    for i, db in enumerate(dbs):
        node = nodes(world.home, "BKA", str(db), name=f"p{i}").start()
        logs.append(BankClient(node.url, world.bank_signer("BKA")).replication_log(0, 500))
        node.close()
    replica = _replica(
        world, nodes(world.home, "BKA", str(dbs[0]), name="a").start().url, tmp_path / "rep.db"
    )
    server = None
    try:
        replica.catch_up()
        held = replica.store.count()
        first = [r for r in logs[1]["records"] if r["book"] == "BKA-000001" and r["number"] == 1]
        assert first and first[0]["body"] != replica.records([("BKA-000001", 1)])[0][0]["body"]
        entry = dict(first[0], seq=held)  # history B's record 1, after what the replica holds
        doc = {"from": held, "register_size": held + 1, "records": [entry]}
        handler = type("P", (_Primary,), {"log": json.dumps(doc).encode()})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        replica.primary_url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ReplicaError, match="BKA-000001#1 .*differs from the one"):
            replica.pull_once()
        assert replica.store.count() == held
    finally:
        replica.close()
        if server is not None:
            server.shutdown()
            server.server_close()
