"""Uploading the outbox to the merchant's bank (DESIGN §2 links 3 and 5).

For each pending note, oldest first: POST it to the bank node (``hubi.bank.client``). The
upload is idempotent at the bank (by note id), so a note sent twice — after a crash, a lost
reply, a second `upload` — gets the first answer again. The outbox keeps every note; only the
bank's final answer changes its state:

  booked   the bank booked it; its SettlementNotice (bank-signed, verified offline here) goes
           into the merchant's own book in the same transaction
  bounced  the payer could not cover it; the bank's signed Refusal says why
  refused  the bank refused it (double issuance, bad template, ...); signed Refusal says why

Network errors and 5xx, 408, 425 and 429 replies are retried with exponential back-off
(with jitter); any other 4xx reply or an answer that does not verify leaves the note pending
with the error, so nothing is lost and the next `upload` tries again. An interbank note the
consortium has not settled yet ("pending") is asked about again for up to ``settle_wait``
seconds, then left pending for the next run.
"""

from __future__ import annotations

import fcntl
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hubi.output import printable
from hubi_core import codec, ids, lsum
from hubi_core.errors import CodecError
from hubi_core.verify import verify_object

from . import book
from .config import MerchantError
from .outbox import BOOKED, BOUNCED, PENDING, REFUSED, NoteRow

Say = Callable[[str], None]


@dataclass
class UploadItem:
    note_id: bytes
    payer: str
    serial: int
    amount: int
    currency: str
    state: str
    detail: str = ""
    attempts: int = 0
    duplicate: bool = False
    notice: bool = False
    book_record: int | None = None

    def line(self, i: int, n: int) -> str:
        """One line for people: '[2/5] 8606e8de… 5.00 CNY from BKB-43: bounced (why)'."""
        from hubi.amounts import format_amount

        word = {BOOKED: "settled"}.get(self.state, self.state)
        tail = f" ({self.detail})" if self.detail else ""
        return (
            f"[{i}/{n}] {self.note_id.hex()[:16]}… {format_amount(self.amount, self.currency)}"
            f" from {self.payer}: {word}{tail}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "note_id": self.note_id.hex(),
            "payer": self.payer,
            "serial": self.serial,
            "amount": self.amount,
            "currency": self.currency,
            "state": self.state,
            "detail": self.detail,
            "attempts": self.attempts,
            "duplicate": self.duplicate,
            "notice": self.notice,
            "book_record": self.book_record,
        }


@dataclass
class UploadReport:
    bank_url: str
    items: list[UploadItem] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped early (bank unreachable)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out = {BOOKED: 0, BOUNCED: 0, REFUSED: 0, PENDING: 0}
        for it in self.items:
            out[it.state] += 1
        return out

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(it.state != PENDING for it in self.items)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "bank": self.bank_url,
            "counts": self.counts(),
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
            "items": [it.as_dict() for it in self.items],
        }


class UploadBusy(MerchantError):
    """Another upload from the same outbox is running."""


LOCK = "upload.lock"


@contextmanager
def only_upload(outbox_path: Any) -> Iterator[None]:
    """Hold HOME/upload.lock for one upload: two at once would send every note twice and
    each report the other's answers as its own. The kernel drops the lock when the process
    dies, even by SIGKILL, so a killed upload never blocks the next."""
    path = outbox_path.with_name(LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UploadBusy(
                f"another upload from {outbox_path.parent} is running (it holds {path});"
                " nothing was sent: let it finish, or run this again later"
            ) from None
        yield
    finally:
        os.close(fd)


class Transient(Exception):
    """Worth retrying: no reply, 5xx, 408, 425, 429."""


class Answer(Exception):
    """A final-looking answer that cannot be accepted (does not verify, 4xx); note stays."""


class NotYet(Exception):
    """The bank took the note but has no final outcome yet (interbank: the consortium has
    not settled it); asking again later is harmless."""


def bank_url_of(merchant: Any) -> str:
    """The merchant's bank's first endpoint in the consortium file."""
    bank = ids.bank_of(merchant.account)
    entry = merchant.trust.consortium.banks.get(bank)
    if entry is None or not entry.endpoints:
        raise MerchantError(f"the consortium file lists no endpoint for bank {bank}: pass --bank")
    return entry.endpoints[0]


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential back-off with jitter: base * 2^attempt, capped, times 0.5..1."""
    return min(cap, base * (2**attempt)) * (0.5 + rng.random() / 2)


# ------------------------------------------------------------------- verifying the answers
def _hex_objects(doc: Any) -> list[bytes]:
    """Encoded objects in a notice entry of the bank's JSON (hex strings or raw bytes)."""
    if isinstance(doc, (bytes, bytearray)):
        return [bytes(doc)]
    if isinstance(doc, str):
        try:
            return [bytes.fromhex(doc)]
        except ValueError:
            return []
    out = []
    if isinstance(doc, dict):
        for key in ("object", "hex", "bytes", "data", "notice", "raw"):
            v = doc.get(key)
            if isinstance(v, str):
                try:
                    out.append(bytes.fromhex(v))
                except ValueError:
                    pass
    return out


def check_notice(raw: bytes, merchant: Any, note: codec.Obj) -> codec.Obj:
    """A SettlementNotice for `note` to this merchant, signed by the merchant's bank."""
    try:
        obj = codec.decode(raw, codec.SETTLEMENT)
    except CodecError as exc:
        raise Answer(f"settlement notice unreadable: {exc}") from None
    bank = ids.bank_of(merchant.account)
    nid = lsum.note_id(note.signer, note.serial)
    for fld, want, got in (
        ("signer", bank, obj.signer),
        ("payee", merchant.account, obj["payee"]),
        ("payer", note.signer, obj["payer"]),
        ("note_id", nid, obj["note_id"]),
        ("amount", note["amount"], obj["amount"]),
    ):
        if want != got:
            raise Answer(f"settlement notice: field {fld} is {got!r}, expected {want!r}")
    rep = verify_object(obj, merchant.trust)
    if not rep.ok:
        f, why = rep.first_failure()
        raise Answer(f"settlement notice: bank signature of field {f} does not verify: {why}")
    return obj


def check_refusal(raw: bytes, merchant: Any, note: codec.Obj) -> codec.Obj:
    """A bank-signed Refusal of `note` addressed to this merchant."""
    try:
        obj = codec.decode(raw, codec.REFUSAL)
    except CodecError as exc:
        raise Answer(f"refusal unreadable: {exc}") from None
    nid = lsum.note_id(note.signer, note.serial)
    for fld, want, got in (
        ("payee", merchant.account, obj["payee"]),
        ("payer", note.signer, obj["payer"]),
        ("note_id", nid, obj["note_id"]),
    ):
        if want != got:
            raise Answer(f"refusal: field {fld} is {got!r}, expected {want!r}")
    if obj.signer not in merchant.trust.consortium.banks:
        raise Answer(f"refusal signed by {obj.signer}, not a bank of the consortium")
    rep = verify_object(obj, merchant.trust)
    if not rep.ok:
        f, why = rep.first_failure()
        raise Answer(f"refusal: bank signature of field {f} does not verify: {why}")
    return obj


def refusal_text(obj: codec.Obj) -> str:
    code = obj["reason_code"]
    name = codec.REASON_NAMES.get(code, f"reason {code}")
    why = obj.get("reason")
    return f"{name}: {why}" if why else name


# ------------------------------------------------------------------------------ the upload
def _upload_once(client: Any, row: NoteRow) -> Any:
    from hubi.bank.client import BankError, BankUnavailable

    try:
        return client.upload(row.bytes)
    except BankUnavailable as exc:
        raise Transient(str(exc)) from None
    except BankError as exc:
        if exc.status >= 500 or exc.status in (408, 425, 429):
            raise Transient(str(exc)) from None
        field_ = f" (field {exc.field})" if exc.field else ""
        raise Answer(f"bank answered {exc.status} {exc.code}: {exc.message}{field_}") from None


def _settle(merchant: Any, row: NoteRow, note: codec.Obj, res: Any, item: UploadItem) -> None:
    """Apply one upload answer to the outbox (and book); Answer if it cannot be accepted."""
    outcome = {
        "outcome": res.outcome,
        "reason_code": res.reason_code,
        "reason": res.reason,
        "duplicate": res.duplicate,
    }
    item.duplicate = bool(res.duplicate)
    if res.outcome == "booked":
        notice_obj = None
        for doc in res.notices:
            for raw in _hex_objects(doc):
                try:
                    if codec.peek_kind(raw) != codec.SETTLEMENT:
                        continue
                except CodecError:
                    continue
                notice_obj = check_notice(raw, merchant, note)
                break
            if notice_obj is not None:
                break
        if notice_obj is None:
            raise Answer("the bank says booked but sent no SettlementNotice for this note")
        notice_raw = bytes(notice_obj.raw)
        recs: list[book.Entry] = []

        def add_to_book(db: Any) -> None:
            recs.append(book.append(db, merchant.book_keys, note, notice_raw, int(time.time())))

        outcome["status"] = notice_obj["status"]
        merchant.outbox.record_outcome(
            row.note_id, BOOKED, outcome, notice=notice_raw, on_commit=add_to_book
        )
        item.state = BOOKED
        item.notice = True
        item.book_record = recs[0].record.n if recs else None
        item.detail = "SettlementNotice verified" + (
            f", book record #{item.book_record}" if item.book_record else ""
        )
        return
    if res.outcome in (BOUNCED, REFUSED):
        if res.refusal is None:
            raise Answer(f"the bank says {res.outcome} but sent no signed Refusal")
        ref = check_refusal(res.refusal, merchant, note)
        outcome["reason"] = refusal_text(ref)
        merchant.outbox.record_outcome(row.note_id, res.outcome, outcome, refusal=res.refusal)
        item.state = res.outcome
        item.detail = outcome["reason"]
        return
    if res.outcome == PENDING:  # the bank's own words: kept and shown, so made printable
        raise NotYet(printable(res.reason or "the consortium has not settled it yet"))
    raise Answer(f"the bank answered an unknown outcome {printable(repr(res.outcome))}")


def _shown(v: Any) -> str:
    return printable(v.hex() if isinstance(v, bytes) else repr(v), 80)


def _intact(row: NoteRow, item: UploadItem, account: str) -> codec.Obj | None:
    """The row's note, or None with item.detail saying what is damaged (nothing is sent)."""
    if row.damage is not None:
        item.detail = f"damaged outbox row {row.rowid}: {row.damage}; not uploaded"
        return None
    try:
        note = codec.decode(row.bytes, codec.NOTE)
    except CodecError as exc:
        item.detail = (
            f"damaged outbox row {row.rowid}: the note's bytes do not decode ({exc}); not uploaded"
        )
        return None
    # the bytes are what is sent: a row whose bytes were swapped for another note (another
    # shop's, another payer's) must not go up as if it were the note the row names
    for name, want, got in (
        ("payee", account, note["payee"]),
        ("note_id", row.note_id, lsum.note_id(note.signer, note.serial)),
        ("payer", row.payer, note.signer),
        ("serial", row.serial, note.serial),
        ("amount", row.amount, note["amount"]),
    ):
        if want != got:
            whose = "this shop's account" if name == "payee" else "the row"
            item.detail = (
                f"damaged outbox row {row.rowid}: its note's {name} is {_shown(got)},"
                f" {whose} is {_shown(want)}; not uploaded"
            )
            return None
    return note


def upload(merchant: Any, bank_url: str, **kw: Any) -> UploadReport:
    """Upload every pending note of `merchant` to `bank_url`; see the module docstring and
    ``_upload`` for the options. UploadBusy if another upload of this outbox is running."""
    with only_upload(merchant.outbox.path):
        return _upload(merchant, bank_url, **kw)


def _upload(
    merchant: Any,
    bank_url: str,
    retries: int = 6,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    timeout: float = 10.0,
    say: Say | None = None,
    sleep: Callable[[float], None] = time.sleep,
    seed: int | None = None,
    settle_wait: float = 15.0,
) -> UploadReport:
    """settle_wait: how long to keep asking about a note the bank answered "pending" (an
    interbank note the consortium has not settled yet) before leaving it for the next run."""
    from hubi.bank.client import BankClient

    say = say or (lambda _s: None)
    rng = random.Random(seed)
    report = UploadReport(bank_url)
    t0 = time.monotonic()
    pending = merchant.outbox.pending()
    if pending:
        say(f"uploading {len(pending)} note(s) to {bank_url}")
    with BankClient(bank_url, timeout=timeout) as client:
        for row in pending:
            item = UploadItem(row.note_id, row.payer, row.serial, row.amount, row.currency, PENDING)
            report.items.append(item)
            if report.stopped is not None:
                item.detail = report.stopped
                continue
            note = _intact(row, item, merchant.account)
            if note is None:  # named and skipped: the other notes still go up
                say(item.line(len(report.items), len(pending)))
                continue
            attempt = 0
            settle_until = time.monotonic() + settle_wait
            while True:
                item.attempts += 1
                try:
                    res = _upload_once(client, row)
                    _settle(merchant, row, note, res, item)
                    break
                except Transient as exc:
                    merchant.outbox.record_attempt(row.note_id, f"transient: {exc}")
                    if attempt >= retries:
                        why = printable(exc)
                        item.detail = f"bank unreachable after {item.attempts} attempts: {why}"
                        report.stopped = f"bank unreachable: {why}"
                        break
                    delay = backoff_delay(attempt, base_delay, max_delay, rng)
                    say(f"  {printable(exc)}; retrying in {delay:.1f} s")
                    sleep(delay)
                    attempt += 1
                except Answer as exc:
                    merchant.outbox.record_attempt(row.note_id, str(exc))
                    item.detail = printable(exc)
                    break
                except NotYet as exc:
                    merchant.outbox.record_attempt(row.note_id, f"not settled yet: {exc}")
                    if time.monotonic() >= settle_until:
                        item.detail = f"not settled yet ({exc}): upload again later"
                        break
                    sleep(min(1.0, max(0.1, base_delay)))
            say(item.line(len(report.items), len(pending)))
    report.seconds = time.monotonic() - t0
    return report
