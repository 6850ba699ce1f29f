"""Host-side helpers around hubi_core objects: loading from files and JSON views."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO

from hubi_core import codec, lsum
from hubi_core.codec import Obj

# PNG, JPEG, GIF, BMP, TIFF (both byte orders); WebP is RIFF....WEBP (see is_image)
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")

# An image file is read whole before OpenCV decodes it: past this many bytes it is refused
# unread (a phone photo is a few MB; a 50-megapixel PNG of a QR code far less).
MAX_IMAGE_FILE = 64 * 1024 * 1024


def is_image(data: bytes) -> bool:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return any(data.startswith(m) for m in IMAGE_MAGIC)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike, devices: bool = False) -> BinaryIO:
    """`path` opened for reading if it is a regular file, else ValueError naming it: a FIFO
    would block the open (or the read) for ever. devices: a character device (/dev/zero) is
    opened too, non-blocking: the caller reads a bounded amount, and one with nothing to read
    gives None at once instead of waiting."""
    st = os.stat(path)
    if not _allowed(st.st_mode, devices):
        raise ValueError(f"{path}: {_kind(st.st_mode)}, not a file to read")
    # O_NONBLOCK: if it was swapped for a FIFO since the stat, the open still returns
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    f = os.fdopen(fd, "rb")
    mode = os.fstat(fd).st_mode
    if not _allowed(mode, devices):
        f.close()
        raise ValueError(f"{path}: {_kind(mode)}, not a file to read")
    return f


class FileTooLong(ValueError):
    """A file longer than its reader takes (read_regular)."""


def read_regular(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them; ValueError naming the
    file otherwise (`what` says what it should have been): a FIFO would hang the reader and a
    link to /dev/zero fill its memory."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileTooLong(f"{path}: more than {limit:,} bytes, too long for {what}")
    return data


def _allowed(mode: int, devices: bool) -> bool:
    return stat.S_ISREG(mode) or (devices and stat.S_ISCHR(mode))


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of an image file, refused unread past MAX_IMAGE_FILE."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_IMAGE_FILE:
            raise ValueError(
                f"{path}: {size:,} bytes, more than the {MAX_IMAGE_FILE:,} an image to scan may"
                " have (not read)"
            )
        return f.read(MAX_IMAGE_FILE + 1)


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
    with open_regular(path, devices=True) as f:
        data = f.read(MAX_OBJECT_FILE + 1)
    if data is None:  # a device with nothing to read now: not worth waiting for
        raise ValueError(f"{path}: a device with nothing to read")
    if not data:
        raise ValueError(f"{path}: empty file")
    if is_image(data):
        from hubi import qrscan

        return qrscan.collect([Path(path)])
    if len(data) > MAX_OBJECT_FILE:
        raise ValueError(
            f"{path}: more than {MAX_OBJECT_FILE:,} bytes and not an image: a hubi object is at"
            f" most {codec.MAX_OBJECT:,} bytes (not read further)"
        )
    return from_hex_text(data, path)


def from_hex_text(data: bytes, path: Path) -> bytes:
    """The bytes `data` spells when it is hex text (as hubi prints an object), else `data`
    (an object's first byte, its suite, is no hex digit); ValueError naming `path` for hex
    that does not make whole bytes."""
    if data.startswith(b"\xef\xbb\xbf") and _HEX_TEXT.fullmatch(data[3:]):
        data = data[3:]  # a byte order mark, as some editors write: hex text all the same
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
