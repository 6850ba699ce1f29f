"""Canonical byte-level primitives: varints, length-prefixed strings, bounded reader."""

from hubi_core.errors import BadValue, Oversize, Truncated

MAX_U64 = (1 << 64) - 1


def varint(n):
    """Unsigned LEB128, minimal length (canonical)."""
    if n < 0 or n > MAX_U64:
        raise BadValue("varint out of range: %d" % n)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class Reader:
    """Reads canonical fields from a buffer; every error names the byte offset."""

    __slots__ = ("buf", "pos", "end", "what")

    def __init__(self, buf, what="object", start=0, end=None):
        self.buf = buf
        self.pos = start
        self.end = len(buf) if end is None else end
        self.what = what

    def remaining(self):
        return self.end - self.pos

    def take(self, n, name):
        if n > self.end - self.pos:
            raise Truncated(
                "%s truncated: %s needs %d bytes at offset %d, %d left"
                % (self.what, name, n, self.pos, self.end - self.pos)
            )
        b = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return b

    def u8(self, name):
        return self.take(1, name)[0]

    def u32(self, name):
        return int.from_bytes(self.take(4, name), "big")

    def varint(self, name, limit=MAX_U64):
        start = self.pos
        n = 0
        shift = 0
        while True:
            b = self.u8(name)
            if shift == 63 and b > 1:
                raise BadValue(
                    "%s: %s varint overflows 64 bits at offset %d" % (self.what, name, start)
                )
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                if b == 0 and shift:
                    raise BadValue(
                        "%s: %s varint not minimal at offset %d" % (self.what, name, start)
                    )
                break
            shift += 7
            if shift > 63:
                raise BadValue("%s: %s varint too long at offset %d" % (self.what, name, start))
        if n > limit:
            raise Oversize(
                "%s: %s is %d, over the limit %d (offset %d)" % (self.what, name, n, limit, start)
            )
        return n


# Bidirectional controls reorder what a screen shows ("Trojan Source"): a purpose could read
# differently on the token, the merchant's terminal and a statement. ALM, LRM, RLM, LRE..RLO,
# LRI..PDI.
_BIDI = (
    0x061C,
    0x200E,
    0x200F,
    0x202A,
    0x202B,
    0x202C,
    0x202D,
    0x202E,
    0x2066,
    0x2067,
    0x2068,
    0x2069,
)


def utf8_text(raw, name, limit):
    """Validate a text field: UTF-8, at most `limit` bytes, no control characters (C0, DEL and
    C1: a terminal may act on them) and no bidirectional controls."""
    if len(raw) > limit:
        raise Oversize("%s is %d bytes, over the limit %d" % (name, len(raw), limit))
    try:
        text = raw.decode()
    except (UnicodeError, ValueError):
        raise BadValue("%s is not valid UTF-8" % name) from None
    for ch in text:
        o = ord(ch)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            raise BadValue("%s contains a control character (U+%04X)" % (name, o))
        if o in _BIDI:
            raise BadValue("%s contains a bidirectional control (U+%04X)" % (name, o))
    return text
