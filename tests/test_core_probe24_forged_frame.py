"""A forged part frame kept in the camera's view must not block an animated note for ever.

The forged frame carries the note's message id and a valid CRC but another body (or other part
counts). Before, the collector refused every later genuine copy of that part, the rebuilt
message failed its hash and the merchant's scan dropped all parts, again and again. Now every
different copy is kept (bounded) and the choice that hashes to the id wins.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from hubi import qrscan
from hubi.merchant.scan import MultiCollector, scan_objects
from hubi_core import png, qr, qrparts
from hubi_core.qrparts import Collector, ConflictingPart, PartError


def note_like(n: int, seed: int = 1) -> bytes:
    return b"\x01" + random.Random(seed).randbytes(n - 1)


def refit(frame: bytes) -> bytes:
    """The frame with the body's first byte changed, CRC fixed."""
    data = bytearray(frame[:-4])
    data[qrparts.HEADER] ^= 0x5A
    return bytes(data) + struct.pack(">I", zlib.crc32(bytes(data)))


def layout_frame(msg: bytes, k: int, g: int, n: int = 0, total: int | None = None) -> bytes:
    """Part 0 under the message's id but of k + g parts (of `total` bytes, default the
    message's length), with a wrong body (valid CRC)."""
    total = len(msg) if total is None else total
    c = (total + k - 1) // k
    head = bytes((qrparts.MAGIC,)) + qrparts.message_id(msg) + bytes((0, k, g))
    data = head + struct.pack(">H", total) + bytes([n]) * c
    return data + struct.pack(">I", zlib.crc32(data))


def draw(payload: bytes, path: Path, version: int, scale: int = 4) -> Path:
    """One frame as the token draws it (hubi_core.qr + hubi_core.png, as render_frames)."""
    code = qr.encode(payload, "M", version=max(version, qr.min_version(len(payload), "M")))
    side = (code.size + 8) * scale
    with open(path, "wb") as f:
        png.write(f, side, side, qr.bitmap_rows(code, scale), png.GREY1)
    return path


def beside(left: Path, right: Path) -> np.ndarray:
    """A camera image holding both codes side by side."""
    a = cv2.imread(str(left), cv2.IMREAD_GRAYSCALE)
    b = cv2.imread(str(right), cv2.IMREAD_GRAYSCALE)
    h = max(a.shape[0], b.shape[0])
    pad = [np.full((h, 40), 255, np.uint8)]
    fit = [np.vstack([x, np.full((h - x.shape[0], x.shape[1]), 255, np.uint8)]) for x in (a, b)]
    return np.hstack(pad + [fit[0]] + pad + [fit[1]] + pad)


def camera_loop(
    tmp_path: Path, msg: bytes, forged: bytes, forged_first: bool, loops: int = 3
) -> list[np.ndarray]:
    """Camera images of the token's loop, the forged frame in view beside every one."""
    frames = qrscan.render_frames(msg, tmp_path / "token")
    plan, _ = qrparts.frames(msg, 240)
    sticker = draw(forged, tmp_path / "sticker.png", plan.version)
    shots = []
    for _ in range(loops):
        for f in frames:
            shots.append(beside(sticker, f) if forged_first else beside(f, sticker))
    return shots


@pytest.mark.parametrize("forged_first", [True, False])
@pytest.mark.parametrize(
    "forge",
    [
        {"index": 1},  # another body for data part 1
        {"index": 4},  # another body for the parity part
        {"index": 0, "k": 9, "g": 1},  # other part counts under the note's message id
        {"index": 0, "k": 1, "g": 0},  # "the whole note in one part", wrong
    ],
)
def test_a_forged_frame_in_view_does_not_block_the_scan(
    tmp_path: Path, forge: dict[str, int], forged_first: bool
) -> None:
    msg = note_like(420)
    parts = qrparts.split(msg, version=7)
    assert len(parts) == 5  # 4 data + 1 parity
    if "k" in forge:
        forged = layout_frame(msg, forge["k"], forge["g"])
    else:
        forged = refit(parts[forge["index"]])
    assert qrparts.parse(forged).mid == qrparts.message_id(msg)
    shots = camera_loop(tmp_path, msg, forged, forged_first)
    for shot in shots[:5]:  # the real decoder sees both codes in every camera image
        assert forged in qrscan.decode_image(shot, thorough=False)
    # the merchant's scan (a live camera: one object, fast reads)
    col = MultiCollector()
    got = list(scan_objects(shots, thorough=False, limit=1, collector=col))
    assert got == [msg]
    # hubi note show's reader
    assert qrscan.collect(shots, thorough=False) == msg


def test_copies_are_kept_and_the_one_that_checks_out_wins() -> None:
    msg = note_like(420, 2)
    parts = qrparts.split(msg, version=7)
    forged = refit(parts[2])
    col = Collector()
    col.add(forged)
    for p in parts[:2] + parts[3:4]:
        col.add(p)
    assert (
        col.progress == (3, 4) and not col.complete
    )  # whole, but it does not check out: one short
    with pytest.raises(PartError, match="hash to"):
        col.message()
    with pytest.raises(ConflictingPart, match="part 2 .* body differs"):
        col.add(parts[2])  # said, and kept
    assert col.complete and col.message() == msg
    assert col.parts[2] == qrparts.parse(forged).body  # the first copy is still reported


def test_a_forged_layout_does_not_shut_out_the_genuine_parts() -> None:
    msg = note_like(420, 3)
    parts = qrparts.split(msg, version=7)
    col = Collector()
    col.add(layout_frame(msg, 1, 0))  # "the whole message in one part": whole, wrong
    assert not col.complete
    with pytest.raises(ConflictingPart, match="parts of 420 bytes, earlier 1\\+0"):
        col.add(parts[0])
    for p in parts[1:3]:
        col.add(p)
    assert col.progress == (3, 4) and col.missing() == [3]  # the genuine layout is reported
    col.add(parts[4])
    assert col.complete and col.message() == msg and col.progress == (4, 4)


def test_copies_are_bounded() -> None:
    msg = note_like(420, 4)
    parts = qrparts.split(msg, version=7)
    col = Collector()
    forged = [
        other_body(parts[1], (parts[1][qrparts.HEADER + 1] + 1 + n) % 256)
        for n in range(qrparts.MAX_COPIES)
    ]
    for f in forged[:-1]:
        try:
            col.add(f)
        except ConflictingPart:
            pass
    with pytest.raises(ConflictingPart, match="both kept"):
        col.add(parts[1])  # the last copy with room
    with pytest.raises(ConflictingPart, match="too many copies, frame dropped"):
        col.add(forged[-1])
    for k in range(2, 2 + qrparts.MAX_LAYOUTS - 1):
        try:
            col.add(layout_frame(msg, k, 0))
        except ConflictingPart:
            pass
    with pytest.raises(ConflictingPart, match="too many part counts, frame dropped"):
        col.add(layout_frame(msg, 30, 0))
    for p in parts:  # the genuine frames still complete the message
        try:
            col.add(p)
        except ConflictingPart:
            pass
    assert col.complete and col.message() == msg


def other_body(frame: bytes, n: int) -> bytes:
    """The frame with its second body byte set to n, CRC fixed."""
    data = bytearray(frame[:-4])
    data[qrparts.HEADER + 1] = n
    return bytes(data) + struct.pack(">I", zlib.crc32(bytes(data)))


def test_many_copies_cost_a_bounded_number_of_tries() -> None:
    msg = note_like(2000, 5)
    parts = qrparts.split(msg, version=7, parity=0)
    assert len(parts) == 19  # 4 copies of each: 4**19 choices, MAX_TRIES of them tried
    col = Collector()
    for p in parts:
        for n in range(qrparts.MAX_COPIES):
            try:
                col.add(other_body(p, (p[qrparts.HEADER + 1] + 1 + n) % 256))
            except ConflictingPart:
                pass
    assert col.progress == (18, 19) and not col.complete
    with pytest.raises(PartError, match="hash to"):
        col.message()


COLLECT = r"""
import json, sys
from hubi_core import qrparts

with open(sys.argv[1]) as f:
    runs = json.load(f)
out = []
for run in runs:
    col = qrparts.Collector()
    said = []
    for h in run:
        try:
            col.add(bytes.fromhex(h))
            said.append("")
        except qrparts.PartError as e:
            said.append(str(e))
    try:
        msg = col.message().hex()
    except qrparts.PartError as e:
        msg = str(e)
    out.append([said, col.complete, list(col.progress), col.missing(), msg])
print(json.dumps(out))
"""


def collect_here(runs: list[list[str]]) -> list[list]:
    out = []
    for run in runs:
        col = Collector()
        said = []
        for h in run:
            try:
                col.add(bytes.fromhex(h))
                said.append("")
            except PartError as e:
                said.append(str(e))
        try:
            msg = col.message().hex()
        except PartError as e:
            msg = str(e)
        out.append([said, col.complete, list(col.progress), col.missing(), msg])
    return out


def test_the_token_collects_as_the_host_does(tmp_path: Path) -> None:
    """qrparts is shared: under MicroPython the same frames give the same verdicts."""
    from tests.mpy import run_mpy

    msg = note_like(420, 6)
    parts = qrparts.split(msg, version=7)
    forged = [refit(p) for p in parts]
    rnd = random.Random(6)
    runs = [
        [forged[1]] + parts,
        [forged[4]] + parts[:2] + parts[3:4],  # a forged parity part, data part 2 lost
        [forged[4]] + parts[:2] + parts[3:],
        [layout_frame(msg, 1, 0)] + parts,
        [layout_frame(msg, 9, 1)] + parts[:3],
        forged[:4],
    ]
    for _ in range(30):
        pool = parts + forged + [layout_frame(msg, 5, 1, n) for n in range(3)]
        runs.append([rnd.choice(pool) for _ in range(rnd.randrange(3, 14))])
    runs = [[p.hex() for p in run] for run in runs]
    spec = tmp_path / "runs.json"
    spec.write_text(json.dumps(runs))
    script = tmp_path / "collect.py"
    script.write_text(COLLECT)
    here = collect_here(runs)
    assert json.loads(run_mpy(script=script, args=[str(spec)], heapsize="8M")) == here
    assert here[0][1] and here[0][4] == msg.hex()
    assert not here[1][1] and "hash to" in here[1][4]  # the only parity copy is forged
    assert here[2][1] and here[2][4] == msg.hex()  # until the genuine one comes
    assert here[3][1] and here[4][2] == [3, 4] and not here[5][1]


def test_a_damaged_frame_in_view_is_skipped_not_the_end_of_the_scan(tmp_path: Path) -> None:
    msg = note_like(420, 7)
    parts = qrparts.split(msg, version=7)
    bad = bytearray(parts[2])
    bad[-1] ^= 1  # its CRC-32 no longer matches: a damaged (or stray 0xA5...) frame
    shots = camera_loop(tmp_path, msg, bytes(bad), forged_first=True, loops=1)
    assert bytes(bad) in qrscan.decode_image(shots[0], thorough=False)
    assert qrscan.collect(shots, thorough=False) == msg
    # alone, it is said for what it is
    alone = draw(bytes(bad), tmp_path / "alone.png", 7)
    with pytest.raises(qrparts.BadPart, match="CRC-32 mismatch"):
        qrscan.collect([alone], thorough=False)


def test_the_whole_object_is_taken_whatever_forged_part_counts_came_first() -> None:
    msg = note_like(420, 8)
    col = Collector()
    col.add(layout_frame(msg, 9, 1, total=900))  # claims the id, other counts and length
    assert not col.complete and col.total == 900
    col.add(msg)  # the token showed it as one QR: it hashes to the id itself
    assert col.complete and col.message() == msg
