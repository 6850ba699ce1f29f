"""A bank node asking a peer that accepts the connection and never answers (a stalled process:
its kernel still accepts) must still stop promptly on SIGTERM. The peer asks ran on
concurrent.futures threads, which the interpreter joins at exit: the node's process lived on
until the ask timed out (the endorsement timeout, up to an hour by configuration) after it had
shut down, holding its port's owner (a supervisor) waiting.

A real node process (embedded orderer), a real socket for the hung peer, a real upload."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from hubi.consortium import service
from tests.bank_nodes import REPO, NodeProcess
from tests.consortium_support import make_home

ENDORSE_TIMEOUT = 600.0  # far longer than the node may take to stop


class HungPeer:
    """A listening socket that accepts connections and never reads or answers them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def _node_asking(home: Path, peer: HungPeer, grace: float) -> tuple[NodeProcess, threading.Event]:
    """Node BKB (started), with an upload under way that waits on the hung peer BKA; the event
    is set when the upload's connection ends."""
    node = NodeProcess(
        home, "BKB", extra=["--grace", str(grace), "--log-level", "info"], name="BKB"
    )
    accounts = make_home(home, ["BKA", "BKB"], endpoints={"BKA": [peer.url], "BKB": [node.url]})
    cfg = service.NodeConfig(
        "embedded",
        path=str(home / "consortium" / "log.db"),
        endorse_timeout=ENDORSE_TIMEOUT,
        settle_timeout=ENDORSE_TIMEOUT,
    )
    service.write_config(home, "BKB", cfg)
    node.start()
    note = accounts["BKA-000001"].note("BKB-000001", 5)
    upload_done = threading.Event()

    def upload() -> None:  # waits on the hung peer until the node stops
        try:
            httpx.post(
                node.url + "/v1/notes",
                content=note,
                headers={"content-type": "application/octet-stream"},
                timeout=ENDORSE_TIMEOUT,
            )
        except httpx.HTTPError:
            pass
        finally:
            upload_done.set()

    threading.Thread(target=upload, daemon=True).start()
    assert peer.accepted.wait(60), node.log_text()[-2000:]  # the ask is open at the peer
    return node, upload_done


def _exits(node: NodeProcess) -> int:
    assert node.proc is not None
    try:
        return node.proc.wait(60)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the node did not exit within 60 s of the signal:\n{node.log_text()[-2000:]}"
        ) from None


def _wait_log(node: NodeProcess, text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in node.log_text():
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{node.log_text()[-2000:]}"
        time.sleep(0.05)


def test_a_node_asking_a_hung_peer_exits_promptly_on_sigterm(tmp_path: Path) -> None:
    peer = HungPeer()
    node: NodeProcess | None = None
    try:
        node, upload_done = _node_asking(tmp_path / "home", peer, grace=1)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        assert _exits(node) == 0, node.log_text()[-2000:]
        assert upload_done.wait(60)  # the merchant's upload got its connection closed
    finally:
        if node is not None:
            node.close()
        peer.close()


def test_a_node_asking_a_hung_peer_exits_promptly_when_forced_to_quit(tmp_path: Path) -> None:
    """Ctrl-C, and Ctrl-C again while it waits for the upload in flight (uvicorn: "force
    quit"): uvicorn then skips the app's shutdown, which is what closed the peer connections;
    the process stayed until the ask timed out."""
    peer = HungPeer()
    node: NodeProcess | None = None
    try:
        node, upload_done = _node_asking(tmp_path / "home", peer, grace=ENDORSE_TIMEOUT)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGINT)
        _wait_log(node, "Waiting for connections to close")
        node.proc.send_signal(signal.SIGINT)
        assert _exits(node) == 0, node.log_text()[-2000:]
        assert upload_done.wait(60)
        assert "forced to quit" in node.log_text()
    finally:
        if node is not None:
            node.close()
        peer.close()


ASKER = """
import socket, sys, threading
from hubi.consortium.peers import PeerThreads

sent = threading.Event()

def ask(url):  # a peer's validation request that is never answered
    host, port = url.rsplit(":", 1)
    s = socket.create_connection((host.split("//")[1], int(port)))
    s.sendall(b"POST /v1/consortium/validate HTTP/1.1\\r\\ncontent-length: 0\\r\\n\\r\\n")
    sent.set()
    return s.recv(1)

threads = PeerThreads("BKB")
threads.submit("BKA", ask, sys.argv[1])
assert sent.wait(60), "the ask was not sent"
print("asked", flush=True)
"""


def test_peer_threads_do_not_hold_up_the_interpreter_exit(tmp_path: Path) -> None:
    """A process whose peer ask hangs and that ends without stopping the node (an embedded
    user's script, an error): the interpreter joined the ask's thread at exit, for ever here."""
    peer = HungPeer()
    script = tmp_path / "asker.py"
    script.write_text(ASKER)
    proc = subprocess.Popen(
        [sys.executable, str(script), peer.url], stdout=subprocess.PIPE, cwd=REPO
    )
    try:
        assert peer.accepted.wait(60)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the interpreter did not exit within 60 s") from None
        assert proc.returncode == 0 and out == b"asked\n", (proc.returncode, out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        peer.close()
