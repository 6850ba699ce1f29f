"""Server: a request read from inside a handler (a token's screen flow serving the link while
it waits for its owner) is answered, and the outer request goes on: its WAIT frames, its one
run, its reply, and the cached reply for its retransmission (CPython, a socket pair)."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from hubi_core import protocol as P
from hubi_core.link import FrameDecoder, Server, StreamTransport, encode_frame

pytestmark = pytest.mark.xdist_group("test_token_probe27_busy_link")
T_FLOW = 0x40  # a test request whose handler waits for "the owner" while serving the link


class Host:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.dec = FrameDecoder()
        self.got: list = []

    def send(self, frame: bytes) -> None:
        self.sock.sendall(frame)

    def until(self, type_: int, seq: int, timeout: float = 3.0) -> list:
        """Frames read until one of `type_` with `seq` (returned last)."""
        out = []
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.05)
        while time.monotonic() < deadline:
            while self.got:
                f = self.got.pop(0)
                out.append(f)
                if f.type == type_ and f.seq == seq:
                    return out
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.got += self.dec.feed(data)
        raise AssertionError(f"no {P.type_name(type_)} seq {seq}; got {out}")

    def quiet(self, secs: float) -> list:
        self.sock.settimeout(secs)
        try:
            self.got += self.dec.feed(self.sock.recv(4096))
        except TimeoutError:
            pass
        out, self.got = self.got, []
        return out


def test_request_served_inside_a_handler() -> None:
    a, b = socket.socketpair()
    srv = Server(StreamTransport(b))
    owner = threading.Event()
    runs = []

    def flow(payload: memoryview) -> bytes:
        runs.append(bytes(payload))
        while not owner.is_set():  # as Token._idle does while a screen waits
            srv.keepalive()
            srv.serve_once(0)
            time.sleep(0.01)
        return b"signed"

    srv.handle(T_FLOW, flow)
    stop = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            while not stop.is_set():
                srv.serve_once(20)
        except BaseException as e:  # noqa: BLE001 - asserted below
            if not stop.is_set():
                errors.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    host = Host(a)
    try:
        outer = encode_frame(T_FLOW, 100, b"pay")
        host.send(outer)
        host.until(P.WAIT, 100)
        # another host: HELLO and PING answered while the flow waits
        # versions offered (1), max payload, max message, name
        hello = b"\x01\x01" + struct.pack(">HI", 1024, 65536) + b"new-host"
        host.send(encode_frame(P.HELLO, 7, hello))
        assert host.until(P.HELLO_REPLY, 7)[-1].payload[0] == 1
        ping = encode_frame(P.PING, 8, b"hi")
        host.send(ping)
        assert host.until(P.PONG, 8)[-1].payload == b"hi"
        # the outer request is still the one kept waiting
        host.until(P.WAIT, 100)
        # its retransmission neither runs it again nor gets another request's reply
        host.send(outer)
        later = host.quiet(0.6)
        assert all(f.type == P.WAIT and f.seq == 100 for f in later), later
        assert runs == [b"pay"]
        owner.set()
        assert host.until(T_FLOW | P.REPLY, 100)[-1].payload == b"signed"
        # a retransmission after the reply gets the cached reply, not a second run
        host.send(outer)
        assert host.until(T_FLOW | P.REPLY, 100)[-1].payload == b"signed"
        assert runs == [b"pay"] and srv.duplicates == 1
        # and the ping answered inside the handler is a request like any other afterwards
        host.send(ping)
        assert host.until(P.PONG, 8)[-1].payload == b"hi"
    finally:
        owner.set()
        stop.set()
        t.join(5)
        a.close()
        b.close()
    assert not errors, errors
