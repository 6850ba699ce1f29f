"""Hot backup (DESIGN §1): a real replica process copies a real primary's records over HTTP and
hands out named records with their signatures; records deleted from the primary's database come
back with `hubi audit restore --db ... --backup http://replica` and the audit is clean again.
"""

from __future__ import annotations

import http.server
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from hubi.bank import records as rec_mod
from hubi.bank.auth import Signer
from hubi.bank.client import BankClient, BankError, HttpRecordSource
from hubi_core import codec
from tests import bank_nodes, servers
from tests.bank_nodes import prepare_bank

# fixtures used here (pytest finds them by name in this module)
bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes
postgres_server = servers.postgres_server
postgres_db = servers.postgres_db

HUBI = [sys.executable, "-c", "from hubi.cli import main; main()"]


def hubi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUBI, *args], capture_output=True, text=True, timeout=120)


def wait_replicated(replica, size: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = replica.health()["detail"]
        if d["records"] >= size:
            return d
        assert not d.get("stopped"), d
        time.sleep(0.05)
    raise AssertionError(f"replica has {d['records']} of {size} records: {d}")


def _upload_some(url: str, accts: dict, count: int, first_serial: int = 1) -> None:
    a = list(accts.values())
    c = BankClient(url)
    for i in range(count):
        payer, payee = a[i % len(a)], a[(i + 1) % len(a)]
        assert c.upload(payer.note(payee.id, 1 + i, serial=first_serial + i)).booked


def _start_pair(world, nodes, db: str, replica_db: str, accounts: int = 4):
    accts = prepare_bank(world.home, "BKA", db, accounts=accounts, funds=100_000)
    primary = nodes(world.home, "BKA", db, name="primary").start()
    replica = nodes(
        world.home,
        "BKA",
        replica_db,
        extra=["--replica-of", primary.url],
        name="replica",
    ).start()
    return accts, primary, replica


def test_replica_copies_and_restore_brings_the_audit_back(bank_world, nodes, tmp_path):
    world = bank_world
    db_path = tmp_path / "bka.db"
    db = f"sqlite:///{db_path}"
    accts, primary, replica = _start_pair(world, nodes, db, f"sqlite:///{tmp_path / 'rep.db'}")
    assert replica.health()["role"] == "replica"
    _upload_some(primary.url, accts, 30)
    size = primary.health()["detail"]["register_size"]
    assert size == 2 * 4 + 2 * 30
    wait_replicated(replica, size)

    # the replica serves named records, with their signatures, to the bank and regulators only
    me = BankClient(replica.url, world.bank_signer("BKA"))
    [r] = me.records([("BKA-000002", 3)])
    body = bytes.fromhex(r["body"])
    rec = rec_mod.Record.parse(body)
    assert (rec.book, rec.n) == ("BKA-000002", 3) and r["record"]["sig8"] == rec.sig8.hex()
    assert rec_mod.BookVerifier("BKA", world_bank_key(world)).check_record(rec) == []
    assert BankClient(replica.url, world.regulator).records([("BKA-000002", 3)])
    a1 = accts["BKA-000001"]
    with pytest.raises(BankError) as e:  # the replica knows no accounts...
        BankClient(replica.url, a1.signer).records([("BKA-000001", 1)])
    assert e.value.code == "unknown-caller"
    presenting = Signer(a1.id, a1.private, codec.encode(a1.template))
    with pytest.raises(BankError) as e:  # ...and a customer who shows its template gets no records
        BankClient(replica.url, presenting).records([("BKA-000001", 1)])
    assert e.value.code == "role-denied"
    with pytest.raises(BankError) as e:  # a hot backup takes no uploads, and says what it is
        BankClient(replica.url).upload(accts["BKA-000001"].note("BKA-000002", 1, serial=99))
    assert (e.value.status, e.value.code) == (404, "not-found"), e.value
    assert "serves /v1/backup/records only" in e.value.message  # was a bare "Not Found"
    for ask in (lambda: me.book("BKA-000002"), lambda: me.account("BKA-000002"), me.audit):
        with pytest.raises(BankError) as e:  # the primary's routes: 404, naming what it serves
            ask()  # a book's page was a 500 (the replica has no books to page through)
        assert (e.value.status, e.value.code) == (404, "not-found"), e.value
        assert "serves /v1/backup/records only" in e.value.message
    described = httpx.get(replica.url + "/openapi.json").json()["paths"]
    assert "/v1/backup/records" in described and "/v1/accounts/{account}/book" not in described
    src = HttpRecordSource(replica.url, world.bank_signer("BKA"))
    got = list(src.fetch([("BKA-000001", 1), ("BKA-000001", 999)]))
    assert [g["number"] for g in got] == [1]

    # lose records at the primary: one in the middle, two adjacent, and a book's tail
    books = {b: BankClient(primary.url, world.bank_signer("BKA")).book(b)["length"] for b in accts}
    lost = [
        ("BKA-000001", 4),
        ("BKA-000002", 5),
        ("BKA-000002", 6),
        ("BKA-000003", books["BKA-000003"]),
    ]
    with sqlite3.connect(db_path) as conn:
        for b, n in lost:
            assert (
                conn.execute("DELETE FROM records WHERE book = ? AND n = ?", (b, n)).rowcount == 1
            )
    conn.close()

    bad = hubi("audit", "verify", "--db", db, "--home", str(world.home), "--json")
    assert bad.returncode == 1, bad.stderr
    found = {(f["book"], f["record"]) for f in json.loads(bad.stdout)["findings"]}
    assert set(lost) <= found

    restored = hubi(
        "audit", "restore", "--db", db, "--home", str(world.home), "--backup", replica.url, "--json"
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    doc = json.loads(restored.stdout)
    assert doc["ok"] and sorted((r["book"], r["record"]) for r in doc["restored"]) == sorted(lost)
    good = hubi("audit", "verify", "--db", db, "--home", str(world.home), "--json")
    assert good.returncode == 0, good.stdout
    assert json.loads(good.stdout)["ok"]

    # the node goes on booking on the restored books, and the replica keeps up
    _upload_some(primary.url, accts, 6, first_serial=100)
    wait_replicated(replica, size + 12)
    reg = BankClient(primary.url, world.regulator)
    assert reg.audit()["ok"]


def world_bank_key(world) -> bytes:
    from hubi import kmc

    return kmc.load_trust(world.home / "trust").bank_key("BKA")


def test_replica_refuses_a_record_that_does_not_verify(bank_world, nodes, tmp_path):
    """A primary serving an altered record: the replica keeps what it verified and says why."""
    world = bank_world
    db_path = tmp_path / "bka.db"
    accts = prepare_bank(world.home, "BKA", str(db_path), accounts=3, funds=1_000)
    primary = nodes(world.home, "BKA", str(db_path), name="primary").start()
    _upload_some(primary.url, accts, 3)
    with sqlite3.connect(db_path) as conn:
        (body,) = conn.execute(
            "SELECT body FROM records WHERE book = 'BKA-000002' AND n = 2"
        ).fetchone()
        body = bytearray(body)
        body[22 + 16] ^= 1  # a bit of the ecode: sig8 no longer covers it
        conn.execute(
            "UPDATE records SET body = ? WHERE book = 'BKA-000002' AND n = 2", (bytes(body),)
        )
    conn.close()
    replica = nodes(
        world.home, "BKA", str(tmp_path / "rep.db"), extra=["--replica-of", primary.url], name="r"
    ).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        d = replica.health()["detail"]
        if d.get("stopped"):
            break
        time.sleep(0.05)
    assert "BKA-000002#2" in d["stopped"] and "sig8" in d["stopped"], d
    held = BankClient(replica.url, world.bank_signer("BKA")).records([("BKA-000002", 2)])
    assert held == []


class _OddPrimary(http.server.BaseHTTPRequestHandler):
    """A 'primary' whose replication log is JSON of the wrong shape (set ``answer``)."""

    answer: bytes = b"{}"

    def do_GET(self) -> None:  # noqa: N802 - the handler's API
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ([1, 2], "is not a list of records: [1, 2]"),
        ({"records": "none"}, "is not a list of records"),
        ({"records": [{"seq": 0, "book": "BKA-000001"}]}, "malformed record entry: KeyError"),
        ({"records": [7]}, "malformed record entry: '7'"),
    ],
)
def test_replica_stops_on_a_replication_log_of_the_wrong_shape(bank_world, tmp_path, answer, words):
    """JSON of the wrong shape from the primary was retried for ever, with a traceback in the
    log each time (AttributeError, TypeError). It is now looked at as bad records are: the
    replica stops pulling and /health says why."""
    from hubi.bank.replica import Replica, ReplicaError, ReplicaStore
    from hubi.bank.restore import RestoreError, _coerce

    world = bank_world
    handler = type("Odd", (_OddPrimary,), {"answer": json.dumps(answer).encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    store = ReplicaStore(str(tmp_path / "rep.db"))
    url = f"http://127.0.0.1:{server.server_address[1]}"
    replica = Replica("BKA", url, store, world.bank_signer("BKA"), world_bank_key(world))
    try:
        with pytest.raises(ReplicaError, match=re.escape(words)):
            replica.pull_once()
        replica.poll_interval = 0.01
        replica.start()
        deadline = time.monotonic() + 60
        while replica.health()["stopped"] is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert words in (replica.health()["stopped"] or ""), replica.health()
        # `hubi audit restore --backup URL` asking the same server: named, not a TypeError
        source = HttpRecordSource(url, world.bank_signer("BKA"), "BKA")
        with pytest.raises((BankError, RestoreError)) as caught:
            for item in source.fetch([("BKA-000001", 1)]):
                _coerce(item)
        said = str(caught.value)
        assert "records answer of the wrong shape" in said or "malformed record" in said, said
        source.close()
    finally:
        replica.close()
        server.shutdown()
        server.server_close()


def test_replica_of_a_postgresql_primary(bank_world, nodes, tmp_path, postgres_db):
    accts, primary, replica = _start_pair(
        bank_world, nodes, postgres_db, str(Path(tmp_path) / "rep.db"), accounts=3
    )
    _upload_some(primary.url, accts, 10)
    size = primary.health()["detail"]["register_size"]
    d = wait_replicated(replica, size)
    assert d["next_seq"] == size and d["error"] is None
    m = BankClient(replica.url).metrics()
    assert "hubi_replica_records_total" in m
