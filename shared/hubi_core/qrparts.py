"""Animated multi-part QR: split an object into frames, reassemble them in any order.

A payment note (~420 bytes) fits one QR, but at level M that is version 16 (81 modules),
2 px per module on a 240-px screen. The token then shows it as a loop of small frames instead.

Frame contents
--------------
A single-QR frame carries the raw object bytes, no header. A part frame is::

    offset size
    0      1    magic 0xA5: "hubi parts, format 1". hubi objects start with their suite
                byte (0x01), so a first byte of 0xA5 is never a raw object.
    1      4    message id: SHA-256(message)[:4]
    5      1    index: 0 .. k-1 data parts, k .. k+g-1 parity parts
    6      1    k, number of data parts (1..255)
    7      1    g, number of parity parts (0..k, k + g <= 256)
    8      2    total message length (big-endian, 1..65535)
    10     ...  body
    -4     4    CRC-32 of every byte before it (big-endian)

The message is cut into k chunks of c = ceil(total / k) bytes (the last one shorter). Data
part i carries chunk i. Parity part k + j carries the XOR of the data chunks i with
i % g == j (the last chunk zero-padded to c). So data parts are interleaved over g groups and
the collector recovers one missing data part per group: any single lost frame with g = 1, and
up to g lost frames when they are consecutive in the loop (consecutive data parts fall into
different groups). Default g: one parity part per 5 data parts (at least 1).

Each part is self-checking (CRC-32 and field consistency); the message as a whole is checked
against its id (SHA-256) when it is reassembled. Errors are ``PartError`` (a
``hubi_core.errors.CodecError``) subclasses naming the field: ``BadPart`` for a malformed
frame, ``MixedMessages`` for a frame of another message, ``ConflictingPart`` for a frame that
contradicts an earlier one, ``Incomplete`` when asking for the message too early.

Screen plan
-----------
``plan(nbytes, screen_px, level)`` decides single QR or parts by this rule, with the 4-module
quiet zone on each side, for scale s in (3, 2) px per module, in that order:
1. single QR if the smallest version v that holds the object has (size(v) + 8) * s <= screen_px;
2. otherwise parts, each the largest version <= max_frame_version (7) with
   (size + 8) * s <= screen_px, then lowered to the smallest version that still needs the same
   number of parts (fewer, larger modules per frame for the same frame count).
Frames are drawn at floor(screen_px / (size + 8)) px per module. 3 px first because a 2-px
module on a 1.3-2" TFT (0.1 mm pixels) is hard for phone cameras; version 7 (45 modules) at
4 px per module fills 212 of 240 px. screen_px is the short side of the screen.
"""

import binascii
import hashlib
import struct

from hubi_core import qr
from hubi_core.errors import CodecError

MAGIC = 0xA5
HEADER = 10
OVERHEAD = HEADER + 4  # header + CRC-32
MAX_TOTAL = 0xFFFF
MAX_PARTS = 256


class PartError(CodecError):
    """A multi-part QR frame or set of frames that cannot be used."""


class BadPart(PartError):
    """A frame that is not a valid part (magic, length, CRC, counts, body size)."""


class MixedMessages(PartError):
    """A frame of a different message than the one being collected."""


class ConflictingPart(PartError):
    """A frame with the same message id as earlier ones but contradicting them."""


class Incomplete(PartError):
    """The message was asked for before enough frames arrived."""


def message_id(message):
    return hashlib.sha256(message).digest()[:4]


def _hex(b):
    return binascii.hexlify(b).decode()


def _crc(data):
    return binascii.crc32(data) & 0xFFFFFFFF


def default_parity(k):
    """Parity parts for k data parts: one per 5 data parts, at least one."""
    return (k + 4) // 5


def _chunk_size(total, k):
    return (total + k - 1) // k


def _pack(mid, index, k, g, total, body):
    head = bytes((MAGIC,)) + mid + bytes((index, k, g)) + struct.pack(">H", total)
    data = head + bytes(body)
    return data + struct.pack(">I", _crc(data))


def split(message, version=7, level="M", parity=None):
    """Cut message into part payloads that each fit a QR of this version and level.

    Returns k data parts followed by g parity parts (bytes each). parity: None = default
    (one per 5 data parts), or a number 0..k.
    """
    message = bytes(message)
    total = len(message)
    if total < 1:
        raise BadPart("message: empty")
    if total > MAX_TOTAL:
        raise BadPart("message: %d bytes, parts carry at most %d" % (total, MAX_TOTAL))
    room = qr.capacity(version, level) - OVERHEAD
    if room < 1:
        raise ValueError("version %d-%s holds no part body" % (version, level))
    k = (total + room - 1) // room
    g = default_parity(k) if parity is None else parity
    if not 0 <= g <= k or k + g > MAX_PARTS:
        raise BadPart(
            "parts: %d data + %d parity, at most %d in all and parity <= data" % (k, g, MAX_PARTS)
        )
    c = _chunk_size(total, k)
    mid = message_id(message)
    out = []
    for i in range(k):
        out.append(_pack(mid, i, k, g, total, message[i * c : (i + 1) * c]))
    for j in range(g):
        acc = bytearray(c)
        for i in range(j, k, g):
            chunk = message[i * c : (i + 1) * c]
            for q in range(len(chunk)):
                acc[q] ^= chunk[q]
        out.append(_pack(mid, k + j, k, g, total, acc))
    return out


class Part:
    """A parsed part frame."""

    __slots__ = ("mid", "index", "k", "g", "total", "body")

    def __init__(self, mid, index, k, g, total, body):
        self.mid = mid
        self.index = index
        self.k = k
        self.g = g
        self.total = total
        self.body = body

    @property
    def parity(self):
        return self.index >= self.k

    def __repr__(self):
        return "<Part %s %d/%d+%d of %d bytes>" % (
            _hex(self.mid),
            self.index,
            self.k,
            self.g,
            self.total,
        )


def is_part(data):
    """True if data starts like a part frame (else it is a raw single object)."""
    return len(data) > 0 and data[0] == MAGIC


def parse(data):
    """Check and parse one part frame; raises BadPart naming the field or offset."""
    data = bytes(data)
    n = len(data)
    if n == 0:
        raise BadPart("part: empty")
    if data[0] != MAGIC:
        raise BadPart("part offset 0: magic 0x%02x, expected 0x%02x" % (data[0], MAGIC))
    if n < OVERHEAD + 1:
        raise BadPart("part: %d bytes, shorter than header + 1 + CRC (%d)" % (n, OVERHEAD + 1))
    crc = struct.unpack(">I", data[n - 4 :])[0]
    if crc != _crc(data[: n - 4]):
        raise BadPart("part offset %d: CRC-32 mismatch" % (n - 4))
    mid = data[1:5]
    index = data[5]
    k = data[6]
    g = data[7]
    total = struct.unpack(">H", data[8:10])[0]
    body = data[HEADER : n - 4]
    if k < 1:
        raise BadPart("part offset 6: zero data parts")
    if g > k or k + g > MAX_PARTS:
        raise BadPart("part offset 7: %d parity parts for %d data parts" % (g, k))
    if index >= k + g:
        raise BadPart("part offset 5: index %d >= %d parts" % (index, k + g))
    if total < k:
        raise BadPart("part offset 8: total %d bytes < %d data parts" % (total, k))
    c = _chunk_size(total, k)
    if (k - 1) * c >= total:
        raise BadPart("part offset 8: %d bytes cannot be cut into %d parts" % (total, k))
    want = total - (k - 1) * c if index == k - 1 else c
    if len(body) != want:
        raise BadPart("part %d body: %d bytes, expected %d" % (index, len(body), want))
    return Part(mid, index, k, g, total, body)


MAX_LAYOUTS = 4  # part counts (k, g, total) kept for one message id
MAX_COPIES = 4  # different bodies kept for one part index
MAX_TRIES = 256  # reassemblies tried per check of the copies


class _Layout:
    """The parts seen for one (k, g, total) of a message id: different bodies of an index are
    kept (first seen first, MAX_COPIES at most), so a forged frame in view cannot shut out the
    genuine one; once every choice of them failed the id, a new body replaces the oldest."""

    __slots__ = ("k", "g", "total", "copies", "count", "tried")

    def __init__(self, k, g, total):
        self.k = k
        self.g = g
        self.total = total
        self.copies = {}  # index -> [body, ...]
        self.count = 0  # bodies taken in (a replaced one too: the copies changed)
        self.tried = 0  # bodies kept when the copies were last tried against the id

    def progress(self):
        if not self.g:
            return (len([i for i in self.copies if i < self.k]), self.k)
        have = 0
        for j in range(self.g):
            size = 0
            present = 0
            for i in range(j, self.k, self.g):
                size += 1
                if i in self.copies:
                    present += 1
            if present == size - 1 and (self.k + j) in self.copies:
                present = size
            have += present
        return (have, self.k)

    def whole(self):
        have, need = self.progress()
        return have == need

    def missing(self):
        out = []
        for i in range(self.k):
            if i in self.copies:
                continue
            if self.g:
                j = i % self.g
                others = [q for q in range(j, self.k, self.g) if q != i]
                if (self.k + j) in self.copies and all(q in self.copies for q in others):
                    continue
            out.append(i)
        return out

    def picks(self, limit):
        """Up to `limit` choices of one body per index, the first-seen bodies first."""
        many = [i for i in sorted(self.copies) if len(self.copies[i]) > 1]
        at = [0] * len(many)
        for _ in range(limit):
            pick = {i: c[0] for i, c in self.copies.items()}
            for n, i in enumerate(many):
                pick[i] = self.copies[i][at[n]]
            yield pick
            n = 0  # next combination (odometer)
            while n < len(many):
                at[n] += 1
                if at[n] < len(self.copies[many[n]]):
                    break
                at[n] = 0
                n += 1
            if n == len(many):
                return

    def rebuild(self, pick):
        k = self.k
        c = _chunk_size(self.total, k)
        out = bytearray(self.total)
        for i in range(k):
            body = pick.get(i)
            if body is None:
                j = i % self.g
                acc = bytearray(pick[k + j])
                for q in range(j, k, self.g):
                    if q != i:
                        other = pick[q]
                        for t in range(len(other)):
                            acc[t] ^= other[t]
                body = acc[: (self.total - (k - 1) * c) if i == k - 1 else c]
            out[i * c : i * c + len(body)] = body
        return bytes(out)


def _rank(lay):
    have, need = lay.progress()
    return (have < need, have)


class Collector:
    """Reassemble an object from QR payloads seen in any order.

    ``add(payload)`` takes a raw single-QR object or a part frame, returns progress
    (have, need) in data parts (a raw object counts as (1, 1)); repeated frames are harmless.
    ``complete`` tells when ``message()`` can rebuild the object and it hashes to its id.

    A frame that contradicts earlier ones (another body for an index, other part counts for
    the id) raises ConflictingPart but is kept, within bounds: a forged frame kept in the
    camera's view must not shut out the genuine one. The copies are tried against the message
    id when the parts cover the message, so one bad frame does not cost the good ones; when
    every choice failed, a new copy replaces the oldest, and a new layout a failed one (four
    forged copies of one part in view first must not crowd out the genuine fifth; forged copies
    of several parts kept in view still can).
    """

    def __init__(self):
        self.mid = None
        self.layouts = []  # _Layout, first seen first
        self.raw = None
        self._found = None  # the verified message, once one is found
        self._good = None  # the layout it was rebuilt from

    def _main(self):
        """The layout progress is reported for: the one that checked out, else the fullest one
        not yet whole (a whole one whose copies do not check out waits for another copy)."""
        if self._good is not None:
            return self._good
        best = None
        for lay in self.layouts:
            if best is None or _rank(lay) > _rank(best):
                best = lay
        return best

    @property
    def k(self):
        lay = self._main()
        return lay.k if lay else 0

    @property
    def g(self):
        lay = self._main()
        return lay.g if lay else 0

    @property
    def total(self):
        lay = self._main()
        return lay.total if lay else 0

    @property
    def parts(self):
        """index -> first body seen, of the reported layout."""
        lay = self._main()
        return {i: c[0] for i, c in lay.copies.items()} if lay else {}

    def _desc(self):
        if self.raw is not None:
            return "raw object %s" % _hex(message_id(self.raw))
        return "message %s" % _hex(self.mid)

    def add(self, payload):
        payload = bytes(payload)
        if not is_part(payload):
            if not payload:
                raise BadPart("payload: empty")
            mid = message_id(payload)
            if self.raw is not None:
                if payload != self.raw:
                    raise MixedMessages(
                        "raw object %s while collecting %s" % (_hex(mid), self._desc())
                    )
            elif self.mid is not None:
                # it hashes to the id itself: the frames' counts (maybe forged) do not matter
                if mid != self.mid:
                    raise MixedMessages(
                        "raw object %s while collecting %s" % (_hex(mid), self._desc())
                    )
                self.raw = payload
            else:
                self.raw = payload
            return self.progress
        p = parse(payload)
        if self.raw is not None and p.mid != message_id(self.raw):
            raise MixedMessages(
                "part %d of message %s while collecting %s" % (p.index, _hex(p.mid), self._desc())
            )
        if self.mid is None:
            if self.raw is not None:
                return self.progress  # same object, already whole
            self.mid = p.mid
        elif p.mid != self.mid:
            raise MixedMessages(
                "part %d of message %s while collecting %s" % (p.index, _hex(p.mid), self._desc())
            )
        self._keep(p)
        return self.progress

    def _keep(self, p):
        """File p under its layout; ConflictingPart (after keeping it) if it contradicts."""
        lay = None
        for one in self.layouts:
            if (one.k, one.g, one.total) == (p.k, p.g, p.total):
                lay = one
        first = self.layouts[0] if self.layouts else None
        other = None
        if lay is None:
            if first is not None and len(self.layouts) >= MAX_LAYOUTS:
                self._drop_dead_layout()
            if first is not None:
                other = "part %d of message %s: %d+%d parts of %d bytes, earlier %d+%d of %d" % (
                    p.index,
                    _hex(p.mid),
                    p.k,
                    p.g,
                    p.total,
                    first.k,
                    first.g,
                    first.total,
                )
                if len(self.layouts) >= MAX_LAYOUTS:
                    raise ConflictingPart(other + "; too many part counts, frame dropped")
            lay = _Layout(p.k, p.g, p.total)
            self.layouts.append(lay)
        copies = lay.copies.get(p.index)
        if copies is None:
            lay.copies[p.index] = [p.body]
            lay.count += 1
        elif p.body not in copies:
            why = "part %d of message %s: body differs from an earlier copy" % (
                p.index,
                _hex(p.mid),
            )
            if len(copies) >= MAX_COPIES:
                if not self._failed(lay):
                    raise ConflictingPart(why + "; too many copies, frame dropped")
                # every choice of the copies kept failed the id: one of them is forged, and
                # the genuine copy must get in (copies in view come round again if needed)
                copies.pop(0)
                other = why + " (kept; the oldest copy, tried and failed, dropped for it)"
            else:
                other = why + " (both kept until one checks out)"
            copies.append(p.body)
            lay.count += 1
        if other is not None:
            raise ConflictingPart(other)

    def _failed(self, lay):
        """True if lay holds every part but no choice of its copies hashes to the id."""
        return self._found is None and lay.whole() and self._check() is None

    def _drop_dead_layout(self):
        """Make room for another layout by dropping one whose copies all failed the id."""
        for lay in self.layouts:
            if self._failed(lay):
                self.layouts.remove(lay)
                return

    @property
    def progress(self):
        """(have, need): data parts present or recoverable, data parts in the message. A set
        that is whole but fails the id lacks some genuine part: one short, not need of need."""
        if self.raw is not None:
            return (1, 1)
        lay = self._main()
        if lay is None:
            return (0, 0)
        have, need = lay.progress()
        if self._failed(lay):
            return (need - 1, need)
        return (have, need)

    def _check(self):
        """Look for a choice of copies that hashes to the id (in a layout again only after it
        got another copy: a hostile stream of copies costs MAX_TRIES hashes per copy at most)."""
        if self._found is not None:
            return self._found
        for lay in self.layouts:
            if lay.tried != lay.count and lay.whole():
                lay.tried = lay.count
                for pick in lay.picks(MAX_TRIES):
                    msg = lay.rebuild(pick)
                    if message_id(msg) == self.mid:
                        self._found = msg
                        self._good = lay
                        return msg
        return None

    @property
    def complete(self):
        if self.raw is not None:
            return True
        return self._check() is not None

    def missing(self):
        """Indices of data parts neither received nor recoverable yet."""
        if self.raw is not None or self.mid is None:
            return []
        return self._main().missing()

    def message(self):
        """The reassembled object, verified against its message id."""
        if self.raw is not None:
            return self.raw
        msg = self._check()
        if msg is not None:
            return msg
        for lay in self.layouts:
            if lay.whole():
                first = lay.rebuild({i: c[0] for i, c in lay.copies.items()})
                raise PartError(
                    "message %s: reassembled %d bytes hash to %s"
                    % (_hex(self.mid), len(first), _hex(message_id(first)))
                )
        have, need = self.progress
        raise Incomplete(
            "%s: %d of %d data parts, missing %r"
            % (self._desc() if self.mid else "nothing", have, need, self.missing())
        )


class Plan:
    """How to show nbytes on a screen: one QR or a loop of part frames."""

    __slots__ = ("single", "version", "scale", "frames", "data_parts", "parity_parts", "level")

    def __init__(self, single, version, scale, data_parts, parity_parts, level):
        self.single = single
        self.version = version
        self.scale = scale
        self.data_parts = data_parts
        self.parity_parts = parity_parts
        self.frames = 1 if single else data_parts + parity_parts
        self.level = level

    def __repr__(self):
        if self.single:
            return "<Plan single v%d-%s at %d px/module>" % (self.version, self.level, self.scale)
        return "<Plan %d frames (%d data + %d parity) v%d-%s at %d px/module>" % (
            self.frames,
            self.data_parts,
            self.parity_parts,
            self.version,
            self.level,
            self.scale,
        )


def _side(v):
    return qr.size_of(v) + 8  # with the 4-module quiet zone on each side


def _parts_for(nbytes, v, level):
    room = qr.capacity(v, level) - OVERHEAD
    return (nbytes + room - 1) // room if room > 0 else 0


def plan(nbytes, screen_px, level="M", max_frame_version=7, parity=None):
    """Single QR or parts for nbytes on a screen (rule: module docstring).

    screen_px: the side of the square available, or (width, height) of the screen (the
    shorter side counts: a 320x240 screen shows the same QR as a 240x240 one).
    """
    if isinstance(screen_px, (tuple, list)):
        screen_px = min(screen_px)
    if nbytes < 1:
        raise ValueError("nothing to show")
    for s in (3, 2):
        v = qr.min_version(nbytes, level)
        if v is not None and _side(v) * s <= screen_px:
            return Plan(True, v, screen_px // _side(v), 1, 0, level)
        top = 0
        for fv in range(1, max_frame_version + 1):
            if _side(fv) * s <= screen_px and qr.capacity(fv, level) > OVERHEAD:
                top = fv
        if top:
            k = _parts_for(nbytes, top, level)
            while top > 1 and qr.capacity(top - 1, level) > OVERHEAD:
                if _parts_for(nbytes, top - 1, level) != k:
                    break
                top -= 1
            g = default_parity(k) if parity is None else parity
            if k + g > MAX_PARTS or nbytes > MAX_TOTAL:
                raise BadPart("%d bytes need %d+%d frames, at most %d" % (nbytes, k, g, MAX_PARTS))
            return Plan(False, top, screen_px // _side(top), k, g, level)
    raise ValueError("a %d-px screen is too small for a QR code" % screen_px)


def frames(message, screen_px, level="M", max_frame_version=7, parity=None):
    """(plan, payloads) for showing message on a screen_px screen: [message] or its parts."""
    p = plan(len(message), screen_px, level, max_frame_version, parity)
    if p.single:
        return p, [bytes(message)]
    return p, split(message, p.version, level, p.parity_parts)
