"""The merchant as a library: what `hubi merchant ...` and `hubi demo` call.

from hubi.merchant import Merchant, init_from_bank_home
init_from_bank_home(mhome, bank_home, "BKB-000000000007")      # once (demo / tests)
with Merchant.open(mhome) as m:
    req = m.request(1250, purpose="coffee", expires=600)        # IssuedRequest (.bytes, .png)
    results = m.scan(["frame-000.png", ...], progress=print)    # list[ScanResult]
    r = m.accept(note_bytes)                                    # one note's bytes, no camera
    report = m.upload("http://127.0.0.1:8001")                  # UploadReport
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubi.amounts import format_amount
from hubi_core import codec

from . import book, checks, receipt, request
from .config import Identity, MerchantError, MerchantHome
from .outbox import Duplicate, NoteRow, Outbox, RequestRow

if TYPE_CHECKING:
    from . import scan

RESTORE_LIMIT = 20  # missing receipt images written again per command: a scan must start soon
RESTORE_WINDOW = 256  # the newest notes whose receipt images are looked for


@dataclass
class IssuedRequest:
    serial: int
    bytes: bytes
    amount: int
    currency: str
    purpose: str | None
    time: int
    expiry: int
    png: Path | None = None
    clock_warning: str | None = None  # this computer's clock is behind what the outbox wrote

    def as_dict(self) -> dict[str, Any]:
        out = {
            "serial": self.serial,
            "amount": self.amount,
            "amount_text": format_amount(self.amount, self.currency),
            "currency": self.currency,
            "purpose": self.purpose,
            "time": self.time,
            "expiry": self.expiry,
            "bytes": len(self.bytes),
            "hex": self.bytes.hex(),
            "png": str(self.png) if self.png else None,
        }
        if self.clock_warning is not None:
            out["clock_warning"] = self.clock_warning
        return out


@dataclass
class ScanResult:
    """One scanned object: accepted (stored, with a receipt) or rejected with a named field."""

    verdict: checks.Verdict
    stored: bool = False
    request_serial: int | None = None
    receipt: bytes | None = None
    receipt_serial: int | None = None
    receipt_png: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict.ok and self.stored

    @property
    def note_bytes(self) -> bytes:
        return self.verdict.raw

    def as_dict(self) -> dict[str, Any]:
        out = {
            "accepted": self.ok,
            **self.verdict.as_dict(),
            "request": self.request_serial,
            "receipt": None,
        }
        if self.receipt is not None:
            out["receipt"] = {
                "serial": self.receipt_serial,
                "bytes": len(self.receipt),
                "hex": self.receipt.hex(),
                "png": str(self.receipt_png) if self.receipt_png else None,
            }
        out.update(self.extra)
        return out


def _redraw(
    missing: list[tuple[int, Any]],
    limit: int,
    raw_of: Callable[[Any], object],
    path_of: Callable[[int], Path],
) -> tuple[list[tuple[int, Path]], int]:
    """Draw the QR image of each of `missing` ((serial, what raw_of reads its bytes from),
    newest first), at most `limit`: (serial, image) of each drawn, and how many are left
    untried. A damaged row (no bytes, or too many for one QR code) is passed over."""
    written: list[tuple[int, Path]] = []
    tried = 0
    for serial, ref in missing:
        if len(written) >= limit:
            break
        tried += 1
        raw = raw_of(ref)  # read only for the images drawn, not for every missing one
        if not isinstance(raw, bytes) or not raw:  # a row damaged outside hubi
            continue
        try:
            written.append((serial, request.save_png(raw, path_of(serial))))
        except ValueError:  # too long for one QR code: damaged, nothing to draw
            continue
    return written, len(missing) - tried


class Merchant:
    """A merchant home opened for work: identity, trust bundle and outbox."""

    def __init__(self, home: MerchantHome) -> None:
        self.home = home
        self.trust = home.load_trust()
        self.identity: Identity = home.load_identity(self.trust)
        self.outbox = Outbox(home.outbox_path)
        self._book_keys: Any = None

    @classmethod
    def open(cls, path: Path | None = None) -> Merchant:
        return cls(MerchantHome.open(path))

    def close(self) -> None:
        self.outbox.close()

    def __enter__(self) -> Merchant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Merchant({self.account!r}, home={str(self.home.path)!r})"

    @property
    def account(self) -> str:
        return self.identity.account

    @property
    def currency(self) -> str:
        return self.identity.currency

    @property
    def template_bytes(self) -> bytes:
        """The account's bank-sealed Template (what the bank's open_account() takes)."""
        return codec.encode(self.identity.template)

    # ---------------------------------------------------------------------- link 1
    def request(
        self,
        amount: int,
        purpose: str | None = None,
        expires: int = request.DEFAULT_EXPIRES,
        now: int | None = None,
        png: Path | None = None,
        scale: int = 6,
        clock_is_right: bool = False,
    ) -> IssuedRequest:
        """Sign a Request for `amount` minor units, store it as the open request, save its PNG.
        clock_is_right: the operator vouches for this computer's clock; a later time the
        outbox wrote (the clock once set ahead) is forgotten first, and nothing warns."""
        if amount <= 0:
            raise MerchantError("the amount must be positive")
        if png is not None:  # refused before the request is signed and kept as the open one
            self._check_png(png)
        now = int(time.time()) if now is None else now
        if clock_is_right:
            self.outbox.forget_later_times(now)
        warning = self.clock_warning(now)  # before this request raises the outbox's mark
        info = {
            "time": now,
            "amount": amount,
            "currency": self.currency,
            "purpose": purpose or None,
            "expiry": now + expires,
        }

        def build(serial: int) -> tuple[bytes, dict[str, Any]]:
            return request.build_request(self.identity, serial, now, amount, expires, purpose), info

        serial = self.outbox.add_request(self.account, build)
        row = self.outbox.request(serial)
        assert row is not None
        path = png if png is not None else self.request_path(serial)
        try:
            request.save_png(row.bytes, path, scale=scale)
        except (OSError, ValueError):
            # the command fails: a request no one was shown must not stay open (the next
            # command would draw it again, for a sale the cashier took as not asked for)
            with contextlib.suppress(sqlite3.DatabaseError):  # the image's error is the one said
                self.outbox.cancel_request(serial)
            raise
        return IssuedRequest(
            serial,
            row.bytes,
            amount,
            self.currency,
            row.purpose,
            now,
            row.expiry,
            Path(path),
            warning,
        )

    def clock_warning(self, now: float) -> str | None:
        """Words for a clock behind what this outbox already wrote (set back, or wrong): a
        request's expiry is counted from this clock, so a token on the right time finds it
        expired, and it was made 'before' notes already kept. None when the clock is not
        behind by more than checks.CLOCK_SKEW."""
        newest = self.outbox.newest_time()
        if newest is None or now >= newest - checks.CLOCK_SKEW:
            return None
        utc = "%Y-%m-%d %H:%M:%S UTC"
        behind = newest - now
        gap = f"{behind / 3600:.1f} hours" if behind < 2 * 86400 else f"{behind / 86400:.1f} days"
        here, kept = (time.strftime(utc, time.gmtime(t)) for t in (now, newest))
        return (
            f"this computer's clock ({here}) is {gap} behind the newest time this outbox"
            f" already wrote ({kept}): it was set back or is wrong; a request's expiry is"
            " counted from it, so a payer's token on the right time may find the request"
            " already expired: set the clock and make a new request (if the clock is right"
            " now and was once set ahead, make it with --clock-is-right)"
        )

    def clock(self, now: float | None = None) -> int:
        """This computer's time, never earlier than the newest time the outbox wrote: what a
        request is judged expired by, so a request once past its expiry stays past it when
        the clock is set back."""
        now = int(time.time()) if now is None else int(now)
        newest = self.outbox.newest_time()
        return now if newest is None else max(now, newest)

    @staticmethod
    def _check_png(png: Path) -> None:
        from hubi import qrscan

        try:
            qrscan.check_png_target(png)
        except ValueError as exc:
            raise MerchantError(f"--png {exc}") from None

    def open_request(self) -> RequestRow | None:
        return self.outbox.open_request()

    # ---------------------------------------------------------------------- link 3
    def check(self, raw: bytes, request_serial: int | None = None) -> checks.Verdict:
        """Offline checks only (nothing stored)."""
        req = self._pick_request(request_serial)
        return checks.check_note(raw, self.trust, self.account, self.currency, req, self.outbox)

    def _pick_request(self, request_serial: int | None) -> RequestRow | list[RequestRow] | None:
        if request_serial is None:
            return self.outbox.open_requests()
        row = self.outbox.request(request_serial)
        if row is None:
            raise MerchantError(f"no request #{request_serial} in the outbox")
        if row.state != "open":
            raise MerchantError(f"request #{request_serial} is {row.state}, not open")
        return row

    def accept(
        self,
        raw: bytes,
        request_serial: int | None = None,
        now: int | None = None,
        receipt_png: bool = True,
    ) -> ScanResult:
        """Check a note offline and, if it passes, store it with its receipt (one transaction)."""
        now = int(time.time()) if now is None else now
        try:
            picked = self._pick_request(request_serial)
        except MerchantError as exc:
            if request_serial is None or self.outbox.request(request_serial) is None:
                raise  # no such request: a usage error, before any note is read
            return self._late(raw, request_serial, str(exc), now)
        verdict = checks.check_note(
            raw, self.trust, self.account, self.currency, picked, self.outbox, now
        )
        req = verdict.request
        if not verdict.ok:
            self._keep_reject(verdict, now)
            return ScanResult(verdict, request_serial=req.serial if req else None)
        note = verdict.note
        assert note is not None and req is not None
        info = verdict.note_info()
        assert info is not None
        info["note_id"] = verdict.note_id

        def make(serial: int) -> bytes:
            return receipt.make_receipt(self.identity, note, serial, now)

        try:
            row, rserial = self.outbox.accept(
                info, verdict.raw, self.account, req.serial, make, now
            )
        except Duplicate:  # raced with another scanner on the same outbox: judged again
            # against the note it stored, which is this one or another note of its serial (a
            # payer paying two counters at once: double issuance, kept as evidence)
            verdict = checks.check_note(
                raw, self.trust, self.account, self.currency, picked, self.outbox, now
            )
            self._keep_reject(verdict, now)
            return ScanResult(verdict, request_serial=req.serial)
        except ValueError as exc:  # the request was paid meanwhile
            if request_serial is None:  # by another counter's scan: this note is matched
                # again among the requests still open (a second customer's equal one), as
                # it would have been a moment later; each turn, one fewer is open
                return self.accept(raw, None, now, receipt_png)
            # the note is signed all the same, so its bytes go to the reject log (as in
            # _late), not nowhere
            verdict = checks.reject(
                "no-request", "request", str(exc), note=note, raw=verdict.raw, checks=verdict.checks
            )
            self._keep_reject(verdict, now)
            return ScanResult(verdict, request_serial=req.serial)
        res = ScanResult(
            verdict, True, req.serial, row.receipt, rserial, extra={"state": row.state}
        )
        if receipt_png and row.receipt is not None:
            try:
                res.receipt_png = request.save_png(row.receipt, self.receipt_path(rserial))
            except OSError as exc:  # the note is kept all the same: it must not read as lost
                res.extra["receipt_png_error"] = f"receipt image not written: {exc}"
        return res

    def receipt_path(self, serial: int) -> Path:
        return self.home.qr_dir / f"receipt-{serial:06d}.png"

    def request_path(self, serial: int) -> Path:
        return self.home.qr_dir / f"request-{serial:06d}.png"

    def restore_request_pngs(
        self, limit: int = RESTORE_LIMIT, now: int | None = None
    ) -> tuple[list[tuple[int, Path]], int]:
        """Draw again the images missing from HOME/qr of the requests still open and payable
        (a `request` killed after storing its request, before its PNG was written), newest
        first, at most `limit`, from the request bytes kept in the outbox. Returns (serial,
        image) of each drawn and how many are still missing. A request made with --png
        elsewhere gets its copy in HOME/qr this way too (which of the two a cashier shows is
        the same request). Only the newest RESTORE_WINDOW payable requests are looked at."""
        now = self.clock(now)  # one expired before the clock was set back stays expired
        rows = self.outbox.db.execute(
            "SELECT serial, bytes FROM requests WHERE state = 'open' AND expiry > ?"
            " ORDER BY serial DESC LIMIT ?",
            (now, RESTORE_WINDOW),
        ).fetchall()
        missing = [
            (serial, raw)
            for serial, raw in rows
            if isinstance(serial, int) and not os.path.lexists(self.request_path(serial))
        ]
        return _redraw(missing, limit, lambda raw: raw, self.request_path)

    def restore_receipt_pngs(self, limit: int = RESTORE_LIMIT) -> tuple[list[Path], int]:
        """Write again the receipt PNGs missing from HOME/qr, newest first, at most `limit`
        (a scan killed after its note was kept, before the image was written, or an image
        that could not be written): the receipt's bytes are in the outbox. Returns the images
        written and how many are still missing. A damaged row (no bytes, or too many for one
        QR code) is passed over; OSError if an image cannot be written.

        Only the newest RESTORE_WINDOW notes are looked at: this runs before every scan, and
        a note whose image a killed scan left unwritten is among them at the next command."""
        missing = [
            (serial, rowid)
            for serial, rowid in self.outbox.receipt_serials(RESTORE_WINDOW)
            if not os.path.lexists(self.receipt_path(serial))  # a link is never written over
        ]
        written, left = _redraw(missing, limit, self.outbox.receipt_at, self.receipt_path)
        return [path for _, path in written], left

    def _late(self, raw: bytes, serial: int, why: str, now: int) -> ScanResult:
        """A note for request #serial, which was paid or cancelled while the note was on its
        way (another counter's scan paid it; a token took long over its PIN): the token has
        signed it all the same, so its bytes go to the reject log, not nowhere."""
        verdict = checks.check_note(
            raw, self.trust, self.account, self.currency, None, self.outbox, now
        )
        if verdict.category == "no-request":  # else what is wrong with the note comes first
            verdict = checks.reject(
                "no-request",
                "request",
                f"{why} (it was paid or cancelled meanwhile): this note is kept in the reject"
                " log, not taken as a payment; make a new request",
                note=verdict.note,
                raw=verdict.raw,
                checks=verdict.checks,
            )
        self._keep_reject(verdict, now)
        return ScanResult(verdict, request_serial=serial)

    def _keep_reject(self, verdict: checks.Verdict, now: int) -> None:
        keep_bytes = verdict.category not in ("duplicate",) and bool(verdict.raw)
        self.outbox.add_reject(
            verdict.field or "?",
            verdict.reason,
            verdict.note_id,
            verdict.raw if keep_bytes else None,
            now,
        )

    def scan(
        self,
        sources: Iterable[Any],
        progress: scan.ProgressCb | None = None,
        thorough: bool = True,
        limit: int | None = None,
        request_serial: int | None = None,
        on_result: Any = None,
        on_frame_error: Any = None,
    ) -> list[ScanResult]:
        """Read every note in sources (image paths, arrays, video/camera frames) and accept it.

        on_result(ScanResult) is called as soon as each object is handled (before the next
        frame is read).
        """
        # here, not at the top: it brings OpenCV (about 0.1 s), which only a scan needs
        from . import scan as scanning

        results = []
        for raw in scanning.scan_objects(
            sources, progress, thorough, limit, on_frame_error=on_frame_error
        ):
            res = self.accept(raw, request_serial)
            results.append(res)
            if on_result is not None:
                on_result(res)
        return results

    # ---------------------------------------------------------------------- link 5
    @property
    def book_keys(self) -> Any:
        """The merchant's keys as keeper of its own book (hubi.bank.records.BookKeys)."""
        if self._book_keys is None:
            from hubi.bank.records import BookKeys

            self._book_keys = BookKeys(self.account, self.identity.private)
        return self._book_keys

    def book(self) -> list[Any]:
        """The merchant's own book: one entry per verified SettlementNotice."""
        return book.entries(self.outbox.db)

    def book_balance(self) -> int:
        return book.balance(self.outbox.db, self.book_keys)

    def audit_book(self) -> list[dict[str, Any]]:
        """Findings on every link of the merchant's book ([] when it is sound)."""
        return book.audit(self.outbox.db, self.book_keys, self.trust, self._note_bytes)

    def _note_bytes(self, note_id: bytes) -> bytes | None:
        row = self.outbox.find(note_id)
        return row.bytes if row else None

    def upload(self, bank_url: str | None = None, **kw: Any) -> Any:
        """Upload the pending notes (see hubi.merchant.upload.upload); returns an UploadReport."""
        from . import upload as up

        return up.upload(self, bank_url or up.bank_url_of(self), **kw)

    # --------------------------------------------------------------------- views
    def notes(self, state: str | None = None, last: int | None = None) -> list[NoteRow]:
        return self.outbox.notes(state, last)

    def receipt_of(self, note_id: bytes) -> bytes | None:
        row = self.outbox.find(note_id)
        return row.receipt if row else None

    def status(self) -> dict[str, Any]:
        req = self.outbox.open_request()
        return {
            "account": self.account,
            "currency": self.currency,
            "home": str(self.home.path),
            "notes": self.outbox.counts(),
            "open_request": req.as_dict() if req else None,
            # counted in SQL: an outbox kept for years must not be read whole to count it
            "rejects": self.outbox.reject_count(),
            "book": {"records": book.count(self.outbox.db), "balance": self.book_balance()},
        }


def decode_receipt(raw: bytes) -> codec.Obj:
    return codec.decode(raw, codec.RECEIPT)
