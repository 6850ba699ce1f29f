"""Bank texts, probe round 29.

- Counts glued to a plural noun read "1 records", "1 entries": the audit's findings (and
  the consistency proof's refusal, the replica's went-back-in-time stop) now agree
  (hubi.output.counted).
- A store failure during an upload was documented as "nothing of the request was stored";
  when the connection dies during COMMIT the server may have committed. The 503 now says the
  note may or may not have been stored and that sending it again is safe (a duplicate).

Real parts: real SQLite bank databases damaged by SQL, a real bank node process on a real
PostgreSQL database whose COMMIT kills its own connection (a deferred trigger).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psycopg
import pytest

from hubi.bank import audit
from hubi.bank.client import BankClient
from hubi.infra.postgres_server import PostgresServer
from tests import bank_nodes, servers
from tests.bank_nodes import prepare_bank
from tests.test_bank_support import make_bank, sqlite_copy
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("test_bank_probe29_texts")

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes
postgres_db = servers.postgres_db

A = "BKA-alice"


@pytest.fixture(scope="module")
def one_record_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bank whose alice book holds one record and whose register holds two entries."""
    path = tmp_path_factory.mktemp("bank") / "bank.db"
    eng = make_bank(f"sqlite:///{path}", make_world(), accounts=(A,), fund=1000)
    eng.close()
    return path


def _details(src: Path, dst: Path, script: str) -> list[str]:
    return [f.detail for f in audit.audit(sqlite_copy(src, dst, script)).findings]


def test_audit_findings_count_one_record_and_one_entry(one_record_bank, tmp_path):
    lost = _details(one_record_bank, tmp_path / "lost.db", f"DELETE FROM records WHERE book='{A}'")
    assert "the signed head says 1 record, the book ends at 0" in lost, lost
    small = _details(one_record_bank, tmp_path / "small.db", "UPDATE register_head SET size = 1")
    assert any(d.endswith("lies outside the register's 1 entry") for d in small), small
    assert not any("1 entries" in d or "1 records" in d for d in lost + small), lost + small


# at COMMIT (a deferred constraint trigger) the session kills itself: the node's connection
# dies during its COMMIT, the case where the node cannot know whether the note was stored
DIE_AT_COMMIT = """
CREATE FUNCTION probe29_die() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_terminate_backend(pg_backend_pid());
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER probe29_die AFTER INSERT ON notes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION probe29_die();
"""


def test_a_store_that_fails_at_commit_says_the_note_may_be_stored(bank_world, nodes, postgres_db):
    accts = list(prepare_bank(bank_world.home, "BKA", postgres_db, accounts=2, funds=100).values())
    node = nodes(bank_world.home, "BKA", postgres_db).start()
    client = BankClient(node.url)
    assert client.upload(accts[0].note(accts[1].id, 5, serial=1)).outcome == "booked"

    with psycopg.connect(postgres_db, autocommit=True) as con:
        con.execute(DIE_AT_COMMIT)
    note = accts[0].note(accts[1].id, 7, serial=2)
    r = httpx.post(
        node.url + "/v1/notes",
        content=note,
        headers={"content-type": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["error"] == "store-unavailable", body
    message = body["message"]
    assert "may or may not have been stored" in message, message
    assert "sending it again is safe" in message and "duplicate" in message, message
    assert "nothing" not in message and "\n" not in message, message
    print(f"503 said: {message}")

    # what it promises holds: sent again (the store well again) it is booked once, then a
    # duplicate
    with psycopg.connect(postgres_db, autocommit=True) as con:
        con.execute("DROP TRIGGER probe29_die ON notes")
    again = client.upload(note)
    assert again.outcome == "booked", again
    assert client.upload(note).duplicate


def _log_since(pg: PostgresServer, start: int) -> str:
    return pg.log_path.read_bytes()[start:].decode(errors="replace")


def test_postgres_server_shuts_down_clean_after_its_folder_is_closed(tmp_path):
    """As root the server runs as a service user; a pytest session started later resets
    /tmp/pytest-of-root to 0700, and the server opens global/pg_control by its absolute path
    at every checkpoint: the shutdown checkpoint PANICked (a crash, not a fast shutdown)."""
    outer = tmp_path / "outer"
    outer.mkdir()
    pg = PostgresServer(outer / "pg", durable=False)
    try:
        # a connection made after the folder closed (what a test does next) reopens the way:
        # an explicit CHECKPOINT writes pg_control
        outer.chmod(0o700)
        with pg.connect(autocommit=True) as con:
            con.execute("CREATE TABLE t (x int)")
            con.execute("INSERT INTO t VALUES (1)")
            con.execute("CHECKPOINT")
        assert pg.running
        start = pg.log_path.stat().st_size
        outer.chmod(0o700)  # as pytest does, while the server runs
        t0 = time.monotonic()
        pg.stop()
        took = time.monotonic() - t0
        log = _log_since(pg, start)
        assert took < 10.0, (took, log)  # a fast shutdown, not the 30 s grace then SIGKILL
        assert "database system is shut down" in log, log
        assert "PANIC" not in log and "abnormal" not in log, log
        assert "checkpoint complete" in log, log
        pg.start()  # and the data came through
        with pg.connect() as con:
            assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        pg.close()
