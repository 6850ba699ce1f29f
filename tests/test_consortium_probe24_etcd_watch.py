"""The etcd watch against a member that refuses it or drops it before anything happens: an
error reply (HTTP 4xx, or an error message in the stream), a watch created and then canceled
without compaction, created and then closed, created and then a "try elsewhere" error. Each
counts against that member: the watch goes on from a real member of a real cluster at the
same revision (every event once, in order, the hostile member asked once); alone, the hostile
member is asked again with back-off (not in a hot loop) and the watch ends at the retry
deadline naming it and what it said."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from hubi.infra.etcd_client import Etcd, EtcdUnavailable
from hubi.infra.etcd_server import EtcdCluster
from tests.http_fakes import serving
from tests.servers import etcd_cluster, etcd_prefix  # noqa: F401
from tests.test_etcd_watch_hostile import _read

CREATED = b'{"result":{"header":{"revision":"3"},"created":true}}'

# (name, HTTP status of the watch reply, its lines, what the error names)
HOSTILE = [
    (
        "http-400",
        400,
        [b'{"error":"etcdserver: bad request","code":3,"message":"etcdserver: bad request"}'],
        "HTTP 400: etcdserver: bad request",
    ),
    ("http-404", 404, [b"404 page not found"], "HTTP 404: 404 page not found"),
    (
        "error-in-stream",
        200,
        [b'{"error":{"grpc_code":7,"http_code":403,"message":"permission denied"}}'],
        "permission denied",
    ),
    (
        "canceled",
        200,
        [CREATED, b'{"result":{"header":{"revision":"3"},"canceled":true,"cancel_reason":"bye"}}'],
        "watch canceled: bye",
    ),
    (
        "compacted-before-the-start",
        200,
        [CREATED, b'{"result":{"canceled":true,"compact_revision":"1"}}'],
        "canceled as compacted up to revision 1",
    ),
    ("created-then-closed", 200, [CREATED], "ended before it delivered anything"),
    (
        "created-then-no-leader",
        200,
        [CREATED, b'{"error":{"grpc_code":14,"message":"etcdserver: no leader"}}'],
        "no leader",
    ),
]
IDS = [h[0] for h in HOSTILE]


class _Member(BaseHTTPRequestHandler):
    """Answers every watch with `status` and `lines` (streamed, as the gateway does), then ends
    the reply; counts the watch requests."""

    status = 200
    lines: list[bytes] = []
    watches: list[float]
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).watches.append(time.monotonic())
        self.send_response(self.status)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for line in self.lines:
                self.wfile.write(b"%x\r\n%s\n\r\n" % (len(line) + 1, line))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True


@contextmanager
def _serve(status: int, lines: list[bytes]) -> Iterator[tuple[str, type[_Member]]]:
    handler = type("Member", (_Member,), {"status": status, "lines": lines, "watches": []})
    with serving(handler) as url:
        yield url, handler


@pytest.mark.parametrize(("name", "status", "lines", "says"), HOSTILE, ids=IDS)
def test_watch_passes_over_a_refusing_member(
    etcd_cluster: EtcdCluster,  # noqa: F811
    etcd_prefix: bytes,  # noqa: F811
    name: str,
    status: int,
    lines: list[bytes],
    says: str,
) -> None:
    """The hostile member first in the list: the watch goes on from a real member at the
    revision asked, every event once and in order, and the hostile member is asked once."""
    real = etcd_cluster.client_urls
    with etcd_cluster.client() as c:
        revs = [c.put(etcd_prefix + b"%02d" % i, b"v%d" % i) for i in range(10)]
    with _serve(status, lines) as (url, hostile):
        client = Etcd([url, *real], retry_deadline=5.0)
        try:
            watch = client.watch(etcd_prefix, prefix=True, start_revision=revs[0])
            seen, ended = _read(watch, len(revs), timeout=60)
            watch.close()
        finally:
            client.close()
    assert ended is None, f"{type(ended).__name__}: {ended}"
    assert [e.revision for e in seen] == revs
    assert [e.value for e in seen] == [b"v%d" % i for i in range(10)]
    assert len(hostile.watches) == 1, hostile.watches


@pytest.mark.parametrize(("name", "status", "lines", "says"), HOSTILE, ids=IDS)
def test_watch_on_a_refusing_member_alone_backs_off_and_names_it(
    name: str, status: int, lines: list[bytes], says: str
) -> None:
    """Alone, the hostile member: nothing delivered, asked again only with back-off, and the
    watch ends at its retry deadline with EtcdUnavailable naming the member and its answer."""
    with _serve(status, lines) as (url, hostile):
        client = Etcd([url], retry_deadline=2.0)  # room for a second ask on a loaded machine
        t0 = time.monotonic()
        try:
            seen, ended = _read(client.watch(b"k", start_revision=5), 1, timeout=60)
        finally:
            client.close()
        took = time.monotonic() - t0
    assert seen == []
    assert isinstance(ended, EtcdUnavailable), f"{type(ended).__name__}: {ended}"
    assert url in str(ended) and says in str(ended), str(ended)
    assert took < 30
    assert 2 <= len(hostile.watches) <= 15, len(hostile.watches)


def _event(rev: int, key: bytes) -> dict[str, object]:
    kv = {"key": base64.b64encode(key).decode(), "value": base64.b64encode(b"v").decode()}
    kv |= {"create_revision": str(rev), "mod_revision": str(rev), "version": "1"}
    return {"kv": kv}


# revision 5 holds three events (one transaction), revision 6 one
LOG = [(5, b"k1"), (5, b"k2"), (5, b"k3"), (6, b"k4")]


class _Log(BaseHTTPRequestHandler):
    """A member serving LOG from the revision asked: all of it (`replay` False) and then
    quiet, or (`replay` True) only the first event of revision 5 as a fragment, every time,
    and then the end of the stream."""

    replay = False
    asked: list[int]
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        start = int(body["create_request"].get("start_revision", 0))
        type(self).asked.append(start)
        events = [_event(r, k) for r, k in LOG if r >= start]
        created = {"result": {"header": {"revision": "6"}, "created": True}}
        part: dict[str, object] = {"header": {"revision": "6"}, "events": events}
        if self.replay:
            part = {**part, "events": events[:1], "fragment": True}
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for m in (created, {"result": part}):
                line = json.dumps(m).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
            if not self.replay:
                time.sleep(10)  # serving on: nothing more happens
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True


def test_a_member_that_only_sends_again_what_was_delivered_is_passed_over() -> None:
    """The first member sends part of revision 5 and ends the stream, and on every later watch
    sends that same part again and ends: the second time it brings nothing new, so the watch
    goes on from the other member (not back to it at once, for ever), every event once."""
    replaying = type("Replaying", (_Log,), {"replay": True, "asked": []})
    whole = type("Whole", (_Log,), {"replay": False, "asked": []})
    with serving(replaying) as a, serving(whole) as b:
        client = Etcd([a, b], retry_deadline=5.0)
        try:
            watch = client.watch(b"k", prefix=True, start_revision=5)
            seen, ended = _read(watch, len(LOG), timeout=60)
            watch.close()
        finally:
            client.close()
    assert ended is None, f"{type(ended).__name__}: {ended}"
    assert [(e.revision, e.key) for e in seen] == LOG
    assert replaying.asked == [5, 5] and whole.asked == [5]
