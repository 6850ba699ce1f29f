"""Host-side helpers around hubi_core objects: loading from files and JSON views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubi_core import codec, lsum
from hubi_core.codec import Obj

IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")


def is_image(data: bytes) -> bool:
    return any(data.startswith(m) for m in IMAGE_MAGIC)


def read_object_bytes(path: Path) -> bytes:
    """Bytes of a hubi object from a binary file or from an image of its QR code(s)."""
    data = Path(path).read_bytes()
    if is_image(data):
        from hubi import qrscan

        return qrscan.collect([Path(path)])
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
