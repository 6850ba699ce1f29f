"""Host QR scanning (hubi.qrscan): exact binary round trips, animated frames, hard images."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import zxingcpp
from PIL import Image

from hubi import qrscan
from hubi_core import qr, qrparts


def note_like(n: int, seed: int = 1) -> bytes:
    return b"\x01" + random.Random(seed).randbytes(n - 1)


def test_render_png_round_trips_every_byte_value(tmp_path: Path) -> None:
    cases = [
        bytes(range(256)),
        b"\x00" * 10,
        b"\xff\xfe\x00bin\x80",
        note_like(420),
        note_like(1500, 2),
    ]
    for i, data in enumerate(cases):
        path = qrscan.render_png(data, tmp_path / f"r{i}.png", scale=4)
        assert path == tmp_path / f"r{i}.png"
        assert qrscan.decode_image(path) == [data]
        found = zxingcpp.read_barcodes(Image.open(path))
        assert found[0].symbology_identifier == "]Q1"  # byte mode, no ECI designator
        assert found[0].extra["ECLevel"] == "M"
    path = qrscan.render_png(b"\x01level L", tmp_path / "l.png", level="L")
    assert zxingcpp.read_barcodes(Image.open(path))[0].extra["ECLevel"] == "L"


def test_decode_image_inputs(tmp_path: Path) -> None:
    data = note_like(100)
    path = qrscan.render_png(data, tmp_path / "in.png")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = 255
    for src in (path, str(path), path.read_bytes(), bgr, grey, bgra, Image.open(path), grey > 128):
        assert qrscan.decode_image(src) == [data], type(src)
    assert qrscan.decode_image(np.full((100, 100), 255, np.uint8)) == []
    with pytest.raises(ValueError, match="not an image"):
        qrscan.decode_image(b"not an image")
    with pytest.raises(TypeError):
        qrscan.decode_image(12)


def test_token_frames_any_order_one_missing_one_repeated(tmp_path: Path) -> None:
    msg = note_like(420)
    paths = qrscan.render_frames(msg, tmp_path, screen_px=240, level="M", scale=3)
    assert len(paths) == 5  # 4 data + 1 parity, version 7
    rng = random.Random(3)
    frames = paths[:2] + paths[3:]  # frame 2 lost
    frames.append(frames[0])  # frame 0 seen twice
    rng.shuffle(frames)
    seen = []
    assert qrscan.collect(frames, progress=lambda h, n: seen.append((h, n))) == msg
    assert seen[-1] == (4, 4)
    assert all(n == 4 for _h, n in seen)


def test_single_qr_frame(tmp_path: Path) -> None:
    msg = note_like(420)
    paths = qrscan.render_frames(msg, tmp_path, screen_px=240, level="L")
    assert len(paths) == 1
    assert qrscan.collect(paths) == msg
    assert qrscan.collect(paths[0]) == msg  # a single source is fine too


def test_several_codes_in_one_image(tmp_path: Path) -> None:
    """A printed sheet with every frame side by side is read in one go."""
    msg = note_like(700, 4)
    paths = qrscan.render_frames(msg, tmp_path / "f", screen_px=240, scale=3)
    tiles = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]
    h = max(t.shape[0] for t in tiles)
    sheet = np.hstack(
        [np.pad(t, ((0, h - t.shape[0]), (0, 20)), constant_values=255) for t in tiles]
    )
    found = qrscan.decode_image(sheet)
    assert len(found) == len(paths)
    assert qrscan.collect([sheet]) == msg


def test_video_loop(tmp_path: Path) -> None:
    """An animated QR filmed as a video: frames in display order, some dropped, looping."""
    msg = note_like(900, 5)
    plan, payloads = qrparts.frames(msg, 240, "M")
    assert plan.frames > 5
    images = []
    for payload in payloads:
        code = qr.encode(payload, "M", version=plan.version)
        img = np.full((240, 240), 255, np.uint8)
        mods = np.array(
            [[0 if code.get(x, y) else 255 for x in range(code.size)] for y in range(code.size)],
            np.uint8,
        )
        s = plan.scale
        side = code.size * s
        img[4 * s : 4 * s + side, 4 * s : 4 * s + side] = np.kron(mods, np.ones((s, s), np.uint8))
        images.append(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    path = tmp_path / "loop.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (240, 240))
    assert out.isOpened()
    for i, im in enumerate(images):
        if i != 1:  # one frame never captured
            out.write(im)
            out.write(im)
    out.release()
    assert sum(1 for _ in qrscan.frames_from_video(path)) == 2 * (len(images) - 1)
    got = qrscan.collect(qrscan.frames_from_video(path), thorough=False)
    assert got == msg
    assert len(list(qrscan.frames_from_video(path, step=3, max_frames=2))) == 2


def test_collect_errors(tmp_path: Path) -> None:
    blank = np.full((200, 200), 255, np.uint8)
    with pytest.raises(qrparts.Incomplete, match="no QR code found in 2"):
        qrscan.collect([blank, blank])
    a = qrscan.render_frames(note_like(420, 1), tmp_path / "a")
    b = qrscan.render_frames(note_like(420, 2), tmp_path / "b")
    with pytest.raises(qrparts.MixedMessages):
        qrscan.collect([a[0], b[1]])
    with pytest.raises(qrparts.Incomplete, match="1 of 4 parts"):
        qrscan.collect([a[0]])


def test_video_and_camera_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        qrscan.frames_from_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video")
    with pytest.raises(OSError, match="cannot open video"):
        qrscan.frames_from_video(bad)
    with pytest.raises(OSError, match="camera 97"):
        qrscan.frames_from_camera(97)
    # a video whose frames are over the pixel limit is refused from its header (one white
    # 7100 x 7100 frame, 320 KB, took 12 s and 1.2 GB to find no code in)
    big = tmp_path / "big.avi"
    writer = cv2.VideoWriter(str(big), cv2.VideoWriter_fourcc(*"MJPG"), 1, (7100, 7100), False)
    writer.write(np.full((7100, 7100), 255, np.uint8))
    writer.release()
    with pytest.raises(ValueError, match="frames of more than 50,000,000 pixels"):
        qrscan.frames_from_video(big)


def _module_image(data: bytes, scale: int) -> np.ndarray:
    code = qr.encode(data, "M")
    n = code.size
    mods = np.array(
        [[0 if code.get(x, y) else 255 for x in range(-4, n + 4)] for y in range(-4, n + 4)],
        np.uint8,
    )
    return np.kron(mods, np.ones((scale, scale), np.uint8))


def test_hard_camera_images_need_the_fallbacks() -> None:
    data = note_like(420, 6)
    base = _module_image(data, 6)
    h, w = base.shape
    rng = np.random.default_rng(7)
    blurred = cv2.GaussianBlur(base, (0, 0), 3.5)
    light = np.linspace(0.6, 1.0, w)[None, :] * np.linspace(1.0, 0.7, h)[:, None]
    dim = (base.astype(np.float32) * 0.1 * light + 60 * light).astype(np.uint8)
    dim = cv2.GaussianBlur(dim, (0, 0), 2.0)
    dim = np.clip(dim + rng.normal(0, 5, dim.shape), 0, 255).astype(np.uint8)
    for name, im in (("blurred", blurred), ("dim and noisy", dim)):
        assert qrscan.decode_image(im, thorough=False) == [], name  # plain zxing gives up
        assert qrscan.decode_image(im) == [data], name


def test_small_images_are_upscaled() -> None:
    data = note_like(200, 8)
    tiny = cv2.resize(_module_image(data, 1), None, fx=1.5, fy=1.5, interpolation=cv2.INTER_AREA)
    assert min(tiny.shape) < 200
    assert qrscan.decode_image(tiny) == [data]


def _white_png(path: Path, width: int, height: int) -> None:
    """A valid grey PNG, all white, written row by row (the pixels never sit in memory)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    z = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * width  # filter byte "none", then the row
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(png)


def test_an_image_of_too_many_pixels_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    """A 20000 x 20000 white PNG (a few hundred KB) held 5.5 GB and 100 s of CPU before 'note
    show' said it had no QR code. Scans now refuse an image over 50 million pixels from its
    header, and say so. Run as the command line: OpenCV takes its limit when cv2 is first
    imported, which the hubi package arranges."""
    bomb = tmp_path / "bomb.png"
    _white_png(bomb, 20_000, 20_000)
    assert bomb.stat().st_size < 1_000_000
    r = subprocess.run(
        [sys.executable, "-m", "hubi.cli", "note", "show", str(bomb), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    message = json.loads(r.stdout)["message"]
    assert "more than 50,000,000 pixels" in message and str(bomb) in message
