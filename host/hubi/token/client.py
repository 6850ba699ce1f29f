"""Host side of the token's application messages (docs/token.md, "Link messages").

    with TokenClient.open("/dev/ttyUSB0") as tok:     # or the simulator's pty path
        tok.info()                                     # dict
        tok.provision(bundle_blob, files)              # after ProvisionBundle.build()
        result = tok.pay(request_bytes)                # PayResult: note, or summary + confirm()

Every call raises hubi_core.errors.LinkError subclasses; ErrorReply carries the token's
application error code (protocol.ERR_*) and its message; a reply that is not what the message's
layout says (not UTF-8, not JSON, a key missing or of the wrong type, an unknown status) is a
BadReply naming the message and what is wrong, e.g. "reply to GET_INFO lacks 'account'".

WAIT frames keep a request going while the token works, but only so long (Client.wait_limit_ms):
WAIT_LIMIT_MS for the messages a token answers by itself, PERSON_WAIT_MS for those that may
wait for a person on the device (confirm, PIN entry) or for the PIN back-off.
"""

from __future__ import annotations

import errno
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from hubi import jsonload, link_client
from hubi_core import protocol as P
from hubi_core import tokenmsg
from hubi_core.errors import HubiError, LinkClosed, ProtocolViolation
from hubi_core.link import Client
from hubi_core.pin import pin_problem
from hubi_core.wire import varint

# a payment waits for a person on the device: WAIT frames keep it alive, this caps a frame
DEFAULT_TIMEOUT_MS = 5000
# the longest WAIT frames may keep one request going (from its first send): a token sends WAIT
# only while a person confirms or types a PIN on it, or through a PIN back-off (at most 64 s),
# so the messages that involve neither get a minute and those that may get ten
WAIT_LIMIT_MS = 60_000
PERSON_WAIT_MS = 600_000  # pay, confirm, balance, PIN change, wipe


class BadReply(ProtocolViolation):
    """The token's reply does not have the layout its message type says."""


class BadPin(HubiError, ValueError):
    """A PIN the token cannot take, refused here: the token would count it as a wrong try."""


def pin_bytes(pin: str, what: str = "PIN") -> bytes:
    """`pin` for the link, or BadPin: the token counts a PIN that breaks its rule (a space, a
    full-width digit, too short) as a wrong try, and the last try wipes its keys."""
    why = pin_problem(pin)
    if why:
        raise BadPin(f"{what} not sent: {why} (the token would count it as a wrong try)")
    return pin.encode()


_U64 = 1 << 64
_NAMES = {int: "a whole number", str: "a string", bool: "true or false", None: "null"}


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true or false"
    if isinstance(v, int):
        return "a whole number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    return "a " + type(v).__name__


def _is(v: Any, kind: Any) -> bool:
    if kind is None:
        return v is None
    if kind is int:
        return type(v) is int and 0 <= v < _U64
    if kind is bool:
        return isinstance(v, bool)
    if kind is str:
        return isinstance(v, str)
    return isinstance(v, dict)  # a nested layout


# layouts: key -> (the kinds it may be: int, str, bool, None or a nested layout; required)
Layout = dict[str, tuple[tuple[Any, ...], bool]]
ALLOWANCE: Layout = {
    "serial": ((int,), True),
    "cap": ((int,), True),
    "spent": ((int,), False),
    "left": ((int,), True),
    "expiry": ((int,), True),
    "first_serial": ((int,), True),
}
INFO: Layout = {
    "state": ((str,), True),
    "board": ((str, None), False),
    "firmware": ((str, None), False),
    "transport_key": ((str, None), False),
    "allowance": ((ALLOWANCE, None), False),
}
INFO_READY: Layout = {
    "account": ((str,), True),
    "currency": ((str,), True),
    "next_serial": ((int,), True),
    "pin_tries_left": ((int,), True),
    "notes": ((int,), True),
}
SUMMARY: Layout = {
    "payee": ((str,), True),
    "amount": ((int,), True),
    "amount_text": ((str,), True),
    "purpose": ((str, None), False),
    "kind": ((str,), False),
    "expiry": ((int,), False),
}
NOTE_ENTRY: Layout = {
    "serial": ((int,), True),
    "time": ((int,), True),
    "amount": ((int,), True),
    "payee": ((str,), True),
    "purpose": ((str, None), False),
    "note_id": ((str,), True),
    "receipt": ((bool,), False),
}
NOTICE: Layout = {
    "kind": ((str,), True),
    "signer": ((str,), True),
    "serial": ((int,), True),
    "amount": ((int,), True),
    "payee": ((str,), True),
    "note_id": ((str,), True),
    "purpose": ((str, None), False),
}
BALANCE: Layout = {
    "balance": ((int,), True),
    "balance_text": ((str,), True),
    "notice_serial": ((int,), True),
    "bank": ((str,), True),
    "debited": ((int,), True),
    "payee": ((str,), True),
    "time": ((int,), True),
}


def check_layout(what: str, obj: Any, layout: Layout, path: str = "") -> dict[str, Any]:
    """`obj` if it is a JSON object with `layout`; BadReply naming the key otherwise."""
    if not isinstance(obj, dict):
        where = f" '{path}'" if path else ""
        raise BadReply(f"{what}{where} is {_kind(obj)}, not a JSON object")
    for key, (kinds, required) in layout.items():
        name = f"{path}.{key}" if path else key
        if key not in obj:
            if required:
                raise BadReply(f"{what} lacks '{name}'")
            continue
        v = obj[key]
        for k in kinds:
            if _is(v, k):
                if isinstance(k, dict):
                    check_layout(what, v, k, name)
                break
        else:
            if int in kinds and type(v) is int:
                raise BadReply(f"{what}: '{name}' is {str(v)[:24]}, not in 0..2^64-1")
            want = " or ".join("an object" if isinstance(k, dict) else _NAMES[k] for k in kinds)
            raise BadReply(f"{what}: '{name}' is {_kind(v)}, not {want}")
    return obj


def parse_json(type_: int, raw: bytes) -> Any:
    """A JSON reply to `type_`; BadReply if it is not UTF-8 or not JSON."""
    try:
        return jsonload.loads(bytes(raw), f"reply to {P.type_name(type_)}")
    except jsonload.JsonError as e:
        raise BadReply(str(e)) from None


def _info_layout(type_: int, obj: Any) -> dict[str, Any]:
    what = f"reply to {P.type_name(type_)}"
    check_layout(what, obj, INFO)
    if obj["state"] == "ready":
        check_layout(what, obj, INFO_READY)
    elif obj["state"] != "blank":
        raise BadReply(f"{what}: 'state' is {obj['state'][:40]!r}, not 'ready' or 'blank'")
    return obj


def _open_port(port: str, baudrate: int) -> str | serial.SerialBase:
    """A device path opened with an exclusive lock: a second program on the same port splits
    the token's replies between the two, and both failed late with "no reply" (a URL as is)."""
    if "://" in port:
        return port
    try:
        return serial.Serial(port, baudrate=baudrate, timeout=0, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as e:
        if getattr(e, "errno", None) in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise LinkClosed(
                f"serial port {port} is in use by another program (another `hubi token`"
                " command, the merchant app): wait for it to end"
            ) from None
        raise LinkClosed(f"cannot open serial port {port!r}: {e}") from e


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
        link = link_client.connect(
            _open_port(port, baudrate), baudrate, timeout_ms=timeout_ms, retries=retries
        )
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
    def _call(self, type_: int, payload: bytes = b"", person: bool = False, **kw: Any) -> bytes:
        kw.setdefault("wait_limit_ms", PERSON_WAIT_MS if person else WAIT_LIMIT_MS)
        return self.link.call(type_, payload, **kw)

    def _json(
        self, type_: int, payload: bytes = b"", layout: Layout | None = None, **kw: Any
    ) -> Any:
        obj = parse_json(type_, self._call(type_, payload, **kw))
        if layout is not None:
            check_layout(f"reply to {P.type_name(type_)}", obj, layout)
        return obj

    def info(self) -> dict[str, Any]:
        return _info_layout(P.GET_INFO, self._json(P.GET_INFO))

    def set_time(self, t: int) -> None:
        self._call(P.SET_TIME, struct.pack(">I", t))

    def upload_file(
        self, name: str, data: bytes, progress: Callable[[int, int], None] | None = None
    ) -> bytes:
        """PROVISION_FILE: returns the SHA-256 the token computed over what it stored."""
        tokenmsg.check_file_name(name)
        return self._call(P.PROVISION_FILE, tokenmsg.file_header(name) + data, progress=progress)

    def provision_commit(self, blob: bytes) -> dict[str, Any]:
        obj = self._json(P.PROVISION_COMMIT, blob, timeout_ms=30000)
        return _info_layout(P.PROVISION_COMMIT, obj)

    def load_allowance(self, raw: bytes) -> dict[str, Any]:
        return self._json(P.LOAD_ALLOWANCE, raw, ALLOWANCE)

    def pay(self, request: bytes, timeout_ms: int | None = None) -> PayResult:
        """PAY_REQUEST. Screen boards answer with the note once the user confirmed and typed
        the PIN on the device; headless ones with a summary to confirm (confirm_pay)."""
        reply = self._call(P.PAY_REQUEST, request, True, timeout_ms=timeout_ms)
        what = f"reply to {P.type_name(P.PAY_REQUEST)}"
        if not reply:
            raise BadReply(f"{what} is empty (no status byte)")
        if reply[0] == tokenmsg.PAY_NOTE:
            if len(reply) == 1:
                raise BadReply(f"{what} has the status of a note but no note")
            return PayResult(bytes(reply[1:]), None)
        if reply[0] == tokenmsg.PAY_NEEDS_PIN:
            summary = parse_json(P.PAY_REQUEST, reply[1:])
            return PayResult(None, check_layout(what, summary, SUMMARY))
        raise BadReply(
            f"{what} has status {reply[0]}, not {tokenmsg.PAY_NOTE} (a note)"
            f" or {tokenmsg.PAY_NEEDS_PIN} (a summary to confirm)"
        )

    def confirm_pay(self, pin: str) -> bytes:
        return self._call(P.PAY_CONFIRM, pin_bytes(pin), True, timeout_ms=120000)

    def cancel_pay(self) -> None:
        self._call(P.PAY_CANCEL)

    def note(self, serial: int | None = None) -> bytes:
        return self._call(P.NOTE_GET, b"" if serial is None else varint(serial))

    def notes(self) -> list[dict[str, Any]]:
        out = parse_json(P.NOTE_LIST, self._call(P.NOTE_LIST))
        if not isinstance(out, list):
            raise BadReply(f"reply to {P.type_name(P.NOTE_LIST)} is {_kind(out)}, not a list")
        for i, n in enumerate(out):
            check_layout(f"reply to {P.type_name(P.NOTE_LIST)}", n, NOTE_ENTRY, f"[{i}]")
        return out

    def load_notice(self, raw: bytes) -> dict[str, Any]:
        return self._json(P.LOAD_NOTICE, raw, NOTICE)

    def balance(self, pin: str | None = None) -> dict[str, Any]:
        payload = pin_bytes(pin) if pin else b""  # none: typed on the device
        return self._json(P.SHOW_BALANCE, payload, BALANCE, person=True, timeout_ms=120000)

    def change_pin(self, old: str | None = None, new: str | None = None) -> None:
        payload = b""  # none: typed on the device
        if old is not None:
            payload = pin_bytes(old, "current PIN") + b"\x00" + pin_bytes(new or "", "new PIN")
        self._call(P.CHANGE_PIN, payload, True, timeout_ms=120000)

    def wipe(self, pin: str | None = None) -> None:
        self._call(P.WIPE, pin_bytes(pin) if pin else b"", True, timeout_ms=120000)
