"""QR, parts and PNG under the real MicroPython: same matrices, same bytes, 96 KB heap."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import zxingcpp
from PIL import Image

from hubi_core import png, qr, qrparts
from tests.mpy import run_mpy

pytestmark = pytest.mark.micropython

# the same deterministic bytes on both interpreters (small ints only)
GEN = """
def gen(n, seed):
    x = seed
    out = bytearray(n)
    for i in range(n):
        x = (x * 75 + 74) % 65537
        out[i] = x & 0xFF
    return bytes(out)
"""
_ns: dict = {}
exec(GEN, _ns)
gen = _ns["gen"]

CASES = [(qr.capacity(v, lv), lv, v) for v in range(1, 21) for lv in ("L", "M")]
CASES += [(1, "M", 0), (100, "L", 0), (100, "M", 0), (420, "L", 0), (420, "M", 0)]


def test_identical_matrices_on_micropython() -> None:
    code = (
        GEN
        + """
import hashlib, binascii
from hubi_core import qr
for n, lv, seed in %r:
    c = qr.encode(gen(n, seed + 1), lv)
    print(n, lv, c.version, c.mask, binascii.hexlify(hashlib.sha256(c.bits).digest()).decode())
"""
        % (CASES,)
    )
    out = run_mpy(code=code).split("\n")
    got = [line.split() for line in out if line.strip()]
    assert len(got) == len(CASES)
    for (n, lv, seed), line in zip(CASES, got):
        c = qr.encode(gen(n, seed + 1), lv)
        want = [str(n), lv, str(c.version), str(c.mask), hashlib.sha256(c.bits).hexdigest()]
        assert line == want, (n, lv)


def test_note_sized_payload_in_96k_heap() -> None:
    out = run_mpy(
        code="""
import gc, time
from hubi_core import qr
gc.collect()
t = time.ticks_us()
c = qr.encode(bytes(range(256)) + bytes(164), "M")
dt = time.ticks_diff(time.ticks_us(), t)
print(c.version, c.mask, dt, gc.mem_free())
""",
        heapsize="96k",
    )
    version, mask, _us, _free = map(int, out.split())
    assert version == 16
    assert mask == qr.encode(bytes(range(256)) + bytes(164), "M").mask


def decode_png(path: Path) -> list[bytes]:
    im = Image.open(path)
    im.load()
    return [b.bytes for b in zxingcpp.read_barcodes(im, formats=zxingcpp.BarcodeFormat.QRCode)]


def test_drawn_on_framebuf_saved_as_png_decodes(tmp_path: Path) -> None:
    """The firmware path: qr.draw into a framebuf.FrameBuffer, png.save_framebuf, zxing."""
    cases = [
        (n, lv, i)
        for i, (n, lv) in enumerate(
            [(14, "M"), (106, "M"), (230, "L"), (420, "L"), (420, "M"), (666, "M"), (858, "L")]
        )
    ]
    code = (
        GEN
        + """
import framebuf, gc
from hubi_core import qr, png
buf = bytearray(240 * 240 // 8)
fb = framebuf.FrameBuffer(buf, 240, 240, framebuf.MONO_HLSB)
for n, lv, i in %r:
    c = qr.encode(gen(n, i + 7), lv)
    scale = 240 // (c.size + 8)
    fb.fill(0)
    qr.draw(c, fb, 0, 0, scale)  # default colours: dark 0 on 0xFFFF (framebuf takes & 1)
    png.save_framebuf("%s/mono-%%d.png" %% i, buf, 240, 240, png.MONO_HLSB)
    c = None
    gc.collect()
print("done", gc.mem_free())
"""
        % (cases, tmp_path)
    )
    assert run_mpy(code=code, heapsize="96k").startswith("done")
    for n, lv, i in cases:
        assert decode_png(tmp_path / f"mono-{i}.png") == [gen(n, i + 7)], (n, lv)


def test_rgb565_framebuf_png(tmp_path: Path) -> None:
    code = (
        GEN
        + """
import framebuf
from hubi_core import qr, png
buf = bytearray(150 * 150 * 2)
fb = framebuf.FrameBuffer(buf, 150, 150, framebuf.RGB565)
fb.fill(0xF800)
c = qr.encode(gen(60, 3), "M")
qr.draw(c, fb, 10, 10, 3, dark=0x0010, light=0xFFFF)
png.save_framebuf("%s/rgb.png", buf, 150, 150, png.RGB565)
print(c.size)
"""
        % tmp_path
    )
    size = int(run_mpy(code=code))
    im = np.asarray(Image.open(tmp_path / "rgb.png"))
    assert tuple(im[0, 0]) == (255, 0, 0)  # red background outside the symbol
    assert tuple(im[10, 10]) == (255, 255, 255)  # quiet zone
    assert decode_png(tmp_path / "rgb.png") == [gen(60, 3)]
    assert (size + 8) * 3 + 10 < 150


def test_png_bytes_identical_to_cpython(tmp_path: Path) -> None:
    """Stored-block PNGs (MicroPython's only mode here) are byte-identical to CPython's."""
    code = (
        GEN
        + """
from hubi_core import png, qr
c = qr.encode(gen(77, 5), "M")
side = (c.size + 8) * 2
f = open("%s/q.png", "wb")
png.write(f, side, side, qr.bitmap_rows(c, 2), png.GREY1, compress=False)
f.close()
f = open("%s/g.png", "wb")
png.write(f, 50, 3, [bytes(range(i, i + 50)) for i in range(3)], png.GREY8, compress=False)
f.close()
"""
        % (tmp_path, tmp_path)
    )
    run_mpy(code=code)
    c = qr.encode(gen(77, 5), "M")
    side = (c.size + 8) * 2
    f = io.BytesIO()
    png.write(f, side, side, qr.bitmap_rows(c, 2), png.GREY1, compress=False)
    assert (tmp_path / "q.png").read_bytes() == f.getvalue()
    f = io.BytesIO()
    png.write(f, 50, 3, [bytes(range(i, i + 50)) for i in range(3)], png.GREY8, compress=False)
    assert (tmp_path / "g.png").read_bytes() == f.getvalue()
    assert decode_png(tmp_path / "q.png") == [gen(77, 5)]


def test_rgb565_320x240_streams_in_96k(tmp_path: Path) -> None:
    """A 320x240 RGB565 screen (150 KB) is written row by row from a row function."""
    code = (
        """
import gc
from hubi_core import png
row = bytearray(640)
def get(y):
    for x in range(320):
        v = ((x * 31 // 319) << 11) | ((y * 63 // 239) << 5) | ((x ^ y) & 31)
        row[2 * x] = v & 0xFF
        row[2 * x + 1] = v >> 8
    return row
gc.collect()
png.save_framebuf("%s/big.png", get, 320, 240, png.RGB565)
print(gc.mem_free())
"""
        % tmp_path
    )
    run_mpy(code=code, heapsize="96k")
    im = np.asarray(Image.open(tmp_path / "big.png")).astype(np.int64)
    assert im.shape == (240, 320, 3)
    y, x = np.mgrid[0:240, 0:320]
    r5, g6, b5 = x * 31 // 319, y * 63 // 239, (x ^ y) & 31
    assert (im[..., 0] == (r5 << 3) | (r5 >> 2)).all()
    assert (im[..., 1] == (g6 << 2) | (g6 >> 4)).all()
    assert (im[..., 2] == (b5 << 3) | (b5 >> 2)).all()


def test_parts_on_micropython() -> None:
    """split gives the same frames; the Collector reassembles and rejects the same way."""
    msg = gen(1000, 11)
    parts = qrparts.split(msg, version=7, level="M")
    code = (
        GEN
        + """
import binascii, hashlib
from hubi_core import qrparts
msg = gen(1000, 11)
parts = qrparts.split(msg, version=7, level="M")
print(binascii.hexlify(hashlib.sha256(b"".join(parts)).digest()).decode(), len(parts))
col = qrparts.Collector()
order = [11, 9, 3, 3, 0, 7, 10, 1, 8, 6, 4, 8]  # 2 and 5 lost (one per group), repeats
prog = [col.add(parts[i]) for i in order]
print(col.complete, col.message() == msg, prog[-1][0], prog[-1][1])
try:
    col.add(qrparts.split(gen(300, 1))[0])
except qrparts.MixedMessages as e:
    print("MixedMessages", isinstance(e, qrparts.PartError))
try:
    qrparts.parse(b"\\xa5" + bytes(30))
except qrparts.BadPart as e:
    print("BadPart")
p = qrparts.plan(420, 240, "M")
print(p.frames, p.version, p.scale)
"""
    )
    out = run_mpy(code=code, heapsize="128k").split("\n")
    assert out[0].split() == [hashlib.sha256(b"".join(parts)).hexdigest(), str(len(parts))]
    assert len(parts) == 12  # 10 data + 2 parity
    assert out[1].split() == ["True", "True", "10", "10"]
    assert out[2] == "MixedMessages True"
    assert out[3] == "BadPart"
    assert out[4].split() == ["5", "7", "4"]
