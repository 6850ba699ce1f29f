"""A hot backup killed with kill -9 again and again while it copies from its primary, restarted
each time: it resumes where its last committed batch ended and ends holding exactly the
primary's register (same sequence numbers, records and hash chains). Then records are lost at
the primary and `hubi audit restore` brings them back from it: over HTTP from the backup node
and straight from the backup's database. Run with both sides on SQLite and both on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from hubi.bank.engine import BankEngine
from hubi.bank.replica import ReplicaStore
from hubi.bank.store import open_store
from tests import bank_nodes, servers
from tests.bank_nodes import prepare_bank

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes
postgres_server = servers.postgres_server

HUBI = [sys.executable, "-c", "from hubi.cli import main; main()"]
NOTES = 1400  # with the funding, over 2500 register entries: three pulls of 1000


def hubi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUBI, *args], capture_output=True, text=True, timeout=300)


def _book_many(home, db: str, accts: dict) -> None:
    a = list(accts.values())
    with BankEngine.open(db, home=home, bank="BKA") as eng:
        for i in range(NOTES):
            payer, payee = a[i % len(a)], a[(i + 1) % len(a)]
            assert eng.book(payer.note(payee.id, 1 + i % 50, serial=1 + i // len(a))).ok


def _primary_rows(db: str) -> list[tuple]:
    st = open_store(db, create=False)
    try:
        rows = st.reader().all(
            "SELECT g.seq, g.book, g.n, r.body, r.hchain FROM register g "
            "JOIN records r ON r.book = g.book AND r.n = g.n ORDER BY g.seq"
        )
        return [(int(s), b, int(n), bytes(body), bytes(h)) for s, b, n, body, h in rows]
    finally:
        st.close()


def _replica_rows(url: str) -> tuple[list[tuple], int]:
    st = ReplicaStore(url)
    try:
        rows = st.query("SELECT seq, book, n, body, hchain FROM replica_records ORDER BY seq")
        held = [(int(s), b, int(n), bytes(body), bytes(h)) for s, b, n, body, h in rows]
        return held, st.count()
    finally:
        st.close()


def _held(replica) -> int:  # noqa: ANN001
    d = replica.health()["detail"]
    assert not d.get("stopped"), d
    return int(d["records"])


def _wait(replica, want: int) -> None:  # noqa: ANN001
    deadline = time.monotonic() + 60
    while _held(replica) < want:
        assert time.monotonic() < deadline, f"replica holds {_held(replica)} of {want}"
        time.sleep(0.02)


def _urls(store: str, tmp_path, request) -> tuple[str, str]:  # noqa: ANN001
    if store == "sqlite":
        return f"sqlite:///{tmp_path / 'bka.db'}", f"sqlite:///{tmp_path / 'rep.db'}"
    pg = request.getfixturevalue("postgres_server")
    names = [f"p24_{w}_{uuid.uuid4().hex[:8]}" for w in ("bka", "rep")]
    for name in names:
        request.addfinalizer(lambda name=name: pg.drop_database(name))
    return pg.create_database(names[0]), pg.create_database(names[1])


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_backup_killed_while_copying_resumes_and_restores(
    bank_world, nodes, tmp_path, request, store
):
    world = bank_world
    db, rep_db = _urls(store, tmp_path, request)
    accts = prepare_bank(world.home, "BKA", db, accounts=4, funds=10_000_000)
    _book_many(world.home, db, accts)
    want = _primary_rows(db)
    size = len(want)
    assert size > 2500
    primary = nodes(world.home, "BKA", db, name="primary").start()
    replica = nodes(world.home, "BKA", rep_db, extra=["--replica-of", primary.url], name="rep")
    kills, cut_short = 0, 0
    replica.start()
    while kills < 6:
        held = _held(replica)
        if held >= size:
            break
        _wait(replica, held + 1)  # it copied something since the last start: kill it now
        replica.kill9()
        kills += 1
        got, counted = _replica_rows(rep_db)
        assert got == want[: len(got)] and counted == len(got)  # a prefix, each batch whole
        cut_short += len(got) < size
        replica.start()
    assert kills >= 1 and cut_short >= 1, (kills, cut_short)
    _wait(replica, size)
    got, counted = _replica_rows(rep_db)
    assert got == want and counted == size
    # the backup's record route with names no book has (NUL: PostgreSQL refuses it; a lone
    # surrogate: neither store can encode it) answers, never a 500
    me = world.bank_signer("BKA")
    for doc, status in (
        ({"records": [{"book": "A\x00B", "number": 1}, {"book": "BKA-000001", "number": 1}]}, 200),
        ({"records": [{"book": "\ud800", "number": 1}]}, 422),
    ):
        body = json.dumps(doc).encode()
        hdr = me.headers("BKA", "POST", "/v1/backup/records", "", body)
        hdr["Content-Type"] = "application/json"
        r = httpx.post(replica.url + "/v1/backup/records", content=body, headers=hdr, timeout=60)
        assert r.status_code == status, r.text
        if status == 200:
            assert r.json()["missing"] == [{"book": "A\x00B", "number": 1}]
            assert [x["book"] for x in r.json()["records"]] == ["BKA-000001"]

    # records lost at the primary come back from the restarted backup
    lost = [("BKA-000001", 5), ("BKA-000002", 40), ("BKA-000002", 41), ("BKA-000003", 700)]
    primary.stop()
    st = open_store(db, create=False)
    with st.transaction() as tx:
        for b, n in lost:
            tx.execute("DELETE FROM records WHERE book = ? AND n = ?", (b, n))
    st.close()
    bad = hubi("audit", "verify", "--db", db, "--home", str(world.home), "--json")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    h = ["--db", db, "--home", str(world.home), "--json"]
    out = hubi("audit", "restore", *h, "--backup", replica.url)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["ok"] and sorted((r["book"], r["record"]) for r in doc["restored"]) == lost
    assert _primary_rows(db) == want
    # again, straight from the backup's database (the backup node stopped), with records lost
    # together with their register rows as well
    replica.stop()
    gone = [lost[2]] + [("BKA-000004", n) for n in (300, 301, 302)]
    st = open_store(db, create=False)
    with st.transaction() as tx:
        for b, n in gone:
            tx.execute("DELETE FROM records WHERE book = ? AND n = ?", (b, n))
        tx.execute("DELETE FROM register WHERE book = 'BKA-000004' AND n >= 300 AND n <= 302")
    st.close()
    out = hubi("audit", "restore", *h, "--backup", rep_db)
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted((r["book"], r["record"]) for r in json.loads(out.stdout)["restored"]) == gone
    good = hubi("audit", "verify", "--db", db, "--home", str(world.home), "--json")
    assert good.returncode == 0 and json.loads(good.stdout)["ok"], good.stdout
    assert _primary_rows(db) == want
    for text in (out.stdout + out.stderr, replica.log_text()):
        assert "Traceback" not in text


def test_backup_database_that_cannot_be_opened_is_named(bank_world, tmp_path, postgres_server):
    """`hubi bank serve --replica-of` with a hot-backup database it cannot open printed a
    psycopg or sqlite3 traceback (the books' own store says "cannot connect ..." in one line)."""
    from urllib.parse import urlsplit

    from hubi.consortium.supervisor import serve_argv
    from hubi.infra.ports import free_port, release_port

    good = postgres_server.create_database("p24_rep_urls", exist_ok=True)
    u = urlsplit(good)
    where = f"{u.hostname}:{u.port}"
    (tmp_path / "a-folder.db").mkdir()
    cases = {
        f"postgresql://{u.username}:{u.password}@{where}/p24_no_such_db": 'database "p24_no',
        f"postgresql://{u.username}:not-the-password@{where}/p24_rep_urls": "password",
        f"{good}?sslmode=bogus": "sslmode",
        f"sqlite:///{tmp_path / 'a-folder.db'}": "unable to open database file",
    }
    port = free_port()
    try:
        for url, said in cases.items():
            argv = serve_argv(bank_world.home, "BKA", port, tmp_path / "ready.json", "warning")
            env = {**os.environ, "HUBI_DB": url}  # as an operator keeps a password off argv
            run = subprocess.run(
                [*argv, "--replica-of", "http://127.0.0.1:9"],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
            )
            out = run.stdout + run.stderr
            assert run.returncode != 0 and "Traceback" not in out, out
            assert "the hot backup's" in out and said in out, out
            assert u.password not in out and "not-the-password" not in out, out
    finally:
        release_port(port)
        postgres_server.drop_database("p24_rep_urls")


def test_a_folder_given_as_a_database_is_called_a_folder(bank_world, tmp_path):
    """A folder passed as --db or --backup was reported as "the file does not exist"."""
    db = f"sqlite:///{tmp_path / 'bka.db'}"
    prepare_bank(bank_world.home, "BKA", db, accounts=1)
    h = ["--home", str(bank_world.home)]
    for args in (
        ["audit", "verify", "--db", str(tmp_path), *h],
        ["audit", "restore", "--db", db, "--backup", str(tmp_path), *h],
    ):
        out = hubi(*args)
        text = out.stdout + out.stderr
        assert out.returncode == 2 and "Traceback" not in text, text
        assert f"no database at {tmp_path}: the file is a folder, not a database file" in text
