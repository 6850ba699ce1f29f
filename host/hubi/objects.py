"""Host-side helpers around hubi_core objects: loading from files and JSON views."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hubi_core import codec, lsum
from hubi_core.codec import Obj

IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")


def is_image(data: bytes) -> bool:
    return any(data.startswith(m) for m in IMAGE_MAGIC)


# hex digits, spaces and line breaks only: `hubi token note`, the JSON outputs and the bank API
# give objects as hex, and a binary object starts with its suite byte 0x01, never with one of these
_HEX_TEXT = re.compile(rb"[0-9a-fA-F\s]+")


# a hubi object is at most codec.MAX_OBJECT bytes; its hex, with line breaks, fits in this many
# times. A longer file that is not an image is not read further (`note show /dev/zero` would never
# end, a misnamed backup would fill memory).
MAX_OBJECT_FILE = 64 * 1024


def read_object_bytes(path: Path) -> bytes:
    """Bytes of a hubi object from a binary file, a text file of its hex (as `hubi token note`
    prints it), or an image of its QR code(s)."""
    with open(path, "rb") as f:
        data = f.read(MAX_OBJECT_FILE + 1)
    if is_image(data):
        from hubi import qrscan

        return qrscan.collect([Path(path)])
    if len(data) > MAX_OBJECT_FILE:
        raise ValueError(
            f"{path}: more than {MAX_OBJECT_FILE:,} bytes and not an image: a hubi object is at"
            f" most {codec.MAX_OBJECT:,} bytes (not read further)"
        )
    if _HEX_TEXT.fullmatch(data):
        try:
            return bytes.fromhex(data.decode("ascii"))
        except ValueError:  # an odd number of digits, or a digit pair cut by a space
            raise ValueError(f"{path}: hex text that does not make whole bytes") from None
    return data


def value_to_json(value: Any) -> Any:
    if isinstance(value, Obj):
        return obj_to_dict(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return value


def obj_to_dict(obj: Obj) -> dict[str, Any]:
    """A JSON-able view of an object: header, fields (bytes as hex), signatures."""
    out: dict[str, Any] = {
        "kind": obj.kind_name,
        "suite": codec.SUITE,
        "version": codec.VERSION,
        "signer": obj.signer,
        "serial": obj.serial,
        "time": obj.time,
        "fields": {k: value_to_json(v) for k, v in obj.values.items() if k not in ("lsum", "seal")},
        "signatures": {k: v.hex() for k, v in obj.sigs.items()},
    }
    if obj.kind == codec.NOTE:
        out["note_id"] = lsum.note_id(obj.signer, obj.serial).hex()
        out["lsum"] = lsum.of_note(obj).hex()
    return out
