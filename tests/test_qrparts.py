"""Animated multi-part QR (hubi_core.qrparts): any order, repeats, a lost frame, clear errors."""

from __future__ import annotations

import random
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubi_core import errors, qr, qrparts
from hubi_core.qrparts import (
    BadPart,
    Collector,
    ConflictingPart,
    Incomplete,
    MixedMessages,
    PartError,
)


def note_like(n: int, seed: int = 1) -> bytes:
    """Bytes shaped like a hubi object: suite byte 0x01 first."""
    return b"\x01" + random.Random(seed).randbytes(n - 1)


def test_errors_are_codec_errors() -> None:
    for cls in (BadPart, MixedMessages, ConflictingPart, Incomplete):
        assert issubclass(cls, PartError)
    assert issubclass(PartError, errors.CodecError)
    assert issubclass(PartError, errors.HubiError)


def test_parts_fit_their_qr_version() -> None:
    for n in (1, 13, 108, 109, 420, 1000, 4000):
        for level in ("L", "M"):
            parts = qrparts.split(note_like(n), version=7, level=level)
            assert all(len(p) <= qr.capacity(7, level) for p in parts)
            assert all(p[0] == qrparts.MAGIC for p in parts)
            k = parts[0][6]
            assert len(parts) == k + qrparts.default_parity(k)


def test_header_layout() -> None:
    msg = note_like(420)
    parts = qrparts.split(msg, version=7, level="M")
    p = parts[1]
    assert p[0] == 0xA5
    assert p[1:5] == qrparts.message_id(msg)
    assert (p[5], p[6], p[7]) == (1, 4, 1)
    assert struct.unpack(">H", p[8:10])[0] == 420
    assert struct.unpack(">I", p[-4:])[0] == zlib.crc32(p[:-4])
    assert len(p) - qrparts.OVERHEAD == 105  # 420 = 4 x 105


@pytest.mark.parametrize("n", [1, 2, 100, 420, 421, 1000, 3000])
def test_shuffled_repeated_and_one_missing(n: int) -> None:
    msg = note_like(n, n)
    parts = qrparts.split(msg, version=5, level="M", parity=1)
    rng = random.Random(n)
    for drop in range(len(parts)):
        frames = [p for i, p in enumerate(parts) if i != drop]
        frames.append(rng.choice(frames))  # one frame seen twice
        rng.shuffle(frames)
        col = Collector()
        for f in frames:
            col.add(f)
        assert col.complete, (n, drop)
        assert col.message() == msg
        if len(parts) > 6:
            break  # every position is covered for the small cases


def test_progress_and_missing() -> None:
    msg = note_like(420)
    parts = qrparts.split(msg, version=7, level="M")  # 4 data + 1 parity
    col = Collector()
    assert col.progress == (0, 0) and not col.complete
    assert col.add(parts[4]) == (0, 4)  # parity alone recovers nothing
    assert col.add(parts[0]) == (1, 4)
    assert col.add(parts[0]) == (1, 4)  # repeat: harmless
    assert col.add(parts[2]) == (2, 4)
    assert col.missing() == [1, 3]
    with pytest.raises(Incomplete, match="2 of 4 data parts"):
        col.message()
    assert col.add(parts[3]) == (4, 4)  # 3 of 4 + parity: part 1 recovered
    assert col.complete and col.missing() == []
    assert col.message() == msg


def test_several_parity_groups_cover_consecutive_losses() -> None:
    msg = note_like(2000, 9)
    parts = qrparts.split(msg, version=7, level="M")
    k, g = parts[0][6], parts[0][7]
    assert (k, g) == (19, 4)
    for start in range(k - g + 1):
        col = Collector()
        for i, p in enumerate(parts):
            if not start <= i < start + g:  # g consecutive data frames lost
                col.add(p)
        assert col.message() == msg


def test_two_lost_frames_in_one_group_are_not_enough() -> None:
    parts = qrparts.split(note_like(420), version=7, level="M")
    col = Collector()
    for p in parts[2:]:
        col.add(p)
    assert not col.complete
    assert col.progress == (2, 4)


def test_parts_of_two_messages_mixed() -> None:
    a = qrparts.split(note_like(420, 1), version=7)
    b = qrparts.split(note_like(420, 2), version=7)
    col = Collector()
    col.add(a[0])
    col.add(a[1])
    with pytest.raises(MixedMessages, match="part 2 of message [0-9a-f]{8} while collecting"):
        col.add(b[2])
    assert col.progress == (2, 4)  # the collector is unharmed


def test_raw_single_object() -> None:
    obj = note_like(200)
    col = Collector()
    assert col.add(obj) == (1, 1)
    assert col.complete and col.message() == obj
    assert col.add(obj) == (1, 1)
    with pytest.raises(MixedMessages, match="raw object"):
        col.add(note_like(200, 2))
    with pytest.raises(MixedMessages):
        col.add(qrparts.split(note_like(300, 3))[0])
    col.add(qrparts.split(obj)[0])  # a part of the same object is fine


def test_raw_object_completes_a_partial_collection() -> None:
    obj = note_like(420)
    col = Collector()
    col.add(qrparts.split(obj)[1])
    assert not col.complete
    col.add(obj)
    assert col.message() == obj


def test_conflicting_parts() -> None:
    msg = note_like(420)
    parts = qrparts.split(msg, version=7)
    col = Collector()
    col.add(parts[0])
    # same message id and index, different body, valid CRC
    forged = bytearray(parts[1][:-4])
    forged[qrparts.HEADER] ^= 1
    forged = bytes(forged) + struct.pack(">I", zlib.crc32(forged))
    col.add(forged)
    with pytest.raises(ConflictingPart, match="part 1 .* body differs"):
        col.add(parts[1])
    # same id, different counts
    other = qrparts.split(msg, version=5)
    with pytest.raises(ConflictingPart, match="parts of 420 bytes, earlier"):
        col.add(other[0])


def test_corrupt_part_is_rejected_but_message_check_catches_forgery() -> None:
    msg = note_like(420)
    parts = qrparts.split(msg, version=7)
    bad = bytearray(parts[0])
    bad[20] ^= 0x40
    with pytest.raises(BadPart, match="CRC-32"):
        Collector().add(bytes(bad))
    # a forged body with a fixed-up CRC passes the part check, not the message id
    forged = bytearray(parts[0][:-4])
    forged[qrparts.HEADER + 3] ^= 1
    forged = bytes(forged) + struct.pack(">I", zlib.crc32(forged))
    col = Collector()
    for p in [forged] + parts[1:]:
        col.add(p)
    with pytest.raises(PartError, match="hash to"):
        col.message()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"\xa5" + bytes(10), "shorter than header"),
        (b"\x01abc", "magic 0x01"),
    ],
)
def test_malformed_headers(data: bytes, match: str) -> None:
    with pytest.raises(BadPart, match=match):
        qrparts.parse(data)


def _forge(mid: bytes, index: int, k: int, g: int, total: int, body: bytes) -> bytes:
    data = b"\xa5" + mid + bytes((index, k, g)) + struct.pack(">H", total) + body
    return data + struct.pack(">I", zlib.crc32(data))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ((0, 0, 0, 5, b"x"), "offset 6: zero data parts"),
        ((0, 2, 3, 5, b"xxx"), "offset 7: 3 parity parts for 2"),
        ((3, 2, 1, 5, b"xxx"), "offset 5: index 3 >= 3"),
        ((0, 4, 0, 3, b"x"), "offset 8: total 3 bytes < 4"),
        ((0, 2, 0, 5, b"xx"), "part 0 body: 2 bytes, expected 3"),
        ((1, 2, 0, 5, b"xxx"), "part 1 body: 3 bytes, expected 2"),
        ((0, 4, 0, 5, b"xx"), "cannot be cut into 4"),
    ],
)
def test_inconsistent_fields(fields: tuple, match: str) -> None:
    with pytest.raises(BadPart, match=match):
        qrparts.parse(_forge(b"abcd", *fields))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    try:
        qrparts.parse(data)
    except PartError:
        pass
    col = Collector()
    try:
        col.add(data)
        col.add(b"\xa5" + data)
        col.message()
    except errors.HubiError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.binary(max_size=120),
    st.lists(st.integers(0, 3), max_size=4),
)
def test_fuzz_valid_crc_random_fields(index, k, g, total, body, picks) -> None:
    frame = _forge(b"\x00\x01\x02\x03", index, k, g, total, body)
    col = Collector()
    try:
        p = qrparts.parse(frame)
        assert p.index < p.k + p.g and p.total >= p.k
        col.add(frame)
        col.message()
    except errors.HubiError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.randoms(use_true_random=False), st.integers(1, 10))
def test_fuzz_roundtrip_any_order(msg: bytes, rnd: random.Random, version: int) -> None:
    parts = qrparts.split(msg, version=version + 2, level="M")
    drop = rnd.randrange(len(parts))
    frames = [p for i, p in enumerate(parts) if i != drop] * 2
    rnd.shuffle(frames)
    col = Collector()
    for f in frames:
        col.add(f)
    assert col.message() == msg


def test_plan_rule() -> None:
    # a 420-byte note at M: v16 (81 modules) needs 89 x 3 = 267 px > 240: animated v7 frames
    p = qrparts.plan(420, 240, "M")
    assert (p.single, p.version, p.data_parts, p.parity_parts, p.frames, p.scale) == (
        False,
        7,
        4,
        1,
        5,
        4,
    )
    assert qrparts.plan(420, (320, 240), "M").frames == 5  # the short side counts
    # at L the note is v13 (69 modules): 77 x 3 = 231 px fits one QR at 3 px/module
    p = qrparts.plan(420, 240, "L")
    assert (p.single, p.version, p.scale) == (True, 13, 3)
    p = qrparts.plan(100, 240, "M")
    assert (p.single, p.version, p.scale) == (True, 6, 4)
    assert qrparts.plan(420, 320, "M").single  # a 320x320 area shows v16 at 3 px
    # frames are lowered to the smallest version needing the same number of parts
    p = qrparts.plan(170, 180, "M")  # v9 single is 61 x 3 = 183 px; v7 and v6 both need 2
    assert (p.single, p.version, p.data_parts) == (False, 6, 2)
    # tiny screen: 3 px/module first, 2 px/module if nothing fits at 3
    assert qrparts.plan(50, 80, "M").scale == 2
    with pytest.raises(ValueError):
        qrparts.plan(50, 40, "M")
    for n in (1, 50, 420, 700, 2000, 5000):
        for px in (96, 128, 240):
            p = qrparts.plan(n, px, "M")
            assert (qr.size_of(p.version) + 8) * p.scale <= px
            assert p.scale >= 2
            if not p.single:
                assert p.version <= 7


def test_frames_follow_the_plan() -> None:
    msg = note_like(420)
    p, payloads = qrparts.frames(msg, 240, "M")
    assert len(payloads) == p.frames == 5
    assert all(qr.min_version(len(x), "M") <= p.version for x in payloads)
    p, payloads = qrparts.frames(msg, 240, "L")
    assert payloads == [msg]


def test_split_limits() -> None:
    with pytest.raises(BadPart, match="empty"):
        qrparts.split(b"")
    with pytest.raises(BadPart, match="at most 65535"):
        qrparts.split(bytes(70000))
    with pytest.raises(BadPart, match="at most 256"):
        qrparts.split(bytes(60000), version=2, level="M")
    with pytest.raises(ValueError, match="holds no part body"):
        qrparts.split(bytes(10), version=1, level="M")
    with pytest.raises(BadPart):
        qrparts.split(bytes(100), parity=50)
