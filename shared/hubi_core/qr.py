"""QR code encoder for the token (ISO/IEC 18004 model 2), MicroPython and CPython.

Byte mode only, versions 1-20, error-correction levels L, M, Q and H (the token uses L and M),
Reed-Solomon over GF(256) with the QR polynomial 0x11D, format and version information, and
the mask chosen from all 8 with the standard penalty rules N1-N4 (ISO/IEC 18004:2015 7.8.3).

    code = encode(b"...", level="M")        # smallest version that holds the bytes
    code.version, code.size, code.get(x, y)   # True = dark module
    draw(code, fb, 0, 0, 3)                   # fb: anything with fill_rect(x, y, w, h, c)

How it stays small and quick on a microcontroller:
- the symbol is built in two bit planes (dark modules, function-pattern modules), each
  ``size`` rows of ``(size + 7) // 8`` bytes: 2 x 1261 bytes for version 20, no large buffer;
- the 8 masks are scored on rows held as integers (one bit per module): every penalty rule is a
  handful of shifts, ANDs and bit counts per row instead of a loop per module, and columns are
  scored bit-sliced (a window of 5 or 11 row integers scores every column at once), so no
  transposed copy is made. N1 counts windows of 5 equal modules, N2 2x2 blocks, N3 the
  1:1:3:1:1 finder-like pattern with 4 light modules on either side (modules outside the
  symbol count as light, as ZXing counts), N4 the dark share in 5 % steps. A mask's scoring
  stops as soon as it reaches the best score so far; ties go to the lowest mask number;
- the result (``QrCode.bits``) is the dark plane: MSB = leftmost module, the same layout as a
  MicroPython ``framebuf.MONO_HLSB`` buffer and a 1-bit PNG row.

``encode(..., mask=k)`` skips the mask evaluation (any mask is readable; the penalty only picks
the one that is easiest to scan). Errors: payloads that do not fit raise
``hubi_core.errors.Oversize``; bad arguments raise ``ValueError``.
"""

from hubi_core.errors import Oversize

MAX_VERSION = 20
LEVELS = ("L", "M", "Q", "H")

# ISO/IEC 18004 Table 9, versions 0 (unused) .. 20: EC codewords per block, number of blocks.
_ECC = {
    "L": b"\x00\x07\x0a\x0f\x14\x1a\x12\x14\x18\x1e\x12\x14\x18\x1a\x1e\x16\x18\x1c\x1e\x1c\x1c",
    "M": b"\x00\x0a\x10\x1a\x12\x18\x10\x12\x16\x16\x1a\x1e\x16\x16\x18\x18\x1c\x1c\x1a\x1a\x1a",
    "Q": b"\x00\x0d\x16\x12\x1a\x12\x18\x12\x16\x14\x18\x1c\x1a\x18\x14\x1e\x18\x1c\x1c\x1a\x1e",
    "H": b"\x00\x11\x1c\x16\x10\x16\x1c\x1a\x1a\x18\x1c\x18\x1c\x16\x18\x18\x1e\x1c\x1c\x1a\x1c",
}
_BLOCKS = {
    "L": b"\x00\x01\x01\x01\x01\x01\x02\x02\x02\x02\x04\x04\x04\x04\x04\x06\x06\x06\x06\x07\x08",
    "M": b"\x00\x01\x01\x01\x02\x02\x04\x04\x04\x05\x05\x05\x08\x09\x09\x0a\x0a\x0b\x0d\x0e\x10",
    "Q": b"\x00\x01\x01\x02\x02\x04\x04\x06\x06\x08\x08\x08\x0a\x0c\x10\x0c\x11\x10\x12\x15\x14",
    "H": b"\x00\x01\x01\x02\x04\x04\x04\x05\x06\x08\x08\x0b\x0b\x10\x10\x12\x10\x13\x15\x19\x19",
}
_FORMAT_LEVEL = {"L": 1, "M": 0, "Q": 3, "H": 2}

# GF(256) exp/log tables; _EXP is doubled so exp[a + b] needs no "mod 255".
_EXP = bytearray(512)
_LOG = bytearray(256)
_x = 1
for _i in range(255):
    _EXP[_i] = _x
    _EXP[_i + 255] = _x
    _LOG[_x] = _i
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D
del _x, _i


def _check_level(level):
    if level not in _ECC:
        raise ValueError("level must be one of L, M, Q, H, not %r" % (level,))


def _raw_modules(ver):
    """Modules left for data + EC after all function patterns (includes remainder bits)."""
    r = (16 * ver + 128) * ver + 64
    if ver >= 2:
        na = ver // 7 + 2
        r -= (25 * na - 10) * na - 55
        if ver >= 7:
            r -= 36
    return r


def _data_codewords(ver, level):
    return _raw_modules(ver) // 8 - _ECC[level][ver] * _BLOCKS[level][ver]


def capacity(version, level="M"):
    """Bytes a byte-mode symbol of this version and level holds."""
    _check_level(level)
    if not 1 <= version <= MAX_VERSION:
        raise ValueError("version must be 1..%d, not %r" % (MAX_VERSION, version))
    # mode (4 bits) + count (8 bits up to v9, 16 from v10) + terminator fit in 2 or 3 bytes
    return _data_codewords(version, level) - (2 if version < 10 else 3)


def min_version(nbytes, level="M"):
    """Smallest version that holds nbytes at this level, or None if more than version 20 holds."""
    _check_level(level)
    for v in range(1, MAX_VERSION + 1):
        if capacity(v, level) >= nbytes:
            return v
    return None


def size_of(version):
    """Modules per side of a symbol of this version (without quiet zone)."""
    return 17 + 4 * version


def _align_positions(ver):
    if ver == 1:
        return ()
    na = ver // 7 + 2
    step = (ver * 4 + na * 2 + 1) // (na * 2 - 2) * 2
    last = ver * 4 + 10
    return [6] + [last - i * step for i in range(na - 2, -1, -1)]


def _format_bits(level, mask):
    data = (_FORMAT_LEVEL[level] << 3) | mask
    rem = data
    for _ in range(10):
        rem = (rem << 1) ^ ((rem >> 9) * 0x537)
    return ((data << 10) | rem) ^ 0x5412


def _format_cells(n):
    """(x, y) of format bit i for i in 0..14, both copies: 30 cells, bit index = position % 15."""
    a = [(8, i) for i in range(6)] + [(8, 7), (8, 8), (7, 8)] + [(14 - i, 8) for i in range(9, 15)]
    b = [(n - 1 - i, 8) for i in range(8)] + [(8, n - 15 + i) for i in range(8, 15)]
    return a + b


class QrCode:
    """An encoded symbol: ``bits`` holds ``size`` rows of ``stride`` bytes, MSB first, 1 = dark."""

    __slots__ = ("version", "level", "mask", "size", "stride", "bits")

    def __init__(self, version, level, mask, bits):
        self.version = version
        self.level = level
        self.mask = mask
        self.size = size_of(version)
        self.stride = (self.size + 7) >> 3
        self.bits = bits

    def get(self, x, y):
        """True if the module at column x, row y is dark (out-of-range coordinates: light)."""
        n = self.size
        if x < 0 or y < 0 or x >= n or y >= n:
            return False
        return (self.bits[y * self.stride + (x >> 3)] >> (7 - (x & 7))) & 1 == 1

    def text(self, quiet=1):
        """The symbol as text, two characters per module ('##' dark): for logs and tests."""
        lines = []
        for y in range(-quiet, self.size + quiet):
            lines.append(
                "".join("##" if self.get(x, y) else "  " for x in range(-quiet, self.size + quiet))
            )
        return "\n".join(lines)

    def __repr__(self):
        return "<QrCode v%d-%s mask %d %dx%d>" % (
            self.version,
            self.level,
            self.mask,
            self.size,
            self.size,
        )


# ---------------------------------------------------------------------------- codewords


def _rs_divisor(degree):
    """Generator polynomial coefficients (x^degree term dropped), highest first, as logs."""
    poly = bytearray(degree)
    poly[degree - 1] = 1
    root = 1
    for _ in range(degree):
        lr = _LOG[root]
        for j in range(degree):
            c = poly[j]
            c = _EXP[_LOG[c] + lr] if c else 0
            if j + 1 < degree:
                c ^= poly[j + 1]
            poly[j] = c
        root = _EXP[lr + 1]
    for j in range(degree):
        poly[j] = _LOG[poly[j]]  # every coefficient of a QR generator is non-zero
    return poly


def _rs_remainder(data, off, n, glog, ecl):
    """EC codewords of data[off:off + n] (polynomial long division, in place in a scratch)."""
    w = bytearray(n + ecl)
    w[:n] = data[off : off + n]
    exp = _EXP
    log = _LOG
    for i in range(n):
        c = w[i]
        if c:
            lc = log[c]
            k = i + 1
            for j in range(ecl):
                w[k + j] ^= exp[lc + glog[j]]
    return w[n:]


def _codewords(data, ver, level):
    """Data codewords (mode, count, bytes, terminator, pad) + EC, interleaved per Table 9."""
    ndata = _data_codewords(ver, level)
    nd = len(data)
    buf = bytearray(ndata)
    if ver < 10:
        buf[0] = 0x40 | (nd >> 4)
        k = 1
    else:
        buf[0] = 0x40 | (nd >> 12)
        buf[1] = (nd >> 4) & 0xFF
        k = 2
    buf[k] = (nd & 15) << 4
    for b in data:  # byte mode after a 12- or 20-bit header: every byte straddles two codewords
        buf[k] |= b >> 4
        k += 1
        buf[k] = (b & 15) << 4
    # the low nibble of buf[k] is the 4-bit terminator; then pad codewords
    pad = 0xEC
    for i in range(k + 1, ndata):
        buf[i] = pad
        pad ^= 0xEC ^ 0x11

    nblocks = _BLOCKS[level][ver]
    ecl = _ECC[level][ver]
    total = _raw_modules(ver) // 8
    nshort = nblocks - total % nblocks
    sdata = total // nblocks - ecl  # data codewords in a short block
    glog = _rs_divisor(ecl)
    out = bytearray(total)
    off = 0
    for b in range(nblocks):
        dn = sdata + (1 if b >= nshort else 0)
        for i in range(sdata):
            out[i * nblocks + b] = buf[off + i]
        if dn > sdata:
            out[sdata * nblocks + b - nshort] = buf[off + sdata]
        ec = _rs_remainder(buf, off, dn, glog, ecl)
        for j in range(ecl):
            out[ndata + j * nblocks + b] = ec[j]
        off += dn
    return out


# ---------------------------------------------------------------------------- matrix
# The symbol lives in two bit planes of n rows x stride bytes (MSB = leftmost module): D holds
# the dark modules, F marks function-pattern modules (finder, separator, timing, alignment,
# format, version). The mask is applied where F is 0. D becomes QrCode.bits.


def _put(D, F, stride, x, y, dark):
    i = y * stride + (x >> 3)
    b = 0x80 >> (x & 7)
    F[i] |= b
    if dark:
        D[i] |= b
    else:
        D[i] &= 0xFF ^ b


def _function_patterns(D, F, n, ver):
    """Draw finder, separator, timing, alignment, version info; reserve format cells."""
    st = (n + 7) >> 3
    for i in range(n):
        _put(D, F, st, 6, i, i % 2 == 0)  # timing patterns: dark on even positions
        _put(D, F, st, i, 6, i % 2 == 0)
    for cx, cy in ((3, 3), (n - 4, 3), (3, n - 4)):
        for dy in range(-4, 5):
            y = cy + dy
            if y < 0 or y >= n:
                continue
            for dx in range(-4, 5):
                x = cx + dx
                if 0 <= x < n:
                    d = max(abs(dx), abs(dy))
                    _put(D, F, st, x, y, d != 2 and d != 4)
    pos = _align_positions(ver)
    na = len(pos)
    for i in range(na):
        for j in range(na):
            if (i == 0 and j == 0) or (i == 0 and j == na - 1) or (i == na - 1 and j == 0):
                continue
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    _put(D, F, st, pos[i] + dx, pos[j] + dy, max(abs(dx), abs(dy)) != 1)
    for x, y in _format_cells(n):
        _put(D, F, st, x, y, False)  # format bits are drawn per mask
    _put(D, F, st, 8, n - 8, True)  # the dark module
    if ver >= 7:
        rem = ver
        for _ in range(12):
            rem = (rem << 1) ^ ((rem >> 11) * 0x1F25)
        bits = (ver << 12) | rem
        for i in range(18):
            d = (bits >> i) & 1
            a = n - 11 + i % 3
            b = i // 3
            _put(D, F, st, a, b, d)
            _put(D, F, st, b, a, d)


def _place_data(D, F, n, cw):
    """Zig-zag the codeword bits into the non-function modules (remainder bits stay light)."""
    st = (n + 7) >> 3
    nbits = len(cw) * 8
    i = 0
    right = n - 1
    while right >= 1:
        if right == 6:
            right = 5
        upward = ((right + 1) & 2) == 0
        ia = right >> 3
        ba = 0x80 >> (right & 7)
        ib = (right - 1) >> 3
        bb = 0x80 >> ((right - 1) & 7)
        for vert in range(n):
            o = (n - 1 - vert if upward else vert) * st
            if not F[o + ia] & ba:
                if i < nbits and (cw[i >> 3] >> (7 - (i & 7))) & 1:
                    D[o + ia] |= ba
                i += 1
            if not F[o + ib] & bb:
                if i < nbits and (cw[i >> 3] >> (7 - (i & 7))) & 1:
                    D[o + ib] |= bb
                i += 1
        right -= 2


def _mask_bit(k, r, c):
    if k == 0:
        return (r + c) % 2 == 0
    if k == 1:
        return r % 2 == 0
    if k == 2:
        return c % 3 == 0
    if k == 3:
        return (r + c) % 3 == 0
    if k == 4:
        return (r // 2 + c // 3) % 2 == 0
    if k == 5:
        return (r * c) % 2 + (r * c) % 3 == 0
    if k == 6:
        return ((r * c) % 2 + (r * c) % 3) % 2 == 0
    return ((r + c) % 2 + (r * c) % 3) % 2 == 0


def _mask_rows(k, n):
    """The 12 distinct rows of mask k as n-bit ints (bit n-1-c = column c): row r uses entry
    r % 12. Every mask repeats every 12 rows and every 6 columns."""
    out = []
    for r in range(12):
        unit = 0
        for c in range(6):
            unit = (unit << 1) | (1 if _mask_bit(k, r, c) else 0)
        x = unit
        width = 6
        while width < n:
            x = (x << width) | x
            width *= 2
        out.append(x >> (width - n))
    return out


def _overlay(fmt, n):
    """Format bits of one mask as {row: bits to OR into that row}."""
    over = {}
    cells = _format_cells(n)
    for i in range(30):
        if (fmt >> (i % 15)) & 1:
            x, y = cells[i]
            over[y] = over.get(y, 0) | (1 << (n - 1 - x))
    return over


def _popcount(x):
    return bin(x).count("1")


def _rows(D, F, n, k, fmt):
    """Yield the rows of the symbol with mask k and its format bits, as n-bit ints."""
    st = (n + 7) >> 3
    pad = st * 8 - n
    full = (1 << n) - 1
    pats = _mask_rows(k, n) if k is not None else None
    over = _overlay(fmt, n) if k is not None else {}
    o = 0
    for r in range(n):
        x = int.from_bytes(D[o : o + st], "big") >> pad
        if pats is not None:
            x ^= pats[r % 12] & (full ^ (int.from_bytes(F[o : o + st], "big") >> pad))
            if r in over:
                x |= over[r]
        o += st
        yield x


def _score(rows, n, bound):
    """Penalty N1 + N2 + N3 + N4 of the symbol whose rows (n-bit ints) the iterator yields;
    stops early once the sum reaches bound (then returns a value >= bound).

    N1: 3 + (L - 5) per run of L >= 5 equal modules in a row or column; counted as windows of
    5 equal modules (L - 4 per run) + 2 per run. N2: 3 per 2x2 block of one colour. N3: 40 per
    1011101 with 4 light modules before or after it, modules outside the symbol being light
    (as ZXing counts). N4: 10 per full 5 % that the dark share is away from 50 %.
    Columns are scored bit-sliced: an int per row, one bit per column, so a window of rows
    (5 for N1, 11 for N3) scores every column at once.
    """
    m1 = (1 << (n - 1)) - 1
    full = (1 << n) - 1
    wide = (1 << (n + 8)) - 1
    p = 0
    dark = 0
    # Vertical state: the last 15 padded rows (4 light rows above and below the symbol) and
    # their light masks, oldest first, and the last 4 "row r equals row r + 1" masks.
    win = [0] * 15
    lite = [full] * 15
    eq = [0, 0, 0, 0]
    tprev = 0
    for j in range(n + 4):
        if j < n:
            x = next(rows)
            dark += _popcount(x)
            # N1 across: s bit i = modules i and i+1 equal; t bit i = modules i..i+4 equal
            s = ((x ^ (x >> 1)) & m1) ^ m1
            t = s & (s >> 1)
            t &= t >> 2
            if t:
                p += _popcount(t) + 2 * _popcount(t ^ (t & (t >> 1)))
            # N3 across, with 4 light modules of quiet zone on each side
            y = x << 4
            z = y ^ wide
            c = y & (z >> 1) & (y >> 2) & (y >> 3) & (y >> 4) & (z >> 5) & (y >> 6)
            if c:
                z &= z >> 1
                z &= z >> 2  # bit i: 4 light modules from i
                p += 40 * _popcount(c & ((z >> 7) | (z << 4)))
            if j:
                e = (x ^ win[14]) ^ full  # row j - 1 equals row j, per column
                p += 3 * _popcount(e & (e >> 1) & s)  # N2 (s: pairs equal within row j)
                eq.pop(0)
                eq.append(e)
                if j >= 4:  # N1 down: rows j - 4 .. j equal
                    t = eq[0] & eq[1] & eq[2] & eq[3]
                    if t:
                        p += _popcount(t) + 2 * _popcount(t ^ (t & tprev))
                    tprev = t
        else:
            x = 0  # light rows below the symbol
        win.pop(0)
        win.append(x)
        lite.pop(0)
        lite.append(x ^ full)
        # N3 down: a core 1011101 on window rows 4..10, light rows 0..3 or 11..14
        if j >= 10:
            w = win
            c = w[4] & w[6] & w[7] & w[8] & w[10]
            if c:
                v = lite
                c &= v[5] & v[9]
                if c:
                    c &= (v[0] & v[1] & v[2] & v[3]) | (v[11] & v[12] & v[13] & v[14])
                    p += 40 * _popcount(c)
        if p >= bound:
            return p
    total = n * n
    return p + 10 * (abs(dark * 20 - total * 10) // total)


def penalty(code):
    """Penalty score (ISO/IEC 18004 7.8.3: N1 + N2 + N3 + N4) of a finished symbol."""
    return _score(_rows(code.bits, None, code.size, None, 0), code.size, 1 << 30)


def encode(data, level="M", version=None, mask=None):
    """Encode bytes (str is UTF-8 encoded) as a byte-mode QR code.

    version: None picks the smallest that fits; an explicit version must hold the data.
    mask: None evaluates all 8 masks with the penalty rules; 0..7 forces one.
    """
    if isinstance(data, str):
        data = data.encode()
    _check_level(level)
    nd = len(data)
    if version is None:
        version = min_version(nd, level)
        if version is None:
            raise Oversize(
                "QR payload: %d bytes exceed version %d-%s (%d bytes)"
                % (nd, MAX_VERSION, level, capacity(MAX_VERSION, level))
            )
    else:
        if not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
            raise ValueError("version must be 1..%d, not %r" % (MAX_VERSION, version))
        if nd > capacity(version, level):
            raise Oversize(
                "QR payload: %d bytes exceed version %d-%s (%d bytes)"
                % (nd, version, level, capacity(version, level))
            )
    if mask is not None and (not isinstance(mask, int) or not 0 <= mask <= 7):
        raise ValueError("mask must be 0..7 or None, not %r" % (mask,))

    n = size_of(version)
    st = (n + 7) >> 3
    D = bytearray(n * st)
    F = bytearray(n * st)
    _function_patterns(D, F, n, version)
    _place_data(D, F, n, _codewords(data, version, level))
    if mask is None:
        best = 1 << 30
        for k in range(8):
            p = _score(_rows(D, F, n, k, _format_bits(level, k)), n, best)
            if p < best:
                best = p
                mask = k
    pad = st * 8 - n
    o = 0
    for x in _rows(D, F, n, mask, _format_bits(level, mask)):
        D[o : o + st] = (x << pad).to_bytes(st, "big")  # row o was read before: safe in place
        o += st
    return QrCode(version, level, mask, D)


# ---------------------------------------------------------------------------- output


def draw(code, target, x, y, scale, quiet=4, dark=0, light=0xFFFF):
    """Paint code into target (anything with fill_rect(x, y, w, h, colour)).

    The symbol with its quiet zone covers (size + 2 * quiet) * scale pixels from (x, y).
    light=None leaves the background alone (then the caller must provide a light quiet zone).
    The default colours suit framebuf MONO_* (colour & 1), GS8 and RGB565 white.
    Dark modules are painted as horizontal runs: one fill_rect per run, not per module.
    """
    n = code.size
    if light is not None:
        side = (n + 2 * quiet) * scale
        target.fill_rect(x, y, side, side, light)
    bits = code.bits
    stride = code.stride
    x0 = x + quiet * scale
    y0 = y + quiet * scale
    for r in range(n):
        base = r * stride
        run = -1
        for c in range(n + 1):
            on = c < n and (bits[base + (c >> 3)] >> (7 - (c & 7))) & 1
            if on:
                if run < 0:
                    run = c
            elif run >= 0:
                target.fill_rect(x0 + run * scale, y0 + r * scale, (c - run) * scale, scale, dark)
                run = -1


def bitmap_rows(code, scale=1, quiet=4):
    """Yield the symbol as 1-bit rows (MSB = leftmost pixel, 1 = light), quiet zone included.

    Width = height = (size + 2 * quiet) * scale pixels; every row is the same reused bytearray
    of (width + 7) // 8 bytes. This is the MONO_HLSB framebuf layout and the 1-bit greyscale
    PNG row format: ``png.write(f, w, w, bitmap_rows(code, 4), png.GREY1)``.
    """
    n = code.size
    width = (n + 2 * quiet) * scale
    rb = (width + 7) >> 3
    white = bytearray(b"\xff" * rb)
    tail = width & 7
    if tail:
        white[rb - 1] = (0xFF << (8 - tail)) & 0xFF
    row = bytearray(rb)
    for _ in range(quiet * scale):
        yield white
    bits = code.bits
    stride = code.stride
    for r in range(n):
        row[:] = white
        base = r * stride
        px = quiet * scale
        for c in range(n):
            if (bits[base + (c >> 3)] >> (7 - (c & 7))) & 1:
                for p in range(px, px + scale):
                    row[p >> 3] &= 0xFF ^ (0x80 >> (p & 7))
            px += scale
        for _ in range(scale):
            yield row
    for _ in range(quiet * scale):
        yield white
