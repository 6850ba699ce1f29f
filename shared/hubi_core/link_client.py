"""Serial link, client side: ``Client.call(type, payload) -> reply``.

Transport-agnostic and shared like ``hubi_core.link`` (the host wraps a pyserial port in
hubi.link_client; a MicroPython board could use it over a UART just the same). Kept apart
from link.py only to save the token's heap: a token serves and never needs this code.
``from hubi_core.link import Client`` works too.
"""

import os
import struct

from hubi_core import protocol as P
from hubi_core.errors import (
    BadCrc,
    ErrorReply,
    FrameOversize,
    Garbage,
    LinkTimeout,
    MessageTooLarge,
    ProtocolViolation,
    VersionMismatch,
)
from hubi_core.link import (
    _HL,
    EVENT,
    NEED_MORE,
    Endpoint,
    _check_versions,
    _crc32,
    _text,
    _vlist,
    finish_frame,
    ticks_diff,
    ticks_ms,
)

# The longest one request may be kept waiting by WAIT frames, from its first send, unless the
# caller gives another limit (call(wait_limit_ms=)): long enough for the token's slowest work
# that sends WAIT without a person (a PIN back-off of at most 64 s), short enough that a token
# answering WAIT for ever does not hang the host. Requests that wait for a person on the
# device (confirm, PIN) pass a longer limit (hubi.token.client).
WAIT_LIMIT_MS = 90000


def _parse_error(payload):
    """(code, text) of an ERROR reply; code None if the reply is too short to hold one."""
    if len(payload) < 2:
        return None, "malformed ERROR reply (%d byte%s, no error code)" % (
            len(payload),
            "" if len(payload) == 1 else "s",
        )
    return (payload[0] << 8) | payload[1], _text(payload[2:])


class Client(Endpoint):
    """Host side: ``call(type, payload) -> reply payload`` with retries and bulk transfer.

    Each request gets a new sequence number; a retry re-sends the identical frame, so the
    server answers a duplicate from its reply cache instead of running the handler twice.
    Replies with another sequence number are stale and dropped; a damaged reply to the
    current request, or an ERROR saying the request arrived damaged (BAD_CRC, TRUNCATED,
    OVERSIZE), triggers an immediate retry; WAIT restarts the timeout, but never past
    ``wait_limit_ms`` from the request's first send (LinkTimeout then). Messages longer than
    one frame go through BULK_BEGIN/DATA/END (upload) and BULK_REPLY/BULK_READ (download).
    """

    def __init__(
        self,
        transport,
        versions=P.SUPPORTED_VERSIONS,
        timeout_ms=P.DEFAULT_TIMEOUT_MS,
        retries=P.DEFAULT_RETRIES,
        name="hubi-host",
        max_payload=P.MAX_PAYLOAD,
        max_message=P.MAX_MESSAGE,
        frame_timeout_ms=P.FRAME_TIMEOUT_MS,
        wait_limit_ms=WAIT_LIMIT_MS,
    ):
        super().__init__(transport, max_payload, frame_timeout_ms)
        self.versions = _check_versions(versions)
        self.version = self.versions[-1]
        self.timeout_ms = timeout_ms
        self.wait_limit_ms = wait_limit_ms
        self.retries = retries
        self.name = name
        self.max_message = max_message
        self.peer_max_message = P.MAX_MESSAGE
        self.peer = None
        r = os.urandom(2)
        self._seq = ((r[0] << 8) | r[1]) % 0xFFFF
        self.retransmits = 0
        self.stale = 0
        self.timeouts = 0
        self.unexpected = 0
        self.last_problem = None

    def _next_seq(self):
        self._seq = self._seq % 0xFFFF + 1  # 1..65535; 0 is never used
        return self._seq

    def _transact(self, type, head, data, timeout_ms, retries, wait_limit_ms=None):
        """One request frame (head + data) -> (reply type, reply payload bytes)."""
        if timeout_ms is None:
            timeout_ms = self.timeout_ms
        if retries is None:
            retries = self.retries
        if wait_limit_ms is None:
            wait_limit_ms = self.wait_limit_ms
        if wait_limit_ms < timeout_ms:
            wait_limit_ms = timeout_ms  # WAIT never shortens the wait for a reply
        nh = len(head)
        n = nh + len(data)
        if n > self.peer_max_payload:
            raise FrameOversize(
                "request payload of %d bytes exceeds the peer's %d bytes per frame"
                % (n, self.peer_max_payload)
            )
        seq = self._next_seq()
        txv = self._txv
        txv[_HL : _HL + nh] = head
        txv[_HL + nh : _HL + n] = data
        total = finish_frame(self._tx, self.version, type, seq, n)
        frame = txv[:total]
        problem = None
        seen = None
        attempts = retries + 1
        start = ticks_ms()
        waits = 0
        for attempt in range(attempts):
            if attempt:
                self.retransmits += 1
            self.transport.write(frame)
            self.tx_frames += 1
            timer = ticks_ms()
            wait_ms = timeout_ms
            while True:
                left = wait_ms - ticks_diff(ticks_ms(), timer)
                if waits:  # kept waiting by WAIT: never past the limit
                    spent = ticks_diff(ticks_ms(), start)
                    if spent >= wait_limit_ms:
                        self.timeouts += 1
                        raise LinkTimeout(
                            "no reply to %s seq %d after %d ms: the peer only answered WAIT"
                            " (%d frame%s), past the limit of %d ms for one request"
                            % (
                                P.type_name(type),
                                seq,
                                spent,
                                waits,
                                "" if waits == 1 else "s",
                                wait_limit_ms,
                            )
                        )
                    if wait_limit_ms - spent < left:
                        left = wait_limit_ms - spent
                if left <= 0:
                    self.timeouts += 1
                    problem = None
                    break
                k = self.receive(left)
                if k == NEED_MORE:
                    continue
                if k == EVENT:
                    ev = self.event
                    if seen is None or not isinstance(ev, Garbage):
                        seen = self.last_problem = ev  # keep the most telling problem
                    if ev.seq == seq and ev.type is not None and ev.type & P.REPLY:
                        problem = ev  # our reply arrived damaged: ask again now
                        break
                    continue
                dec = self.decoder
                rt = dec.type
                if not rt & P.REPLY:
                    self.unexpected += 1
                    continue
                if dec.seq != seq:
                    self.stale += 1
                    continue
                if rt == P.WAIT:
                    waits += 1
                    hint = 0
                    if len(dec.payload) >= 2:
                        hint = (dec.payload[0] << 8) | dec.payload[1]
                    timer = ticks_ms()
                    wait_ms = hint if hint > timeout_ms else timeout_ms
                    continue
                if rt == P.ERROR:
                    code, text = _parse_error(dec.payload)
                    if code is None:
                        raise ProtocolViolation(
                            "%s was answered with a %s" % (P.type_name(type), text)
                        )
                    if code in P.FRAMING_ERRORS:
                        problem = ErrorReply(code, text, type)
                        seen = self.last_problem = problem
                        break
                    raise ErrorReply(code, text, type)
                return rt, bytes(dec.payload)
        what = "%s seq %d" % (P.type_name(type), seq)
        if problem is None:
            msg = "no reply to %s within %d ms (%d attempt%s)" % (
                what,
                timeout_ms,
                attempts,
                "" if attempts == 1 else "s",
            )
            if seen is not None:
                msg += "; last link problem: %s" % seen
            raise LinkTimeout(msg)
        if isinstance(problem, ErrorReply):
            raise ErrorReply(
                problem.code,
                "%s (%d attempt%s)" % (problem.text, attempts, "" if attempts == 1 else "s"),
                type,
            )
        raise problem.__class__(
            "no intact reply to %s (%d attempt%s); last: %s"
            % (what, attempts, "" if attempts == 1 else "s", problem),
            offset=problem.offset,
            seq=problem.seq,
            type=problem.type,
            version=problem.version,
        )

    def hello(self, timeout_ms=None, retries=None):
        """Negotiate the protocol version and frame/message limits; returns self.peer:
        {"version", "max_payload", "max_message", "name"}. VersionMismatch if none common."""
        vs = self.versions
        head = bytearray(1 + len(vs) + 6)
        head[0] = len(vs)
        head[1 : 1 + len(vs)] = bytes(vs)
        struct.pack_into(">HI", head, 1 + len(vs), self.max_payload, self.max_message)
        name = self.name.encode()[: self.peer_max_payload - len(head)]
        try:
            rt, rp = self._transact(P.HELLO, head, name, timeout_ms, retries)
        except ErrorReply as e:
            if e.code == P.ERR_NO_COMMON_VERSION:
                raise VersionMismatch(
                    "no common link protocol version: this end speaks %s; peer says: %s"
                    % (_vlist(vs), e.text)
                ) from None
            raise
        if rt != P.HELLO_REPLY or len(rp) < 7:
            raise ProtocolViolation(
                "HELLO answered with %s (%d bytes)" % (P.type_name(rt), len(rp))
            )
        v = rp[0]
        pmp, pmm = struct.unpack_from(">HI", rp, 1)
        if v not in vs:
            raise VersionMismatch(
                "peer chose protocol version %d, which this end does not speak (%s)"
                % (v, _vlist(vs))
            )
        if pmp < P.MIN_PAYLOAD:
            raise ProtocolViolation("peer announced max_payload %d < %d" % (pmp, P.MIN_PAYLOAD))
        self.version = v
        self.peer_max_payload = min(pmp, self.max_payload)
        self.peer_max_message = pmm
        self.peer = {"version": v, "max_payload": pmp, "max_message": pmm, "name": _text(rp[7:])}
        return self.peer

    def call(
        self, type, payload=b"", timeout_ms=None, retries=None, progress=None, wait_limit_ms=None
    ):
        """Send a request, return the reply payload (bytes).

        ``timeout_ms``/``retries`` apply to each frame exchanged, and so does
        ``wait_limit_ms`` (default ``self.wait_limit_ms``): the longest WAIT frames may keep
        one exchange going, from its first send; ``progress(done, total)``
        is called through a bulk upload (0..len(payload)) and again through a bulk download
        (0..len(reply)). Raises ErrorReply (the peer answered ERROR), LinkTimeout,
        FrameError subclasses (the last attempt's reply arrived damaged),
        MessageTooLarge, ProtocolViolation, LinkClosed.
        """
        if not P.is_request_type(type) or type == P.HELLO or P.BULK_BEGIN <= type <= P.BULK_READ:
            raise ValueError("%s cannot be sent with call()" % P.type_name(type))
        n = len(payload)
        limit = min(self.max_message, self.peer_max_message)
        if n > limit:
            raise MessageTooLarge(
                "request %s of %d bytes exceeds the limit of %d bytes (this end %d, peer %d)"
                % (P.type_name(type), n, limit, self.max_message, self.peer_max_message)
            )
        if n <= self.peer_max_payload:
            rt, rp = self._transact(type, b"", payload, timeout_ms, retries, wait_limit_ms)
        else:
            rt, rp = self._upload(type, payload, timeout_ms, retries, progress, wait_limit_ms)
        if rt == P.BULK_REPLY:
            rt, rp = self._download(type, rp, timeout_ms, retries, progress)
        if rt != type | P.REPLY:
            raise ProtocolViolation(
                "%s was answered with %s" % (P.type_name(type), P.type_name(rt))
            )
        return rp

    def _upload(self, type, payload, timeout_ms, retries, progress, wait_limit_ms=None):
        mv = memoryview(payload)
        total = len(mv)
        head = struct.pack(">BBII", type, 0, total, _crc32(mv))
        rt, rp = self._transact(P.BULK_BEGIN, head, b"", timeout_ms, retries)
        if rt != P.BULK_BEGIN_REPLY:
            raise ProtocolViolation("BULK_BEGIN answered with %s" % P.type_name(rt))
        chunk = self.peer_max_payload - 4
        off = 0
        if progress is not None:
            progress(0, total)
        while off < total:
            k = min(chunk, total - off)
            rt, rp = self._transact(
                P.BULK_DATA, struct.pack(">I", off), mv[off : off + k], timeout_ms, retries
            )
            if rt != P.BULK_DATA_REPLY or len(rp) != 4:
                raise ProtocolViolation("BULK_DATA answered with %s" % P.type_name(rt))
            got = struct.unpack(">I", rp)[0]
            if got != off + k:
                raise ProtocolViolation(
                    "peer acknowledged %d bytes after the chunk at %d+%d" % (got, off, k)
                )
            off += k
            if progress is not None:
                progress(off, total)
        return self._transact(P.BULK_END, b"", b"", timeout_ms, retries, wait_limit_ms)

    def _download(self, type, info, timeout_ms, retries, progress):
        if len(info) != 9:
            raise ProtocolViolation("malformed BULK_REPLY (%d bytes)" % len(info))
        rtype, total, crc = struct.unpack(">BII", info)
        if total > self.max_message:
            raise MessageTooLarge(
                "reply to %s of %d bytes exceeds this end's limit of %d bytes"
                % (P.type_name(type), total, self.max_message)
            )
        out = bytearray(total)
        want = min(self.max_payload, self.peer_max_payload) - 4
        off = 0
        running = 0
        if progress is not None:
            progress(0, total)
        while off < total:
            rt, rp = self._transact(
                P.BULK_READ,
                struct.pack(">IH", off, min(want, total - off)),
                b"",
                timeout_ms,
                retries,
            )
            if rt != P.BULK_READ_REPLY or len(rp) < 5:
                raise ProtocolViolation(
                    "BULK_READ answered with %s (%d bytes)" % (P.type_name(rt), len(rp))
                )
            at = struct.unpack_from(">I", rp)[0]
            k = len(rp) - 4
            if at != off or off + k > total:
                raise ProtocolViolation(
                    "BULK_READ at %d answered with %d bytes at %d" % (off, k, at)
                )
            data = memoryview(rp)[4:]
            out[off : off + k] = data
            running = _crc32(data, running)
            off += k
            if progress is not None:
                progress(off, total)
        if running != crc:
            raise BadCrc(
                "reassembled reply to %s (%d bytes) has CRC-32 0x%08x, the peer announced 0x%08x"
                % (P.type_name(type), total, running, crc)
            )
        return rtype, bytes(out)

    def ping(self, data=b"", timeout_ms=None, retries=None):
        """PING: the peer echoes data (any length up to the message limit)."""
        return self.call(P.PING, data, timeout_ms, retries)

    def peer_stats(self):
        """The peer's link counters (protocol.STATS_FIELDS) as a dict."""
        rp = self.call(P.STATS)
        k = min(len(rp) // 4, len(P.STATS_FIELDS))
        return {P.STATS_FIELDS[i]: struct.unpack_from(">I", rp, 4 * i)[0] for i in range(k)}

    def stats(self):
        d = Endpoint.stats(self)
        d["retransmits"] = self.retransmits
        d["stale"] = self.stale
        d["timeouts"] = self.timeouts
        d["unexpected"] = self.unexpected
        return d
