"""Pure framing checks, run by pytest on CPython and once under MicroPython (run_all()).

Plain asserts only, no pytest, no typing: the same file runs on both interpreters.
"""

import binascii
import struct

from hubi_core import link
from hubi_core import protocol as P
from hubi_core.errors import (
    BadCrc,
    BadHeader,
    FrameOversize,
    FrameTruncated,
    Garbage,
    HubiError,
    LinkError,
)
from hubi_core.link import Frame, FrameDecoder, encode_frame


class Rng:
    """xorshift32: the same numbers on both interpreters."""

    def __init__(self, seed):
        self.x = seed or 1

    def u32(self):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x

    def below(self, n):
        return self.u32() % n

    def bytes(self, n):
        b = bytearray(n)
        for i in range(n):
            b[i] = self.u32() & 0xFF
        return bytes(b)


def frames_of(items):
    return [x for x in items if isinstance(x, Frame)]


def events_of(items, cls=LinkError):
    return [x for x in items if isinstance(x, cls)]


def check_golden_layout():
    f = encode_frame(P.PING, 0x1234, b"abc", version=1)
    head = b"\xa5\x96\x01\x02\x12\x34\x00\x03"
    hcrc = binascii.crc32(head)
    fcrc = binascii.crc32(head + struct.pack(">I", hcrc) + b"abc")
    assert f == head + struct.pack(">I", hcrc) + b"abc" + struct.pack(">I", fcrc), f
    assert len(f) == P.OVERHEAD + 3
    # a fixed vector, so a change of layout or CRC cannot go unnoticed
    assert binascii.hexlify(encode_frame(P.HELLO, 1, b"")) == b"a596010100010000fc69e5a5faef43c7"


def check_roundtrip_sizes():
    for n in (0, 1, 2, 15, 16, 255, 256, 1000, 1023, 1024):
        payload = bytes((i * 13) & 0xFF for i in range(n))
        f = encode_frame(0x21, n, payload, version=3)
        d = FrameDecoder()
        out = d.feed(f)
        assert out == [Frame(3, 0x21, n, payload)], (n, out)
        assert d.flush() == []
        assert d.skipped == 0 and d.frames == 1


def check_encode_oversize():
    try:
        encode_frame(P.PING, 1, bytes(P.MAX_PAYLOAD + 1))
    except FrameOversize as e:
        assert "1025" in str(e) and isinstance(e, HubiError)
    else:
        raise AssertionError("no FrameOversize")
    f = encode_frame(P.PING, 1, bytes(300), max_payload=300)
    d = FrameDecoder(max_payload=200)
    out = d.feed(f) + d.flush()
    assert isinstance(out[0], FrameOversize), out
    assert out[0].seq == 1 and out[0].type == P.PING
    assert "300" in str(out[0]) and "200" in str(out[0])
    assert not frames_of(out)


def check_byte_by_byte():
    fs = [encode_frame(0x30 + i, i, bytes(range(i * 10))) for i in range(8)]
    stream = b"".join(fs)
    d = FrameDecoder()
    out = []
    for i in range(len(stream)):
        out += d.feed(stream[i : i + 1])
    out += d.flush()
    assert frames_of(out) == [Frame(1, 0x30 + i, i, bytes(range(i * 10))) for i in range(8)]
    assert not events_of(out)


def check_garbage_between():
    a = encode_frame(P.PING, 1, b"first")
    b = encode_frame(P.PING, 2, b"second")
    junk = b"\x00\xff\xa5\xa5\x96hello\xa5"
    d = FrameDecoder()
    out = d.feed(junk + a + junk + b + junk) + d.flush()
    assert [f.seq for f in frames_of(out)] == [1, 2]
    gs = events_of(out, Garbage)
    assert sum(g.count for g in gs) == 3 * len(junk), [str(g) for g in gs]
    assert d.skipped == 3 * len(junk)
    assert gs[0].offset == 0 and gs[0].count == len(junk)
    assert "skipped %d bytes" % len(junk) in str(gs[0])
    # the stream offset of the second run is right after the first frame
    assert gs[1].offset == len(junk) + len(a)


def check_bad_header_every_byte():
    good = encode_frame(0x22, 9, b"payload")
    nxt = encode_frame(0x23, 10, b"next")
    for i in range(2, P.HEADER_LEN):
        bad = bytearray(good)
        bad[i] ^= 0x10
        d = FrameDecoder()
        out = d.feed(bytes(bad) + nxt) + d.flush()
        assert frames_of(out) == [Frame(1, 0x23, 10, b"next")], (i, out)
        bh = events_of(out, BadHeader)
        assert len(bh) == 1 and bh[0].offset == 0, (i, out)
        assert "header CRC" in str(bh[0])
        assert d.bad_headers == 1


def check_corrupt_length_does_not_swallow():
    # a corrupted LEN (huge or small) must never eat the frames that follow
    fs = [encode_frame(0x24, i, bytes(40)) for i in range(5)]
    bad = bytearray(fs[0])
    bad[6] = 0x03  # LEN = 0x03xx
    d = FrameDecoder()
    out = d.feed(bytes(bad) + b"".join(fs[1:])) + d.flush()
    assert [f.seq for f in frames_of(out)] == [1, 2, 3, 4]
    assert len(events_of(out, BadHeader)) == 1


def check_bad_crc():
    a = bytearray(encode_frame(0x25, 77, b"some payload bytes"))
    a[P.HEADER_LEN + 3] ^= 0x01
    b = encode_frame(0x25, 78, b"fine")
    d = FrameDecoder()
    out = d.feed(bytes(a) + b) + d.flush()
    bc = events_of(out, BadCrc)
    assert len(bc) == 1 and bc[0].seq == 77 and bc[0].type == 0x25 and bc[0].offset == 0
    assert "CRC" in str(bc[0]) and "seq 77" in str(bc[0])
    assert frames_of(out) == [Frame(1, 0x25, 78, b"fine")]
    # the damaged frame's bytes count as skipped
    assert d.skipped == len(a)


def check_oversize_header():
    h = bytearray(P.HEADER_LEN)
    h[0:2] = P.SYNC
    h[2] = 1
    h[3] = 0x26
    struct.pack_into(">HH", h, 4, 5, 5000)
    struct.pack_into(">I", h, 8, binascii.crc32(h[0:8]))
    b = encode_frame(0x26, 6, b"after")
    d = FrameDecoder()
    out = d.feed(bytes(h) + bytes(100) + b) + d.flush()
    ov = events_of(out, FrameOversize)
    assert len(ov) == 1 and ov[0].seq == 5 and "5000" in str(ov[0])
    assert frames_of(out) == [Frame(1, 0x26, 6, b"after")]
    assert d.oversize == 1


def check_truncated_then_quiet():
    a = encode_frame(0x27, 1, bytes(100))
    b = encode_frame(0x27, 2, b"b")
    d = FrameDecoder()
    out = d.feed(a[:40] + b)
    assert out == []  # still waiting for the rest of frame 1
    assert d.busy()
    out = d.flush()
    tr = events_of(out, FrameTruncated)
    assert len(tr) == 1 and tr[0].seq == 1 and "57 of 116" in str(tr[0]), out
    assert frames_of(out) == [Frame(1, 0x27, 2, b"b")]
    assert not d.busy()
    # and the decoder continues normally afterwards
    assert d.feed(b) == [Frame(1, 0x27, 2, b"b")]


def check_truncated_then_more_frames():
    a = encode_frame(0x28, 1, bytes(100))
    rest = [encode_frame(0x28, i, bytes([i]) * 30) for i in range(2, 10)]
    d = FrameDecoder()
    out = d.feed(a[:30] + b"".join(rest)) + d.flush()
    # frame 1 is reported damaged (its LEN covered the next frames), all others survive
    assert len(events_of(out, BadCrc)) == 1
    assert [f.seq for f in frames_of(out)] == list(range(2, 10))


def check_partial_header_flush():
    d = FrameDecoder()
    out = d.feed(b"\xa5\x96\x01") + d.flush()
    gs = events_of(out, Garbage)
    assert len(gs) == 1 and gs[0].count == 3
    assert d.feed(b"\xa5") == []
    out = d.flush()
    assert len(out) == 1 and out[0].count == 1


def check_frame_inside_payload():
    inner = encode_frame(P.PING, 3, b"inner")
    outer = encode_frame(0x29, 4, inner)
    d = FrameDecoder()
    assert d.feed(outer) + d.flush() == [Frame(1, 0x29, 4, inner)]


def check_long_stream_random_splits():
    rng = Rng(12345)
    frames = []
    parts = []
    for i in range(120):
        n = rng.below(P.MAX_PAYLOAD + 1)
        f = Frame(1, 0x20 + rng.below(0x50), i, rng.bytes(n))
        frames.append(f)
        if rng.below(3) == 0:
            parts.append(rng.bytes(rng.below(60)))
        parts.append(encode_frame(f.type, f.seq, f.payload, f.version))
    stream = b"".join(parts)
    d = FrameDecoder()
    out = []
    i = 0
    while i < len(stream):
        k = 1 + rng.below(3000)
        out += d.feed(stream[i : i + k])
        i += k
    out += d.flush()
    assert frames_of(out) == frames
    for e in events_of(out):
        assert isinstance(e, (Garbage, BadHeader)), e


def check_random_garbage_never_raises():
    rng = Rng(999)
    d = FrameDecoder(max_payload=128)
    for _ in range(40):
        blob = bytearray(rng.bytes(rng.below(700)))
        # sprinkle sync bytes so the header path is exercised
        for _ in range(rng.below(8)):
            j = rng.below(len(blob) + 1)
            blob[j:j] = P.SYNC
        for x in d.feed(bytes(blob)):
            assert isinstance(x, LinkError), x
        if rng.below(4) == 0:
            for x in d.flush():
                assert isinstance(x, LinkError), x
    good = encode_frame(0x2A, 1, b"still works", max_payload=128)
    out = d.feed(good) + d.flush()
    assert frames_of(out) == [Frame(1, 0x2A, 1, b"still works")]


def check_space_commit_api():
    # the allocation-free path used by Endpoint: write into space(), commit, next()
    fs = [encode_frame(0x2B, i, bytes([i]) * (i * 100)) for i in range(11)]
    stream = b"".join(fs)
    d = FrameDecoder()
    got = []
    i = 0
    while i < len(stream):
        sp = d.space()
        assert len(sp) >= d.frame_max
        k = min(len(sp), 333, len(stream) - i)
        sp[:k] = stream[i : i + k]
        d.commit(k)
        i += k
        while True:
            r = d.next()
            if r == link.NEED_MORE:
                break
            assert r == link.FRAME
            got.append((d.seq, bytes(d.payload)))
    assert got == [(i, bytes([i]) * (i * 100)) for i in range(11)]


CHECKS = [
    check_golden_layout,
    check_roundtrip_sizes,
    check_encode_oversize,
    check_byte_by_byte,
    check_garbage_between,
    check_bad_header_every_byte,
    check_corrupt_length_does_not_swallow,
    check_bad_crc,
    check_oversize_header,
    check_truncated_then_quiet,
    check_truncated_then_more_frames,
    check_partial_header_flush,
    check_frame_inside_payload,
    check_long_stream_random_splits,
    check_random_garbage_never_raises,
    check_space_commit_api,
]


def run_all():
    for c in CHECKS:
        c()
        print("ok", c.__name__)
    print("all %d codec checks passed" % len(CHECKS))
