"""HttpPool against a real HTTP/1.1 server on loopback: reuse, stale connections, errors."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hubi.infra.http_pool import HttpFailure, HttpPool, HttpReplyTooLarge, HttpTimeout
from hubi.infra.ports import free_port


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mode = "echo"  # echo | close-after-one | close-quietly | drop-second | drop-all | sleep | garbage  # | huge | huge-chunked

    def __init__(self, port: int):
        super().__init__(("127.0.0.1", port), _Handler)
        self.seen: list[tuple[int, str, bytes]] = []  # (client port, path, body)

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that gave up (the timeout tests) hung up before the reply
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        if self.path == "/stream" and self.server.mode == "http10":  # no length: until close
            self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst line\n")
            self.wfile.flush()
            time.sleep(6.0)  # then quiet, past the client's idle timeout
            self.close_connection = True
            return
        if self.path == "/stream":  # a watch: lines in chunks, split anyhow, then a pause
            srv.seen.append((self.client_address[1], self.path, body))
            self.send_response(200 if body != b"bad" else 400)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(b"first line\nsec")
            time.sleep(0.05)
            self._chunk(b"ond line\n")
            if srv.mode == "stall":  # well past the client's idle timeout (1.5 s)
                time.sleep(6.0)
            self._chunk(b"last\n")
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True
            return
        port = self.client_address[1]
        earlier = sum(1 for p, _, _ in srv.seen if p == port)
        srv.seen.append((port, self.path, body))
        if srv.mode == "garbage":
            self.wfile.write(b"this is not HTTP\r\n\r\n")
            self.close_connection = True
            return
        if srv.mode == "drop-all" or (srv.mode == "drop-second" and earlier == 1):
            self.close_connection = True  # the second request on a connection: no reply at all
            return
        if srv.mode == "sleep":
            time.sleep(0.6)
        if srv.mode in ("huge", "huge-chunked"):  # 64 MB, with or without a Content-Length
            self.send_response(200)
            if srv.mode == "huge":
                self.send_header("Content-Length", str(64 << 20))
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b"x" * (1 << 20)
            try:
                for _ in range(64):
                    if srv.mode == "huge-chunked":
                        self._chunk(block)
                    else:
                        self.wfile.write(block)
            except ConnectionError:
                pass  # the client stopped reading, as it should
            self.close_connection = True
            return
        reply = b"got " + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        if srv.mode == "close-after-one":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply)
        if srv.mode == "close-quietly":
            self.close_connection = True  # keep-alive promised, closed anyway


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(free_port())
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: _Server, path: str = "") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def test_posts_reuse_one_connection_and_keep_the_path_prefix(server: _Server) -> None:
    pool = HttpPool(_url(server, "/gw"))
    replies = [pool.post("/v3/kv/put", b"n%d" % i, {}) for i in range(5)]
    assert replies == [(200, b"got n%d" % i) for i in range(5)]
    assert {path for _, path, _ in server.seen} == {"/gw/v3/kv/put"}
    assert len({port for port, _, _ in server.seen}) == 1
    pool.close()


@pytest.mark.parametrize("mode", ["close-after-one", "close-quietly"])
def test_connection_the_server_closed_is_not_used_again(server: _Server, mode: str) -> None:
    server.mode = mode
    pool = HttpPool(_url(server))
    for i in range(3):
        assert pool.post("/x", b"%d" % i, {}).body == b"got %d" % i
        time.sleep(0.05)  # the server's close reaches the idle socket
    assert len({port for port, _, _ in server.seen}) == 3
    assert len(server.seen) == 3  # nothing was sent twice


def test_reused_connection_closed_without_a_reply_is_retried_once_on_a_new_one(
    server: _Server,
) -> None:
    server.mode = "drop-second"
    pool = HttpPool(_url(server))
    assert pool.post("/x", b"a", {}).body == b"got a"
    assert pool.post("/x", b"b", {}).body == b"got b"
    ports = [port for port, _, _ in server.seen]
    assert [body for _, _, body in server.seen] == [b"a", b"b", b"b"]
    assert ports[0] == ports[1] != ports[2]


def test_new_connection_closed_without_a_reply_fails_without_a_retry(server: _Server) -> None:
    server.mode = "drop-all"
    pool = HttpPool(_url(server))
    with pytest.raises(HttpFailure, match=r"127\.0\.0\.1:\d+: connection closed before the reply"):
        pool.post("/x", b"a", {})
    assert [body for _, _, body in server.seen] == [b"a"]


def test_garbage_instead_of_a_reply_names_the_fault(server: _Server) -> None:
    server.mode = "garbage"
    pool = HttpPool(_url(server))
    with pytest.raises(HttpFailure, match=r"127\.0\.0\.1:\d+: BadStatusLine"):
        pool.post("/x", b"c", {})
    server.mode = "echo"
    assert pool.post("/x", b"d", {}).body == b"got d"  # the broken connection was not kept


@pytest.mark.parametrize("mode", ["huge", "huge-chunked"])
def test_a_reply_over_the_callers_limit_is_not_read_and_the_pool_goes_on(
    server: _Server, mode: str
) -> None:
    """A server that answers with 64 MB (a peer bank gone wrong or lying) used to have all of
    it read into memory. With ``max_reply`` the read stops past the limit, the error names the
    server, and the next request gets a fresh connection."""
    pool = HttpPool(_url(server))
    assert pool.post("/a", b"1", {}, max_reply=100).body == b"got 1"
    server.mode = mode
    t0 = time.monotonic()
    with pytest.raises(
        HttpReplyTooLarge, match=r"127\.0\.0\.1:\d+: a reply of more than 100 bytes"
    ):
        pool.post("/a", b"2", {}, max_reply=100)
    assert time.monotonic() - t0 < 5
    server.mode = "echo"
    assert pool.post("/a", b"3", {}, max_reply=100).body == b"got 3"
    pool.close()


def test_timeout_names_the_server_and_the_limit(server: _Server) -> None:
    server.mode = "sleep"
    pool = HttpPool(_url(server), timeout=5.0)
    with pytest.raises(HttpTimeout, match=r"http://127\.0\.0\.1:\d+: timed out after 0\.2 s"):
        pool.post("/x", b"slow", {}, timeout=0.2)
    assert pool.post("/x", b"slow", {}, timeout=30.0).body == b"got slow"


def test_nothing_listening_is_a_failure_not_a_hang() -> None:
    port = free_port()
    pool = HttpPool(f"http://127.0.0.1:{port}", connect_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(HttpFailure, match=rf"127\.0\.0\.1:{port}: ConnectionRefusedError"):
        pool.post("/x", b"", {})
    assert time.monotonic() - t0 < 5


def test_bad_base_url_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        HttpPool("etcd://127.0.0.1:2379")


def test_stream_yields_whole_lines_as_they_come_and_ends_with_the_reply(server: _Server) -> None:
    pool = HttpPool(_url(server))
    with pool.stream("/stream", b"w", {}, idle_timeout=5.0) as resp:
        assert resp.status == 200
        assert list(resp.lines()) == [b"first line\n", b"second line\n", b"last\n"]
    with pool.stream("/stream", b"bad", {}, idle_timeout=5.0) as resp:
        assert resp.status == 400 and resp.read().startswith(b"first line")


def test_stream_that_goes_quiet_raises_a_timeout_after_the_lines_it_had(server: _Server) -> None:
    server.mode = "stall"
    pool = HttpPool(_url(server))
    got = []
    with (
        pytest.raises(HttpTimeout, match=r"nothing for 1\.5 s"),
        # 1.5 s: the 0.05 s between the first lines must not count as quiet on a loaded machine
        pool.stream("/stream", b"w", {}, idle_timeout=1.5) as resp,
    ):
        for line in resp.lines():
            got.append(line)
    assert got == [b"first line\n", b"second line\n"]


def test_stream_to_nothing_listening_fails_before_any_line() -> None:
    port = free_port()
    pool = HttpPool(f"http://127.0.0.1:{port}")
    with (
        pytest.raises(HttpFailure, match="ConnectionRefusedError") as info,
        pool.stream("/stream", b"w", {}, idle_timeout=1.0),
    ):
        pass
    assert not isinstance(info.value, HttpTimeout)


def test_a_stream_without_a_length_in_http_1_0_is_read_and_timed_out_too(
    server: _Server,
) -> None:
    """A member answering in HTTP/1.0 with no length (the reply lasts until it closes):
    http.client drops the connection's socket once it has the reply, and setting the idle
    timeout on it raised AttributeError out of the watch."""
    server.mode = "http10"
    pool = HttpPool(_url(server))
    got = []
    with (
        pytest.raises(HttpTimeout, match=r"nothing for 1\.5 s"),
        pool.stream("/stream", b"w", {}, idle_timeout=1.5) as resp,
    ):
        assert resp.status == 200
        for line in resp.lines():
            got.append(line)
    assert got == [b"first line\n"]
