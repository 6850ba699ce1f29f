"""The link end to end: a real MicroPython peer (96 KB heap) on a pseudo-terminal.

The peer's stdin/stdout is the pty master; the host opens the slave path with pyserial, as it
would open a board's serial port (hubi.link_client.connect).
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
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
    VersionMismatch,
)
from hubi_core.link import FRAME, decode_frames, encode_frame
from hubi_core.link_client import Client
from tests.mpy import micropython_exe, mpy_env
from tests.peers import peerlib as L
from tests.peers.harness import PEERS, Peer, build_mpy

pytestmark = pytest.mark.micropython


@pytest.fixture(scope="module")
def mpy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mpy(tmp_path_factory.mktemp("link-mpy"))


@pytest.fixture
def start(mpy_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def _start(*args: str, **kw) -> Peer:
        p = Peer(mpy_dir, tmp_path, *args, **kw)
        peers.append(p)
        return p

    yield _start
    for p in peers:
        log = p.log()
        p.close()
        assert "Traceback" not in log, log


@pytest.fixture
def peer(start: Callable[..., Peer]) -> Peer:
    return start()


@pytest.fixture
def client(peer: Peer) -> Client:
    return peer.connect()


def exchange(
    c: Client, raw: bytes, wait_ms: int = 1000, until_seq: int | None = None
) -> list[tuple[int, int, bytes]]:
    """Write raw bytes to the port; collect the frames that come back within wait_ms (or
    until a frame with sequence number until_seq arrived)."""
    c.transport.write(raw)
    out = []
    deadline = time.monotonic() + wait_ms / 1000
    while (left := int((deadline - time.monotonic()) * 1000)) > 0:
        if c.receive(left) == FRAME:
            d = c.decoder
            out.append((d.type, d.seq, bytes(d.payload)))
            if d.seq == until_seq:
                break
    return out


def error_of(frames: list[tuple[int, int, bytes]], seq: int) -> tuple[int, str]:
    errs = [
        (struct.unpack(">H", p[:2])[0], p[2:].decode())
        for t, s, p in frames
        if t == P.ERROR and s == seq
    ]
    assert len(errs) == 1, frames
    return errs[0]


def test_hello_over_pyserial(peer: Peer, client: Client) -> None:
    assert client.peer == {
        "version": 1,
        "max_payload": 1024,
        "max_message": P.MAX_MESSAGE,
        "name": "link-peer",
    }
    assert type(client.transport.inner).__name__ == "SerialTransport"
    assert client.transport.inner.serial.port == peer.path
    assert client.ping(b"hello token") == b"hello token"


def test_echo_sizes_byte_exact(client: Client) -> None:
    for n in (0, 1, 2, 1019, 1020, 1021, 1024, 1025, 2048, 4097, 12_000):
        data = os.urandom(n)
        assert client.call(L.T_ECHO, data) == data, n


def test_bulk_200k_and_matrix_size_streamed(peer: Peer, client: Client) -> None:
    for n in (33_000, 200_000):
        data = os.urandom(n)
        r = client.call(L.T_STORE, data)
        assert r == struct.pack(">I", n) + hashlib.sha256(data).digest()
        assert peer.store.read_bytes() == data
        assert client.call(L.T_LOAD) == data
    big = client.call(L.T_REPLY_SIZE, struct.pack(">I", 100_003))
    assert big == L.pattern(100_003)
    # nothing leaked: the 96 KB heap still has its room
    free = struct.unpack(">I", client.call(L.T_MEM))[0]
    assert free > 30_000, free


def test_too_large_for_the_heap_is_a_clear_error(client: Client) -> None:
    with pytest.raises(ErrorReply) as ei:
        client.call(L.T_ECHO, bytes(60_000))
    assert ei.value.code == P.ERR_TOO_LARGE
    assert "cannot buffer a message of 60000 bytes" in ei.value.text
    assert client.call(L.T_ECHO, b"small") == b"small"


def test_garbage_between_frames(client: Client) -> None:
    before = client.peer_stats()["skipped_bytes"]
    junk = bytearray(os.urandom(3000))
    for i in range(0, 3000, 97):
        junk[i : i + 2] = P.SYNC  # plenty of false sync bytes
    client.transport.write(bytes(junk))
    assert client.ping(b"after garbage") == b"after garbage"
    st = client.peer_stats()
    assert st["skipped_bytes"] - before == len(junk)
    assert st["bad_headers"] >= 1
    # and garbage from the token to the host
    client.call(L.T_FAULT, b"garbage,ok,garbage")
    for i in range(3):
        assert client.ping(bytes([i]) * 10) == bytes([i]) * 10
    assert client.stats()["skipped_bytes"] >= 2 * 37


def test_bad_frames_from_host_get_clear_errors(client: Client) -> None:
    good = encode_frame(P.PING, 700, b"0123456789" * 5, version=1)
    # bad CRC: the token names the frame
    bad = bytearray(good)
    bad[20] ^= 0xFF
    code, text = error_of(exchange(client, bytes(bad), 2000, 700), 700)
    assert code == P.ERR_BAD_CRC and "seq 700" in text and "CRC" in text
    # truncated: reported once the frame timeout passes
    code, text = error_of(exchange(client, good[:30], 2000, 700), 700)
    assert code == P.ERR_TRUNCATED and "30 of 66 bytes" in text, text
    # oversize header
    h = bytearray(encode_frame(P.PING, 701, b"", version=1)[:12])
    struct.pack_into(">H", h, 6, 3000)
    import binascii

    struct.pack_into(">I", h, 8, binascii.crc32(h[:8]))
    code, text = error_of(exchange(client, bytes(h), 2000, 701), 701)
    assert code == P.ERR_OVERSIZE and "3000" in text and "1024" in text
    # bad header: nobody to answer, only counted
    before = client.peer_stats()["bad_headers"]
    hb = bytearray(good)
    hb[4] ^= 1
    assert exchange(client, bytes(hb), 300) == []
    assert client.peer_stats()["bad_headers"] == before + 1
    # a reply type sent as a request, an unknown request
    code, _ = error_of(exchange(client, encode_frame(P.PONG, 702, b""), 2000, 702), 702)
    assert code == P.ERR_NOT_A_REQUEST
    code, text = error_of(exchange(client, encode_frame(0x55, 703, b""), 2000, 703), 703)
    assert code == P.ERR_UNKNOWN_TYPE and "0x55" in text
    # the session goes on
    assert client.call(L.T_ECHO, b"still here") == b"still here"


@pytest.mark.parametrize("fault", ["flip", "truncate", "header", "hcrc", "drop"])
def test_damaged_requests_recover(client: Client, fault: str) -> None:
    client.transport.plan = [fault]
    assert client.call(L.T_ECHO, b"x" * 200, timeout_ms=400) == b"x" * 200
    assert client.retransmits == 1


@pytest.mark.parametrize(
    "fault, cls, code",
    [
        ("flip", ErrorReply, P.ERR_BAD_CRC),
        ("truncate", ErrorReply, P.ERR_TRUNCATED),
        ("drop", LinkTimeout, None),
    ],
)
def test_damaged_request_without_retry(
    client: Client, fault: str, cls: type, code: int | None
) -> None:
    client.transport.plan = [fault]
    with pytest.raises(cls) as ei:
        client.call(L.T_ECHO, b"y" * 100, timeout_ms=500, retries=0)
    if code is not None:
        assert ei.value.code == code
    assert client.ping(b"ok") == b"ok"


@pytest.mark.parametrize(
    "fault, cls",
    [
        ("flip", BadCrc),
        ("truncate", FrameTruncated),
        ("header", LinkTimeout),
        ("drop", LinkTimeout),
    ],
)
def test_damaged_replies(client: Client, fault: str, cls: type) -> None:
    client.call(L.T_FAULT, fault.encode())
    assert client.call(L.T_ECHO, b"z" * 300, timeout_ms=400) == b"z" * 300
    assert client.retransmits == 1
    client.call(L.T_FAULT, fault.encode())
    with pytest.raises(cls) as ei:
        client.call(L.T_ECHO, b"z", timeout_ms=400, retries=0)
    if fault == "header":
        assert "bad frame header" in str(ei.value)
    assert client.ping(b"ok") == b"ok"


def test_noise_around_replies(client: Client) -> None:
    events: list = []
    client.on_event = events.append
    client.call(L.T_FAULT, b"oversize,garbage,split")
    for i in range(3):
        assert client.call(L.T_ECHO, bytes([i]) * 500) == bytes([i]) * 500
    assert client.retransmits == 0
    assert any(isinstance(e, FrameOversize) for e in events)
    assert any(isinstance(e, Garbage) for e in events)


def test_bulk_with_faults_both_ways(peer: Peer, client: Client) -> None:
    data = os.urandom(50_000)
    client.call(L.T_FAULT, b"ok,flip,ok,ok,drop,ok,garbage,truncate")
    client.transport.plan = ["ok", "ok", "ok", "truncate", "ok", "flip", "ok", "garbage", "header"]
    # up to three faults hit one request (truncate, drop, flip): allow enough retries
    r = client.call(L.T_STORE, data, timeout_ms=400, retries=4)
    assert r[4:] == hashlib.sha256(data).digest()
    assert peer.store.read_bytes() == data
    assert client.call(L.T_LOAD, timeout_ms=400) == data
    assert client.retransmits >= 5


def test_version_negotiation(start: Callable[..., Peer]) -> None:
    p = start("--versions", "1,2,3")
    c = p.connect(versions=(2, 3, 4))
    assert c.peer["version"] == 3 and c.version == 3
    assert c.ping(b"v3") == b"v3" and c.decoder.version == 3
    c2 = Client(c.transport, versions=(1, 2))
    assert c2.hello()["version"] == 2


def test_version_mismatch(start: Callable[..., Peer]) -> None:
    p = start("--versions", "7,8")
    c = p.connect(hello=False, versions=(1, 2))
    with pytest.raises(VersionMismatch) as ei:
        Peer.hello_with_startup(c)
    msg = str(ei.value)
    assert "7,8" in msg and "1,2" in msg, msg
    with pytest.raises(ErrorReply) as ei2:
        c.ping(b"x")
    assert ei2.value.code == P.ERR_BAD_VERSION


def test_silent_peer_times_out_then_recovers(peer: Peer, client: Client) -> None:
    peer.suspend()
    try:
        t = time.monotonic()
        with pytest.raises(LinkTimeout) as ei:
            client.ping(b"anyone?", timeout_ms=250, retries=1)
        took = time.monotonic() - t
        assert 0.45 < took < 6.0, took  # the upper bound is room for a loaded machine
        assert "no reply to PING (0x02) seq" in str(ei.value)
        assert "within 250 ms (2 attempts)" in str(ei.value)
    finally:
        peer.resume()
    # the late replies to those attempts are recognised as stale
    assert client.ping(b"back", timeout_ms=2000) == b"back"
    assert client.stale >= 1


def test_handler_busy_without_keepalive_times_out(client: Client) -> None:
    with pytest.raises(LinkTimeout):
        client.call(L.T_SLEEP, struct.pack(">H", 700), timeout_ms=200, retries=1)
    assert client.ping(b"later", timeout_ms=2000) == b"later"


def test_keepalive(client: Client) -> None:
    assert client.call(L.T_SLOW, struct.pack(">H", 1200), timeout_ms=300, retries=0) == b"done"


def test_nonblocking_master(start: Callable[..., Peer]) -> None:
    p = start(blocking_master=False)
    c = p.connect()
    data = os.urandom(150_000)
    assert c.call(L.T_STORE, data)[4:] == hashlib.sha256(data).digest()
    assert c.call(L.T_LOAD) == data
    assert c.call(L.T_ECHO, data[:9000]) == data[:9000]


def test_reconnect_after_host_closes(peer: Peer, client: Client) -> None:
    assert client.ping(b"1") == b"1"
    client.close()
    c2 = peer.connect()
    assert c2.ping(b"2") == b"2"


def test_heap_allocation_per_frame(mpy_dir: Path, tmp_path: Path) -> None:
    """The token's receive path (StreamTransport byte by byte, decoder, Server) allocates a
    few small objects per frame, never per byte: measured with the collector off."""
    n = 60
    frames = b"".join(encode_frame(P.PING, i + 1, bytes([i]) * 1000) for i in range(n))
    (tmp_path / "in.bin").write_bytes(frames)
    env = mpy_env()
    env["MICROPYPATH"] = f"{mpy_dir}:.frozen"
    cmd = [micropython_exe(), "-X", "heapsize=96k", str(PEERS / "alloc_check.py"), str(n)]
    with open(tmp_path / "in.bin", "rb") as fin:
        r = subprocess.run(cmd, stdin=fin, capture_output=True, env=env, timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    per_frame = int(err.split("alloc-per-frame")[1].split()[0])
    assert per_frame < 1000, err  # a per-byte allocation would cost >= 32 KB per frame
    replies = decode_frames(r.stdout)
    assert [(f.type, f.seq, f.payload) for f in replies] == [
        (P.PONG, i + 1, bytes([i]) * 1000) for i in range(n)
    ]
