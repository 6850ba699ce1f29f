"""Four forged copies of one part in view crowded out the genuine fifth: the collector kept at
most four bodies per part and dropped every later one, so the note never completed, and
while a forged copy sat in a whole set the progress said 4 of 4. Now, once every choice of
the copies kept fails the message id, a new copy replaces the oldest (and a new layout a
failed one), and a whole set that fails counts one short."""

from __future__ import annotations

import json
import random
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from hubi import qrscan
from hubi.merchant.scan import MultiCollector, scan_objects
from hubi_core import png, qr, qrparts
from hubi_core.qrparts import Collector, ConflictingPart, PartError


def note_like(n: int, seed: int) -> bytes:
    return b"\x01" + random.Random(seed).randbytes(n - 1)


def forge(frame: bytes, n: int) -> bytes:
    """The frame with its first body byte changed (n-th variant), CRC fixed: a valid part of
    the same message id, index and counts, with another body."""
    data = bytearray(frame[:-4])
    data[qrparts.HEADER] ^= n + 1
    return bytes(data) + struct.pack(">I", zlib.crc32(bytes(data)))


def one_part_layout(msg: bytes, total: int) -> bytes:
    """ "The whole message in one part" of `total` bytes under the message's id (wrong)."""
    head = bytes((qrparts.MAGIC,)) + qrparts.message_id(msg) + bytes((0, 1, 0))
    data = head + struct.pack(">H", total) + b"\x01" * total
    return data + struct.pack(">I", zlib.crc32(data))


def draw(payload: bytes, path: Path, version: int, scale: int = 4) -> np.ndarray:
    """One code as the token draws it (hubi_core.qr + hubi_core.png), read back as an image."""
    code = qr.encode(payload, "M", version=max(version, qr.min_version(len(payload), "M")))
    side = (code.size + 8) * scale
    with open(path, "wb") as f:
        png.write(f, side, side, qr.bitmap_rows(code, scale), png.GREY1)
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def row(images: list[np.ndarray]) -> np.ndarray:
    """A camera image holding the codes side by side."""
    h = max(a.shape[0] for a in images)
    pad = np.full((h, 40), 255, np.uint8)
    out = [pad]
    for a in images:
        out += [np.vstack([a, np.full((h - a.shape[0], a.shape[1]), 255, np.uint8)]), pad]
    return np.hstack(out)


def test_four_forged_copies_in_view_do_not_crowd_out_the_genuine_part(tmp_path: Path) -> None:
    msg = note_like(420, 26)
    plan, parts = qrparts.frames(msg, 240)
    assert len(parts) == 5  # 4 data + 1 parity
    forged = [forge(parts[1], n) for n in range(qrparts.MAX_COPIES)]
    stickers = [draw(f, tmp_path / f"sticker{n}.png", plan.version) for n, f in enumerate(forged)]
    token = [draw(p, tmp_path / f"frame{n}.png", plan.version) for n, p in enumerate(parts)]
    # the camera sees the stickers first, then the token's loop beside them, twice
    shots = [row(stickers)] + [row([*stickers, t]) for _ in range(2) for t in token]
    for shot in shots[1:6]:  # the real decoder reads all five codes of every image
        got = qrscan.decode_image(shot, thorough=False)
        assert all(f in got for f in forged) and len(got) == 5, len(got)
    assert qrscan.collect(shots, thorough=False) == msg  # `hubi note show`'s reader
    col = MultiCollector()
    assert list(scan_objects(shots, thorough=False, limit=1, collector=col)) == [msg]
    assert any("tried and failed, dropped" in e for e in col.errors), list(col.errors)


def test_a_whole_set_that_fails_its_id_counts_one_short() -> None:
    msg = note_like(420, 27)
    parts = qrparts.split(msg, version=7)
    col = Collector()
    for f in [forge(parts[2], n) for n in range(qrparts.MAX_COPIES)]:
        try:
            col.add(f)
        except ConflictingPart:
            pass
    for p in parts[:2] + parts[3:]:
        assert col.add(p)[0] < 4  # never "4 of 4" while no choice checks out
    assert col.progress == (3, 4) and not col.complete
    try:
        col.message()
        raise AssertionError("a forged set was taken")
    except PartError as exc:
        assert "hash to" in str(exc)
    try:
        col.add(parts[2])  # the genuine fifth copy: it takes the oldest forged one's place
    except ConflictingPart as exc:
        assert "the oldest copy, tried and failed, dropped for it" in str(exc)
    assert col.complete and col.message() == msg and col.progress == (4, 4)


def test_four_failed_layouts_do_not_shut_out_the_genuine_one() -> None:
    msg = note_like(420, 28)
    parts = qrparts.split(msg, version=7)
    col = Collector()
    for total in range(100, 100 + qrparts.MAX_LAYOUTS):
        try:
            col.add(one_part_layout(msg, total))  # each whole at once, each fails the id
        except ConflictingPart:
            pass
    assert len(col.layouts) == qrparts.MAX_LAYOUTS and not col.complete
    for p in parts:
        try:
            col.add(p)
        except ConflictingPart as exc:
            assert "frame dropped" not in str(exc), exc
    assert col.complete and col.message() == msg


def test_an_incomplete_layout_still_bounds_copies() -> None:
    """The bound stands while the set is not whole: no choice has failed yet."""
    msg = note_like(420, 29)
    parts = qrparts.split(msg, version=7)
    col = Collector()
    for f in [forge(parts[0], n) for n in range(qrparts.MAX_COPIES)]:
        try:
            col.add(f)
        except ConflictingPart:
            pass
    try:
        col.add(parts[0])
        raise AssertionError("a fifth copy was kept")
    except ConflictingPart as exc:
        assert "too many copies, frame dropped" in str(exc)
    assert len(col.layouts[0].copies[0]) == qrparts.MAX_COPIES


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
            said.append(list(col.add(bytes.fromhex(h))))
        except qrparts.PartError as e:
            said.append(str(e))
    out.append([said, col.complete, list(col.progress)])
print(json.dumps(out))
"""


def collect_here(runs: list[list[str]]) -> list[list]:
    out = []
    for run in runs:
        col = Collector()
        said: list = []
        for h in run:
            try:
                said.append(list(col.add(bytes.fromhex(h))))
            except PartError as e:
                said.append(str(e))
        out.append([said, col.complete, list(col.progress)])
    return out


def test_the_token_collects_forged_copies_as_the_host_does(tmp_path: Path) -> None:
    """qrparts is shared: MicroPython gives the same verdicts on the same frames."""
    from tests.mpy import run_mpy

    msg = note_like(420, 30)
    parts = qrparts.split(msg, version=7)
    forged = [forge(parts[1], n) for n in range(qrparts.MAX_COPIES + 2)]
    layouts = [one_part_layout(msg, t) for t in range(100, 100 + qrparts.MAX_LAYOUTS)]
    runs = [forged[:4] + parts * 2, layouts + parts, forged[:4] + parts[:1] + parts[2:] + forged]
    rnd = random.Random(30)
    for _ in range(20):
        pool = parts + forged + layouts
        runs.append([rnd.choice(pool) for _ in range(rnd.randrange(5, 30))])
    runs = [[p.hex() for p in run] for run in runs]
    spec = tmp_path / "runs.json"
    spec.write_text(json.dumps(runs))
    script = tmp_path / "collect.py"
    script.write_text(COLLECT)
    here = collect_here(runs)
    assert json.loads(run_mpy(script=script, args=[str(spec)], heapsize="8M")) == here
    assert here[0][1] and here[1][1]  # the genuine copy got in on its second round
    assert not here[2][1] and here[2][2] == [3, 4]  # part 1 never came: whole sets failed
