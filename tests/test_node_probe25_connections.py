"""A bank node's HTTP front under clients that hold connections, with real sockets against a
real `hubi bank serve` process.

- ``--http-impl plain`` (asyncio + h11) did not enforce ``--request-timeout``: a client that
  connected and said nothing, or sent half a request line, held its connection for good.
- No stack capped the connections: each held one descriptor of the node until it ran out. Now
  ``--max-connections`` (default 1000, or half the open-file limit) bounds them: a request on
  a connection past the cap gets 503 at once (retry later), not a hang; normal requests are
  served again as soon as the held connections go."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import bank_nodes
from tests.bank_nodes import prepare_bank

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes


def _held(port: int, first: bytes, limit: float = 60.0) -> tuple[bytes, float]:
    """What the node says to a client that sends `first` and nothing more, and how long until
    it closed the connection (AssertionError after `limit` seconds)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
        s.sendall(first)
        said = b""
        while True:
            try:
                got = s.recv(4096)
            except TimeoutError:
                raise AssertionError(f"still held after {limit} s; said {said!r}") from None
            if not got:
                return said, time.monotonic() - t0
            said += got


@pytest.mark.parametrize("impl", ["plain", "auto"])
def test_a_stalled_request_head_is_dropped_within_the_timeout(
    bank_world, nodes, tmp_path, impl: str
) -> None:
    db = str(tmp_path / "bka.db")
    prepare_bank(bank_world.home, "BKA", db, accounts=1, funds=1_000)
    node = nodes(
        bank_world.home, "BKA", db, extra=["--http-impl", impl, "--request-timeout", "2"]
    ).start()
    heads = (b"", b"GET /hea", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: a")
    # a body that stops: the app has the request already, so no answer, just the close
    body = b"POST /v1/notes HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nxx"

    def kept_alive() -> int:
        # normal requests, kept alive past the timeout between them, are served
        with httpx.Client(timeout=30) as http:
            assert http.get(node.url + "/health").status_code == 200
            time.sleep(2.5)  # idle, kept alive: not a request that is late
            r = http.get(node.url + "/health")
            assert r.status_code == 200, r.text
            return r.status_code

    # the stalled clients at once (each timeout is its connection's own): 2.5 s, not 10.5
    with ThreadPoolExecutor(len(heads) + 2) as pool:
        stalled = [pool.submit(_held, node.port, first) for first in heads]
        stopped = pool.submit(_held, node.port, body)
        idle = pool.submit(kept_alive)
        for first, fut in zip(heads, stalled):
            said, took = fut.result()
            assert said.startswith(b"HTTP/1.1 408 "), (impl, first, said)
            assert b"request not received within 2 s" in said, said
            assert took >= 1.9, (impl, first, took)
        said, took = stopped.result()
        assert not said.startswith(b"HTTP/1.1 408 ") and took >= 1.9, (said, took)
        assert idle.result() == 200
    assert "did not arrive within 2 s" in node.log_text()


@pytest.mark.parametrize("impl", ["plain", "auto"])
def test_connections_past_the_cap_get_503_not_a_hang(
    bank_world, nodes, tmp_path, impl: str
) -> None:
    db = str(tmp_path / "bka.db")
    prepare_bank(bank_world.home, "BKA", db, accounts=1, funds=1_000)
    node = nodes(
        bank_world.home,
        "BKA",
        db,
        extra=["--http-impl", impl, "--max-connections", "3", "--request-timeout", "120"],
    ).start()
    url = node.url + "/health"
    with httpx.Client(timeout=30) as http:
        assert http.get(url).status_code == 200  # (its connection closes with the client)
    slow = [socket.create_connection(("127.0.0.1", node.port), timeout=60) for _ in range(3)]
    try:
        for s in slow:  # three clients in the middle of their request heads
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        # the node has taken all three (a request on a fourth is answered only then)
        deadline = time.monotonic() + 60
        while True:
            with httpx.Client(timeout=30) as http:
                r = http.get(url)
            if r.status_code == 503:
                break
            assert r.status_code == 200, r.text
            assert time.monotonic() < deadline, "the cap never applied"
            time.sleep(0.05)
        t0 = time.monotonic()
        for _ in range(5):  # more clients than the cap: each answered at once, not held
            with httpx.Client(timeout=30) as http:
                r = http.get(url)
            assert r.status_code == 503, (r.status_code, r.text)
        assert time.monotonic() - t0 < 30
        # the held clients finish their requests: each is served
        for s in slow:
            s.sendall(b"\r\n")
            s.settimeout(30)
            assert s.recv(4096).startswith(b"HTTP/1.1 200 "), impl
    finally:
        for s in slow:
            s.close()
    # their connections gone, normal requests are served again
    deadline = time.monotonic() + 60
    while True:
        with httpx.Client(timeout=30) as http:
            r = http.get(url)
        if r.status_code == 200:
            break
        assert time.monotonic() < deadline, (r.status_code, r.text)
        time.sleep(0.05)
