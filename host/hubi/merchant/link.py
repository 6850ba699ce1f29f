"""Sending the merchant's objects to an attached token over the serial link (DESIGN §8).

The message types are the token firmware's (``hubi_core.protocol``); until the firmware
defines them this module says so instead of guessing.
"""

from __future__ import annotations

from typing import Any

from hubi_core import protocol as P

from .config import MerchantError

# what -> name of the application message type in hubi_core.protocol
MESSAGE_TYPES = {"request": "PAY_REQUEST", "receipt": "RECEIPT_PUT"}


def message_type(what: str) -> int:
    name = MESSAGE_TYPES[what]
    t = getattr(P, name, None)
    if t is None:
        raise MerchantError(
            f"the link protocol of this build has no {name} message (token firmware not there yet)"
        )
    return t


def send(port: str, what: str, data: bytes, timeout_ms: int = 5000) -> dict[str, Any]:
    """Send a Request or Receipt to the token on `port`; returns what the token answered."""
    t = message_type(what)
    from hubi.link_client import connect

    link = connect(port, timeout_ms=timeout_ms)
    try:
        reply = link.call(t, bytes(data))
    finally:
        link.close()
    out: dict[str, Any] = {"type": P.type_name(t), "reply_bytes": len(reply or b"")}
    if reply and reply[:1] == b"\x01" and len(reply) > 3 and reply[1] == 3:  # a Note came back
        out["note"] = bytes(reply).hex()
    return out
