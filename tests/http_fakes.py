"""Real HTTP servers that play a peer for a test (a hostile bank, a broken etcd member): the
server part each test would otherwise write again. No tests here."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

__all__ = ["RecordingBank", "fake_bank", "ok_server", "serving"]


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on 127.0.0.1 (a port of its own, a thread per request) for as long as
    the block runs; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def ok_server(port: int, asked: list[str]) -> ThreadingHTTPServer:
    """An HTTP server on `port` that answers every GET with 200 {"status": "ok"} (another
    program on a bank's port), noting each path asked in `asked`; the caller shuts it down."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the handler's API
            asked.append(self.path)
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


class RecordingBank(BaseHTTPRequestHandler):
    """A bank that takes notes and answers each with `answer` (status, JSON); keeps what came."""

    got: list[bytes] = []
    answer: tuple[int, dict] = (400, {"error": "bad-note", "message": "no"})

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        self.got.append(self.rfile.read(int(self.headers.get("content-length") or 0)))
        status, doc = self.answer
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_bank() -> Iterator[tuple[str, type[RecordingBank]]]:
    """A RecordingBank of this test's own (its `got` and `answer` are the test's): URL, class."""
    handler = type("Bank", (RecordingBank,), {"got": []})
    with serving(handler) as url:
        yield url, handler
