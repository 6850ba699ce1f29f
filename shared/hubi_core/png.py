"""Minimal streaming PNG writer (MicroPython and CPython): the token simulator saves its screen.

    with open("screen.png", "wb") as f:
        save_framebuf(f, buf, 240, 240, MONO_HLSB)       # a framebuf.FrameBuffer's bytes

    png.write(f, w, h, rows, GREY1)                      # rows: iterable of packed PNG rows

Output kinds: GREY1 (1-bit greyscale, 1 = white), GREY8 (8-bit greyscale), RGB24 (8-bit RGB).
Sources (``save_framebuf``): framebuf MONO_HLSB, MONO_HMSB, MONO_VLSB, GS8 and RGB565
(little-endian as framebuf stores it, or byte-swapped as SPI displays take it: ``swap=True``).
Instead of a buffer, ``src`` may be a function ``src(y)`` returning row y in the source
format: a 320x240 RGB565 screen (153,600 bytes) never has to be in the heap at once.

Memory: rows are written as they come, one IDAT chunk per ``chunk`` bytes (default 4096; less
if the heap has no such contiguous block), so a write needs the chunk buffer plus one
converted row (960 bytes for RGB24 at 320 px).

Compression: CPython uses ``zlib``. MicroPython uses ``deflate.DeflateIO`` only when the
firmware was built with compression (MICROPY_PY_DEFLATE_COMPRESS) and the caller asks for it
(``compress=True``); otherwise rows go out as stored (uncompressed) deflate blocks, with CRC-32
from ``binascii.crc32`` and Adler-32 computed here. A 240x240 1-bit screen is ~7.5 KB stored.
"""

import binascii
import struct

try:
    import zlib as _zlib  # CPython
except ImportError:
    _zlib = None

GREY1 = 1
GREY8 = 8
RGB24 = 24

# framebuf format constants (same numbers as MicroPython's framebuf module)
MONO_VLSB = 0
RGB565 = 1
MONO_HLSB = 3
MONO_HMSB = 4
GS8 = 6

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_KINDS = {GREY1: (1, 0, 1), GREY8: (8, 0, 8), RGB24: (8, 2, 24)}  # depth, colour type, bpp


def _crc(data, crc=0):
    return binascii.crc32(data, crc) & 0xFFFFFFFF


def _chunk(stream, kind, data):
    stream.write(struct.pack(">I", len(data)))
    stream.write(kind)
    stream.write(data)
    stream.write(struct.pack(">I", _crc(data, _crc(kind))))


def adler32(data, value=1):
    """Adler-32 of data, continuing from value (zlib's checksum; pure Python)."""
    s1 = value & 0xFFFF
    s2 = value >> 16
    n = len(data)
    i = 0
    mv = memoryview(data)
    while i < n:
        # 2048 bytes keep s2 below 2**30: small ints on 32-bit MicroPython ports
        for b in mv[i : i + 2048]:
            s1 += b
            s2 += s1
        s1 %= 65521
        s2 %= 65521
        i += 2048
    return (s2 << 16) | s1


class _Idat:
    """A write()-able sink that emits what it gets as IDAT chunks of up to len(buf) bytes."""

    def __init__(self, stream, size):
        self.stream = stream
        while True:  # a fragmented heap may not have `size` contiguous bytes: take less
            try:
                self.buf = bytearray(size)
                break
            except MemoryError:
                if size <= 256:
                    raise
                size >>= 1
        self.n = 0

    def write(self, data):
        mv = memoryview(data)
        size = len(self.buf)
        while len(mv):
            k = min(size - self.n, len(mv))
            self.buf[self.n : self.n + k] = mv[:k]
            self.n += k
            mv = mv[k:]
            if self.n == size:
                self.flush()
        return len(data)

    def flush(self):
        if self.n:
            _chunk(self.stream, b"IDAT", memoryview(self.buf)[: self.n])
            self.n = 0


def _deflate_io(sink):
    """A MicroPython DeflateIO compressing into sink, or None if this firmware cannot."""
    try:
        import deflate
    except ImportError:
        return None
    d = deflate.DeflateIO(sink, deflate.ZLIB)
    if not hasattr(d, "write"):  # decompress-only build
        return None
    return d


class PngWriter:
    """Write a PNG row by row: ``w = PngWriter(f, 240, 240, GREY1); w.row(r) ...; w.close()``.

    A row is the packed PNG scanline without the filter byte: (width + 7) // 8 bytes for GREY1
    (MSB = leftmost pixel, 1 = white), width bytes for GREY8, 3 * width for RGB24.
    compress: None = zlib where available (CPython), else stored; True = also try MicroPython's
    deflate module; False = always stored blocks.
    """

    def __init__(self, stream, width, height, kind=GREY8, compress=None, chunk=4096):
        if kind not in _KINDS:
            raise ValueError("kind must be GREY1, GREY8 or RGB24, not %r" % (kind,))
        if width < 1 or height < 1:
            raise ValueError("image size must be positive, not %dx%d" % (width, height))
        depth, ctype, bpp = _KINDS[kind]
        self.width = width
        self.height = height
        self.rowlen = (width * bpp + 7) >> 3
        self.rows = 0
        self.stream = stream
        stream.write(_SIGNATURE)
        _chunk(stream, b"IHDR", struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0))
        self._idat = _Idat(stream, chunk)
        self._z = None  # zlib compressobj (CPython)
        self._d = None  # deflate.DeflateIO (MicroPython)
        if compress is not False and _zlib is not None:
            self._z = _zlib.compressobj(9)
        elif compress:
            self._d = _deflate_io(self._idat)
        if self._z is None and self._d is None:
            self._idat.write(b"\x78\x01")  # zlib header: deflate, 32K window, no dictionary
            self._adler = 1
            self._hdr = bytearray(6)  # stored block header + filter byte

    def row(self, data):
        """Append one scanline (filter type 0)."""
        if len(data) != self.rowlen:
            raise ValueError("row %d: %d bytes, expected %d" % (self.rows, len(data), self.rowlen))
        if self.rows >= self.height:
            raise ValueError("more than %d rows" % self.height)
        self.rows += 1
        if self._z is not None:
            self._idat.write(self._z.compress(b"\x00"))
            self._idat.write(self._z.compress(data))
        elif self._d is not None:
            self._d.write(b"\x00")
            self._d.write(data)
        else:
            # one stored deflate block per scanline: BFINAL=0 BTYPE=00, LEN, NLEN, data
            n = self.rowlen + 1
            h = self._hdr
            h[0] = 0
            h[1] = n & 0xFF
            h[2] = n >> 8
            h[3] = (n & 0xFF) ^ 0xFF
            h[4] = (n >> 8) ^ 0xFF
            h[5] = 0  # filter byte
            self._idat.write(h)
            self._idat.write(data)
            self._adler = adler32(data, adler32(b"\x00", self._adler))

    def close(self):
        """Finish the image (all rows must have been written). Does not close the stream."""
        if self.rows != self.height:
            raise ValueError("%d rows written, image has %d" % (self.rows, self.height))
        if self._z is not None:
            self._idat.write(self._z.flush())
        elif self._d is not None:
            self._d.close()
        else:
            self._idat.write(b"\x01\x00\x00\xff\xff")  # final, empty stored block
            self._idat.write(struct.pack(">I", self._adler))
        self._idat.flush()
        _chunk(self.stream, b"IEND", b"")


def write(stream, width, height, rows, kind=GREY8, compress=None):
    """Write a whole PNG from an iterable of scanlines (see PngWriter.row)."""
    w = PngWriter(stream, width, height, kind, compress)
    for r in rows:
        w.row(r)
    w.close()


_REV = None


def _reversed_bits():
    global _REV
    if _REV is None:
        _REV = bytearray(256)
        for i in range(256):
            r = 0
            for b in range(8):
                if i & (1 << b):
                    r |= 0x80 >> b
            _REV[i] = r
    return _REV


def framebuf_rows(src, width, height, fmt, stride=None, swap=False, invert=False):
    """Yield PNG scanlines (GREY1 for MONO_*, GREY8 for GS8, RGB24 for RGB565) of a framebuf.

    src: the framebuf's buffer, or a function src(y) returning row y in the source format
    (not for MONO_VLSB). stride: pixels per buffer row (default width). For mono formats 1 is
    white unless invert. The yielded bytearray is reused: consume it before the next one.
    """
    if stride is None:
        stride = width
    get = src if callable(src) else None
    if get is not None and fmt == MONO_VLSB:
        raise ValueError("MONO_VLSB needs the whole buffer, not a row function")
    if fmt in (MONO_HLSB, MONO_HMSB, MONO_VLSB):
        rb = (width + 7) >> 3
        out = bytearray(rb)
        tail = (0xFF << (8 - (width & 7))) & 0xFF if width & 7 else 0xFF
        flip = 0xFF if invert else 0
        rev = _reversed_bits() if fmt == MONO_HMSB else None
        sb = (stride + 7) >> 3
        for y in range(height):
            if fmt == MONO_VLSB:
                o = (y >> 3) * stride
                bit = 1 << (y & 7)
                for i in range(rb):
                    out[i] = 0
                for x in range(width):
                    if src[o + x] & bit:
                        out[x >> 3] |= 0x80 >> (x & 7)
            else:
                line = get(y) if get is not None else memoryview(src)[y * sb : y * sb + rb]
                out[:] = line[:rb]
                if rev is not None:
                    for i in range(rb):
                        out[i] = rev[out[i]]
            if flip:
                for i in range(rb):
                    out[i] ^= flip
            out[rb - 1] &= tail
            yield out
    elif fmt == GS8:
        for y in range(height):
            yield (
                get(y)[:width]
                if get is not None
                else memoryview(src)[y * stride : y * stride + width]
            )
    elif fmt == RGB565:
        out = bytearray(3 * width)
        hi_at = 0 if swap else 1
        lo_at = 1 - hi_at
        for y in range(height):
            line = (
                get(y)
                if get is not None
                else memoryview(src)[2 * y * stride : 2 * (y * stride + width)]
            )
            j = 0
            for i in range(0, 2 * width, 2):
                hi = line[i + hi_at]
                lo = line[i + lo_at]
                r = hi >> 3
                g = ((hi & 7) << 3) | (lo >> 5)
                b = lo & 31
                out[j] = (r << 3) | (r >> 2)
                out[j + 1] = (g << 2) | (g >> 4)
                out[j + 2] = (b << 3) | (b >> 2)
                j += 3
            yield out
    else:
        raise ValueError(
            "framebuf format %r not supported (MONO_HLSB/HMSB/VLSB, GS8, RGB565)" % (fmt,)
        )


def kind_of(fmt):
    """PNG kind written for a framebuf format."""
    if fmt in (MONO_HLSB, MONO_HMSB, MONO_VLSB):
        return GREY1
    if fmt == GS8:
        return GREY8
    if fmt == RGB565:
        return RGB24
    raise ValueError("framebuf format %r not supported" % (fmt,))


def save_framebuf(
    target, src, width, height, fmt, stride=None, swap=False, invert=False, compress=None
):
    """Write a framebuf (buffer or row function, see framebuf_rows) as PNG to a path or stream."""
    kind = kind_of(fmt)
    rows = framebuf_rows(src, width, height, fmt, stride, swap, invert)
    if isinstance(target, str):
        with open(target, "wb") as f:
            write(f, width, height, rows, kind, compress)
    else:
        write(target, width, height, rows, kind, compress)
