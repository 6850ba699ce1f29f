"""Offline acceptance checks of a scanned note (DESIGN §2 link 3, §3). No network.

``check_note`` answers with a ``Verdict`` whose ``field`` names what is wrong, in this order:

=================  ===========  ==========================================================
category           field        when
=================  ===========  ==========================================================
format             (codec's)    the bytes are not a well-formed object (codec error names it)
kind               kind         a well-formed object that is not a Note (e.g. a Request)
forged             template     no key the payer's bank sealed made the signatures
altered            <field>      a field signature fails under the payer's sealed key
duplicate          note_id      the same note is already in the outbox
double-issuance    serial       another note with this payer serial is already in the outbox
wrong-payee        payee        the note pays someone else
wrong-currency     currency     the payer's account is in another currency
no-request         request      no open request to match the note against
wrong-amount       amount       the amount differs from the open request's
wrong-purpose      purpose      the purpose differs from the open request's
expired            expiry       the note was signed after the request expired
=================  ===========  ==========================================================

With several open requests (several customers at once), a note is matched to the latest open
request with its amount and purpose that had not expired at the note's time; when none fits,
it is judged against the latest open request, so the reason says what differs from it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from hubi.amounts import format_amount
from hubi.bank.issuance import same_issuance_bytes
from hubi_core import codec, lsum
from hubi_core.errors import CodecError
from hubi_core.verify import Trust, verify_object

from .outbox import Outbox, RequestRow


@dataclass
class Verdict:
    """Outcome of the offline checks of one scanned object."""

    ok: bool
    category: str = "accepted"
    field: str | None = None
    reason: str = ""
    note: codec.Obj | None = None
    raw: bytes = b""
    checks: list[dict[str, Any]] = dc_field(default_factory=list)
    request: RequestRow | None = None  # the open request the note was judged against

    @property
    def note_id(self) -> bytes | None:
        if self.note is None:
            return None
        return lsum.note_id(self.note.signer, self.note.serial)

    def note_info(self) -> dict[str, Any] | None:
        n = self.note
        if n is None:
            return None
        return {
            "note_id": lsum.note_id(n.signer, n.serial).hex(),
            "payer": n.signer,
            "serial": n.serial,
            "time": n.time,
            "payee": n["payee"],
            "amount": n["amount"],
            "currency": n["template"]["currency"],
            "purpose": n.get("purpose"),
            "bank": n["template"].signer,
            "bytes": len(self.raw),
        }

    def message(self) -> str:
        if self.ok:
            return "accepted"
        return f"{self.field}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "category": self.category,
            "field": self.field,
            "reason": self.reason,
            "note": self.note_info(),
            "request": self.request.serial if self.request else None,
            "checks": self.checks,
        }


_FIELD_WORDS = ("suite", "kind", "version", "signer", "serial", "time") + tuple(
    f[1] for f in codec.SCHEMAS[codec.NOTE][1]
)


def _codec_field(exc: CodecError) -> str:
    """The field a codec error names ('Note truncated: lsum signature ...' -> 'lsum')."""
    for word in re.findall(r"[A-Za-z_]+", str(exc)):
        if word in _FIELD_WORDS:
            return word
    return "format"


def reject(category: str, fld: str, reason: str, **kw: Any) -> Verdict:
    return Verdict(False, category, fld, reason, **kw)


def match_request(note: codec.Obj, requests: list[RequestRow]) -> RequestRow | None:
    """The open request a note pays (see the module docstring), or None if none is open."""
    if not requests:
        return None
    purpose = note.get("purpose") or None
    same = [r for r in requests if r.amount == note["amount"] and (r.purpose or None) == purpose]
    live = [r for r in same if note.time <= r.expiry]
    for group in (live, same, requests):
        if group:
            return max(group, key=lambda r: r.serial)
    return None


def check_note(
    raw: bytes,
    trust: Trust,
    account: str,
    currency: str,
    request: RequestRow | list[RequestRow] | None,
    outbox: Outbox | None = None,
    now: float | None = None,
) -> Verdict:
    """All offline checks of a note for merchant `account` against its open request(s);
    `now`: this computer's clock (only to explain an expiry that looks like the clock's)."""
    raw = bytes(raw)
    try:
        obj = codec.decode(raw)
    except CodecError as exc:
        return reject("format", _codec_field(exc), f"{type(exc).__name__}: {exc}", raw=raw)
    if obj.kind != codec.NOTE:
        return reject(
            "kind", "kind", f"this QR holds a {obj.kind_name} of {obj.signer}, not a Note", raw=raw
        )
    report = verify_object(obj, trust)
    checks = report.as_dict()["fields"]
    if not report.ok:
        fld, why = report.first_failure()  # type: ignore[misc]
        if fld == "template":
            return reject(
                "forged",
                "template",
                f"forged: {why}",
                note=obj,
                raw=raw,
                checks=checks,
            )
        failed = report.failed
        also = [f for f in failed if f != fld]
        extra = f" (also {', '.join(also)})" if also else ""
        return reject(
            "altered",
            fld,
            f"altered: the payer's signature of field {fld} does not verify: {why}{extra}",
            note=obj,
            raw=raw,
            checks=checks,
        )
    ok = dict(note=obj, raw=raw, checks=checks)
    nid = lsum.note_id(obj.signer, obj.serial)
    if outbox is not None:
        old = outbox.find(nid)
        if old is not None:
            # a copy with signed fields dropped (allowance, purpose) is the payer's one note
            # again, not a second issuance: calling it one would accuse an honest payer
            if old.bytes == raw or same_issuance_bytes(old.bytes, raw):
                copy = "" if old.bytes == raw else " (this copy lacks some of its signed fields)"
                return reject(
                    "duplicate",
                    "note_id",
                    f"duplicate: note {nid.hex()[:16]}… (payer {obj.signer} serial {obj.serial})"
                    f" is already in the outbox, state {old.state}{copy}",
                    **ok,
                )
            return reject(
                "double-issuance",
                "serial",
                f"double issuance: payer {obj.signer} already paid with a different note of"
                f" serial {obj.serial}; both are kept as evidence",
                **ok,
            )
    if obj["payee"] != account:
        return reject(
            "wrong-payee",
            "payee",
            f"wrong payee: the note pays {obj['payee']}, this merchant is {account}",
            **ok,
        )
    note_cur = obj["template"]["currency"]
    if note_cur != currency:
        return reject(
            "wrong-currency",
            "currency",
            f"wrong currency: the payer's account is in {note_cur}, this merchant takes {currency}",
            **ok,
        )
    if isinstance(request, list):
        request = match_request(obj, request)
    ok["request"] = request
    if request is None:
        return reject(
            "no-request",
            "request",
            "no open request to match the note against (make one with `hubi merchant request`)",
            **ok,
        )
    if obj["amount"] != request.amount:
        return reject(
            "wrong-amount",
            "amount",
            f"wrong amount: the note pays {format_amount(obj['amount'], note_cur)}, request"
            f" #{request.serial} asks {format_amount(request.amount, request.currency)}",
            **ok,
        )
    if (obj.get("purpose") or None) != (request.purpose or None):
        return reject(
            "wrong-purpose",
            "purpose",
            f"wrong purpose: the note says {obj.get('purpose')!r}, request #{request.serial}"
            f" says {request.purpose!r}",
            **ok,
        )
    if obj.time > request.expiry:
        return reject(
            "expired",
            "expiry",
            f"expired: the note was signed at {obj.time}, {obj.time - request.expiry} s after"
            f" request #{request.serial} expired (expiry {request.expiry})"
            + _clock_words(obj.time, time.time() if now is None else now),
            **ok,
        )
    return Verdict(True, **ok)


CLOCK_SKEW = 600  # seconds a note's time may run ahead of this computer's clock unremarked


def _clock_words(signed: int, now: float) -> str:
    """A note signed far 'in the future' of this computer's clock: every note then comes out
    expired (a request's expiry is this clock's), so say which clocks to look at."""
    ahead = signed - now
    if ahead < CLOCK_SKEW:
        return ""
    hours = ahead / 3600
    gap = f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"
    here = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now))
    return (
        f"; the note's time is {gap} ahead of this computer's clock ({here}): if this"
        " computer's clock is behind, set it and make a new request"
    )
