"""A watch message split in fragments (etcd splits one of many events when the watch asks it
to) may end within a revision, its other events coming in the next fragment. A stream that
broke there resumed from the revision after: the rest of that revision was never delivered.
Two members played by real HTTP servers speaking the gateway's watch protocol: the first sends
part of revision 5 as a fragment and is gone; the second serves from the revision asked."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from hubi.infra.etcd_client import Etcd
from tests.http_fakes import serving

# revision 5 holds three events (one transaction), revision 6 one
LOG = [(5, b"k1"), (5, b"k2"), (5, b"k3"), (6, b"k4")]


def _event(rev: int, key: bytes) -> dict[str, object]:
    kv = {"key": base64.b64encode(key).decode(), "value": base64.b64encode(b"v").decode()}
    kv |= {"create_revision": str(rev), "mod_revision": str(rev), "version": "1"}
    return {"kv": kv}


class _Member(BaseHTTPRequestHandler):
    """Answers a watch from its start_revision: all the events (`cut` None), or the first
    `cut` of them as one fragment and then the end of the stream, once; later watches 503."""

    cut: int | None = None
    asked: list[int]
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        start = int(body["create_request"].get("start_revision", 0))
        if self.cut is not None and self.asked:  # gone after its one stream
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.asked.append(start)
        events = [_event(r, k) for r, k in LOG if r >= start]
        created = {"result": {"header": {"revision": "6"}, "created": True}}
        if self.cut is None:
            messages = [created, {"result": {"header": {"revision": "6"}, "events": events}}]
        else:
            part = {"header": {"revision": "6"}, "events": events[: self.cut], "fragment": True}
            messages = [created, {"result": part}]
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for m in messages:
                line = json.dumps(m).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
            if self.cut is None:
                time.sleep(10)  # a member serving on: nothing more happens
            self.wfile.write(b"0\r\n\r\n")  # the stream ends: the member shuts down
            self.wfile.flush()
        except OSError:
            pass  # the client has all it wanted and hung up
        self.close_connection = True


@contextmanager
def _member(cut: int | None) -> Iterator[tuple[str, type[_Member]]]:
    handler = type("Member", (_Member,), {"cut": cut, "asked": []})
    with serving(handler) as url:
        yield url, handler


def test_a_stream_broken_within_a_revision_resumes_at_that_revision() -> None:
    with _member(cut=2) as (first, a), _member(cut=None) as (second, b):
        client = Etcd([first, second], retry_deadline=30.0)
        got: list[tuple[int, bytes]] = []
        stop = threading.Event()

        def read() -> None:
            for ev in client.watch(b"k", prefix=True, start_revision=5, stop=stop):
                got.append((ev.revision, ev.key))
                if len(got) == len(LOG):
                    return

        reader = threading.Thread(target=read, daemon=True)
        try:
            reader.start()
            reader.join(30)  # all four come at once; a lost one never does
        finally:
            stop.set()
            reader.join(30)
            client.close()
    assert a.asked == [5]
    assert b.asked == [5]  # the revision the fragment ended in, not the one after
    assert got == LOG  # each event once, in order
