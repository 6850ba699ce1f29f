"""A PostgreSQL node's lock on its database (a session advisory lock) outlives nothing: when
its session ends (pg_terminate_backend, a server restart) the lock goes with it. The node did
not notice: it booked on without the lock, and a second node could start on the same books.

Now a watchdog looks at the lock's session every second: a session gone is replaced and the
lock taken again; while it cannot be (the server refuses connections), the node books nothing
(uploads 503 node-lock-lost, /health degraded naming it under detail.node_lock); once another session holds the lock the node
stops, exit status non-zero, naming the holder.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from hubi.bank.client import BankClient
from hubi.bank.server import NODE_LOCK_KEY
from tests import bank_nodes, servers
from tests.bank_nodes import prepare_bank
from tests.test_bank_probe27_two_nodes import _audit_clean

pytestmark = pytest.mark.xdist_group("test_bank_probe28_node_lock")

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes
postgres_db = servers.postgres_db
postgres_server = servers.postgres_server


def _lock_holder(url: str) -> tuple[int, str] | None:
    """(server pid, application name) of the session holding the node lock on `url`'s db."""
    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute(
            "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a "
            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid = %s AND l.objid = %s AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
            (NODE_LOCK_KEY >> 32, NODE_LOCK_KEY & 0xFFFFFFFF),
        ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def _until(what: str, check, timeout: float = 20.0):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def _terminate(server, pid: int) -> None:  # noqa: ANN001
    with server.connect(autocommit=True) as con:
        assert con.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def _allow_connections(server, db: str, allow: bool) -> None:  # noqa: ANN001
    with server.connect(autocommit=True) as con:
        con.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(db), sql.SQL("true" if allow else "false")
            )
        )


def test_a_node_takes_its_lock_again_when_its_session_is_ended(
    bank_world, nodes, postgres_db, postgres_server
):
    home = bank_world.home
    accts = list(prepare_bank(home, "BKA", postgres_db, accounts=2, funds=1000).values())
    first = nodes(home, "BKA", postgres_db, name="first").start()
    me = f"hubi bank serve BKA pid {first.pid}"
    pid, name = _lock_holder(postgres_db)
    assert name.startswith(me)
    _terminate(postgres_server, pid)
    # a new session of the same node holds the lock again, within a few seconds
    again = _until(
        "the node took its lock again",
        lambda: (h := _lock_holder(postgres_db)) and h[0] != pid and h,
    )
    assert again[1].startswith(me), again
    assert "took the node lock on" in first.log_text()
    assert first.health()["status"] == "ok"
    # the node books on (a second node would be refused: the lock is the first one's)
    note = accts[0].note(accts[1].id, 5, serial=1)
    assert BankClient(first.url).upload(note).outcome == "booked"
    assert first.stop() == 0


def test_a_node_whose_lock_another_took_books_nothing_and_stops(
    bank_world, nodes, postgres_db, postgres_server
):
    home = bank_world.home
    db = urlsplit(postgres_db).path.lstrip("/")
    accts = list(prepare_bank(home, "BKA", postgres_db, accounts=2, funds=1000).values())
    first = nodes(home, "BKA", postgres_db, name="first").start()
    note = accts[0].note(accts[1].id, 5, serial=1)
    assert BankClient(first.url).upload(note).outcome == "booked"
    pid, _ = _lock_holder(postgres_db)
    fenced_note = accts[0].note(accts[1].id, 6, serial=2)
    # the session that will take the lock connects now: the database then refuses new ones,
    # so the node cannot take its lock again (nor tell who has it)
    intruder = psycopg.connect(postgres_db, autocommit=True, application_name="p28 intruder")
    try:
        _allow_connections(postgres_server, db, False)
        try:
            _terminate(postgres_server, pid)
            intruder.execute("SELECT pg_advisory_lock(%s)", (NODE_LOCK_KEY,))
            # (a request thread with no connection yet finds the store closed to it as well)
            health = _until(
                "/health names the lost lock",
                lambda: (h := first.health())["detail"].get("node_lock") and h,
            )
            assert health["status"] == "degraded", health
            assert "lost its lock" in health["detail"]["node_lock"], health
            r = httpx.post(
                first.url + "/v1/notes",
                content=fenced_note,
                headers={"content-type": "application/octet-stream"},
                timeout=30,
            )
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "node-lock-lost", r.text
            assert "lost its lock" in r.json()["message"], r.text
        finally:
            _allow_connections(postgres_server, db, True)
        # the node connects again, finds the lock taken and stops, naming who holds it
        _until("the node stopped", lambda: not first.running())
        assert first.proc is not None and first.proc.returncode != 0
        log = first.log_text()
        assert "NodeLockLost" in log and "p28 intruder" in log, log[-3000:]
        password = urlsplit(postgres_db).password
        assert not password or password not in log
    finally:
        intruder.close()
    # nothing was booked while it was fenced: the lock free again, a new node books serial 2
    after = nodes(home, "BKA", postgres_db, name="after").start()
    assert BankClient(after.url).upload(note).duplicate
    late = BankClient(after.url).upload(fenced_note)
    assert late.outcome == "booked" and not late.duplicate
    assert after.stop() == 0
    _audit_clean(home, postgres_db)
