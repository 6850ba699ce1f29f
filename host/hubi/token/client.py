"""Host side of the token's application messages (docs/token.md, "Link messages").

    with TokenClient.open("/dev/ttyUSB0") as tok:     # or the simulator's pty path
        tok.info()                                     # dict
        tok.provision(bundle_blob, files)              # after ProvisionBundle.build()
        result = tok.pay(request_bytes)                # PayResult: note, or summary + confirm()

Every call raises hubi_core.errors.LinkError subclasses; ErrorReply carries the token's
application error code (protocol.ERR_*) and its message.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hubi import link_client
from hubi_core import protocol as P
from hubi_core import tokenmsg
from hubi_core.link import Client
from hubi_core.wire import varint

# a payment waits for a person on the device: WAIT frames keep it alive, this caps a frame
DEFAULT_TIMEOUT_MS = 5000


@dataclass
class PayResult:
    note: bytes | None
    summary: dict[str, Any] | None


class TokenClient:
    def __init__(self, link: Client) -> None:
        self.link = link

    @classmethod
    def open(
        cls,
        port: str,
        baudrate: int = 115200,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        retries: int = 2,
        set_time: bool = True,
    ) -> TokenClient:
        link = link_client.connect(port, baudrate, timeout_ms=timeout_ms, retries=retries)
        tok = cls(link)
        if set_time:
            try:
                tok.set_time(int(time.time()))
            except BaseException:
                link.close()
                raise
        return tok

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> TokenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------- messages
    def _json(self, type_: int, payload: bytes = b"", **kw: Any) -> Any:
        return json.loads(self.link.call(type_, payload, **kw).decode())

    def info(self) -> dict[str, Any]:
        return self._json(P.GET_INFO)

    def set_time(self, t: int) -> None:
        self.link.call(P.SET_TIME, struct.pack(">I", t))

    def upload_file(
        self, name: str, data: bytes, progress: Callable[[int, int], None] | None = None
    ) -> bytes:
        """PROVISION_FILE: returns the SHA-256 the token computed over what it stored."""
        tokenmsg.check_file_name(name)
        return self.link.call(
            P.PROVISION_FILE, tokenmsg.file_header(name) + data, progress=progress
        )

    def provision_commit(self, blob: bytes) -> dict[str, Any]:
        return self._json(P.PROVISION_COMMIT, blob, timeout_ms=30000)

    def load_allowance(self, raw: bytes) -> dict[str, Any]:
        return self._json(P.LOAD_ALLOWANCE, raw)

    def pay(self, request: bytes, timeout_ms: int | None = None) -> PayResult:
        """PAY_REQUEST. Screen boards answer with the note once the user confirmed and typed
        the PIN on the device; headless ones with a summary to confirm (confirm_pay)."""
        reply = self.link.call(P.PAY_REQUEST, request, timeout_ms=timeout_ms)
        if not reply:
            raise ValueError("empty PAY_REQUEST reply")
        if reply[0] == tokenmsg.PAY_NOTE:
            return PayResult(bytes(reply[1:]), None)
        if reply[0] == tokenmsg.PAY_NEEDS_PIN:
            return PayResult(None, json.loads(bytes(reply[1:]).decode()))
        raise ValueError(f"PAY_REQUEST reply status {reply[0]} unknown")

    def confirm_pay(self, pin: str) -> bytes:
        return self.link.call(P.PAY_CONFIRM, pin.encode(), timeout_ms=120000)

    def cancel_pay(self) -> None:
        self.link.call(P.PAY_CANCEL)

    def note(self, serial: int | None = None) -> bytes:
        return self.link.call(P.NOTE_GET, b"" if serial is None else varint(serial))

    def notes(self) -> list[dict[str, Any]]:
        return self._json(P.NOTE_LIST)

    def load_notice(self, raw: bytes) -> dict[str, Any]:
        return self._json(P.LOAD_NOTICE, raw)

    def balance(self, pin: str | None = None) -> dict[str, Any]:
        return self._json(P.SHOW_BALANCE, (pin or "").encode(), timeout_ms=120000)

    def change_pin(self, old: str | None = None, new: str | None = None) -> None:
        payload = b"" if old is None else old.encode() + b"\x00" + (new or "").encode()
        self.link.call(P.CHANGE_PIN, payload, timeout_ms=120000)

    def wipe(self, pin: str | None = None) -> None:
        self.link.call(P.WIPE, (pin or "").encode(), timeout_ms=120000)
