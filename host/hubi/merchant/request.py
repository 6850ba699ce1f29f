"""Payment requests (DESIGN §2 link 1): signed by the merchant, shown as QR, sent over the link."""

from __future__ import annotations

import io
import os
from pathlib import Path

import segno

from hubi_core import codec

from .config import Identity

DEFAULT_EXPIRES = 300  # seconds a request stays payable


def build_request(
    identity: Identity,
    serial: int,
    now: int,
    amount: int,
    expires: int = DEFAULT_EXPIRES,
    purpose: str | None = None,
) -> bytes:
    """Canonical bytes of a Request for `amount` minor units, payable until now + expires."""
    if expires <= 0:
        raise ValueError("--expires must be a positive number of seconds")
    obj = codec.make_request(
        identity.account, serial, now, identity.template, amount, now + expires, purpose
    )
    codec.sign(obj, identity.private)
    return codec.encode(obj)


def qr_symbol(data: bytes, level: str = "M") -> segno.QRCode:
    """Byte-mode QR of data (no ECI, exact level): what zxing-cpp reads back as data."""
    return segno.make_qr(bytes(data), error=level.lower(), mode="byte", boost_error=False)


def terminal_qr(data: bytes, level: str = "L") -> str:
    """The QR as text for a terminal (two rows per line; ANSI colours)."""
    buf = io.StringIO()
    qr_symbol(data, level).terminal(out=buf, compact=True, border=2)
    return buf.getvalue()


def save_png(data: bytes, path: str | os.PathLike, scale: int = 6, level: str = "M") -> Path:
    """Save data as one QR code in a PNG (hubi.qrscan.render_png: decodes back exactly)."""
    from hubi import qrscan

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return qrscan.render_png(bytes(data), path, scale=scale, level=level)
