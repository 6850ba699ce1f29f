"""Host-side helpers of hubi_core.link (``link.Frame``, ``link.encode_frame``,
``link.decode_frames`` work too): decoded frames as objects and whole frames as bytes. A token
builds frames in its preallocated buffer (link.finish_frame) and never loads this module."""

from hubi_core.errors import FrameOversize
from hubi_core.link import FrameDecoder, _type_name, finish_frame
from hubi_core.protocol import HEADER_LEN as _HL
from hubi_core.protocol import MAX_PAYLOAD, OVERHEAD, PROTOCOL_VERSION


class Frame:
    """One decoded frame: protocol version, type, sequence number and payload (bytes)."""

    __slots__ = ("version", "type", "seq", "payload")

    def __init__(self, version, type, seq, payload):
        self.version = version
        self.type = type
        self.seq = seq
        self.payload = payload

    def __eq__(self, other):
        return (
            isinstance(other, Frame)
            and self.version == other.version
            and self.type == other.type
            and self.seq == other.seq
            and bytes(self.payload) == bytes(other.payload)
        )

    def __repr__(self):
        return "Frame(v%d %s seq=%d len=%d)" % (
            self.version,
            _type_name(self.type),
            self.seq,
            len(self.payload),
        )


def encode_frame(type, seq, payload=b"", version=PROTOCOL_VERSION, max_payload=MAX_PAYLOAD):
    """One complete frame as bytes; FrameOversize if the payload exceeds max_payload."""
    n = len(payload)
    if n > max_payload:
        raise FrameOversize(
            "payload of %d bytes exceeds the maximum of %d bytes per frame (%s)"
            % (n, max_payload, _type_name(type)),
            seq=seq,
            type=type,
            version=version,
        )
    buf = bytearray(OVERHEAD + n)
    buf[_HL : _HL + n] = payload
    finish_frame(buf, version, type, seq, n)
    return bytes(buf)


def decode_frames(data, max_payload=MAX_PAYLOAD):
    """Decode a complete byte string (then flush): list of frames and events."""
    d = FrameDecoder(max_payload)
    return d.feed(data) + d.flush()
