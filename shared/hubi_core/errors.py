"""Error classes shared by the codec, the link and the verifiers.

Every error says what is wrong and where (field name or byte offset), so a merchant, a bank
operator or a test can act on the message alone.
"""


class HubiError(Exception):
    """Base class of every error hubi_core raises on purpose."""


try:

    class CodecError(HubiError, ValueError):
        """Bytes that are not a valid hubi object."""

except TypeError:  # MicroPython: no class with two native exception bases ("lay-out conflict")

    class CodecError(HubiError):
        """Bytes that are not a valid hubi object (not a ValueError on MicroPython)."""


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
        HubiError.__init__(self, "%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


class LinkError(HubiError):
    """Serial link failures: framing, CRC, timeouts, version mismatch."""
