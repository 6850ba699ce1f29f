"""The etcd client against a hostile member: a real HTTP server that answers like etcd, then
with garbage (not JSON, too deep, not an object, fields of the wrong type, revisions going
back). The watch goes on from a real member of a real cluster and delivers every event exactly
once, in order; alone, the hostile member ends the watch (and calls) with a named error."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from hubi.infra.etcd_client import Etcd, EtcdBadReply, EtcdUnavailable, WatchEvent
from hubi.infra.etcd_server import EtcdCluster
from tests.http_fakes import serving
from tests.servers import etcd_cluster, etcd_prefix  # noqa: F401

KV = {"key": "a2V5", "create_revision": "7", "mod_revision": "7", "version": "1"}


def _events(*kvs: object) -> bytes:
    return json.dumps({"result": {"events": [{"kv": kv} for kv in kvs]}}).encode()


# (name, the line after the created message, what the error says)
GARBAGE = [
    ("not-json", b"this is not json", "not valid JSON"),
    ("too-deep", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("not-object", b"[1, 2, 3]", "the message is list, not an object"),
    ("result-not-object", b'{"result": 5}', "result is int, not an object"),
    ("no-result", b'{"hello": "etcd"}', "result is missing"),
    ("events-not-list", b'{"result": {"events": "abc"}}', "events is str, not a list"),
    ("event-not-object", b'{"result": {"events": [7]}}', "event is int, not an object"),
    ("kv-not-object", b'{"result": {"events": [{"kv": "x"}]}}', "kv is str, not an object"),
    ("revision-text", _events({**KV, "mod_revision": "soon"}), "mod_revision 'soon' is not"),
    ("revision-list", _events({**KV, "mod_revision": [7]}), "mod_revision is list"),
    ("key-not-text", _events({**KV, "key": 5}), "key is int, not base64"),
    ("key-not-base64", _events({**KV, "key": "a"}), "key 'a' is not base64"),
    ("type-strange", b'{"result": {"events": [{"type": 3, "kv": {}}]}}', "event type 3"),
    ("revision-back", _events({**KV, "mod_revision": "1"}), "event of revision 1 where"),
]
IDS = [g[0] for g in GARBAGE]


class _Hostile(BaseHTTPRequestHandler):
    """A member that creates the watch (relaying the first ``relay`` real events from
    ``upstream`` when set) and then sends ``garbage``; answers any other call with ``reply``."""

    garbage = b""
    upstream: str | None = None
    relay = 0
    reply = b"{}"
    watches: list[float]  # when each watch request came (one list per server)
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v3/watch":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.reply)))
            self.end_headers()
            self.wfile.write(self.reply)
            return
        type(self).watches.append(time.monotonic())
        lines = [b'{"result":{"header":{"revision":"3"},"created":true}}']
        if self.upstream:  # a real watch's first events, well formed
            req = urllib.request.Request(self.upstream + "/v3/watch", data=body)
            with urllib.request.urlopen(req, timeout=10) as up:
                created = up.readline().strip()
                first = json.loads(up.readline())
            first["result"]["events"] = first["result"]["events"][: self.relay]
            lines = [created, json.dumps(first).encode()]
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")  # as the gateway streams
        self.end_headers()
        try:
            for line in [*lines, self.garbage]:
                self.wfile.write(b"%x\r\n%s\n\r\n" % (len(line) + 1, line))
                self.wfile.flush()
            time.sleep(5)  # then says nothing: the client must not wait for more
        except OSError:
            pass
        self.close_connection = True


@contextmanager
def _serve(**attrs: object) -> Iterator[tuple[str, type[_Hostile]]]:
    """A hostile member of its own (its class counts the watch requests)."""
    handler = type("Hostile", (_Hostile,), {"watches": [], **attrs})
    with serving(handler) as url:
        yield url, handler


def _read(
    watch: Iterator[WatchEvent], n: int, timeout: float
) -> tuple[list[WatchEvent], BaseException | None]:
    """Up to `n` events of `watch`, read on a thread, and what ended it (None: n events)."""
    seen: list[WatchEvent] = []
    ended: list[BaseException | None] = []

    def run() -> None:
        try:
            for ev in watch:
                seen.append(ev)
                if len(seen) >= n:
                    break
            ended.append(None)
        except BaseException as exc:  # noqa: BLE001
            ended.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert ended, f"the watch neither ended nor delivered {n} events in {timeout} s: {seen}"
    return seen, ended[0]


@pytest.mark.parametrize(("name", "garbage", "says"), GARBAGE, ids=IDS)
def test_watch_goes_on_from_a_real_member_after_garbage(
    etcd_cluster: EtcdCluster,  # noqa: F811
    etcd_prefix: bytes,  # noqa: F811
    name: str,
    garbage: bytes,
    says: str,
) -> None:
    """The hostile member (first in the list) serves 3 real events, then garbage: the watch
    goes on from the next real member at the next revision, nothing lost or repeated, and
    does not go back to the hostile member over and over."""
    real = etcd_cluster.client_urls
    with etcd_cluster.client() as c:
        revs = [c.put(etcd_prefix + b"%02d" % i, b"v%d" % i) for i in range(10)]
    with _serve(garbage=garbage, upstream=real[0], relay=3) as (url, hostile):
        client = Etcd([url, *real], retry_deadline=5.0)
        try:
            watch = client.watch(etcd_prefix, prefix=True, start_revision=revs[0])
            seen, ended = _read(watch, len(revs), timeout=30)
            watch.close()
        finally:
            client.close()
    assert ended is None, f"{type(ended).__name__}: {ended}"
    assert [e.revision for e in seen] == revs  # each once, in order
    assert [e.value for e in seen] == [b"v%d" % i for i in range(10)]
    assert len(hostile.watches) == 1  # asked once, then passed over


@pytest.mark.parametrize(("name", "garbage", "says"), GARBAGE, ids=IDS)
def test_watch_on_a_hostile_member_alone_ends_with_a_named_error(
    name: str, garbage: bytes, says: str
) -> None:
    """Created, then garbage, every time: the watch delivers nothing, does not spin on the
    member, and ends at the retry deadline naming the member and what was wrong."""
    with _serve(garbage=garbage) as (url, hostile):
        # 0.5 s still leaves four tries (back-off 0.05, 0.1, 0.2 s): it retries, and does not spin
        client = Etcd([url], retry_deadline=0.5)
        t0 = time.monotonic()
        try:
            seen, ended = _read(client.watch(b"k", start_revision=5), 1, timeout=20)
        finally:
            client.close()
        took = time.monotonic() - t0
    assert seen == []
    assert isinstance(ended, EtcdUnavailable), f"{type(ended).__name__}: {ended}"
    msg = str(ended)
    assert url in msg and "malformed watch message" in msg and says in msg, msg
    assert took < 10
    assert 2 <= len(hostile.watches) <= 15  # retried with back-off, not in a tight loop


def _range(**fields: object) -> bytes:
    return json.dumps({"header": {"revision": "9"}, **fields}).encode()


# a range reply of each wrong shape
BAD_RANGE = [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"<html>a proxy says hello</html>", "not valid JSON"),
    (b'"a string"', "the reply is str, not an object"),
    (b'{"kvs": []}', "header revision is missing"),
    (b'{"header": [], "kvs": []}', "header is list, not an object"),
    (_range(kvs="abc"), "kvs is str, not a list"),
    (_range(kvs=[5]), "kv is int, not an object"),
    (_range(kvs=[{"key": "a2V5", "value": 12}]), "value is int, not base64"),
    (_range(kvs=[{"key": "a2V5", "version": {"n": 1}}]), "version is dict, not an integer"),
]


@pytest.mark.parametrize(("reply", "says"), BAD_RANGE, ids=[s for _, s in BAD_RANGE])
def test_calls_pass_over_a_malformed_reply(
    etcd_cluster: EtcdCluster,  # noqa: F811
    etcd_prefix: bytes,  # noqa: F811
    reply: bytes,
    says: str,
) -> None:
    """Reads go on to a real member; alone, the hostile member ends them with a named error,
    a write with EtcdBadReply at once (it may have been applied), health and status 'down'."""
    real = etcd_cluster.client_urls
    key = etcd_prefix + b"k"
    with _serve(reply=reply) as (url, _):
        with Etcd([url, *real], retry_deadline=5.0) as both:
            with etcd_cluster.client() as c:
                c.put(key, b"v")
            kv = both.get(key)
            assert kv is not None and kv.value == b"v"
            assert both.range(etcd_prefix).kvs == [kv]
            assert both.get_many([key]) == [kv]
        with Etcd([url], retry_deadline=0.2) as alone:  # a few tries, each malformed
            with pytest.raises(EtcdUnavailable) as info:
                alone.range(etcd_prefix)
            assert url in str(info.value) and says in str(info.value), str(info.value)
            with pytest.raises(EtcdUnavailable, match="malformed reply"):
                alone.get(key)


# replies no call can take: not JSON, too deep, not an object, a header of the wrong type
BAD_ANY = [BAD_RANGE[i] for i in (0, 1, 2, 4)]


@pytest.mark.parametrize(("reply", "says"), BAD_ANY, ids=[s for _, s in BAD_ANY])
def test_a_write_health_and_status_on_a_malformed_reply(reply: bytes, says: str) -> None:
    """A write is not repeated elsewhere (it may have been applied): EtcdBadReply naming the
    member at once; health and status say the member is down, without an exception."""
    with _serve(reply=reply) as (url, _), Etcd([url], retry_deadline=5.0) as alone:
        t0 = time.monotonic()
        with pytest.raises(EtcdBadReply) as bad:
            alone.put(b"k", b"w")
        assert time.monotonic() - t0 < 2.0
        assert url in str(bad.value) and "/v3/kv/put" in str(bad.value) and says in str(bad.value)
        if "header" not in says:  # the member list has no use for the header
            # a read retries until its deadline: a short one of its own (5 s of waiting)
            with (
                Etcd([url], retry_deadline=0.2) as brief,
                pytest.raises(EtcdUnavailable, match="malformed reply"),
            ):
                brief.member_list()
        assert alone.health() == {url: False}
        status = alone.status()[url]
        assert not status.ok and status.error and says in status.error
