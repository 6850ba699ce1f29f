"""The token's QR encoder (hubi_core.qr): decodes with zxing-cpp, standard mask penalty."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import zxingcpp
from PIL import Image

from hubi_core import errors, png, qr


def payload(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def sizes(level: str) -> list[tuple[int, int]]:
    """(version, nbytes): for every version 1..20 its fullest payload and one just above the
    previous version's capacity."""
    out = []
    for v in range(1, 21):
        lo = qr.capacity(v - 1, level) + 1 if v > 1 else 1
        hi = qr.capacity(v, level)
        out.append((v, hi))
        out.append((v, lo))
    return out


def png_of(code: qr.QrCode, scale: int = 3, quiet: int = 4) -> bytes:
    side = (code.size + 2 * quiet) * scale
    f = io.BytesIO()
    png.write(f, side, side, qr.bitmap_rows(code, scale, quiet), png.GREY1)
    return f.getvalue()


def zxing_read(png_bytes: bytes) -> list[zxingcpp.Barcode]:
    im = Image.open(io.BytesIO(png_bytes))
    return zxingcpp.read_barcodes(im, formats=zxingcpp.BarcodeFormat.QRCode)


def matrix(code: qr.QrCode) -> list[list[int]]:
    return [[int(code.get(x, y)) for x in range(code.size)] for y in range(code.size)]


@pytest.mark.parametrize("level", ["L", "M"])
def test_every_version_decodes_to_the_input_bytes(level: str) -> None:
    for v, n in sizes(level):
        data = payload(n, v * 1000 + n)
        code = qr.encode(data, level)
        assert code.version == v, (level, n)
        found = zxing_read(png_of(code))
        assert len(found) == 1, (level, v, n)
        assert found[0].bytes == data, (level, v, n)
        assert found[0].extra["Version"] == str(v)
        assert found[0].extra["ECLevel"] == level
        assert int(found[0].extra["DataMask"]) == code.mask


@pytest.mark.parametrize("level", ["Q", "H"])
def test_levels_q_and_h_decode_too(level: str) -> None:
    for v in range(1, 21):  # every generator polynomial degree of the tables
        data = payload(qr.capacity(v, level), v)
        found = zxing_read(png_of(qr.encode(data, level, version=v)))
        assert found and found[0].bytes == data and found[0].extra["ECLevel"] == level


def test_every_mask_decodes() -> None:
    data = payload(100, 7)
    for k in range(8):
        code = qr.encode(data, "M", mask=k)
        found = zxing_read(png_of(code, scale=2))
        assert found[0].bytes == data and int(found[0].extra["DataMask"]) == k


def test_empty_and_text_payloads() -> None:
    assert qr.encode(b"").version == 1
    code = qr.encode("hubi ¥12.50")
    assert zxing_read(png_of(code))[0].bytes == "hubi ¥12.50".encode()


def test_capacities_and_min_version() -> None:
    # ISO/IEC 18004 Table 7, byte mode
    assert [qr.capacity(v, "L") for v in (1, 7, 10, 13, 16, 20)] == [17, 154, 271, 425, 586, 858]
    assert [qr.capacity(v, "M") for v in (1, 7, 10, 13, 16, 20)] == [14, 122, 213, 331, 450, 666]
    assert qr.min_version(420, "M") == 16
    assert qr.min_version(420, "L") == 13
    assert qr.min_version(666, "M") == 20
    assert qr.min_version(667, "M") is None
    assert qr.min_version(859, "L") is None
    assert qr.size_of(7) == 45


def test_oversize_and_bad_arguments() -> None:
    with pytest.raises(errors.Oversize, match="667 bytes exceed version 20-M"):
        qr.encode(bytes(667), "M")
    with pytest.raises(errors.Oversize, match="version 5-M"):
        qr.encode(bytes(100), "M", version=5)
    with pytest.raises(ValueError):
        qr.encode(b"x", "X")
    with pytest.raises(ValueError):
        qr.encode(b"x", version=21)
    with pytest.raises(ValueError):
        qr.encode(b"x", mask=8)


def naive_scores(m: list[list[int]]) -> tuple[int, int, int, int]:
    """ISO/IEC 18004:2015 7.8.3 N1..N4 module by module (N3 as ZXing counts it: modules
    outside the symbol are light, one count per 1011101 with light on either side)."""
    n = len(m)
    lines = m + [[m[y][x] for y in range(n)] for x in range(n)]
    n1 = n2 = n3 = 0
    for line in lines:
        run = 1
        for i in range(1, n + 1):
            if i < n and line[i] == line[i - 1]:
                run += 1
            else:
                if run >= 5:
                    n1 += run - 2
                run = 1
    for y in range(n - 1):
        for x in range(n - 1):
            if m[y][x] == m[y][x + 1] == m[y + 1][x] == m[y + 1][x + 1]:
                n2 += 3

    def at(line: list[int], i: int) -> int:
        return line[i] if 0 <= i < n else 0

    for line in lines:
        for i in range(n - 6):
            if line[i : i + 7] == [1, 0, 1, 1, 1, 0, 1] and (
                all(at(line, j) == 0 for j in range(i - 4, i))
                or all(at(line, j) == 0 for j in range(i + 7, i + 11))
            ):
                n3 += 40
    dark = sum(map(sum, m))
    return n1, n2, n3, 10 * (abs(dark * 20 - n * n * 10) // (n * n))


def naive_penalty(m: list[list[int]]) -> int:
    return sum(naive_scores(m))


def test_mask_choice_minimises_the_standard_penalty() -> None:
    rng = random.Random(5)
    for level, v in (("M", 1), ("L", 2), ("M", 4), ("M", 7), ("L", 9), ("M", 12)):
        data = rng.randbytes(rng.randint(1, qr.capacity(v, level)))
        scores = []
        for k in range(8):
            code = qr.encode(data, level, version=v, mask=k)
            ref = naive_penalty(matrix(code))
            assert qr.penalty(code) == ref, (level, v, k)
            scores.append(ref)
        assert qr.encode(data, level, version=v).mask == scores.index(min(scores))


def test_segno_agrees_on_n1_n2_n4() -> None:
    """segno's N3 skips overlapping patterns, so only N1, N2 and N4 are compared."""
    from segno.encoder import mask_scores

    for k in (0, 3, 6):
        code = qr.encode(payload(300, 3), "M", mask=k)
        m = matrix(code)
        n1, n2, _n3, n4 = mask_scores([bytearray(r) for r in m], code.size, code.size)
        ours = naive_scores(m)
        assert (n1, n2, n4) == (ours[0], ours[1], ours[3])


class Canvas:
    """A fill_rect target (like framebuf) recording pixels in a numpy array."""

    def __init__(self, w: int, h: int) -> None:
        self.px = np.full((h, w), 7, dtype=np.int64)
        self.calls = 0

    def fill_rect(self, x: int, y: int, w: int, h: int, c: int) -> None:
        self.calls += 1
        self.px[y : y + h, x : x + w] = c


def test_draw_paints_modules_quiet_zone_and_colours() -> None:
    code = qr.encode(b"draw me", "M")
    scale, quiet = 3, 4
    side = (code.size + 2 * quiet) * scale
    cv = Canvas(side + 10, side + 10)
    qr.draw(code, cv, 5, 5, scale, quiet=quiet, dark=0, light=0xFFFF)
    img = cv.px[5 : 5 + side, 5 : 5 + side]
    assert (cv.px[:5, :] == 7).all() and (cv.px[:, side + 5 :] == 7).all()  # nothing outside
    want = np.array(
        [
            [0 if code.get(x, y) else 0xFFFF for x in range(-quiet, code.size + quiet)]
            for y in range(-quiet, code.size + quiet)
        ]
    )
    assert (img == np.kron(want, np.ones((scale, scale), dtype=np.int64))).all()
    dark_modules = sum(map(sum, matrix(code)))
    assert cv.calls < dark_modules  # runs, not one call per module
    grey = np.where(img == 0, 0, 255).astype(np.uint8)
    assert zxingcpp.read_barcodes(grey)[0].bytes == b"draw me"


def test_bitmap_rows_match_get() -> None:
    code = qr.encode(payload(50, 1), "L")
    rows = [bytes(r) for r in qr.bitmap_rows(code, scale=2, quiet=1)]
    side = (code.size + 2) * 2
    assert len(rows) == side and all(len(r) == (side + 7) // 8 for r in rows)
    for py in range(side):
        for px in range(side):
            bit = (rows[py][px >> 3] >> (7 - (px & 7))) & 1
            assert bit == (0 if code.get(px // 2 - 1, py // 2 - 1) else 1)


def test_bits_layout_is_mono_hlsb() -> None:
    code = qr.encode(b"layout", "M")
    assert code.stride == (code.size + 7) // 8
    assert len(code.bits) == code.stride * code.size
    for y in range(code.size):
        for x in range(code.size):
            assert code.get(x, y) == bool(code.bits[y * code.stride + x // 8] & (0x80 >> (x % 8)))
    assert not code.get(-1, 0) and not code.get(0, code.size)
    assert "v1-M" in repr(code)
    assert code.text(quiet=0).count("\n") == code.size - 1
