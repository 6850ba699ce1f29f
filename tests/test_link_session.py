"""Session layer on CPython: Client and Server in one process over a socket pair.

The same rules run against the real MicroPython peer on a pty in test_link_pty.py; here they
are quick to exercise exhaustively (every fault in both directions).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubi_core import protocol as P
from hubi_core.errors import (
    BadCrc,
    ErrorReply,
    FrameOversize,
    FrameTruncated,
    Garbage,
    LinkTimeout,
    MessageTooLarge,
    VersionMismatch,
)
from hubi_core.link import Client as LazyClient
from hubi_core.link import Server, StreamTransport, encode_frame
from hubi_core.link_client import Client
from tests.peers import peerlib as L


class Rig:
    def __init__(self, tmp: Path, versions=(1,), client_versions=(1,), **srv_kw) -> None:
        a, b = socket.socketpair()
        self.sock_c, self.sock_s = a, b
        self.sfaulty = L.FaultyTransport(StreamTransport(b))
        self.srv = Server(self.sfaulty, versions=versions, name="thread-peer", **srv_kw)
        self.calls = L.install(self.srv, self.sfaulty, str(tmp / "store.bin"))
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.cfaulty = L.FaultyTransport(StreamTransport(a))
        # generous default: a loaded CI machine can stall the peer thread; tests of timeouts
        # pass their own short timeout_ms
        self.client = Client(self.cfaulty, versions=client_versions, timeout_ms=3000, retries=2)
        self.events: list = []
        self.client.on_event = self.events.append

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.srv.serve_once(20)
        except BaseException as e:  # noqa: BLE001 - reported by close()
            if not self.stop.is_set():
                self.errors.append(e)

    def server_faults(self, *faults: str) -> None:
        self.client.call(L.T_FAULT, ",".join(faults).encode())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock_c.close()
        self.sock_s.close()
        assert not self.errors, self.errors


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    r.client.hello()
    yield r
    r.close()


def test_lazy_client_import() -> None:
    assert LazyClient is Client


def test_hello_and_ping(rig: Rig) -> None:
    assert rig.client.peer == {
        "version": 1,
        "max_payload": P.MAX_PAYLOAD,
        "max_message": P.MAX_MESSAGE,
        "name": "thread-peer",
    }
    assert rig.srv.peer_name == "hubi-host"
    assert rig.client.ping(b"hi") == b"hi"
    assert rig.client.ping() == b""


@pytest.mark.parametrize(
    "srv_versions, cli_versions, chosen",
    [((1, 2, 3), (2, 3, 4), 3), ((1, 2, 3), (1,), 1), ((5,), (1, 5), 5), ((2, 9), (9, 2), 9)],
)
def test_version_negotiation(tmp_path: Path, srv_versions, cli_versions, chosen) -> None:
    r = Rig(tmp_path, versions=srv_versions, client_versions=cli_versions)
    try:
        assert r.client.hello()["version"] == chosen
        assert r.client.version == chosen and r.srv.version == chosen
        assert r.client.ping(b"v") == b"v"
        # replies carry the negotiated version in their header
        assert r.client.decoder.version == chosen
    finally:
        r.close()


def test_no_common_version(tmp_path: Path) -> None:
    r = Rig(tmp_path, versions=(3, 4), client_versions=(1, 2))
    try:
        with pytest.raises(VersionMismatch) as ei:
            r.client.hello()
        msg = str(ei.value)
        assert "1,2" in msg and "3,4" in msg, msg
        # without a common version, ordinary requests are refused, not crashed on
        with pytest.raises(ErrorReply) as ei2:
            r.client.ping(b"x")
        assert ei2.value.code == P.ERR_BAD_VERSION
        assert "send HELLO" in str(ei2.value)
    finally:
        r.close()


def test_unknown_type_and_handler_errors(rig: Rig) -> None:
    with pytest.raises(ErrorReply) as ei:
        rig.client.call(0x5E, b"?")
    assert ei.value.code == P.ERR_UNKNOWN_TYPE and "0x5e" in str(ei.value)
    with pytest.raises(ErrorReply) as ei:
        rig.client.call(L.T_RAISE)
    assert ei.value.code == P.ERR_INTERNAL and "ValueError" in ei.value.text
    with pytest.raises(ErrorReply) as ei:
        rig.client.call(L.T_DENY)
    assert ei.value.code == L.ERR_TEST_DENIED and ei.value.text == "denied by the test peer"
    assert rig.client.ping(b"still alive") == b"still alive"


def test_call_rejects_link_types(rig: Rig) -> None:
    for t in (P.HELLO, P.BULK_BEGIN, P.BULK_DATA, P.BULK_END, P.BULK_READ, 0x00, 0x80, 0xFF):
        with pytest.raises(ValueError):
            rig.client.call(t)


def test_message_limits(tmp_path: Path) -> None:
    r = Rig(tmp_path, max_message=5000)
    try:
        r.client.hello()
        with pytest.raises(MessageTooLarge, match="5001 bytes exceeds the limit of 5000"):
            r.client.call(L.T_ECHO, bytes(5001))
        assert r.client.call(L.T_ECHO, bytes(5000)) == bytes(5000)
    finally:
        r.close()


@pytest.mark.parametrize("n", [0, 1, 1019, 1020, 1021, 1024, 1025, 4096, 33_000, 120_000])
def test_echo_sizes(rig: Rig, n: int) -> None:
    data = L.pattern(n)
    seen: list[tuple[int, int]] = []
    assert rig.client.call(L.T_ECHO, data, progress=lambda d, t: seen.append((d, t))) == data
    if n > P.MAX_PAYLOAD:
        # upload (0..n), then the echo comes back as a bulk download (0..n again)
        assert seen[0] == (0, n) and seen[-1] == (n, n)
        assert all(0 <= d <= t == n for d, t in seen)
        assert [d for d, _ in seen].count(0) == 2


def test_store_load_and_large_source(rig: Rig, tmp_path: Path) -> None:
    import hashlib

    data = L.pattern(200_000)
    r = rig.client.call(L.T_STORE, data)
    assert r == struct.pack(">I", len(data)) + hashlib.sha256(data).digest()
    assert (tmp_path / "store.bin").read_bytes() == data
    assert rig.client.call(L.T_LOAD) == data
    assert rig.client.call(L.T_REPLY_SIZE, struct.pack(">I", 70_001)) == L.pattern(70_001)


@pytest.mark.parametrize("fault", ["flip", "truncate"])
def test_damaged_reply_is_retried(rig: Rig, fault: str) -> None:
    rig.server_faults(fault)
    before = rig.client.retransmits
    assert rig.client.call(L.T_ECHO, b"payload") == b"payload"
    assert rig.client.retransmits == before + 1
    assert rig.calls[L.T_ECHO] == 1  # the retry was answered from the reply cache
    assert rig.srv.duplicates == 1
    cls = BadCrc if fault == "flip" else FrameTruncated
    assert isinstance(rig.client.last_problem, cls)


@pytest.mark.parametrize(
    "fault, cls, text",
    [
        ("flip", BadCrc, "no intact reply to 0x70 seq"),
        ("truncate", FrameTruncated, "truncated frame"),
        ("drop", LinkTimeout, "no reply to 0x70 seq"),
        ("header", LinkTimeout, "bad frame header"),
    ],
)
def test_damaged_reply_without_retries_is_a_clear_error(
    rig: Rig, fault: str, cls: type, text: str
) -> None:
    rig.server_faults(fault)
    with pytest.raises(cls) as ei:
        rig.client.call(L.T_ECHO, b"x", retries=0, timeout_ms=300)
    assert text in str(ei.value), str(ei.value)
    # and the session simply continues
    assert rig.client.ping(b"after") == b"after"


@pytest.mark.parametrize("fault", ["garbage", "oversize", "split", "ok"])
def test_noise_around_replies_is_harmless(rig: Rig, fault: str) -> None:
    rig.server_faults(fault)
    before = rig.client.retransmits
    assert rig.client.call(L.T_ECHO, b"abc") == b"abc"
    assert rig.client.retransmits == before
    if fault == "garbage":
        assert any(isinstance(e, Garbage) for e in rig.events)
    if fault == "oversize":
        assert any(isinstance(e, FrameOversize) and "4000" in str(e) for e in rig.events)


@pytest.mark.parametrize("fault", ["flip", "truncate", "header", "drop", "hcrc"])
def test_damaged_request_is_retried(rig: Rig, fault: str) -> None:
    rig.cfaulty.plan = [fault]
    assert rig.client.call(L.T_ECHO, b"req") == b"req"
    assert rig.client.retransmits == 1
    assert rig.calls[L.T_ECHO] == 1


@pytest.mark.parametrize(
    "fault, code",
    [("flip", P.ERR_BAD_CRC), ("truncate", P.ERR_TRUNCATED)],
)
def test_damaged_request_without_retries_reports_peer_error(
    rig: Rig, fault: str, code: int
) -> None:
    rig.cfaulty.plan = [fault]
    with pytest.raises(ErrorReply) as ei:
        rig.client.call(L.T_ECHO, b"req", retries=0)
    assert ei.value.code == code
    assert "(1 attempt)" in str(ei.value)
    assert rig.client.ping(b"ok") == b"ok"


@pytest.mark.parametrize("fault", ["garbage", "oversize", "split"])
def test_noise_around_requests_is_harmless(rig: Rig, fault: str) -> None:
    rig.cfaulty.plan = [fault]
    assert rig.client.call(L.T_ECHO, b"req") == b"req"
    assert rig.client.retransmits == 0
    st = rig.client.peer_stats()
    if fault == "garbage":
        assert st["skipped_bytes"] == 37
    if fault == "oversize":
        assert st["oversize"] == 1


def test_bulk_survives_faults(rig: Rig) -> None:
    data = L.pattern(30_000)
    rig.server_faults("flip", "ok", "drop", "ok", "ok", "truncate", "garbage")
    rig.cfaulty.plan = ["ok", "ok", "flip", "ok", "truncate", "ok", "ok", "drop"]
    assert rig.client.call(L.T_ECHO, data, timeout_ms=300) == data
    assert rig.calls[L.T_ECHO] == 1


def test_stale_replies_are_dropped(rig: Rig) -> None:
    with pytest.raises(LinkTimeout, match="within 200 ms"):
        rig.client.call(L.T_SLEEP, struct.pack(">H", 500), timeout_ms=200, retries=1)
    # the late replies (to both attempts) arrive now and must not be taken for this one
    assert rig.client.ping(b"fresh", timeout_ms=2000) == b"fresh"
    assert rig.client.stale >= 1
    assert rig.calls[L.T_SLEEP] == 1  # the retry was a duplicate, answered from the cache


def test_keepalive_extends_the_timeout(rig: Rig) -> None:
    assert rig.client.call(L.T_SLOW, struct.pack(">H", 1000), timeout_ms=300, retries=0) == b"done"
    assert rig.client.retransmits == 0


def test_sequence_numbers_wrap(rig: Rig) -> None:
    rig.client._seq = 0xFFFD
    for i in range(5):
        assert rig.client.ping(bytes([i])) == bytes([i])
    assert 1 <= rig.client._seq <= 3


def test_bulk_protocol_errors(rig: Rig) -> None:
    c = rig.client
    with pytest.raises(ErrorReply) as ei:
        c._transact(P.BULK_DATA, struct.pack(">I", 0), b"x", None, 0)
    assert ei.value.code == P.ERR_BULK_STATE
    with pytest.raises(ErrorReply) as ei:
        c._transact(P.BULK_READ, struct.pack(">IH", 0, 10), b"", None, 0)
    assert ei.value.code == P.ERR_BULK_STATE
    with pytest.raises(ErrorReply) as ei:
        c._transact(P.BULK_BEGIN, struct.pack(">BBII", P.HELLO, 0, 10, 0), b"", None, 0)
    assert ei.value.code == P.ERR_BAD_PAYLOAD
    # announced CRC wrong: the reassembled message is refused
    c._transact(P.BULK_BEGIN, struct.pack(">BBII", L.T_ECHO, 0, 3, 12345), b"", None, 0)
    c._transact(P.BULK_DATA, struct.pack(">I", 0), b"abc", None, 0)
    with pytest.raises(ErrorReply) as ei:
        c._transact(P.BULK_END, b"", b"", None, 0)
    assert ei.value.code == P.ERR_BULK_CRC
    # short message
    c._transact(P.BULK_BEGIN, struct.pack(">BBII", L.T_ECHO, 0, 3, 0), b"", None, 0)
    with pytest.raises(ErrorReply) as ei:
        c._transact(P.BULK_END, b"", b"", None, 0)
    assert ei.value.code == P.ERR_BULK_STATE and "0 of 3" in ei.value.text
    # out-of-order chunk
    c._transact(P.BULK_BEGIN, struct.pack(">BBII", L.T_ECHO, 0, 10, 0), b"", None, 0)
    with pytest.raises(ErrorReply) as ei:
        c._transact(P.BULK_DATA, struct.pack(">I", 5), b"abc", None, 0)
    assert "expected 0" in ei.value.text
    assert c.ping(b"fine") == b"fine"


def test_reply_class_type_as_request(rig: Rig) -> None:
    c = rig.client
    c.transport.write(encode_frame(P.PONG, 4242, b"", version=1))
    k = c.receive(1000)
    assert k == 1 and c.decoder.type == P.ERROR and c.decoder.seq == 4242
    code = struct.unpack(">H", bytes(c.decoder.payload[:2]))[0]
    assert code == P.ERR_NOT_A_REQUEST


def test_stats(rig: Rig) -> None:
    rig.client.ping()
    st = rig.client.peer_stats()
    assert set(st) == set(P.STATS_FIELDS)
    assert st["rx_frames"] >= 2 and st["errors_sent"] == 0
    local = rig.client.stats()
    assert local["tx_frames"] >= 3 and local["retransmits"] == 0


def test_small_frames_negotiated(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    try:
        c = Client(r.cfaulty, max_payload=128, timeout_ms=400)
        peer = c.hello()
        assert peer["max_payload"] == P.MAX_PAYLOAD and c.peer_max_payload == 128
        assert r.srv.peer_max_payload == 128
        data = L.pattern(5000)
        assert c.call(L.T_ECHO, data) == data  # both directions in 124-byte chunks
        assert c.decoder.frames > 80
        with pytest.raises(ErrorReply) as ei:
            c.call(L.T_RAISE)
        assert len(ei.value.text) <= 126
    finally:
        r.close()
