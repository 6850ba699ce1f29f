"""A hot backup whose primary hangs stops at once (round 26): `hubi bank serve --replica-of URL`
pulling from a primary that accepts the connection and never answers took about 30 s to stop on
SIGTERM. Its pull thread waited out the 30 s read of the request before the client was closed,
and closing a socket from another thread does not wake a read blocked on it. Now stop shuts the
pull's socket down and the node exits within seconds, quietly (no pull error logged for it).

Real node process; the "primary" is a real socket that reads the request and never answers."""

from __future__ import annotations

import socket
import threading
import time

from tests import bank_nodes

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes


class HungPrimary:
    """Accepts connections and reads what comes, never answering (a stalled primary)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = threading.Event()  # a request's bytes arrived
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            if b"GET /v1/replication/log" in data:
                self.requests.set()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_a_backup_of_a_hung_primary_stops_promptly(bank_world, nodes, tmp_path) -> None:  # noqa: ANN001
    hung = HungPrimary()
    try:
        rep_db = f"sqlite:///{tmp_path / 'rep.db'}"
        node = nodes(bank_world.home, "BKA", rep_db, extra=["--replica-of", hung.url], name="rep")
        node.start()
        assert hung.requests.wait(60), node.log_text()  # the pull is waiting for its answer
        began = time.monotonic()
        code = node.stop(grace=60)
        took = time.monotonic() - began
        assert code == 0, node.log_text()
        # the read timeout is 30 s: the stop no longer waits for it
        assert took < 10, f"stopping took {took:.1f} s:\n{node.log_text()}"
        assert "pulling from" not in node.log_text(), node.log_text()
    finally:
        hung.close()
