"""Serial link: frames, an incremental decoder, and the request/response session.

One module for the token (MicroPython) and the host (CPython); docs/link.md describes the
wire format and the session rules, protocol.py holds every number.

Layers
------
* ``encode_frame`` / ``finish_frame`` build frames; ``FrameDecoder`` turns a byte stream
  back into frames and *reports* (never raises) garbage, bad headers, bad CRCs, oversize and
  truncated frames, resynchronising on the sync bytes.
* A transport is any object with ``write(data)`` and ``read(max_n, timeout_ms) -> bytes``
  (optionally ``readinto(buf, timeout_ms) -> int``, used when present to avoid copies).
  ``StreamTransport`` wraps streams that ``select.poll`` can watch (sys.stdin/stdout.buffer on
  a pseudo-terminal, machine.UART, USB-CDC, sockets and pipes on CPython); the host's pyserial
  transport lives in hubi.link_client.
* ``Endpoint`` owns a transport, a decoder and a preallocated transmit buffer; ``Server``
  (token) dispatches requests to handlers and never dies on bad input; ``Client`` (host,
  in link_client.py so that a token never loads it; ``link.Client`` works too) sends
  requests with timeouts, retries and duplicate/stale detection.

Memory: the device side preallocates its buffers (about 2 x 1040 + 1040 + 176 bytes at the
default 1024-byte payload) and reads straight into the decoder's buffer; the hot path
allocates only small per-frame objects, never per byte.
"""

import binascii
import os
import select
import struct
import sys

from hubi_core.errors import (
    BadCrc,
    BadHeader,
    ErrorReply,
    FrameOversize,
    FrameTruncated,
    Garbage,
    LinkClosed,
)

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# hubi_core.protocol's numbers, as const()s: a token that serves the link does not keep the
# protocol module (its names and tables) in its heap; it is imported for an error message's
# type name only (tests/test_token_core.py checks the values)
_SYNC0 = const(0xA5)
_SYNC1 = const(0x96)
_HEADER_LEN = const(12)
_CRC_LEN = const(4)
_OVERHEAD = const(16)
_MAX_PAYLOAD = const(1024)
_MIN_PAYLOAD = const(64)
_MAX_MESSAGE = const(262144)
_PROTOCOL_VERSION = const(1)
_FRAME_TIMEOUT_MS = const(200)
_WAIT_INTERVAL_MS = const(250)
_REPLY = const(0x80)
_HELLO = const(0x01)
_PING = const(0x02)
_STATS = const(0x03)
_BULK_BEGIN = const(0x08)
_BULK_DATA = const(0x09)
_BULK_END = const(0x0A)
_BULK_READ = const(0x0B)
_HELLO_REPLY = const(0x81)
_PONG = const(0x82)
_STATS_REPLY = const(0x83)
_BULK_BEGIN_REPLY = const(0x88)
_BULK_DATA_REPLY = const(0x89)
_BULK_READ_REPLY = const(0x8B)
_BULK_REPLY = const(0xFD)
_WAIT = const(0xFE)
_ERROR = const(0xFF)
_LINK_FIRST = const(0x01)
_APP_FIRST = const(0x20)
_TEST_LAST = const(0x7B)
_ERR_UNKNOWN_TYPE = const(0x0001)
_ERR_BAD_CRC = const(0x0002)
_ERR_TRUNCATED = const(0x0003)
_ERR_OVERSIZE = const(0x0004)
_ERR_BAD_VERSION = const(0x0005)
_ERR_NO_COMMON_VERSION = const(0x0006)
_ERR_BAD_PAYLOAD = const(0x0007)
_ERR_TOO_LARGE = const(0x0008)
_ERR_BULK_STATE = const(0x0009)
_ERR_BULK_CRC = const(0x000A)
_ERR_INTERNAL = const(0x000C)
_ERR_NOT_A_REQUEST = const(0x000D)


def _type_name(t):
    try:
        from hubi_core.protocol import type_name
    except MemoryError:  # a token out of heap still answers (the ERROR names the number)
        return "0x%02x" % t
    return type_name(t)


try:
    from time import sleep_ms, ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython
    import time as _time

    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_add(t, delta):
        return t + delta

    def ticks_diff(a, b):
        return a - b

    def sleep_ms(ms):
        _time.sleep(ms / 1000)


try:
    import gc
except ImportError:  # pragma: no cover
    gc = None

_MPY = sys.implementation.name == "micropython"
_crc32 = binascii.crc32
_SYNC0B = b"\xa5"
_HL = const(12)
_EIO = 5

# FrameDecoder.next() results
NEED_MORE = 0
FRAME = 1
EVENT = 2

_BIG_WAIT_MS = 60000


def __getattr__(name):
    # Client lives in link_client, Frame, encode_frame and decode_frames in linkframes, so that
    # a token, which only serves, does not load them
    if name == "Client":
        from hubi_core.link_client import Client

        return Client
    if name in ("Frame", "encode_frame", "decode_frames"):
        from hubi_core import linkframes

        return getattr(linkframes, name)
    raise AttributeError(name)


_PREP = object()  # internal: "the reply payload is already in the transmit buffer"


def _text(b):
    """Decode peer text for an error message, whatever the bytes are."""
    try:
        return bytes(b).decode("utf-8")
    except UnicodeError:
        return repr(bytes(b))


def _is_buffer(x):
    return isinstance(x, (bytes, bytearray, memoryview))


# ---------------------------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------------------------


def finish_frame(buf, version, type, seq, n):
    """Write sync, header and both CRCs around a payload already at buf[12:12+n].

    Returns the frame length (n + 16). ``buf`` must be a bytearray of at least n + 16 bytes.
    """
    if not (0 <= version <= 255 and 0 <= type <= 255 and 0 <= seq <= 0xFFFF):
        raise ValueError("frame version/type must be 0..255 and seq 0..65535")
    if not 0 <= n <= 0xFFFF or len(buf) < n + _OVERHEAD:
        raise FrameOversize("payload of %d bytes does not fit the frame buffer" % n)
    buf[0] = _SYNC0
    buf[1] = _SYNC1
    buf[2] = version
    buf[3] = type
    struct.pack_into(">HH", buf, 4, seq, n)
    mv = memoryview(buf)
    struct.pack_into(">I", buf, 8, _crc32(mv[0:8]))
    end = _HL + n
    struct.pack_into(">I", buf, end, _crc32(mv[0:end]))
    return end + _CRC_LEN


class FrameDecoder:
    """Incremental frame decoder that resynchronises after garbage and never raises on input.

    Convenience API: ``feed(data)`` returns a list of ``Frame`` objects (payload copied to
    bytes) and error events (``FrameError`` instances, not raised) in stream order;
    ``flush()`` declares the stream quiet and reports what is left (truncated frame, trailing
    garbage).

    Allocation-free API (used by Endpoint): write into ``space()`` and ``commit(n)`` (or
    ``fill(data)``), then call ``next()`` until it returns NEED_MORE. FRAME leaves the frame
    in ``version``, ``type``, ``seq``, ``crc`` and ``payload`` (a memoryview into the
    decoder's buffer, valid until the next ``space()``/``fill()``); EVENT leaves the error in
    ``event``. ``expire()`` is the frame timeout: the link went quiet mid-frame.

    Counters: frames, skipped (bytes not part of any good frame), bad_headers, bad_crcs,
    oversize, truncated; ``offset`` is the stream offset of the next undecoded byte.
    """

    def __init__(self, max_payload=_MAX_PAYLOAD):
        if not _MIN_PAYLOAD <= max_payload <= 0xFFFF:
            raise ValueError("max_payload must be %d..65535" % _MIN_PAYLOAD)
        self.max_payload = max_payload
        self.frame_max = _OVERHEAD + max_payload
        self._cap = 2 * self.frame_max
        self._buf = bytearray(self._cap)
        self._mv = memoryview(self._buf)
        self._pos = 0  # first undecoded byte
        self._end = 0  # end of received bytes
        self._flen = 0  # length of the frame whose good header is at _pos; 0 = none
        self._flush = False
        self._run = 0  # skipped bytes not yet reported
        self._run_at = 0
        self.offset = 0
        self.version = self.type = self.seq = self.crc = 0
        self.payload = None
        self.event = None
        self.frames = self.skipped = self.bad_headers = 0
        self.bad_crcs = self.oversize = self.truncated = 0

    # --- input ---------------------------------------------------------------------------
    def space(self):
        """Writable memoryview of the free buffer space (at least one frame's worth after
        next() returned NEED_MORE). Invalidates the last frame's payload view."""
        pos = self._pos
        if pos:
            end = self._end
            if pos == end:
                self._pos = self._end = 0
            elif self._cap - end < self.frame_max:
                self._compact()
        return self._mv[self._end :]

    def commit(self, n):
        """Declare n bytes written at the start of space()."""
        if n < 0 or self._end + n > self._cap:
            raise ValueError("commit beyond the decoder buffer")
        self._end += n

    def fill(self, data):
        """Copy as much of data as fits; return the number of bytes taken."""
        sp = self.space()
        k = len(data)
        if k > len(sp):
            k = len(sp)
            data = memoryview(data)[:k]
        if k:
            sp[:k] = data
            self._end += k
        return k

    def _compact(self):
        # Move [pos, end) to the front in blocks no larger than pos, so that source and
        # destination never overlap (MicroPython's slice copy is a plain memcpy).
        pos = self._pos
        n = self._end - pos
        mv = self._mv
        dst = 0
        while dst < n:
            k = n - dst
            if k > pos:
                k = pos
            mv[dst : dst + k] = mv[pos + dst : pos + dst + k]
            dst += k
        self._pos = 0
        self._end = n

    def busy(self):
        """True while bytes are buffered or skipped bytes are not yet reported."""
        return self._end > self._pos or self._run > 0

    def expire(self):
        """Frame timeout: the stream went quiet. Subsequent next() calls report a started
        frame as truncated, rescan the bytes after it, and report the rest as garbage."""
        if self.busy():
            self._flush = True

    def reset(self):
        """Drop everything buffered (counters are kept)."""
        self.offset += self._end - self._pos
        self._pos = self._end = self._flen = self._run = 0
        self._flush = False

    # --- decoding ------------------------------------------------------------------------
    def _skip(self, n):
        if not self._run:
            self._run_at = self.offset
        self._run += n
        self.skipped += n
        self._pos += n
        self.offset += n

    def _emit(self, ev):
        self.event = ev
        return EVENT

    def _garbage(self):
        ev = Garbage(
            "skipped %d byte%s of garbage at stream offset %d"
            % (self._run, "" if self._run == 1 else "s", self._run_at),
            offset=self._run_at,
        )
        ev.count = self._run
        self._run = 0
        return self._emit(ev)

    def next(self):
        """Decode what is buffered: NEED_MORE, FRAME or EVENT (see the class docstring)."""
        buf = self._buf
        while True:
            pos = self._pos
            avail = self._end - pos
            flen = self._flen
            if not flen:
                # looking for a good header at pos
                if not avail:
                    if self._run and self._flush:
                        return self._garbage()
                    self._flush = False
                    return NEED_MORE
                if buf[pos] != _SYNC0:
                    i = buf.find(_SYNC0B, pos + 1, self._end)
                    self._skip((self._end if i < 0 else i) - pos)
                    continue
                if avail >= 2 and buf[pos + 1] != _SYNC1:
                    self._skip(1)
                    continue
                if avail < _HL:
                    if self._flush:
                        self._skip(avail)
                        continue
                    return NEED_MORE
                hcrc = struct.unpack_from(">I", buf, pos + 8)[0]
                if _crc32(self._mv[pos : pos + 8]) != hcrc:
                    self.bad_headers += 1
                    ev = BadHeader(
                        "bad frame header at stream offset %d: header CRC mismatch"
                        " (sync bytes present, header bytes %s)"
                        % (self.offset, _hex(self._mv[pos : pos + _HL])),
                        offset=self.offset,
                    )
                    self._skip(2)
                    return self._emit(ev)
                seq, ln = struct.unpack_from(">HH", buf, pos + 4)
                self.version = buf[pos + 2]
                self.type = buf[pos + 3]
                self.seq = seq
                if ln > self.max_payload:
                    self.oversize += 1
                    ev = FrameOversize(
                        "oversize frame at stream offset %d: %s seq %d announces %d payload"
                        " bytes, the maximum is %d"
                        % (self.offset, _type_name(self.type), seq, ln, self.max_payload),
                        offset=self.offset,
                        seq=seq,
                        type=self.type,
                        version=self.version,
                    )
                    self._skip(2)
                    return self._emit(ev)
                self._flen = _OVERHEAD + ln
                if self._run:
                    return self._garbage()
                continue
            # a good header is at pos; wait for the whole frame
            if avail < flen:
                if self._flush:
                    self.truncated += 1
                    self._flen = 0
                    ev = FrameTruncated(
                        "truncated frame at stream offset %d: %s seq %d stopped after %d of"
                        " %d bytes (nothing more arrived within the frame timeout)"
                        % (self.offset, _type_name(self.type), self.seq, avail, flen),
                        offset=self.offset,
                        seq=self.seq,
                        type=self.type,
                        version=self.version,
                    )
                    self._skip(2)
                    return self._emit(ev)
                return NEED_MORE
            end = pos + flen - _CRC_LEN
            fcrc = struct.unpack_from(">I", buf, end)[0]
            self._flen = 0
            if _crc32(self._mv[pos:end]) != fcrc:
                self.bad_crcs += 1
                ev = BadCrc(
                    "frame CRC mismatch at stream offset %d: %s seq %d with %d payload bytes"
                    " was damaged in transit"
                    % (self.offset, _type_name(self.type), self.seq, flen - _OVERHEAD),
                    offset=self.offset,
                    seq=self.seq,
                    type=self.type,
                    version=self.version,
                )
                self._skip(2)
                return self._emit(ev)
            self.crc = fcrc
            self.payload = self._mv[pos + _HL : end]
            self._pos = pos + flen
            self.offset += flen
            self.frames += 1
            return FRAME

    # --- convenience -----------------------------------------------------------------------
    def _drain(self, out):
        while True:
            k = self.next()
            if k == NEED_MORE:
                return out
            if k == FRAME:
                from hubi_core.linkframes import Frame

                out.append(Frame(self.version, self.type, self.seq, bytes(self.payload)))
            else:
                out.append(self.event)

    def feed(self, data):
        """Decode data; return the complete frames and error events found, in order."""
        out = []
        mv = memoryview(data)
        n = len(mv)
        off = 0
        while True:
            self._drain(out)
            if off >= n:
                return out
            off += self.fill(mv[off:])

    def flush(self):
        """The stream went quiet: report a started frame as truncated, recover any frames
        behind it, report trailing garbage. Returns frames and events like feed()."""
        out = []
        self._drain(out)
        self.expire()
        return self._drain(out)

    def stats(self):
        return {
            "frames": self.frames,
            "skipped_bytes": self.skipped,
            "bad_headers": self.bad_headers,
            "bad_crcs": self.bad_crcs,
            "oversize": self.oversize,
            "truncated": self.truncated,
        }


def _hex(b):
    return binascii.hexlify(bytes(b)).decode()


# ---------------------------------------------------------------------------------------------
# transports
# ---------------------------------------------------------------------------------------------


class StreamTransport:
    """Link transport over streams that select.poll can watch.

    ``rstream`` is read, ``wstream`` (default: rstream) is written. Works with
    sys.stdin.buffer / sys.stdout.buffer (e.g. the simulator on a pseudo-terminal master),
    machine.UART (uses ``any()``), USB-CDC streams, and on CPython with anything that has a
    ``fileno()`` (ptys, pipes, sockets). Blocking MicroPython streams without ``any()`` are
    read byte by byte while poll reports data (no allocation), so a short frame can never
    block the reader. EOF raises LinkClosed; a pty whose other side is closed (EIO) reads
    as silence, so a simulator keeps waiting for the host to reopen the port.
    """

    def __init__(self, rstream, wstream=None):
        self.rstream = rstream
        self.wstream = rstream if wstream is None else wstream
        self._poll = select.poll()
        self._poll.register(rstream, select.POLLIN)
        self._wpoll = None
        self._one = memoryview(bytearray(1))
        self._any = getattr(rstream, "any", None)
        self._rfd = self._wfd = None
        if not _MPY:
            self._rfd = _fileno(rstream)
            self._wfd = _fileno(self.wstream)

    def _wait(self, timeout_ms):
        if timeout_ms < 0:
            timeout_ms = 0
        if _MPY:
            for o in self._poll.ipoll(timeout_ms):
                return o[1]
            return 0
        for _fd, ev in self._poll.poll(timeout_ms):
            return ev
        return 0

    def readinto(self, buf, timeout_ms):
        """Read what is available (at most len(buf)) within timeout_ms; 0 on timeout."""
        if not len(buf) or not self._wait(timeout_ms):
            return 0
        try:
            if self._rfd is not None:
                try:
                    n = os.readv(self._rfd, [buf])
                except BlockingIOError:
                    return 0
                if n == 0:
                    raise LinkClosed("link stream closed (end of file)")
                return n
            if self._any is not None:
                k = self._any()
                if k <= 0:
                    return 0
                if k > len(buf):
                    k = len(buf)
                return self.rstream.readinto(buf, k) or 0
            return self._read_bytes(buf)
        except OSError as e:
            if e.args and e.args[0] == _EIO:
                # pty with nobody on the other side: wait for the host to (re)open it
                sleep_ms(min(max(timeout_ms, 1), 50))
                return 0
            raise

    def _read_bytes(self, buf):
        r = self.rstream
        one = self._one
        limit = len(buf)
        n = 0
        while True:
            got = r.readinto(one)
            if got is None:  # non-blocking stream with nothing more
                return n
            if got == 0:
                if n:
                    return n
                raise LinkClosed("link stream closed (end of file)")
            buf[n] = one[0]
            n += 1
            if n >= limit or not self._wait(0) & select.POLLIN:
                return n

    def read(self, max_n, timeout_ms):
        buf = bytearray(max_n)
        n = self.readinto(memoryview(buf), timeout_ms)
        return bytes(buf[:n])

    def write(self, data):
        mv = memoryview(data)
        n = len(mv)
        off = 0
        while off < n:
            if self._wfd is not None:
                try:
                    w = os.write(self._wfd, mv[off:])
                except BlockingIOError:
                    w = None
            else:
                w = self.wstream.write(mv[off:])
            if not w:
                self._wait_writable()
                continue
            off += w
        if self._wfd is None and not _MPY:
            f = getattr(self.wstream, "flush", None)
            if f is not None:
                f()

    def _wait_writable(self):
        if self._wpoll is None:
            self._wpoll = select.poll()
            self._wpoll.register(self.wstream, select.POLLOUT)
        self._wpoll.poll(100)

    def close(self):
        """The streams belong to the caller; nothing to release."""


def _fileno(stream):
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# session
# ---------------------------------------------------------------------------------------------


class Endpoint:
    """What both ends share: a transport, a frame decoder and a preallocated frame buffer.

    ``receive(timeout_ms)`` returns FRAME (fields on ``self.decoder``), EVENT
    (``self.event``, also passed to ``on_event``) or NEED_MORE (nothing within the timeout).
    It applies the frame timeout: a frame that stops arriving for ``frame_timeout_ms`` is
    reported truncated.
    """

    def __init__(self, transport, max_payload=_MAX_PAYLOAD, frame_timeout_ms=_FRAME_TIMEOUT_MS):
        self.transport = transport
        self.max_payload = max_payload
        self.peer_max_payload = max_payload
        self.frame_timeout_ms = frame_timeout_ms
        self.decoder = FrameDecoder(max_payload)
        self.version = _PROTOCOL_VERSION
        self._tx = bytearray(_OVERHEAD + max_payload)
        self._txv = memoryview(self._tx)
        self._readinto = getattr(transport, "readinto", None)
        self._last_rx = ticks_ms()
        self.event = None
        self.on_event = None
        self.tx_frames = 0

    def _read(self, wait_ms):
        sp = self.decoder.space()
        if self._readinto is not None:
            return self._readinto(sp, wait_ms)
        data = self.transport.read(len(sp), wait_ms)
        n = len(data)
        if n:
            sp[:n] = data
        return n

    def receive(self, timeout_ms):
        dec = self.decoder
        start = ticks_ms()
        late = False
        while True:
            k = dec.next()
            if k != NEED_MORE:
                if k == EVENT:
                    self.event = dec.event
                    if self.on_event is not None:
                        self.on_event(dec.event)
                return k
            if late:  # past the timeout and bytes still coming (a peer streaming garbage)
                return NEED_MORE
            now = ticks_ms()
            left = timeout_ms - ticks_diff(now, start)
            wait = left
            if dec.busy():
                quiet = self.frame_timeout_ms - ticks_diff(now, self._last_rx)
                if quiet <= 0:
                    # quiet for a frame timeout, unless bytes are waiting unread (we may
                    # simply not have been listening): only then is the frame truncated
                    n = self._read(0)
                    if n:
                        dec.commit(n)
                        self._last_rx = ticks_ms()
                    else:
                        dec.expire()
                    continue
                if quiet < wait:
                    wait = quiet
            n = self._read(wait if wait > 0 else 0)
            if n:
                dec.commit(n)
                self._last_rx = ticks_ms()
                late = left <= 0
            elif left <= 0:
                return NEED_MORE

    def _write_frame(self, buf, version, type, seq, n):
        total = finish_frame(buf, version, type, seq, n)
        self.transport.write(memoryview(buf)[:total])
        self.tx_frames += 1
        return total

    def send(self, type, seq, payload=b"", version=None):
        """Send one frame (payload up to the peer's max_payload)."""
        n = len(payload)
        if n > self.peer_max_payload:
            raise FrameOversize(
                "payload of %d bytes exceeds the peer's maximum of %d bytes per frame (%s)"
                % (n, self.peer_max_payload, _type_name(type)),
                seq=seq,
                type=type,
            )
        self._txv[_HL : _HL + n] = payload
        self._write_frame(self._tx, self.version if version is None else version, type, seq, n)

    def stats(self):
        """Local link counters (dict)."""
        d = self.decoder.stats()
        d["rx_frames"] = d.pop("frames")
        d["tx_frames"] = self.tx_frames
        return d

    def close(self):
        c = getattr(self.transport, "close", None)
        if c is not None:
            c()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _vlist(vs):
    return ",".join(str(v) for v in vs)


def _check_versions(versions):
    vs = sorted(set(versions))
    if not vs or vs[0] < 1 or vs[-1] > 255:
        raise ValueError("protocol versions must be a non-empty set of 1..255")
    return tuple(vs)


class Server(Endpoint):
    """Token side: dispatch requests to handlers; bad input gets an ERROR, never a crash.

    ``handle(type, fn, sink=None)`` registers ``fn(payload) -> reply`` for an application or
    test type (0x20..0x7B); the reply to type T goes out as T | REPLY. ``payload`` is a
    memoryview valid only during the call. ``reply`` may be None, bytes-like (any length up
    to the host's limit: longer replies go out through BULK_REPLY/BULK_READ), or a source
    object with ``__len__`` and ``read_at(offset, buf) -> n`` (e.g. a file in flash). A
    handler raises ErrorReply(code, text) to answer ERROR; any other exception becomes
    ERR_INTERNAL. Long handlers call ``keepalive()`` so the host keeps waiting.

    Multi-frame requests are reassembled into one bytearray (up to ``max_message``), or, if
    the handler was registered with ``sink``, streamed: ``sink(total)`` returns an object
    with ``write(memoryview)`` that receives the chunks in order and is then passed to
    ``fn`` instead of the payload (so a 200 KB upload fits a 96 KB heap). ``handle_all(types,
    fn)`` registers one dispatcher ``fn(type, payload)`` for several types.

    The last reply frame is cached: a retransmitted request (same seq, type and CRC) gets the
    cached reply again without running the handler twice.
    """

    def __init__(
        self,
        transport,
        versions=(1,),
        name="hubi-token",
        max_payload=_MAX_PAYLOAD,
        max_message=_MAX_MESSAGE,
        frame_timeout_ms=_FRAME_TIMEOUT_MS,
    ):
        super().__init__(transport, max_payload, frame_timeout_ms)
        self.versions = _check_versions(versions)
        self.version = self.versions[-1]
        self.name = name
        self.max_message = max_message
        self.peer_max_message = _MAX_MESSAGE
        self.peer_name = None
        self._handlers = {}
        self._err = bytearray(_OVERHEAD + 160)
        self._dup_seq = -1
        self._dup_type = -1
        self._dup_crc = -1
        self._dup_len = 0
        self._cur_seq = -1
        self._cur_ver = self.version
        self._up = None  # upload: [target, total, crc, received, running crc, buffer, sink]
        self._src = None  # pending large reply: [reply type, source, total]
        self._last_wait = 0
        self._prep = 0
        self.duplicates = 0
        self.errors_sent = 0

    def handle(self, type, fn, sink=None):
        if not _APP_FIRST <= type <= _TEST_LAST:
            raise ValueError(
                "handlers serve application/test types 0x%02x..0x%02x, not %s"
                % (_APP_FIRST, _TEST_LAST, _type_name(type))
            )
        self._handlers[type] = (fn, sink)

    def handle_all(self, types, fn):
        """Register one dispatcher ``fn(type, payload) -> reply`` for several types: one
        function object instead of one per type (a token's heap is small)."""
        entry = (fn, None, True)
        for t in types:
            self.handle(t, fn)
            self._handlers[t] = entry

    # --- main loop ---------------------------------------------------------------------------
    def serve_once(self, timeout_ms=0):
        """Handle at most one incoming frame or link event; False if nothing arrived."""
        k = self.receive(timeout_ms)
        if k == FRAME:
            self._dispatch()
            return True
        if k == EVENT:
            self._framing_error(self.event)
            return True
        return False

    def serve_forever(self):
        """Serve until the transport raises (LinkClosed on EOF)."""
        while True:
            self.serve_once(_BIG_WAIT_MS)

    def keepalive(self, hint_ms=2 * _WAIT_INTERVAL_MS):
        """From inside a long handler: tell the host to keep waiting (at most one WAIT frame
        per WAIT_INTERVAL_MS, so call it as often as convenient)."""
        if self._cur_seq < 0:
            return
        now = ticks_ms()
        if ticks_diff(now, self._last_wait) < _WAIT_INTERVAL_MS:
            return
        self._last_wait = now
        struct.pack_into(">H", self._err, _HL, hint_ms)
        self._write_frame(self._err, self._cur_ver, _WAIT, self._cur_seq, 2)

    def stats(self):
        d = Endpoint.stats(self)
        d["duplicates"] = self.duplicates
        d["errors_sent"] = self.errors_sent
        return d

    # --- internals -----------------------------------------------------------------------
    def _framing_error(self, ev):
        if isinstance(ev, BadCrc):
            code = _ERR_BAD_CRC
        elif isinstance(ev, FrameTruncated):
            code = _ERR_TRUNCATED
        elif isinstance(ev, FrameOversize):
            code = _ERR_OVERSIZE
        else:
            return  # garbage, bad header: nobody to answer
        ver = ev.version if ev.version in self.versions else self.version
        self._send_error(code, str(ev), ev.seq, ver, False)

    def _send_error(self, code, text, seq, ver, cache):
        buf = self._tx if cache else self._err
        tb = text.encode() if isinstance(text, str) else bytes(text)
        room = min(len(buf), _OVERHEAD + self.peer_max_payload) - _OVERHEAD - 2
        if len(tb) > room:
            tb = tb[:room]
        struct.pack_into(">H", buf, _HL, code)
        buf[_HL + 2 : _HL + 2 + len(tb)] = tb
        total = self._write_frame(buf, ver, _ERROR, seq, 2 + len(tb))
        self.errors_sent += 1
        if cache:
            self._dup_len = total

    def _dispatch(self):
        dec = self.decoder
        t = dec.type
        seq = dec.seq
        if seq == self._dup_seq and t == self._dup_type and dec.crc == self._dup_crc:
            if self._dup_len:
                self.duplicates += 1
                self.transport.write(self._txv[: self._dup_len])
                self.tx_frames += 1
            return
        outer = None
        if self._cur_seq >= 0:
            # read from inside a handler (a token's screen flow waits for its owner): answer
            # it, then the outer request goes on (its WAITs, its reply, its retransmissions)
            outer = (self._cur_seq, self._cur_ver, self._last_wait, self._dup_seq,
                     self._dup_type, self._dup_crc)  # fmt: skip
        self._dup_seq = seq
        self._dup_type = t
        self._dup_crc = dec.crc
        self._dup_len = 0
        ver = dec.version
        self._cur_seq = seq
        self._cur_ver = ver if ver in self.versions else self.version
        self._last_wait = ticks_add(ticks_ms(), -_WAIT_INTERVAL_MS)  # first goes out
        try:
            if not _LINK_FIRST <= t <= _TEST_LAST:
                raise ErrorReply(_ERR_NOT_A_REQUEST, "%s is not a request type" % _type_name(t))
            if t != _HELLO and ver not in self.versions:
                raise ErrorReply(
                    _ERR_BAD_VERSION,
                    "frame uses protocol version %d; this end speaks %s (send HELLO)"
                    % (ver, _vlist(self.versions)),
                )
            n = len(dec.payload)
            if n > self.peer_max_payload and t != _HELLO:
                # the host agreed to this many bytes per frame in HELLO; a larger frame is a
                # protocol violation (and a PING echo of it would be served from the decoder's
                # buffer, which the next frames overwrite)
                raise ErrorReply(
                    _ERR_OVERSIZE,
                    "%d payload bytes, above the %d per frame agreed in HELLO"
                    % (n, self.peer_max_payload),
                )
            rtype, reply = self._process(t, dec.payload)
        except ErrorReply as e:
            rtype, reply = _ERROR, e
        except Exception as e:  # a handler bug must not kill the token
            rtype = _ERROR
            reply = ErrorReply(
                _ERR_INTERNAL,
                "%s while handling %s: %s" % (e.__class__.__name__, _type_name(t), e),
            )
        try:
            if rtype == _ERROR:
                self._send_error(reply.code, reply.text, seq, self._cur_ver, True)
            else:
                self._reply(rtype, reply, seq)
        finally:
            self._cur_seq = -1
            if outer is not None:  # the outer reply is not sent yet: nothing cached for it
                self._cur_seq, self._cur_ver, self._last_wait = outer[:3]
                self._dup_seq, self._dup_type, self._dup_crc = outer[3:]
                self._dup_len = 0

    def _reply(self, rtype, reply, seq):
        ver = self._cur_ver
        if reply is _PREP:  # payload already prepared in the transmit buffer
            self._dup_len = self._write_frame(self._tx, ver, rtype, seq, self._prep)
            return
        if reply is None:
            reply = b""
        if _is_buffer(reply):
            n = len(reply)
            if n <= self.peer_max_payload:
                self._txv[_HL : _HL + n] = reply
                self._dup_len = self._write_frame(self._tx, ver, rtype, seq, n)
                return
            src = memoryview(reply)
            crc = _crc32(src)
        else:
            src = reply
            n = len(src)
            crc = self._source_crc(src, n)
        if n > self.peer_max_message:
            self._send_error(
                _ERR_TOO_LARGE,
                "reply of %d bytes exceeds the peer's limit of %d bytes"
                % (n, self.peer_max_message),
                seq,
                ver,
                True,
            )
            return
        self._src = [rtype, src, n]
        struct.pack_into(">BII", self._tx, _HL, rtype, n, crc)
        self._dup_len = self._write_frame(self._tx, ver, _BULK_REPLY, seq, 9)

    def _source_crc(self, src, total):
        area = self._txv[_HL : _HL + self.peer_max_payload]
        crc = 0
        off = 0
        while off < total:
            k = total - off
            if k > len(area):
                k = len(area)
            got = src.read_at(off, area[:k])
            if not got or got < 0:
                raise ValueError("reply source ended at %d of %d bytes" % (off, total))
            crc = _crc32(area[:got], crc)
            off += got
        return crc

    def _process(self, t, payload):
        if t != _BULK_DATA and t != _BULK_END:
            self._up = None
        if t != _BULK_READ:
            self._src = None
        if t == _PING:
            return _PONG, payload
        if t == _HELLO:
            return self._hello(payload)
        if t == _STATS:
            vals = (
                self.decoder.frames,
                self.tx_frames,
                self.decoder.skipped,
                self.decoder.bad_headers,
                self.decoder.bad_crcs,
                self.decoder.oversize,
                self.decoder.truncated,
                self.duplicates,
                self.errors_sent,
            )
            for i, v in enumerate(vals):
                struct.pack_into(">I", self._tx, _HL + 4 * i, v & 0xFFFFFFFF)
            self._prep = 4 * len(vals)
            return _STATS_REPLY, _PREP
        if t == _BULK_BEGIN:
            return self._bulk_begin(payload)
        if t == _BULK_DATA:
            return self._bulk_data(payload)
        if t == _BULK_END:
            return self._bulk_end()
        if t == _BULK_READ:
            return self._bulk_read(payload)
        entry = self._handlers.get(t)
        if entry is None:
            raise ErrorReply(_ERR_UNKNOWN_TYPE, "no handler for request %s" % _type_name(t))
        if len(entry) > 2:  # handle_all: the dispatcher is told the type
            return t | _REPLY, entry[0](t, payload)
        if entry[1] is not None:
            # a streaming handler gets a sink even for a one-frame message
            sink = entry[1](len(payload))
            if len(payload):
                sink.write(payload)
            return t | _REPLY, entry[0](sink)
        return t | _REPLY, entry[0](payload)

    def _hello(self, payload):
        n = len(payload)
        k = payload[0] if n else 0
        if n < 1 + k + 6 or k == 0:
            raise ErrorReply(_ERR_BAD_PAYLOAD, "malformed HELLO (%d bytes)" % n)
        offered = bytes(payload[1 : 1 + k])
        common = [v for v in self.versions if v in offered]
        if not common:
            raise ErrorReply(
                _ERR_NO_COMMON_VERSION,
                "%s speaks protocol versions %s; the host offered %s"
                % (self.name, _vlist(self.versions), _vlist(offered)),
            )
        pmp, pmm = struct.unpack_from(">HI", payload, 1 + k)
        if pmp < _MIN_PAYLOAD:
            raise ErrorReply(_ERR_BAD_PAYLOAD, "HELLO max_payload %d < %d" % (pmp, _MIN_PAYLOAD))
        self.version = common[-1]
        self._cur_ver = self.version
        self.peer_max_payload = min(pmp, self.max_payload)
        self.peer_max_message = pmm
        self.peer_name = _text(payload[1 + k + 6 :])
        name = self.name.encode()[: self.peer_max_payload - 7]
        struct.pack_into(">BHI", self._tx, _HL, self.version, self.max_payload, self.max_message)
        self._txv[_HL + 7 : _HL + 7 + len(name)] = name
        self._prep = 7 + len(name)
        return _HELLO_REPLY, _PREP

    def _bulk_begin(self, payload):
        if len(payload) != 10:
            raise ErrorReply(_ERR_BAD_PAYLOAD, "BULK_BEGIN needs 10 bytes, got %d" % len(payload))
        target, _flags, total, crc = struct.unpack_from(">BBII", payload)
        if target != _PING and not _APP_FIRST <= target <= _TEST_LAST:
            raise ErrorReply(
                _ERR_BAD_PAYLOAD, "%s cannot be sent as a bulk message" % _type_name(target)
            )
        entry = self._handlers.get(target)
        if target != _PING and entry is None:
            raise ErrorReply(_ERR_UNKNOWN_TYPE, "no handler for request %s" % _type_name(target))
        if total > self.max_message:
            raise ErrorReply(
                _ERR_TOO_LARGE,
                "message of %d bytes exceeds this end's limit of %d bytes"
                % (total, self.max_message),
            )
        if gc is not None:
            gc.collect()
        sink = None
        buf = None
        if entry is not None and entry[1] is not None:
            sink = entry[1](total)
        else:
            try:
                buf = memoryview(bytearray(total))
            except MemoryError:
                free = gc.mem_free() if gc is not None and hasattr(gc, "mem_free") else -1
                raise ErrorReply(
                    _ERR_TOO_LARGE,
                    "cannot buffer a message of %d bytes (free heap %d bytes)" % (total, free),
                ) from None
        self._up = [target, total, crc, 0, 0, buf, sink]
        struct.pack_into(">I", self._tx, _HL, total)
        self._prep = 4
        return _BULK_BEGIN_REPLY, _PREP

    def _bulk_data(self, payload):
        up = self._up
        if up is None:
            raise ErrorReply(_ERR_BULK_STATE, "BULK_DATA without BULK_BEGIN")
        if len(payload) < 4:
            raise ErrorReply(_ERR_BAD_PAYLOAD, "BULK_DATA needs a 4-byte offset")
        off = struct.unpack_from(">I", payload)[0]
        data = payload[4:]
        n = len(data)
        have = up[3]
        if off == have:
            if have + n > up[1]:
                self._up = None
                raise ErrorReply(
                    _ERR_BULK_STATE,
                    "chunk %d+%d overruns the announced %d bytes" % (off, n, up[1]),
                )
            if up[5] is not None:
                up[5][off : off + n] = data
            else:
                up[6].write(data)
            up[4] = _crc32(data, up[4])
            up[3] = have + n
        elif off + n > have:
            raise ErrorReply(_ERR_BULK_STATE, "BULK_DATA at offset %d, expected %d" % (off, have))
        # else: a chunk we already have (its acknowledgement was lost): acknowledge again
        struct.pack_into(">I", self._tx, _HL, up[3])
        self._prep = 4
        return _BULK_DATA_REPLY, _PREP

    def _bulk_end(self):
        up = self._up
        self._up = None
        if up is None:
            raise ErrorReply(_ERR_BULK_STATE, "BULK_END without BULK_BEGIN")
        target, total, crc, have, running, buf, sink = up
        if have != total:
            raise ErrorReply(
                _ERR_BULK_STATE, "bulk message incomplete: %d of %d bytes" % (have, total)
            )
        if running != crc:
            raise ErrorReply(
                _ERR_BULK_CRC,
                "reassembled message has CRC-32 0x%08x, announced 0x%08x" % (running, crc),
            )
        msg = buf if buf is not None else sink
        if target == _PING:
            return _PONG, msg
        entry = self._handlers[target]
        if len(entry) > 2:
            return target | _REPLY, entry[0](target, msg)
        return target | _REPLY, entry[0](msg)

    def _bulk_read(self, payload):
        src = self._src
        if src is None:
            raise ErrorReply(_ERR_BULK_STATE, "BULK_READ but no large reply is pending")
        if len(payload) != 6:
            raise ErrorReply(_ERR_BAD_PAYLOAD, "BULK_READ needs 6 bytes, got %d" % len(payload))
        off, want = struct.unpack_from(">IH", payload)
        rtype, s, total = src
        if off > total:
            raise ErrorReply(
                _ERR_BAD_PAYLOAD, "BULK_READ offset %d beyond the %d-byte reply" % (off, total)
            )
        k = self.peer_max_payload - 4
        if want < k:
            k = want
        if total - off < k:
            k = total - off
        struct.pack_into(">I", self._tx, _HL, off)
        area = self._txv[_HL + 4 : _HL + 4 + k]
        if isinstance(s, memoryview):
            area[:] = s[off : off + k]
        else:
            got = 0
            while got < k:
                r = s.read_at(off + got, area[got:])
                if not r or r < 0:
                    raise ErrorReply(_ERR_INTERNAL, "reply source ended at %d" % (off + got))
                got += r
        self._prep = 4 + k
        return _BULK_READ_REPLY, _PREP
