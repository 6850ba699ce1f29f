"""Error classes shared by the codec, the link and the verifiers.

Every error says what is wrong and where (field name or byte offset), so a merchant, a bank
operator or a test can act on the message alone. On MicroPython (the token) the codec error
names are all CodecError itself: same messages, one class instead of thirteen in its heap.
"""

import sys

_MPY = sys.implementation.name == "micropython"


class HubiError(Exception):
    """Base class of every error hubi_core raises on purpose."""


try:

    class CodecError(HubiError, ValueError):
        """Bytes that are not a valid hubi object."""

except TypeError:  # MicroPython: no class with two native exception bases ("lay-out conflict")

    class CodecError(HubiError):
        """Bytes that are not a valid hubi object (not a ValueError on MicroPython)."""


if _MPY:
    # The token: one class for every codec error (each message says what is wrong and where).
    # A class costs about 200 bytes of a 96 KB heap on MicroPython; the host keeps them apart.
    Truncated = TrailingBytes = UnknownSuite = UnknownVersion = UnknownKind = CodecError
    UnknownTag = DuplicateTag = TagOrder = MissingField = Oversize = BadPoint = CodecError
    HighS = BadValue = CodecError
else:

    class Truncated(CodecError):
        pass

    class TrailingBytes(CodecError):
        pass

    class UnknownSuite(CodecError):
        pass

    class UnknownVersion(CodecError):
        pass

    class UnknownKind(CodecError):
        pass

    class UnknownTag(CodecError):
        pass

    class DuplicateTag(CodecError):
        pass

    class TagOrder(CodecError):
        pass

    class MissingField(CodecError):
        pass

    class Oversize(CodecError):
        pass

    class BadPoint(CodecError):
        pass

    class HighS(CodecError):
        pass

    class BadValue(CodecError):
        pass


class VerifyError(HubiError):
    """A signature or binding that does not check out; `field` names the culprit."""

    def __init__(self, field, reason):
        super().__init__("%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


class LinkError(HubiError):
    """Serial link failures: framing, CRC, timeouts, version mismatch."""


# --- serial link (hubi_core.link); docs/link.md -------------------------------------------
# MicroPython note: builtin exceptions have no __init__ attribute to call explicitly, so the
# classes below use super().__init__(...).


class FrameError(LinkError):
    """A framing problem seen by the frame decoder.

    The decoder never raises these: it returns them as events (and the session layer raises
    them when a request cannot be completed). ``offset`` is the stream offset (bytes received
    since the decoder started) where the problem begins; ``seq``/``type``/``version`` come from
    the frame header when the header itself was intact, else None.
    """

    def __init__(self, msg, offset=None, seq=None, type=None, version=None):
        super().__init__(msg)
        self.offset = offset
        self.seq = seq
        self.type = type
        self.version = version


class Garbage(FrameError):
    """Bytes skipped while looking for the next frame (``count`` of them)."""

    count = 0


class BadHeader(FrameError):
    """Sync bytes followed by a header whose header CRC does not match."""


class BadCrc(FrameError):
    """A frame (or a reassembled message) whose CRC-32 does not match."""


class FrameOversize(FrameError):
    """A frame header announcing more payload than the receiver accepts, or a payload too
    large to encode in one frame."""


class FrameTruncated(FrameError):
    """A frame whose bytes stopped arriving before it was complete (frame timeout)."""


class LinkClosed(LinkError):
    """The stream or port was closed (EOF, device unplugged)."""


if _MPY:
    # The client's errors: a token, which only serves, makes them only if asked for (a class
    # costs about 200 bytes of its heap).
    _CLIENT_ERRORS = ("LinkTimeout", "VersionMismatch", "MessageTooLarge", "ProtocolViolation")

    def __getattr__(name):
        if name in _CLIENT_ERRORS:
            cls = type(name, (LinkError,), {})
            globals()[name] = cls
            return cls
        raise AttributeError(name)

else:

    class LinkTimeout(LinkError):
        """No reply to a request within its timeout, on every attempt."""

    class VersionMismatch(LinkError):
        """The two ends share no protocol version (HELLO), or a frame uses an unknown one."""

    class MessageTooLarge(LinkError):
        """A message larger than this end or the peer accepts (MAX_MESSAGE / HELLO limits)."""

    class ProtocolViolation(LinkError):
        """The peer answered with something the protocol does not allow here."""


class ErrorReply(LinkError):
    """An ERROR reply: ``code`` (protocol.ERR_*) and ``text`` from the peer.

    On the device, a handler raises ErrorReply(code, text) to answer with that error; on the
    host, Client.call raises it when the token answers ERROR.
    """

    def __init__(self, code, text="", request_type=None):
        # On a token the names come from hubi_core.protocol, which it keeps out of its heap:
        # the message is made when asked for (str), the same text as on the host.
        super().__init__(text if _MPY else _reply_message(code, text, request_type))
        self.code = code
        self.text = text
        self.request_type = request_type

    if _MPY:

        def __str__(self):
            return _reply_message(self.code, self.text, self.request_type)


def _reply_message(code, text, request_type):
    from hubi_core.protocol import error_name, type_name

    if request_type is None:
        return "%s: %s" % (error_name(code), text)
    return "%s to %s: %s" % (error_name(code), type_name(request_type), text)
