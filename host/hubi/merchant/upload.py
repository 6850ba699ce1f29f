"""Uploading the outbox to the merchant's bank (DESIGN §2 links 3 and 5).

For each pending note, oldest first: POST it to the bank node (``hubi.bank.client``). The
upload is idempotent at the bank (by note id), so a note sent twice — after a crash, a lost
reply, a second `upload` — gets the first answer again. The outbox keeps every note; only the
bank's final answer changes its state:

  booked   the bank booked it; its SettlementNotice (bank-signed, verified offline here) goes
           into the merchant's own book in the same transaction
  bounced  the payer could not cover it; the bank's signed Refusal says why
  refused  the bank refused it (double issuance, bad template, ...); signed Refusal says why

Bounced or refused is decided by the reason code the bank signed in its Refusal, not by the
reply's unsigned JSON. Network errors and 5xx, 408, 425 and 429 replies are retried with
exponential back-off (with jitter); any other 4xx reply or an answer that does not verify
(a "refused" with no valid signed Refusal) leaves the note pending with the error, so nothing
is lost and the next `upload` tries again. A bank that answers 503 stops the run (the notes
stay pending with its reason), except a 503 about the consortium for a note of another bank's
payer: the other such notes wait for the next run, the shop's own bank's notes still go up.
Interbank notes the consortium has not settled yet ("pending") are asked about again, in
rounds (at least one), until one shared deadline ``settle_wait`` seconds after the first of
them, then left pending for the next run. The outbox is read a page of notes at a time.
"""

from __future__ import annotations

import datetime
import email.utils
import fcntl
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hubi.output import printable
from hubi_core import codec, ids, lsum
from hubi_core.errors import CodecError, HubiError
from hubi_core.verify import verify_object

from . import book
from .config import MerchantError
from .outbox import BOOKED, BOUNCED, PAGE, PENDING, REFUSED, NoteRow

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
    stopped: str | None = None  # why the run stopped early (bank unreachable or busy)
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
    """Worth retrying: no reply, 5xx, 408, 425, 429. answered: the bank did reply (a 503
    store-full or consortium-unavailable is no unreachable bank: it said why, and the fix is
    on its side). slow: it took the connection but no answer came in time. retry_after: the
    seconds its Retry-After header asked to wait, if it said."""

    def __init__(
        self,
        text: str,
        answered: bool = False,
        code: str = "",
        slow: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(text)
        self.answered = answered
        self.code = code
        self.slow = slow
        self.retry_after = retry_after


class Stop(Exception):
    """An answer every note would get the same way (no bank node at the address, a redirect,
    a certificate that does not verify): said once, no note sent after it; all stay pending."""


# 503s that only notes of other banks' payers get (the consortium cannot settle them now):
# the shop's own bank still books its own payers' notes
INTERBANK_DOWN = ("consortium-unavailable", "orderer-unavailable")


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
    # checked as --bank is: a password in it would be sent and shown in every progress line
    import click

    from hubi.commands.params import check_url

    try:
        return check_url(entry.endpoints[0], "")
    except click.BadParameter as exc:
        raise MerchantError(
            f"the consortium file's endpoint for bank {bank} cannot be used: {exc.message};"
            " pass --bank"
        ) from None


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
    # only the payee's bank or the payer's may refuse the note: a third bank's word (or its
    # signed refusal replayed) must not end a good note here
    parties = (ids.bank_of(merchant.account), ids.bank_of(note.signer))
    if obj.signer not in parties:
        raise Answer(
            f"refusal signed by {obj.signer}, neither this shop's bank {parties[0]} nor the"
            f" payer's bank {parties[1]}"
        )
    rep = verify_object(obj, merchant.trust)
    if not rep.ok:
        f, why = rep.first_failure()
        raise Answer(f"refusal: bank signature of field {f} does not verify: {why}")
    return obj


# the merchant's book read back wrong (a head or record edited or damaged outside hubi): the
# types it fails with, from the record codec, the balance's ECIES, bytes() of a text, SQLite
BOOK_DAMAGE = (ValueError, TypeError, HubiError, sqlite3.DatabaseError)

CLOCK_SKEW = 600  # seconds between the bank's clock and this computer's worth a word


def clock_hint(bank_time: float | None, here: float) -> str | None:
    """A word about this computer's clock when it is far from the bank's (an 'expired'
    refusal is then likely the clock's doing), else None."""
    if bank_time is None or abs(bank_time - here) < CLOCK_SKEW:
        return None
    gap = _duration(abs(bank_time - here))
    side = "behind" if here < bank_time else "ahead of"
    return (
        f"this computer's clock is {gap} {side} the bank's (bank {_utc(bank_time)},"
        f" here {_utc(here)}): check the clock of this computer and of the payers' tokens"
    )


def _duration(s: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size:
            n = round(s / size)  # the clocks are read a moment apart: 2 days, not 1 day 23:59
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{int(s)} s"


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def refusal_text(obj: codec.Obj) -> str:
    code = obj["reason_code"]
    name = codec.REASON_NAMES.get(code, f"reason {code}")
    why = obj.get("reason")
    return f"{name}: {why}" if why else name


# ------------------------------------------------------------------------------ the upload
MAX_RETRY_AFTER = 10**7  # seconds (four months): a larger Retry-After is no wait to plan


def retry_after(text: str | None, now: float | None = None) -> float | None:
    """The seconds a Retry-After header asks to wait (delay-seconds or an HTTP date; RFC 9110
    §10.2.3), or None when it is absent or neither. now: the time an HTTP date is counted
    from (the reply's Date when it has one; this computer's clock otherwise)."""
    if not text:
        return None
    text = text.strip()
    if text.isascii() and text.isdigit():
        # by its length first: int() refuses more than 4300 digits (ValueError, a traceback)
        digits = text.lstrip("0") or "0"
        if len(digits) > len(str(MAX_RETRY_AFTER)):
            return float(MAX_RETRY_AFTER)
        return float(min(int(digits), MAX_RETRY_AFTER))
    when = http_date(text)
    if when is None:
        return None
    return min(max(0.0, when - (time.time() if now is None else now)), MAX_RETRY_AFTER)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _no_reply(exc: Exception, client: Any) -> Exception:
    """What a BankUnavailable means: a certificate or TLS failure (Stop: not retried, each
    note would meet it), a bank that took the connection but was too slow (Transient, slow),
    or no connection at all (Transient)."""
    import ssl

    import httpx

    causes = list(_causes(exc))
    cert = next((c for c in causes if isinstance(c, ssl.SSLCertVerificationError)), None)
    if cert is not None:
        why = cert.verify_message or str(cert)
        return Stop(
            f"the TLS certificate of {client.base_url} does not verify ({printable(why)}):"
            " nothing was sent; check the --bank address, or the CA certificates this computer"
            " trusts (SSL_CERT_FILE)"
        )
    tls = next((c for c in causes if isinstance(c, ssl.SSLError)), None)
    if tls is not None:
        return Stop(
            f"no TLS connection to {client.base_url} ({printable(tls)}): nothing was sent;"
            " check the --bank address (http:// or https://, and its port)"
        )
    if any(isinstance(c, httpx.TimeoutException | TimeoutError) for c in causes) and not any(
        isinstance(c, httpx.ConnectTimeout) for c in causes
    ):
        when = f"--timeout {client.timeout:g} s"
        return Transient(
            f"the bank took the connection but gave no whole answer in time ({when}): {exc}",
            slow=True,
        )
    return Transient(str(exc))


def _upload_once(client: Any, row: NoteRow) -> Any:
    from hubi.bank.client import BankError, BankUnavailable

    try:
        return client.upload(row.bytes)
    except BankUnavailable as exc:
        raise _no_reply(exc, client) from None
    except BankError as exc:
        if 300 <= exc.status < 400:  # notes are not sent on to an address the reply names
            where = exc.headers.get("location")
            to = f" to {printable(where, 200)}" if where else ""
            raise Stop(
                f"{client.base_url} answered {exc.status}, a redirect{to}: notes are not"
                " sent on to another address; if that is your bank's, pass it as --bank"
            ) from None
        if exc.status >= 500 or exc.status in (408, 425, 429):
            # an HTTP-date is the bank's clock: read against the reply's Date (the bank's
            # clock too), not this computer's, a day off, which made it a day's wait or none
            sent = http_date(exc.headers.get("date"))
            wait = retry_after(exc.headers.get("retry-after"), sent)
            raise Transient(str(exc), answered=True, code=exc.code, retry_after=wait) from None
        if exc.code == "not-a-bank":
            raise Stop(
                f"{client.base_url} is not a hubi bank node (it answered {exc.status}:"
                f" {exc.message}): no more notes were sent; check the --bank address"
            ) from None
        field_ = f" (field {exc.field})" if exc.field else ""
        raise Answer(f"bank answered {exc.status} {exc.code}: {exc.message}{field_}") from None


def _settle(
    merchant: Any,
    row: NoteRow,
    note: codec.Obj,
    res: Any,
    item: UploadItem,
    bank_clock: float | None = None,
) -> None:
    """Apply one upload answer to the outbox (and book); Answer if it cannot be accepted.
    bank_clock: the bank's time when it answered (its Date header), if it said."""
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
        try:
            merchant.outbox.record_outcome(
                row.note_id, BOOKED, outcome, notice=notice_raw, on_commit=add_to_book
            )
        except BOOK_DAMAGE as exc:  # rolled back: the note, and the bank's answer, wait
            raise Answer(
                "the bank booked it (its SettlementNotice verifies), but this shop's own book"
                f" could not take the record: {type(exc).__name__}: {exc}; nothing was"
                " changed, the note stays pending: restore the outbox from a backup (or"
                " repair its book), then upload again"
            ) from None
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
        # the signed reason code decides, not the reply's unsigned words around it
        state = BOUNCED if ref["reason_code"] in codec.BOUNCE_REASONS else REFUSED
        outcome["outcome"], outcome["reason_code"] = state, ref["reason_code"]
        outcome["reason"] = refusal_text(ref)
        if state != res.outcome:
            outcome["reply_said"] = printable(res.outcome)
        if ref["reason_code"] == codec.REASON_EXPIRED:
            hint = clock_hint(bank_clock, time.time())
            if hint:
                outcome["clock"] = hint
        merchant.outbox.record_outcome(row.note_id, state, outcome, refusal=res.refusal)
        item.state = state
        item.detail = outcome["reason"]
        if "clock" in outcome:
            item.detail += f"; {outcome['clock']}"
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


def http_date(text: str | None) -> float | None:
    """Seconds since the epoch of an HTTP Date header; None if absent or not a date."""
    if not text:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
        if when.tzinfo is None:  # "-0000": UTC, RFC 5322 says
            when = when.replace(tzinfo=datetime.UTC)
        return when.timestamp()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


@dataclass
class _Waiting:
    """A note the bank has not settled yet, to ask about again."""

    i: int
    row: NoteRow
    note: codec.Obj
    item: UploadItem
    why: str


@dataclass
class _Run:
    """One upload's bank, outbox and retry settings (what asking about a note needs)."""

    merchant: Any
    client: Any
    report: UploadReport
    say: Say
    sleep: Callable[[float], None]
    rng: random.Random
    retries: int
    base_delay: float
    max_delay: float
    interbank_down: str | None = None  # why notes of other banks' payers wait for the next run

    def interbank(self, row: NoteRow) -> bool:
        return ids.bank_of(row.payer) != ids.bank_of(self.merchant.account)

    def ask(self, row: NoteRow, note: codec.Obj, item: UploadItem) -> str | None:
        """Send one note until the bank answers: None once there is nothing more to ask
        (a final answer, an answer kept as the note's error, or the bank unreachable:
        report.stopped), else the bank's words why the note is not settled yet."""
        attempt = 0
        while True:
            item.attempts += 1
            try:
                res = _upload_once(self.client, row)
                _settle(self.merchant, row, note, res, item, self.bank_time(res))
                return None
            except Stop as exc:
                self.merchant.outbox.record_attempt(row.note_id, str(exc))
                item.detail = self.report.stopped = printable(exc)
                return None
            except Transient as exc:
                self.merchant.outbox.record_attempt(row.note_id, f"transient: {exc}")
                asked = exc.retry_after
                if asked is not None and asked > self.max_delay and attempt < self.retries:
                    # honoured: not asked again sooner than the bank said, nor waited for past
                    # the longest delay this run was given
                    item.detail = self.report.stopped = (
                        f"the bank asks to wait {_duration(asked)} before sending again"
                        f" (Retry-After), longer than --max-backoff {self.max_delay:g} s:"
                        f" {printable(exc)}; the notes stay pending: upload again later"
                    )
                    return None
                if attempt >= self.retries:
                    why = printable(exc)
                    if exc.answered and exc.code in INTERBANK_DOWN and self.interbank(row):
                        item.detail = (
                            f"the bank cannot settle it with the other banks now: {why};"
                            " it stays pending: upload again later"
                        )
                        self.interbank_down = item.detail
                    elif exc.answered:
                        item.detail = (
                            f"the bank could not take it ({item.attempts} attempts): {why};"
                            " it stays pending: upload again later"
                        )
                        self.report.stopped = f"the bank cannot take notes now: {why}"
                    elif exc.slow:
                        item.detail = (
                            f"no answer in time ({item.attempts} attempts): {why}; it stays"
                            " pending: upload again later (or with a longer --timeout)"
                        )
                        self.report.stopped = f"the bank is too slow to answer: {why}"
                    else:
                        item.detail = f"bank unreachable after {item.attempts} attempts: {why}"
                        self.report.stopped = f"bank unreachable: {why}"
                    return None
                delay = backoff_delay(attempt, self.base_delay, self.max_delay, self.rng)
                delay = max(delay, asked or 0.0)  # never sooner than the bank asked
                self.say(f"  {printable(exc)}; retrying in {delay:.1f} s")
                self.sleep(delay)
                attempt += 1
            except Answer as exc:
                self.merchant.outbox.record_attempt(row.note_id, str(exc))
                item.detail = printable(exc)
                return None
            except NotYet as exc:
                self.merchant.outbox.record_attempt(row.note_id, f"not settled yet: {exc}")
                return str(exc)

    def bank_time(self, res: Any) -> float | None:
        """The bank's clock as it answered: its Date header, else the time in the header of
        its signed Refusal when the answer is a fresh one (a repeated answer is as old as the
        first)."""
        date = http_date(self.client.last_date)
        if date is not None or res.duplicate or not res.refusal:
            return date
        try:
            return float(codec.decode(res.refusal, codec.REFUSAL).time)
        except CodecError:
            return None


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
    page: int = PAGE,
) -> UploadReport:
    """settle_wait: how long to keep asking about the notes the bank answered "pending"
    (interbank notes the consortium has not settled yet) before leaving them for the next
    run; one deadline for all of them, asked about in rounds. page: notes read at a time."""
    from hubi.bank.client import BankClient

    say = say or (lambda _s: None)
    report = UploadReport(bank_url)
    t0 = time.monotonic()
    total, pages = merchant.outbox.pending_walk(page)
    if total:
        say(f"uploading {total} note(s) to {bank_url}")
    with BankClient(bank_url, timeout=timeout) as client:
        run = _Run(
            merchant, client, report, say, sleep, random.Random(seed), retries,
            base_delay, max_delay,
        )  # fmt: skip
        waiting: list[_Waiting] = []
        settle_until: float | None = None
        for rows in pages:
            for row in rows:
                item = UploadItem(
                    row.note_id, row.payer, row.serial, row.amount, row.currency, PENDING
                )
                report.items.append(item)
                i = len(report.items)
                if report.stopped is not None:
                    item.detail = report.stopped
                    continue
                note = _intact(row, item, merchant.account)
                if note is None:  # named and skipped: the other notes still go up
                    say(item.line(i, max(total, i)))
                    continue
                if run.interbank_down is not None and run.interbank(row):
                    item.detail = run.interbank_down  # not asked again: the shop's own
                    say(item.line(i, max(total, i)))  # payers' notes still go up
                    continue
                why = run.ask(row, note, item)
                if why is not None:  # asked about again below, with the others
                    if settle_until is None:
                        settle_until = time.monotonic() + settle_wait
                    waiting.append(_Waiting(i, row, note, item, why))
                    item.detail = f"not settled yet ({why}): asking again"
                say(item.line(i, max(total, i)))
        if waiting and settle_until is not None:
            _ask_again(run, waiting, settle_until, min(1.0, max(0.1, base_delay)), total)
    report.seconds = time.monotonic() - t0
    return report


def _ask_again(run: _Run, waiting: list[_Waiting], until: float, pause: float, n: int) -> None:
    """Ask the bank about the unsettled notes in rounds until all are settled or `until`
    (one deadline for all: a hundred of them must not each wait the whole settle_wait).
    There is always one round, after `pause`: a first pass slower than settle_wait (a long
    outbox, a slow bank) must not leave the notes it asked about early with no second ask."""
    rounds = 0
    while waiting and run.report.stopped is None and run.interbank_down is None:
        if rounds and time.monotonic() >= until:
            break
        run.sleep(pause if not rounds else max(0.0, min(pause, until - time.monotonic())))
        rounds += 1
        still: list[_Waiting] = []
        for w in waiting:
            if run.report.stopped is None and run.interbank_down is None:
                why = run.ask(w.row, w.note, w.item)
                if why is None:
                    run.say(w.item.line(w.i, n))
                    continue
                w.why = why
            still.append(w)
        waiting = still
    for w in waiting:
        if w.item.state == PENDING:
            w.item.detail = (
                run.report.stopped
                or run.interbank_down
                or f"not settled yet ({w.why}): upload again later"
            )
            run.say(w.item.line(w.i, n))
