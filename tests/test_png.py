"""The streaming PNG writer (hubi_core.png): Pillow reads back exactly the pixels written."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from hubi_core import png


def load(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    im.load()
    return np.asarray(im)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + n]
        (crc,) = struct.unpack(">I", data[i + 8 + n : i + 12 + n])
        assert crc == zlib.crc32(kind + body), kind
        out.append((kind, body))
        i += 12 + n
    return out


def test_adler32_matches_zlib() -> None:
    rng = random.Random(1)
    for n in (0, 1, 100, 2047, 2048, 2049, 10000):
        data = rng.randbytes(n)
        assert png.adler32(data) == zlib.adler32(data)
    data = b"\xff" * 50000  # worst case for the running sums
    assert png.adler32(data) == zlib.adler32(data)
    assert png.adler32(data[1000:], png.adler32(data[:1000])) == zlib.adler32(data)


@pytest.mark.parametrize("compress", [None, False])
@pytest.mark.parametrize("width", [1, 7, 8, 9, 240])
def test_grey1(width: int, compress: bool | None) -> None:
    rng = np.random.default_rng(width)
    px = rng.integers(0, 2, size=(13, width), dtype=np.uint8)
    rows = [np.packbits(r).tobytes() for r in px]
    f = io.BytesIO()
    png.write(f, width, 13, rows, png.GREY1, compress=compress)
    im = Image.open(io.BytesIO(f.getvalue()))
    assert im.mode == "1" and im.size == (width, 13)
    assert (np.asarray(im).astype(np.uint8) == px).all()
    kinds = [k for k, _ in chunks(f.getvalue())]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds


@pytest.mark.parametrize("compress", [None, False])
def test_grey8_and_rgb24(compress: bool | None) -> None:
    rng = np.random.default_rng(2)
    g = rng.integers(0, 256, size=(50, 77), dtype=np.uint8)
    f = io.BytesIO()
    png.write(f, 77, 50, [r.tobytes() for r in g], png.GREY8, compress=compress)
    assert (load(f.getvalue()) == g).all()
    c = rng.integers(0, 256, size=(40, 33, 3), dtype=np.uint8)
    f = io.BytesIO()
    png.write(f, 33, 40, [r.tobytes() for r in c], png.RGB24, compress=compress)
    assert (load(f.getvalue()) == c).all()


def test_stored_blocks_and_many_idat_chunks() -> None:
    g = np.arange(300 * 100, dtype=np.uint32).reshape(100, 300).astype(np.uint8)
    f = io.BytesIO()
    w = png.PngWriter(f, 300, 100, png.GREY8, compress=False, chunk=1000)
    for r in g:
        w.row(r.tobytes())
    w.close()
    idat = [b for k, b in chunks(f.getvalue()) if k == b"IDAT"]
    assert len(idat) > 20 and all(len(b) <= 1000 for b in idat)
    raw = zlib.decompress(b"".join(idat))
    assert len(raw) == 100 * 301
    assert (load(f.getvalue()) == g).all()


def test_writer_checks_rows() -> None:
    f = io.BytesIO()
    w = png.PngWriter(f, 10, 2, png.GREY8)
    with pytest.raises(ValueError, match="row 0: 9 bytes, expected 10"):
        w.row(bytes(9))
    w.row(bytes(10))
    with pytest.raises(ValueError, match="1 rows written, image has 2"):
        w.close()
    w.row(bytes(10))
    with pytest.raises(ValueError, match="more than 2 rows"):
        w.row(bytes(10))
    with pytest.raises(ValueError):
        png.PngWriter(io.BytesIO(), 0, 5)
    with pytest.raises(ValueError):
        png.PngWriter(io.BytesIO(), 5, 5, kind=4)


def mono_image(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(h, w), dtype=np.uint8)


def to_hlsb(px: np.ndarray, stride: int) -> bytes:
    h, w = px.shape
    full = np.zeros((h, stride), np.uint8)
    full[:, :w] = px
    return np.packbits(full, axis=1).tobytes()


def to_vlsb(px: np.ndarray) -> bytes:
    h, w = px.shape
    out = bytearray(((h + 7) // 8) * w)
    for y in range(h):
        for x in range(w):
            if px[y, x]:
                out[(y // 8) * w + x] |= 1 << (y % 8)
    return bytes(out)


@pytest.mark.parametrize("w", [13, 16, 240])
def test_framebuf_mono_formats(w: int) -> None:
    h = 21
    px = mono_image(w, h, w)
    hlsb = to_hlsb(px, w)
    hmsb = bytes(int(f"{b:08b}"[::-1], 2) for b in hlsb)
    for fmt, buf in ((png.MONO_HLSB, hlsb), (png.MONO_HMSB, hmsb), (png.MONO_VLSB, to_vlsb(px))):
        f = io.BytesIO()
        png.save_framebuf(f, buf, w, h, fmt)
        assert (load(f.getvalue()).astype(np.uint8) == px).all(), fmt
    f = io.BytesIO()
    png.save_framebuf(f, hlsb, w, h, png.MONO_HLSB, invert=True)
    assert (load(f.getvalue()).astype(np.uint8) == 1 - px).all()


def test_framebuf_stride_and_row_function() -> None:
    px = mono_image(20, 10, 3)
    buf = to_hlsb(px, 32)  # stride 32 px: 4 bytes per row, only 20 px shown
    f = io.BytesIO()
    png.save_framebuf(f, buf, 20, 10, png.MONO_HLSB, stride=32)
    assert (load(f.getvalue()).astype(np.uint8) == px).all()
    f2 = io.BytesIO()
    png.save_framebuf(f2, lambda y: buf[y * 4 : y * 4 + 4], 20, 10, png.MONO_HLSB, stride=32)
    assert f2.getvalue() == f.getvalue()
    with pytest.raises(ValueError, match="MONO_VLSB"):
        png.save_framebuf(io.BytesIO(), lambda y: b"", 8, 8, png.MONO_VLSB)
    with pytest.raises(ValueError, match="not supported"):
        png.save_framebuf(io.BytesIO(), bytes(64), 8, 8, 2)


def rgb565(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.uint16) for i in range(3))
    return ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)


def expand565(v: np.ndarray) -> np.ndarray:
    r, g, b = (v >> 11) & 31, (v >> 5) & 63, v & 31
    return np.stack([(r << 3) | (r >> 2), (g << 2) | (g >> 4), (b << 3) | (b >> 2)], -1).astype(
        np.uint8
    )


@pytest.mark.parametrize("swap", [False, True])
def test_framebuf_rgb565(swap: bool) -> None:
    rgb = np.random.default_rng(4).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    v = rgb565(rgb)
    buf = v.astype(">u2" if swap else "<u2").tobytes()
    f = io.BytesIO()
    png.save_framebuf(f, buf, 32, 24, png.RGB565, swap=swap)
    out = load(f.getvalue())
    assert out.shape == (24, 32, 3)
    assert (out == expand565(v)).all()
    assert (out[..., 0] >> 3 == rgb[..., 0] >> 3).all()  # white stays white etc.
    white = np.full((2, 2), 0xFFFF, np.uint16).tobytes()
    f = io.BytesIO()
    png.save_framebuf(f, white, 2, 2, png.RGB565)
    assert (load(f.getvalue()) == 255).all()


def test_framebuf_gs8_and_paths(tmp_path) -> None:
    g = np.random.default_rng(5).integers(0, 256, size=(9, 11), dtype=np.uint8)
    path = tmp_path / "g.png"
    png.save_framebuf(str(path), g.tobytes(), 11, 9, png.GS8)
    assert (np.asarray(Image.open(path)) == g).all()
    assert png.kind_of(png.GS8) == png.GREY8 and png.kind_of(png.MONO_VLSB) == png.GREY1
