"""Helpers shared by the link test peer (MicroPython) and the pytest side (CPython).

Runs unchanged on both interpreters: no typing, no f-strings needed.
"""

import gc
import hashlib
import os
import struct

from hubi_core import protocol as P
from hubi_core.errors import ErrorReply
from hubi_core.link import sleep_ms, ticks_diff, ticks_ms

# test request types (protocol.TEST_FIRST..TEST_LAST)
T_ECHO = 0x70  # reply = payload (buffered: bulk messages are reassembled in RAM)
T_STORE = 0x71  # streamed to a file through a sink; reply = u32 length + sha256
T_LOAD = 0x72  # reply = the stored file, streamed from flash (a source object)
T_FAULT = 0x73  # payload "flip,drop,...": damage the next replies, one fault per frame
T_SLEEP = 0x74  # u16 ms: block without keepalive, then reply b"slept"
T_SLOW = 0x75  # u16 ms: work that long calling keepalive(), then reply b"done"
T_RAISE = 0x76  # the handler raises ValueError
T_DENY = 0x77  # the handler raises ErrorReply(ERR_TEST_DENIED, ...)
T_MEM = 0x78  # reply = u32 free heap after gc.collect() (0 on CPython)
T_REPLY_SIZE = 0x79  # u32 n: reply with n bytes of pattern (from a generator source)
ERR_TEST_DENIED = 0x8001

FAULTS = ("drop", "flip", "header", "truncate", "garbage", "oversize", "split", "hcrc")


def pattern(n, off=0):
    """Deterministic test bytes: byte i is (i * 7 + i // 251) & 0xFF."""
    return bytes(((i * 7 + i // 251) & 0xFF) for i in range(off, off + n))


class PatternSource:
    """A large reply produced on the fly (len + read_at), never held in RAM."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def read_at(self, off, buf):
        k = min(len(buf), self.n - off)
        for i in range(k):
            j = off + i
            buf[i] = (j * 7 + j // 251) & 0xFF
        return k


class FileSink:
    """Streams an upload into a file and hashes it."""

    def __init__(self, path, total):
        self.f = open(path, "wb")  # noqa: SIM115 (closed by finish())
        self.h = hashlib.sha256()
        self.total = total
        self.n = 0

    def write(self, data):
        self.f.write(data)
        self.h.update(data)
        self.n += len(data)

    def finish(self):
        self.f.close()
        return self.n.to_bytes(4, "big") + self.h.digest()


class FileSource:
    """Serves a file as a large reply (len + read_at)."""

    def __init__(self, path):
        self.f = open(path, "rb")  # noqa: SIM115 (lives as long as the reply)
        self.n = os.stat(path)[6]

    def __len__(self):
        return self.n

    def read_at(self, off, buf):
        self.f.seek(off)
        return self.f.readinto(buf)


class FaultyTransport:
    """Wraps a transport; each write (= one frame) can be damaged by the next planned fault.

    plan: list of fault names from FAULTS, consumed one per written frame ("ok" = none);
    pending: a plan that starts after the next frame (so a handler can arm faults for the
    frames after its own reply).
    """

    def __init__(self, inner, seed=1):
        self.inner = inner
        self.plan = []
        self.pending = None  # becomes the plan after the next frame is written
        self.applied = []
        self._x = seed or 1
        ri = getattr(inner, "readinto", None)
        if ri is not None:
            self.readinto = ri

    def _rand(self):
        # xorshift32, deterministic on both interpreters
        x = self._x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._x = x
        return x

    def read(self, max_n, timeout_ms):
        return self.inner.read(max_n, timeout_ms)

    def close(self):
        c = getattr(self.inner, "close", None)
        if c is not None:
            c()

    def write(self, data):
        if not self.plan:
            self.inner.write(data)
            if self.pending is not None:
                self.plan = self.pending
                self.pending = None
            return
        fault = self.plan.pop(0)
        self.applied.append(fault)
        if fault == "ok":
            self.inner.write(data)
            return
        frame = bytearray(data)
        n = len(frame)
        if fault == "drop":
            return
        if fault == "flip":  # damage the payload (or the frame CRC when there is none)
            i = P.HEADER_LEN + (self._rand() % (n - P.HEADER_LEN))
            frame[i] ^= 0x5A
        elif fault == "header":  # damage the type byte: header CRC no longer matches
            frame[3] ^= 0x01
        elif fault == "hcrc":  # damage the length field only
            frame[7] ^= 0x40
        elif fault == "truncate":
            frame = frame[: max(P.HEADER_LEN + 1, n // 2)]
        elif fault == "garbage":
            junk = bytearray(37)
            for i in range(len(junk)):
                junk[i] = self._rand() & 0xFF
            junk[5] = P.SYNC0
            junk[6] = P.SYNC1  # a false sync in the middle of the junk
            self.inner.write(junk)
        elif fault == "oversize":
            # a well-formed header (good header CRC) announcing 4000 bytes, unrelated seq
            import binascii
            import struct

            seq = (frame[4] << 8 | frame[5]) ^ 0x8000
            h = bytearray(P.HEADER_LEN)
            h[0] = P.SYNC0
            h[1] = P.SYNC1
            h[2] = frame[2]
            h[3] = frame[3]
            struct.pack_into(">HH", h, 4, seq, 4000)
            struct.pack_into(">I", h, 8, binascii.crc32(h[0:8]))
            self.inner.write(bytes(h) + b"\x00" * 50)
        elif fault == "split":  # deliver in two parts with a pause shorter than the frame timeout
            import time

            half = n // 2
            self.inner.write(bytes(frame[:half]))
            time.sleep(0.05)
            self.inner.write(bytes(frame[half:]))
            return
        self.inner.write(bytes(frame))


def install(srv, faulty, store):
    """Register the test handlers on a Server; ``faulty`` is its FaultyTransport.
    Returns a dict of per-type call counters (duplicates must not run a handler twice)."""
    calls = {}

    def counted(t, fn):
        def h(payload):
            calls[t] = calls.get(t, 0) + 1
            return fn(payload)

        return h

    def echo(payload):
        return payload

    def store_sink(total):
        return FileSink(store, total)

    def store_done(sink):
        return sink.finish()

    def load(payload):
        return FileSource(store)

    def fault(payload):
        faulty.pending = [f for f in bytes(payload).decode().split(",") if f]
        return b""

    def sleep(payload):
        sleep_ms(struct.unpack(">H", payload)[0])
        return b"slept"

    def slow(payload):
        ms = struct.unpack(">H", payload)[0]
        t0 = ticks_ms()
        while ticks_diff(ticks_ms(), t0) < ms:
            srv.keepalive()
            sleep_ms(20)
        return b"done"

    def boom(payload):
        raise ValueError("boom in test handler")

    def deny(payload):
        raise ErrorReply(ERR_TEST_DENIED, "denied by the test peer")

    def mem(payload):
        gc.collect()
        free = gc.mem_free() if hasattr(gc, "mem_free") else 0
        return struct.pack(">I", free)

    def reply_size(payload):
        return PatternSource(struct.unpack(">I", payload)[0])

    srv.handle(T_ECHO, counted(T_ECHO, echo))
    srv.handle(T_STORE, counted(T_STORE, store_done), sink=store_sink)
    srv.handle(T_LOAD, load)
    srv.handle(T_FAULT, fault)
    srv.handle(T_SLEEP, counted(T_SLEEP, sleep))
    srv.handle(T_SLOW, slow)
    srv.handle(T_RAISE, boom)
    srv.handle(T_DENY, deny)
    srv.handle(T_MEM, mem)
    srv.handle(T_REPLY_SIZE, reply_size)
    return calls
