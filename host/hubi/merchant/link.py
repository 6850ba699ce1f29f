"""The merchant and an attached token (DESIGN §8): request, note and receipt over the link.

Uses the token's own host client (``hubi.token.client.TokenClient``, messages in
``hubi_core.protocol``): PAY_REQUEST carries the Request; a token with a screen asks its owner
to confirm and type the PIN on the device and answers with the Note; a headless token answers
with a summary and needs the PIN (typed by the payer on the merchant's terminal) through
PAY_CONFIRM. The merchant's Receipt goes back with LOAD_NOTICE. Works with a board's serial
port and with the simulator's pseudo-terminal (`hubi token sim`) alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import MerchantError

PinPrompt = Callable[[dict[str, Any]], str | None]

PAY_TIMEOUT_MS = 120_000  # a person confirms on the device meanwhile (the token sends WAIT)


def _client(port: str) -> Any:
    from hubi.token.client import TokenClient

    return TokenClient.open(port)


def pay(
    port: str, request: bytes, pin: PinPrompt | None = None, timeout_ms: int = PAY_TIMEOUT_MS
) -> tuple[bytes, dict[str, Any]]:
    """Send a Request to the token on `port`; returns (note bytes, what happened).

    pin(summary) is asked for the payer's PIN when the token is headless; returning None or
    an empty string cancels the payment on the token.
    """
    with _client(port) as tok:
        res = tok.pay(bytes(request), timeout_ms=timeout_ms)
        if res.note is not None:
            return bytes(res.note), {"confirmed": "on the device"}
        code = pin(res.summary or {}) if pin is not None else None
        if not code:
            tok.cancel_pay()
            raise MerchantError("the payer did not enter a PIN: payment cancelled on the token")
        note = tok.confirm_pay(code)
        return bytes(note), {"confirmed": "PIN over the link", "summary": res.summary}


def send_receipt(port: str, receipt: bytes) -> dict[str, Any]:
    """Hand the Receipt to the token on `port` (LOAD_NOTICE); returns the token's summary."""
    with _client(port) as tok:
        return dict(tok.load_notice(bytes(receipt)))


def send(port: str, what: str, data: bytes) -> dict[str, Any]:
    """Used by the CLI: 'receipt' -> the token's summary."""
    if what == "receipt":
        return {"token": send_receipt(port, data)}
    raise ValueError(f"cannot send a {what} on its own: use pay() for requests")
