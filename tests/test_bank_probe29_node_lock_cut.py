"""A PostgreSQL node whose lock connection stops answering (a cut network: the bytes go out and
nothing comes back) is fenced within seconds, and books again once the path forwards again.

Its watchdog's look at the lock waited for the answer with no bound: the server dropped the
session, and the lock, in ~25 s (its keepalives) while the node booked on for minutes. Now each
look is bounded (the connection is cut after NODE_LOCK_QUERY_TIMEOUT s), and the connection has
libpq's keepalives and a tcp_user_timeout.

Real parts: a real PostgreSQL server, a real bank node process, and a TCP relay between them
that this test can freeze per connection (it stops reading and writing, closing nothing).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from hubi.bank.client import BankClient
from hubi.bank.server import NODE_LOCK_KEY
from tests import bank_nodes, servers
from tests.bank_nodes import prepare_bank
from tests.test_bank_probe28_node_lock import _until

pytestmark = pytest.mark.xdist_group("test_bank_probe29_node_lock_cut")

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes
postgres_db = servers.postgres_db

# a look every second, each cut after 3 s: fenced within ~4 s (generous bound)
FENCED_WITHIN = 12.0


class _Pipe:
    """One relayed connection: client <-> upstream, frozen on demand."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.frozen = threading.Event()
        self.port = upstream.getsockname()[1]  # the server sees this as client_port
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                if self.frozen.is_set():  # a cut network: nothing read, nothing closed
                    time.sleep(0.02)
                    continue
                ready, _, _ = select.select([src], [], [], 0.05)
                if not ready or self.frozen.is_set():
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):  # closed under it (ValueError: by close())
            pass
        for s in (src, dst):  # one side gone: the other is closed too, as a relay does
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Relay:
    """A TCP relay on 127.0.0.1 to (host, port)."""

    @classmethod
    def to_database(cls, url: str) -> tuple[Relay, str]:
        """A relay to the server of a PostgreSQL `url`, and that URL through the relay."""
        u = urlsplit(url)
        relay = cls(u.hostname or "127.0.0.1", u.port or 5432)
        user = u.netloc.rsplit("@", 1)[0] + "@" if "@" in u.netloc else ""
        return relay, urlunsplit(u._replace(netloc=f"{user}127.0.0.1:{relay.port}"))

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.pipes: list[_Pipe] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.pipes.append(_Pipe(client, upstream))

    def pipe_of(self, client_port: int) -> _Pipe:
        return next(p for p in self.pipes if p.port == client_port)

    def close(self) -> None:
        self.sock.close()
        for p in self.pipes:
            p.frozen.clear()
            for s in (p.client, p.upstream):
                s.close()


def _lock_session(url: str) -> tuple[int, int, str] | None:
    """(server pid, client port, application name) of the session holding the node lock."""
    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute(
            "SELECT a.pid, a.client_port, a.application_name FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.objsubid = 1 AND l.classid = %s AND l.objid = %s AND "
            "l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (NODE_LOCK_KEY >> 32, NODE_LOCK_KEY & 0xFFFFFFFF),
        ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), str(row[2]))


def _upload(url: str, note: bytes) -> httpx.Response:
    return httpx.post(
        url + "/v1/notes",
        content=note,
        headers={"content-type": "application/octet-stream"},
        timeout=30,
    )


def test_a_node_whose_lock_connection_hangs_is_fenced_then_recovers(bank_world, nodes, postgres_db):
    home = bank_world.home
    accts = list(prepare_bank(home, "BKA", postgres_db, accounts=2, funds=1000).values())
    relay, via_relay = Relay.to_database(postgres_db)
    try:
        node = nodes(home, "BKA", via_relay).start()
        assert BankClient(node.url).upload(accts[0].note(accts[1].id, 5, serial=1)).outcome == (
            "booked"
        )
        pid, port, name = _lock_session(postgres_db)
        assert name.startswith(f"hubi bank serve BKA pid {node.pid}"), name
        # the lock's path is cut; the node's store connections still work (so /health answers)
        relay.pipe_of(port).frozen.set()
        t0 = time.monotonic()
        health = _until(
            "the node fenced itself",
            lambda: (h := node.health())["detail"].get("node_lock") and h,
            FENCED_WITHIN,
        )
        fenced_after = time.monotonic() - t0
        assert health["status"] == "degraded", health
        assert "lost its lock" in health["detail"]["node_lock"], health
        fenced_note = accts[0].note(accts[1].id, 6, serial=2)
        r = _upload(node.url, fenced_note)
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "node-lock-lost", r.text
        # the server still sees the old session holding the lock: it noticed nothing
        assert _lock_session(postgres_db)[0] == pid
        assert node.running()

        # the path forwards again: the old session ends, the node takes its lock again
        relay.pipe_of(port).frozen.clear()
        _until("the node books again", lambda: node.health()["status"] == "ok", 20.0)
        again = _lock_session(postgres_db)
        assert again is not None and again[0] != pid
        assert again[2].startswith(f"hubi bank serve BKA pid {node.pid}"), again
        late = BankClient(node.url).upload(fenced_note)
        assert late.outcome == "booked" and not late.duplicate
        log = node.log_text()
        assert "lost the node lock" in log and "took the node lock on" in log, log[-3000:]
        assert node.stop() == 0
        print(f"fenced {fenced_after:.2f} s after the cut")
    finally:
        relay.close()
