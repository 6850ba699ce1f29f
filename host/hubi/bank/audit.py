"""Audit of a bank's books and register (DESIGN §4): every link, not just the ends.

``audit(store, ...)`` walks every book in record-number order and the register in booking order
and reports findings, each naming a ``book`` (an account id, or ``(register)``), a ``record``
number (for the register: a register position or a checkpoint's tree size) and a ``kind``:

    missing            a record number with no record, below the book's last record
    truncated          the book's records end before its signed head says they do
    reordered          the record stored at n is another number's record (moved/swapped)
    duplicated         a copy of a record already in the book (same bytes, or the same note
                       booked twice in one book), or a signed checkpoint stored twice
    altered            the record's bytes differ from what the hash chain recorded, its fields
                       contradict its evidence (lsum, amount, account), or a chain equation fails
    bad-signature      a signature of the bank (sig8 over ecode, sig9 over the coded balance,
                       the book head) or of the payer (the note) does not verify although the
                       hash chain does: the record was rewritten and the chains recomputed
    balance-mismatch   balance_n != balance_(n-1) + delta_n (needs the bank's private key)
    checkpoint-mismatch a signed tree head does not match the register as stored now (or two
                       different ones are stored for one tree size)

Checks per record n of book B (``level="chain"`` does the first four, ``"full"`` all):
    numbering (gaps, tail vs head, copies, records stored at another number's place);
    hash chain  hchain_n == SHA-256(hchain_(n-1) || u64(n) || body_n);
    XOR chain   ecode_n == ecode_(n-1) XOR lsum_n;
    head        the signed head names (n, hchain) of the last record, and the head's cached
                fields the next booking builds on (ecode, coded balance, kind, lsum) are the
                last record's;
    evidence    the note decodes, its payer's signatures verify, lsum and delta match it and the
                book is its payer (debit) or payee (credit);
    signatures  sig8, sig9 (low S), the head statement, each checkpoint's seal;
    balances    the coded balances open and add up (only with the bank's private key);
    register    every entry has its record; RFC 9162 roots at every checkpoint.

A link check between n-1 and n runs only when both records are in their places, so one tampered
record is reported once, at its own number, not again at its neighbour.

A damaged cell (NULL, text where bytes or a number belong, a book name whose bytes are not UTF-8:
shown escaped) is an ``altered`` finding where it is, and the audit goes on; so is a second head
of one book or a register head that is not one row (a table rebuilt without its key). Numbers
missing from a book or the register are named one by one as far
as the rows stored for it (records and register entries) can account for them; a count beyond
that (a head or register size that was overwritten) is one finding naming the whole range, so an
audit's time and memory follow the rows stored, never a damaged number.

An audit keeps the first MAX_KEPT findings whole (missing records up to MAX_LOST, for restore)
and counts the rest by kind (``AuditReport.omitted``): a database damaged in every row costs
bounded memory, and the report says how many findings it does not list; a finding's detail
repeats a book's name only when it is short.

``AuditMemo`` remembers (by SHA-256) record bytes and notes whose signatures verified, so a repeat
audit re-verifies only what changed; it is content-addressed, so a changed byte is re-checked.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hubi.bank import merkle
from hubi.bank import records as rec
from hubi.bank.store import BLOB_TYPES as _BLOBS
from hubi.bank.store import Store, display_url, open_store
from hubi.bank.store import describe_cell as _what
from hubi.output import counted
from hubi_core import codec, lsum, suite, verify
from hubi_core.errors import CodecError, HubiError


def _entries(n: int) -> str:
    """A count of register entries, agreeing ("1 entry"; the messages said "1 entries")."""
    return counted(n, "entry", "entries")


__all__ = [
    "AuditError",
    "AuditMemo",
    "AuditReport",
    "Finding",
    "KINDS",
    "REGISTER",
    "UnknownBook",
    "api_audit",
    "audit",
]

KINDS = (
    "missing",
    "altered",
    "reordered",
    "duplicated",
    "truncated",
    "bad-signature",
    "balance-mismatch",
    "checkpoint-mismatch",
)
REGISTER = "(register)"
MAX_LOST = 100_000  # record numbers a restore asks a backup for at once
# findings an audit keeps whole (about 1.5 KB each); past them a damaged database of any size is
# counted by kind, so memory stays bounded (missing records are kept up to MAX_LOST: restore)
MAX_KEPT = 100_000
NAME_IN_DETAIL = 100  # characters of a book name a finding's detail repeats
MAX_REPLY_BYTES = 32 << 20  # findings' JSON in a node's /v1/audit reply (a client takes 64 MiB)
_ROW_BATCH = 5000
_NAMED = 100  # register entries outside the register named one by one
_U64 = struct.Struct(">Q").pack
_HEAD_COUNT = "SELECT COUNT(*) FROM books WHERE book = ?"
_HEAD_SELECT = (
    "SELECT n, ecode, hchain, statement, sig, coded_bal, last_kind, last_lsum FROM books "
    "WHERE book = ?"
)


class AuditError(HubiError):
    """A database the audit cannot run on; the message names what is wrong and where."""


class UnknownBook(AuditError, LookupError):
    """An audit asked for a book the database does not hold."""


def _int(v: Any) -> int | None:
    """A stored integer; None for NULL, text, a real or whatever else a damaged cell holds."""
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _blob(v: Any) -> bytes | None:
    """Stored bytes; None for NULL, text or a number in a bytes column."""
    return bytes(v) if isinstance(v, _BLOBS) else None


def _label(v: Any) -> str:
    """The name a finding gives a book cell that holds no book name: bytes (a BLOB, or text that
    is not UTF-8) escaped, so the regulator sees what is there and a terminal shows it safely."""
    if isinstance(v, _BLOBS):
        return f"(book {bytes(v)[:40]!r})"
    return f"(book {_what(v)})"


def _in(book: str) -> str:
    """A book as a finding's detail names it: a long (damaged) name only once, in the finding's
    book, not again in each of its findings' details (a 1 MB name times 10^5 findings)."""
    if book == REGISTER:
        return "the register"
    return f"book {book}" if len(book) <= NAME_IN_DETAIL else "this book"


def _meta(tx: Any, key: str) -> bytes | None:
    v = tx.scalar("SELECT value FROM meta WHERE key = ?", (key,))
    raw = _blob(v)
    if v is not None and raw is None:
        raise AuditError(f"meta {key!r} holds {_what(v)}, not bytes: the database is damaged")
    return raw


def bank_of(tx: Any) -> str:
    """The database's bank id (meta 'bank'; "" when it has none); AuditError when damaged."""
    raw = _meta(tx, "bank")
    try:
        return raw.decode() if raw else ""
    except UnicodeDecodeError as exc:
        raise AuditError(f"meta 'bank' is not a bank id (not UTF-8: {exc})") from None


def _cache_diffs(head_row: tuple, body: bytes) -> list[str] | None:
    """The head's cached fields that the next booking builds on (beyond n, hchain and ecode,
    checked on their own) and that differ from the last record's; None if it does not parse."""
    try:
        r = rec.Record.parse(body)
    except rec.RecordFormatError:
        return None
    want = {"coded_bal": r.coded_bal, "last_kind": r.kind, "last_lsum": r.lsum}
    got = {
        "coded_bal": _blob(head_row[5]),
        "last_kind": _int(head_row[6]),
        "last_lsum": _blob(head_row[7]),
    }
    return [name for name in want if got[name] != want[name]]


@dataclass(frozen=True)
class Finding:
    book: str
    record: int
    kind: str
    detail: str
    through: int | None = None  # a finding for the numbers record..through, all alike

    def as_dict(self) -> dict[str, Any]:
        out = {"book": self.book, "record": self.record, "kind": self.kind, "detail": self.detail}
        if self.through is not None:
            out["through"] = self.through
        return out


@dataclass
class AuditReport:
    bank: str
    level: str
    findings: list[Finding]
    books: int = 0
    records: int = 0
    checks: dict[str, Any] = field(default_factory=dict)
    omitted: dict[str, int] = field(default_factory=dict)  # findings counted, not kept, by kind

    @property
    def ok(self) -> bool:
        return not self.findings and not self.omitted

    def lost(self, most: int = MAX_LOST) -> list[tuple[str, int]]:
        """Records the audit found missing or cut off (what ``restore`` fetches): a range
        finding's numbers too, up to `most` in all (a count overwritten with 2^63 names a range
        no backup holds)."""
        seen: dict[tuple[str, int], None] = {}
        for f in self.findings:
            if f.book != REGISTER and f.kind in ("missing", "truncated"):
                last = f.record if f.through is None else f.through
                for n in range(f.record, min(last, f.record + most - len(seen) - 1) + 1):
                    seen[(f.book, n)] = None
                if len(seen) >= most:
                    break
        return list(seen)

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.kind] = out.get(f.kind, 0) + 1
        for kind, count in self.omitted.items():
            out[kind] = out.get(kind, 0) + count
        return out

    def as_dict(self, max_bytes: int | None = None) -> dict[str, Any]:
        """The report as JSON-ready data; `max_bytes` bounds the findings listed (their JSON),
        the rest only counted: "summary" counts every finding, "findings_omitted" says how many
        are not listed (present only when some are not)."""
        listed, size = [], 0
        for f in self.findings:
            d = f.as_dict()
            if max_bytes is not None:
                size += len(json.dumps(d)) + 2
                if size > max_bytes:
                    break
            listed.append(d)
        doc = {
            "bank": self.bank,
            "level": self.level,
            "ok": self.ok,
            "books": self.books,
            "records": self.records,
            "checks": self.checks,
            "summary": self.by_kind(),
            "findings": listed,
        }
        omitted = len(self.findings) - len(listed) + sum(self.omitted.values())
        if omitted:
            doc["findings_omitted"] = omitted
        return doc


class AuditMemo:
    """Digests of record bytes and notes whose signatures verified in an earlier audit."""

    def __init__(self) -> None:
        self.bodies: set[bytes] = set()
        self.notes: dict[
            bytes, tuple[str, str, int, bytes]
        ] = {}  # digest -> payer, payee, amount, lsum


class _Findings:
    def __init__(self, most: int = MAX_KEPT) -> None:
        self._by: dict[tuple[str, int, str], list[str]] = {}
        self._at: set[tuple[str, int]] = set()  # has() in constant time: the register asks often
        self._through: dict[tuple[str, int, str], int] = {}  # range findings' last numbers
        self._most = most
        self._lost = 0  # missing and truncated findings kept (restore fetches by them)
        self.omitted: dict[str, int] = {}  # by kind: findings past `most`, counted only
        self._last_omitted: tuple[str, int, str] | None = None
        self._names: dict[str, str] = {}  # one copy of each book name (each row read makes one)
        # per book, the last record number of missing records counted past the limit: a book's
        # walk reports them in order, so every missing record up to it is already counted (the
        # register names them again)
        self.lost_upto: dict[str, int] = {}

    def _full(self, key: tuple[str, int, str]) -> bool:
        """True (and `key` counted) when `key` is a new finding past those kept."""
        if key in self._by or len(self._by) < self._most:
            return False
        if key[2] in ("missing", "truncated") and self._lost < MAX_LOST:
            return False
        if key != self._last_omitted:  # one record's details come one after another
            self.omitted[key[2]] = self.omitted.get(key[2], 0) + 1
            self._last_omitted = key
        return True

    def add(
        self, book: str, record: int, kind: str, detail: str, through: int | None = None
    ) -> None:
        assert kind in KINDS, kind
        if self._full((book, record, kind)):
            if kind in ("missing", "truncated"):
                last = record if through is None else through
                self.lost_upto[book] = max(self.lost_upto.get(book, last), last)
            return
        book = self._names.setdefault(book, book)
        if (book, record, kind) not in self._by and kind in ("missing", "truncated"):
            self._lost += 1
        lst = self._by.setdefault((book, record, kind), [])
        self._at.add((book, record))
        if through is not None:
            self._through[(book, record, kind)] = through
        if detail not in lst:
            lst.append(detail)

    def drop(self, book: str, record: int) -> None:
        for key in [k for k in self._by if k[0] == book and k[1] == record]:
            del self._by[key]
        self._at.discard((book, record))

    def has(self, book: str, record: int) -> bool:
        return (book, record) in self._at or record <= self.lost_upto.get(book, -1)

    def sorted(self) -> list[Finding]:
        def order(k: tuple[str, int, str]) -> tuple:
            return (k[0] == REGISTER, k[0], k[1], KINDS.index(k[2]))

        return [
            Finding(b, n, kind, "; ".join(self._by[(b, n, kind)]), self._through.get((b, n, kind)))
            for b, n, kind in sorted(self._by, key=order)
        ]


@dataclass
class _Prev:
    n: int
    hchain: bytes
    ecode: bytes
    usable: bool  # in place and parsed: links to the next record may be checked
    balance: int | None = None


class _Auditor:
    def __init__(
        self,
        store: Store,
        *,
        trust: verify.Trust | None,
        keys: rec.BookKeys | None,
        level: str,
        memo: AuditMemo | None,
        progress: Callable[[int], None] | None,
    ):
        if level not in ("chain", "full"):
            raise ValueError("level must be 'chain' or 'full'")
        self.store = store
        self.trust = trust
        self.keys = keys
        self.level = level
        self.full = level == "full"
        self.memo = memo or AuditMemo()
        self.progress = progress
        self.f = _Findings()
        self.checks: dict[str, Any] = {"level": level}
        reader = store.reader()
        self.bank = bank_of(reader)
        db_key = _meta(reader, "bank_key")
        key = None
        if trust is not None and self.bank in trust.consortium.banks:
            key = trust.bank_key(self.bank)
            self.checks["bank_key"] = "consortium file"
            if db_key is not None and db_key != key:
                self.f.add(
                    REGISTER,
                    0,
                    "bad-signature",
                    "the database names another key for the bank than the consortium file",
                )
        elif db_key is not None:
            key = db_key
            self.checks["bank_key"] = "database (not checked against a consortium file)"
        try:
            self.verifier = rec.BookVerifier(self.bank, key) if key is not None else None
        except ValueError as exc:
            raise AuditError(f"meta 'bank_key' is not a P-256 public key: {exc}") from None
        if self.full and self.verifier is None:
            self.checks["signatures"] = "not checked: no bank key"
        self.checks["notes"] = (
            "verified"
            if (self.full and trust is not None)
            else "not checked (no trust bundle)"
            if self.full
            else "not checked"
        )
        self.checks["balances"] = (
            "checked"
            if (self.full and keys is not None)
            else "not checked (no bank private key)"
            if self.full
            else "not checked"
        )
        self.records = 0
        self._heads_ok: dict[tuple[bytes, bytes], bool] = {}
        self._bounds: dict[str, int] = {}

    # ------------------------------------------------------------------------------ books
    def book_names(self, only: Iterable[str] | None) -> list[str]:
        """The books to walk: `only` (UnknownBook for one the database does not hold), else
        every book with a head or a record; rows stored under no book name are findings."""
        tx = self.store.reader()
        if only is not None:
            names = list(dict.fromkeys(only))  # each once, in the order named
            for b in names:
                if (
                    tx.one("SELECT 1 FROM books WHERE book = ?", (b,)) is None
                    and tx.one("SELECT 1 FROM records WHERE book = ? LIMIT 1", (b,)) is None
                ):
                    raise UnknownBook(f"no book {b} in {display_url(self.store.url)}")
            return names
        heads = [r[0] for r in tx.all("SELECT book FROM books")]
        stored = [r[0] for r in tx.all("SELECT DISTINCT book FROM records")]
        for v in heads:
            if not isinstance(v, str):
                self.f.add(_label(v), 0, "altered", "a book head has no book name")
        for v in stored:
            if not isinstance(v, str):
                self._strays(tx, v)
        return sorted({b for b in heads + stored if isinstance(b, str)})

    def _strays(self, tx: Any, value: Any) -> None:
        """Records stored under `value` (NULL or bytes), not a book name: each is a finding at
        the book and number its bytes name, when they parse."""
        if value is None:
            rows = tx.all("SELECT n, body FROM records WHERE book IS NULL")
        elif tx.pg:
            rows = tx.all("SELECT n, body FROM records WHERE book = ?", (value,))
        else:  # SQLite: bytes read from a BLOB cell or from text that is not UTF-8 (both
            # looked up on the key: a CAST of the column scanned the table for each such value)
            sql = "SELECT n, body FROM records WHERE book IN (?, CAST(? AS TEXT))"
            rows = tx.all(sql, (value, value))
        label = _label(value)
        for raw_n, raw_body in rows:
            book, n = label, _int(raw_n) or 0
            body = _blob(raw_body)
            try:
                if body is not None:
                    r = rec.Record.parse(body)
                    book, n = r.book, r.n
            except rec.RecordFormatError:
                pass
            self.f.add(book, n, "altered", f"record {n} of {book} is stored under {label[1:-1]}")

    def _bound(self, book: str) -> int:
        """How many numbers the rows stored for `book` (or the register) can account for: a
        count beyond it was overwritten, not lost row by row."""
        got = self._bounds.get(book)
        if got is None:
            tx = self.store.reader()
            if book == REGISTER:
                counts = ("SELECT COUNT(*) FROM register", "SELECT COUNT(*) FROM records")
                got = max(int(tx.scalar(q, default=0) or 0) for q in counts)
            else:
                counts = (
                    "SELECT COUNT(*) FROM register WHERE book = ?",
                    "SELECT COUNT(*) FROM records WHERE book = ?",
                )
                got = max(int(tx.scalar(q, (book,), default=0) or 0) for q in counts)
            self._bounds[book] = got
        return got

    def _gap(
        self, book: str, first: int, last: int, kind: str, each: Callable[[int], str], whole: str
    ) -> None:
        """Findings for the numbers first..last: one each as far as the stored rows account
        for, then one naming the rest of the range."""
        bound = self._bound(book)
        top = bound - 1 if book == REGISTER else bound  # register positions count from 0
        upto = min(last, max(first - 1, top))
        for k in range(first, upto + 1):
            self.f.add(book, k, kind, each(k))
        if upto < last:
            self.f.add(
                book,
                upto + 1,
                kind,
                f"{whole}: numbers {upto + 1}..{last} ({last - upto:,} of them), more than the "
                f"{counted(bound, 'row')} stored for {_in(book)} account for",
                through=last,
            )

    def _rows(self, book: str) -> Iterator[list[tuple]]:
        """The book's rows (n, body, hchain) in number order, in pages; rows whose number is
        NULL (a table rebuilt without its constraints) first, in pages of their own: paging on
        `n > last` stopped at a page ending on NULL and skipped the rest of the book."""
        tx = self.store.reader()
        for off in itertools.count(0, _ROW_BATCH):
            rows = tx.all(
                "SELECT n, body, hchain FROM records WHERE book = ? AND n IS NULL LIMIT ? OFFSET ?",
                (book, _ROW_BATCH, off),
            )
            if rows:
                yield rows
            if len(rows) < _ROW_BATCH:
                break
        rows = tx.all(
            "SELECT n, body, hchain FROM records WHERE book = ? AND n IS NOT NULL ORDER BY n "
            "LIMIT ?",
            (book, _ROW_BATCH),
        )
        while rows:
            yield rows
            if len(rows) < _ROW_BATCH:
                return
            rows = tx.all(
                "SELECT n, body, hchain FROM records WHERE book = ? AND n > ? ORDER BY n LIMIT ?",
                (book, rows[-1][0], _ROW_BATCH),
            )

    def chain_fast(self, book: str) -> bool:
        """Chain-level checks of a book that is in order, in one tight loop: True when the book
        is clean (numbering, hash chain, XOR chain, head). On the first anomaly it stops and
        returns False; ``walk_book`` then examines the book in detail and names the findings."""
        head_row = self.store.reader().one(_HEAD_SELECT, (book,))
        if head_row is None:
            return False
        head_n, head_e, head_h, statement = (
            _int(head_row[0]),
            _blob(head_row[1]),
            _blob(head_row[2]),
            _blob(head_row[3]),
        )
        if head_n is None or head_e is None or head_h is None or statement is None:
            return False
        sha256 = hashlib.sha256
        from_bytes = int.from_bytes
        u64 = _U64
        blobs = _BLOBS
        p_h, p_e, expected, count = rec.ZERO32, 0, 1, 0
        body = b""
        for page in self._rows(book):
            for n, body, hc in page:
                if n != expected or not isinstance(body, blobs):
                    return False
                if from_bytes(body[2:10], "big") != n:
                    return False
                if sha256(p_h + u64(n) + body).digest() != hc:
                    return False
                e = from_bytes(body[38:54], "big")
                if p_e ^ from_bytes(body[22:38], "big") != e:
                    return False
                p_h, p_e, expected = hc, e, n + 1
            count += len(page)
        if head_n != expected - 1 or head_h != p_h or from_bytes(head_e, "big") != p_e:
            return False
        if count and _cache_diffs(head_row, bytes(body)) != []:
            return False
        try:
            keeper, _, entries = rec.parse_head(statement)
        except rec.RecordFormatError:
            return False
        if (book, head_n, p_h) not in entries or (self.bank and keeper != self.bank):
            return False
        self.records += count
        if self.progress:
            self.progress(self.records)
        return True

    def walk(self, book: str) -> None:
        heads = int(self.store.reader().scalar(_HEAD_COUNT, (book,), default=0) or 0)
        if heads > 1:  # a books table rebuilt without its key: which head the bank books on is
            # anyone's guess, and the audit checks only one of them
            self.f.add(book, 0, "altered", f"the book has {heads} signed heads stored, not one")
        if self.full or not self.chain_fast(book):
            self.walk_book(book)

    def walk_book(self, book: str) -> None:
        """Every check of one book, record by record, naming each finding."""
        f = self.f
        full = self.full
        head_row = self.store.reader().one(_HEAD_SELECT, (book,))
        head_n = _int(head_row[0]) if head_row else None
        if head_n is not None and head_n < 0:
            head_n = None  # reported by _head_checks
        sha256 = hashlib.sha256
        from_bytes = int.from_bytes
        seen: dict[bytes, tuple[int, bool]] = {}  # identity -> (n, in place)
        notes_seen: dict[tuple[int, bytes], int] = {}
        # the previous row: number, hchain, ecode (int), usable for links, balance
        p_n, p_h, p_e, p_ok, p_bal = 0, rec.ZERO32, 0, True, 0
        expected = 1
        last_in_place = last_row = 0
        last_hc = last_ec = last_body = b""
        for page in self._rows(book):
            for raw_n, raw_body, raw_hc in page:
                n = _int(raw_n)
                if n is None:  # no place in the numbering: named by what its bytes say
                    self._misnumbered(book, raw_n, raw_body)
                    continue
                if n != expected:
                    if expected < n:
                        self._gap(
                            book,
                            expected,
                            n - 1,
                            "missing",
                            lambda k: f"no record {k} in {_in(book)}",
                            f"no records before record {n} in {_in(book)}",
                        )
                    expected = max(expected, n + 1)
                else:
                    expected = n + 1
                last_row = n
                body, hc = _blob(raw_body), _blob(raw_hc)
                if body is None or hc is None:
                    cells = (("body", raw_body), ("hchain", raw_hc))
                    what = " and ".join(
                        f"its {c} is {_what(v)}" for c, v in cells if _blob(v) is None
                    )
                    f.add(book, n, "altered", f"record {n} cannot be read: {what}, not bytes")
                    p_n, p_ok = n, False
                    continue
                ident = sha256(body).digest() if full else hc
                record = None
                if len(body) < rec.BODY_FIXED:
                    f.add(
                        book,
                        n,
                        "altered",
                        f"record bytes do not parse: record is {counted(len(body), 'byte')}",
                    )
                    p_n, p_ok = n, False
                    continue
                body_n = from_bytes(body[2:10], "big")
                if full:
                    try:
                        record = rec.Record.parse(body)
                    except rec.RecordFormatError as exc:
                        f.add(book, n, "altered", f"record bytes do not parse: {exc}")
                        p_n, p_ok = n, False
                        continue
                in_place = body_n == n and (record is None or record.book == book)
                first = seen.get(ident)
                if first is not None:
                    if in_place and not first[1]:
                        f.drop(book, first[0])
                        f.add(book, first[0], "duplicated", f"copy of record {n}")
                    else:
                        f.add(book, n, "duplicated", f"copy of record {first[0]}")
                        p_n, p_ok = n, False
                        continue
                seen[ident] = (n, in_place)
                if not in_place:
                    where = (
                        body_n
                        if (record is None or record.book == book)
                        else f"{record.book}#{body_n}"
                    )
                    f.add(book, n, "reordered", f"record {n}'s place holds record {where}")
                    p_n, p_ok = n, False
                    continue
                if head_n is not None and n > head_n:
                    f.add(book, n, "altered", f"record {n} is beyond the signed head ({head_n})")
                ecode = from_bytes(body[38:54], "big")
                link = p_ok and p_n == n - 1
                hash_ok = True
                if link:
                    if sha256(p_h + n.to_bytes(8, "big") + body).digest() != hc:
                        hash_ok = False
                        f.add(
                            book,
                            n,
                            "altered",
                            "record bytes differ from those the hash chain recorded",
                        )
                    if p_e ^ from_bytes(body[22:38], "big") != ecode:
                        f.add(book, n, "altered", "ecode != ecode(n-1) XOR lsum (XOR chain broken)")
                balance = None
                if full:
                    assert record is not None
                    prev = _Prev(p_n, p_h, p_e.to_bytes(16, "big"), p_ok, p_bal) if link else None
                    balance = self._full_checks(
                        book, n, record, body, ident, hash_ok and link, notes_seen, prev
                    )
                p_n, p_h, p_e, p_ok, p_bal = n, hc, ecode, True, balance
                last_in_place, last_hc, last_ec, last_body = n, hc, body[38:54], body
            self.records += len(page)
            if self.progress:
                self.progress(self.records)
        tail = {last_in_place: (last_hc, last_ec, last_body)} if last_in_place else {}
        self._head_checks(book, head_row, last_in_place, last_row, tail)

    def _misnumbered(self, book: str, raw_n: Any, raw_body: Any) -> None:
        """A row of `book` whose record number is not an integer: a finding at the number its
        bytes say (0 when they say none)."""
        body = _blob(raw_body)
        n = int.from_bytes(body[2:10], "big") if body is not None and len(body) >= 10 else 0
        self.f.add(
            book,
            n,
            "altered",
            f"a record of {_in(book)} (its bytes say record {n}) is stored under record number "
            f"{_what(raw_n)}, not an integer",
        )

    def _full_checks(
        self,
        book: str,
        n: int,
        record: rec.Record,
        body: bytes,
        ident: bytes,
        chained: bool,
        notes_seen: dict[tuple[int, bytes], int],
        prev: _Prev | None,
    ) -> int | None:
        f = self.f
        # bank signatures (memo: these exact bytes verified before)
        if self.verifier is not None and ident not in self.memo.bodies:
            bad = self.verifier.check_record(record)
            if bad:
                what = {
                    "sig8": "sig8 (over the evidence code)",
                    "sig9": "sig9 (over the coded balance)",
                }
                f.add(
                    book,
                    n,
                    "bad-signature",
                    " and ".join(what[b] for b in bad)
                    + (" do not verify" if len(bad) > 1 else " does not verify"),
                )
            else:
                self.memo.bodies.add(ident)
        # evidence
        ev = record.evidence
        evd = hashlib.sha256(ev).digest()
        key = (record.kind, evd)
        if key in notes_seen:
            f.add(
                book,
                n,
                "duplicated",
                f"the same note is already booked as record {notes_seen[key]}",
            )
        else:
            notes_seen[key] = n
        if record.kind not in (rec.DEBIT, rec.CREDIT):
            f.add(book, n, "altered", f"record kind {record.kind} is not a debit or credit")
        else:
            facts = self.memo.notes.get(evd) if self.trust is not None else None
            if facts is None:
                facts = self._note_facts(book, n, ev, evd, chained)
            if facts is not None:
                payer, payee, amount, note_lsum = facts
                if record.kind == rec.DEBIT and (payer != book or record.delta != -amount):
                    f.add(
                        book,
                        n,
                        "altered",
                        f"debit of {record.delta} does not match the note ({payer} pays {amount})",
                    )
                if record.kind == rec.CREDIT and (payee != book or record.delta != amount):
                    f.add(
                        book,
                        n,
                        "altered",
                        f"credit of {record.delta} does not match the note ({payee} receives {amount})",
                    )
                if note_lsum != record.lsum:
                    f.add(book, n, "altered", "lsum does not match the note's fields")
        # balances
        if self.keys is None:
            return None
        try:
            balance = self.keys.open_balance(
                rec.balance_info(book, n, record.kind, record.lsum), record.coded_bal
            )
        except ValueError:
            f.add(
                book, n, "balance-mismatch", "the coded balance does not open with the bank's key"
            )
            return None
        if prev is not None and prev.balance is not None and balance != prev.balance + record.delta:
            f.add(
                book,
                n,
                "balance-mismatch",
                f"balance {balance} != {prev.balance} (record {n - 1}) + {record.delta}",
            )
        return balance

    def _note_facts(
        self, book: str, n: int, ev: bytes, evd: bytes, chained: bool
    ) -> tuple[str, str, int, bytes] | None:
        """Decode (and with a trust bundle verify) a record's note: (payer, payee, amount, lsum);
        remembered by digest once its signatures verified."""
        try:
            note = codec.decode(ev, codec.NOTE)
        except CodecError as exc:
            self.f.add(book, n, "altered", f"evidence is not a valid note: {exc}")
            return None
        facts = (note.signer, note["payee"], note["amount"], lsum.of_note(note))
        if self.trust is not None:
            report = verify.verify_note(note, self.trust, None)
            if report.ok:
                self.memo.notes[evd] = facts
            else:
                first = report.first_failure() or ("note", "")
                kind = "bad-signature" if chained else "altered"
                self.f.add(
                    book, n, kind, f"the note's {first[0]} signature does not verify ({first[1]})"
                )
        return facts

    def _head_sig_ok(self, statement: bytes, sig: bytes) -> bool:
        """The head statement's signature; the books of one booking share one signed root
        message, verified once per audit."""
        assert self.verifier is not None
        try:
            key = (rec.head_signed(statement), sig)
        except rec.RecordFormatError:
            return False
        ok = self._heads_ok.get(key)
        if ok is None:
            ok = self._heads_ok[key] = self.verifier.verify(*key)
        return ok

    def _head_checks(
        self,
        book: str,
        head_row: tuple | None,
        last_in_place: int,
        last_row: int,
        tail: dict[int, tuple[bytes, bytes, bytes]],
    ) -> None:
        f = self.f
        if head_row is None:
            if last_row:
                f.add(book, last_row + 1, "truncated", "the book has records but no signed head")
            return
        head_n = _int(head_row[0])
        if head_n is None or head_n < 0:
            f.add(
                book,
                last_row,
                "altered",
                f"the book head's record count is {_what(head_row[0])}, not a record number",
            )
            return
        cells = dict(zip(("ecode", "hchain", "statement", "sig"), head_row[1:5]))
        unread = [f"{c} is {_what(v)}" for c, v in cells.items() if _blob(v) is None]
        if unread:
            f.add(book, head_n, "altered", f"the book head's {' and '.join(unread)}, not bytes")
        ecode, hchain, statement, sig = (_blob(v) for v in cells.values())
        if statement is not None:
            signed = self.full and self.verifier is not None and sig is not None
            if signed and not self._head_sig_ok(statement, sig):
                f.add(book, head_n, "bad-signature", "the book head's signature does not verify")
            try:
                keeper, _, entries = rec.parse_head(statement)
                if (book, head_n, hchain) not in entries or (self.bank and keeper != self.bank):
                    f.add(
                        book, head_n, "altered", "the signed head statement does not name this head"
                    )
            except rec.RecordFormatError as exc:
                f.add(book, head_n, "altered", f"the head statement does not parse: {exc}")
        if last_row < head_n:
            says = f"the signed head says {counted(head_n, 'record')}, the book ends at {last_row}"
            self._gap(book, last_row + 1, head_n, "truncated", lambda k: says, says)
        if head_n == 0 and not last_row and ecode is not None and ecode != rec.ZERO16:
            f.add(book, 0, "altered", "the empty book's head has an ecode other than zero")
        if head_n in tail and last_in_place == head_n:
            hc, ec, body = tail[head_n]
            if hchain is not None and hc != hchain:
                f.add(
                    book,
                    head_n,
                    "altered",
                    "the hash chain up to here differs from the signed head: records were rewritten and the chain recomputed",
                )
            if ecode is not None and ec != ecode:
                f.add(book, head_n, "altered", "the head's ecode differs from the last record's")
            diffs = _cache_diffs(head_row, body)
            if diffs:
                f.add(
                    book,
                    head_n,
                    "altered",
                    f"the book head's {' and '.join(diffs)} "
                    f"{'differs' if len(diffs) == 1 else 'differ'} from record {head_n}'s, which "
                    "the next booking builds on",
                )

    # --------------------------------------------------------------------------- register
    def register(self) -> None:
        f = self.f
        tx = self.store.reader()
        heads = tx.all("SELECT id, size FROM register_head LIMIT 6")
        if len(heads) == 1 and _int(heads[0][0]) == 1:
            size = _int(heads[0][1])
            bad = f"the register's size is {_what(heads[0][1])}, not a count"
        else:  # none, or several sizes (a table rebuilt without its key): which one is true?
            size = None
            rows = "; ".join(f"id {_what(i)} size {_what(v)}" for i, v in heads[:5])
            bad = f"the register head has {counted(len(heads), 'row')}, not one ({rows or 'none'})"
        if size is None or size < 0:
            f.add(REGISTER, 0, "altered", bad)
            size = self._bound(REGISTER)
        cps = tx.all("SELECT tree_size, root, obj FROM checkpoints ORDER BY tree_size")
        self.checks["register_size"] = size
        self.checks["checkpoints"] = len(cps)
        bank_key = self.verifier.public_key if self.verifier is not None else None
        targets: dict[int, list[bytes]] = {}  # every root signed for a size (a copy is a finding)
        stored: dict[int, list[bytes]] = {}  # the objects stored for each size
        for raw_cp in cps:
            tree_size, root, obj = _int(raw_cp[0]), _blob(raw_cp[1]), _blob(raw_cp[2])
            if tree_size is None or root is None or obj is None:
                f.add(
                    REGISTER,
                    tree_size or 0,
                    "checkpoint-mismatch",
                    "checkpoint row cannot be read: tree size, root, object are "
                    + ", ".join(_what(v) for v in raw_cp),
                )
                continue
            if self._cp_copy(tree_size, obj, stored):
                continue
            try:
                cp = codec.decode(obj, codec.CHECKPOINT)
            except CodecError as exc:
                targets.setdefault(tree_size, []).append(root)  # nothing signed to go by
                f.add(
                    REGISTER,
                    tree_size,
                    "checkpoint-mismatch",
                    f"checkpoint object does not decode: {exc}",
                )
                continue
            if cp["tree_size"] != tree_size or cp["root"] != root or cp.serial != tree_size:
                f.add(
                    REGISTER,
                    tree_size,
                    "checkpoint-mismatch",
                    "checkpoint row differs from its signed object",
                )
            if bank_key is not None and not suite.verify(
                bank_key, codec.field_message(cp, "seal"), cp.sigs["seal"]
            ):
                f.add(REGISTER, tree_size, "bad-signature", "checkpoint seal does not verify")
            elif isinstance(cp["root"], bytes):
                # the register is held to what was signed, not to a row's copy of it: a row
                # altered (or a second, forged row) is its own finding, and blames no entry
                targets.setdefault(tree_size, []).append(cp["root"])
            if tree_size > size:
                f.add(
                    REGISTER,
                    tree_size,
                    "checkpoint-mismatch",
                    f"checkpoint covers {_entries(tree_size)}, the register has {size}",
                )
        frontier = merkle.Frontier()
        expect = 0
        last_good = 0
        broken_from: int | None = None
        unverifiable = False
        mismatched = 0
        kept = self._kept_subtrees(tx)
        self.checks["kept_subtrees"] = len(kept)

        differ: list[tuple[int, int]] = []

        def compare(level: int, idx: int, h: bytes) -> None:
            # a kept subtree must hash as the records do: proofs are made from it
            was = kept.get((level, idx))
            if was is not None and was != h:
                differ.append((level, idx))

        def gap(first: int, last: int) -> None:
            self._gap(
                REGISTER,
                first,
                last,
                "missing",
                lambda k: f"register entry {k} is missing",
                "register entries are missing",
            )

        after: Any = -1  # pages follow the stored rows (the last seq read), not the size
        while True:
            rows = tx.all(
                "SELECT g.seq, g.book, g.n, r.body FROM register g LEFT JOIN records r "
                "ON r.book = g.book AND r.n = g.n WHERE g.seq > ? AND g.seq < ? "
                "ORDER BY g.seq LIMIT ?",
                (after, size, _ROW_BATCH),
            )
            for raw_seq, book, raw_n, body in rows:
                seq, n = _int(raw_seq), _int(raw_n)
                if seq is None:
                    f.add(REGISTER, 0, "altered", f"a register entry's seq is {_what(raw_seq)}")
                    unverifiable = True
                    continue
                if expect < seq:
                    gap(expect, seq - 1)
                    unverifiable = True
                expect = seq + 1
                if n is None or not isinstance(book, str):
                    f.add(
                        REGISTER,
                        seq,
                        "altered",
                        f"register entry {seq} names {_label(book)[1:-1]} record {_what(raw_n)}, "
                        "not a book and record number",
                    )
                    unverifiable = True
                    continue
                blob = _blob(body)
                if blob is None:
                    if body is None and not self.f.has(book, n):
                        f.add(
                            book,
                            n,
                            "missing",
                            f"register entry {seq} names record {n} of {_in(book)}, which is not "
                            "stored",
                        )
                    unverifiable = True  # a record that is not bytes is its book's finding
                    continue
                if not unverifiable:
                    frontier.append_hash(merkle.leaf_hash(blob), compare if kept else None)
                if seq + 1 in targets and not unverifiable:
                    if frontier.root() not in targets[seq + 1]:  # none that was signed
                        mismatched += 1
                        if broken_from is None:
                            broken_from = last_good
                            f.add(
                                REGISTER,
                                seq + 1,
                                "checkpoint-mismatch",
                                f"the tree head over {_entries(seq + 1)} differs from the "
                                f"signed checkpoint: an entry in {last_good}..{seq} changed "
                                "since it was signed",
                            )
                    else:
                        last_good = seq + 1
            if len(rows) < _ROW_BATCH:
                break
            after = rows[-1][0]
        if expect < size:
            gap(expect, size - 1)
        self._outside(tx, size)
        self.checks["checkpoints_mismatched"] = mismatched
        if not mismatched:  # else the records changed, and the kept subtrees with them
            for level, idx in differ:
                first, end = idx << level, (idx + 1) << level
                f.add(
                    REGISTER,
                    end,
                    "checkpoint-mismatch",
                    f"the kept subtree of register entries {first}..{end - 1} (merkle_nodes"
                    f" level {level}) differs from the records: proofs made from it fail",
                )
        if unverifiable:
            self.checks["checkpoint_roots"] = "not all recomputed: register entries without records"

    def _cp_copy(self, tree_size: int, obj: bytes, stored: dict[int, list[bytes]]) -> bool:
        """A second checkpoint row for one tree size (a table rebuilt without its key): a copy
        of the same signed object is `duplicated` (True: checked once already), another object
        a `checkpoint-mismatch` (the bank signed two heads for one size, or one is forged)."""
        objs = stored.setdefault(tree_size, [])
        objs.append(obj)
        if len(objs) == 1:
            return False
        if obj in objs[:-1]:
            self.f.add(
                REGISTER,
                tree_size,
                "duplicated",
                f"the checkpoint over {_entries(tree_size)} is stored more than once",
            )
            return True
        self.f.add(
            REGISTER,
            tree_size,
            "checkpoint-mismatch",
            f"different checkpoints are stored for tree size {tree_size}",
        )
        return False

    def _outside(self, tx: Any, size: int) -> None:
        """Register entries the walk over positions 0..size-1 does not reach: a NULL, negative
        or text position, or one at or past the register's size (where the next booking's entry
        goes: it would fail there). The first _NAMED are named, the rest counted."""
        # (text sorts after every number in SQLite: `seq >= size` holds for it; each term
        # can use the key's index, so a clean register costs three lookups)
        where = "FROM register WHERE seq IS NULL OR seq < 0 OR seq >= ?"
        count = int(tx.scalar(f"SELECT COUNT(*) {where}", (size,), default=0) or 0)
        if not count:
            return
        for raw_seq, book, raw_n in tx.all(f"SELECT seq, book, n {where} LIMIT ?", (size, _NAMED)):
            seq = _int(raw_seq)
            who = _in(book) if isinstance(book, str) else _label(book)[1:-1]
            self.f.add(
                REGISTER,
                seq if seq is not None and seq >= 0 else 0,
                "altered",
                f"a register entry at position {_what(raw_seq)} (naming {who} record "
                f"{_what(raw_n)}) lies outside the register's {_entries(size)}",
            )
        if count > _NAMED:
            self.f.add(
                REGISTER,
                0,
                "altered",
                f"{counted(count - _NAMED, 'more register entry', 'more register entries')} "
                f"{'lies' if count - _NAMED == 1 else 'lie'} outside its "
                f"{_entries(size)}",
            )

    def _kept_subtrees(self, tx: Any) -> dict[tuple[int, int], bytes]:
        """merkle_nodes (schema version 2; none in an older database)."""
        if self.store.schema_version() < 2:
            return {}
        kept: dict[tuple[int, int], bytes] = {}
        for raw in tx.all("SELECT level, idx, hash FROM merkle_nodes"):
            level, idx, h = _int(raw[0]), _int(raw[1]), _blob(raw[2])
            if level is None or idx is None or h is None:  # never int() or bytes() of a damaged
                # cell: bytes(2**40) would allocate a terabyte
                self.f.add(
                    REGISTER,
                    0,
                    "altered",
                    "a kept subtree (merkle_nodes) cannot be read: level, idx, hash are "
                    + ", ".join(_what(v) for v in raw),
                )
                continue
            kept[(level, idx)] = h
        return kept

    def report(self, books: int) -> AuditReport:
        if self.f.omitted:
            self.checks["findings_kept"] = (
                f"the first {MAX_KEPT:,} (and missing records up to {MAX_LOST:,}); the rest "
                "counted by kind"
            )
        return AuditReport(
            self.bank,
            self.level,
            self.f.sorted(),
            books,
            self.records,
            self.checks,
            dict(self.f.omitted),
        )


def _audit_share(
    args: tuple[str, str, list[str]],
) -> tuple[list[Finding], int, dict[str, int], dict[str, int]]:
    """One worker process's share of a chain-level audit (its own connection): its findings
    whole (a range finding's last number too: restore fetches by it), and those only counted."""
    url, level, books = args
    st = open_store(url, create=False, migrate=False)
    try:
        a = _Auditor(st, trust=None, keys=None, level=level, memo=None, progress=None)
        for b in books:
            a.walk(b)
        return a.f.sorted(), a.records, a.f.omitted, a.f.lost_upto
    finally:
        st.close()


def audit(
    store: Store | str,
    *,
    trust: verify.Trust | None = None,
    keys: rec.BookKeys | None = None,
    level: str = "full",
    books: Iterable[str] | None = None,
    memo: AuditMemo | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> AuditReport:
    """Audit a bank database. ``trust`` checks notes and the bank key against the consortium;
    ``keys`` (the bank's private key) lets balances be opened and added up; ``level`` is
    ``"chain"`` (numbering, hash chain, XOR chain, heads) or ``"full"`` (everything).
    ``workers`` > 1 spreads a chain-level audit's books over that many processes.

    The audit reads one snapshot (a read transaction; REPEATABLE READ on PostgreSQL): a node
    booking into the database meanwhile showed it a register head older than the rows it read
    next, its new entries "outside the register" (`audit verify`, `restore`, `/v1/audit`)."""
    own = not isinstance(store, Store)
    st = open_store(store, create=False, migrate=False) if own else store
    try:
        with st.snapshot():
            return _audit_in(st, trust, keys, level, books, memo, progress, workers)
    finally:
        if own:
            st.close()


def _audit_in(
    st: Store,
    trust: verify.Trust | None,
    keys: rec.BookKeys | None,
    level: str,
    books: Iterable[str] | None,
    memo: AuditMemo | None,
    progress: Callable[[int], None] | None,
    workers: int,
) -> AuditReport:
    a = _Auditor(st, trust=trust, keys=keys, level=level, memo=memo, progress=progress)
    names = a.book_names(books)
    if workers > 1 and level == "chain" and len(names) > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        shares = [(st.url, level, names[i::workers]) for i in range(workers)]
        with ctx.Pool(workers) as pool:
            for found, count, omitted, lost_upto in pool.map(_audit_share, shares):
                a.records += count
                for x in found:
                    a.f.add(x.book, x.record, x.kind, x.detail, x.through)
                for kind, n in omitted.items():
                    a.f.omitted[kind] = a.f.omitted.get(kind, 0) + n
                a.f.lost_upto.update(lost_upto)  # each book is one worker's
        a.checks["workers"] = workers
    else:
        for b in names:
            a.walk(b)
    if books is None and a.full:
        a.register()
    a.checks["database"] = display_url(st.url)
    return a.report(len(names))


def api_audit(
    engine: Any, books: list[str] | None = None, chain_only: bool = False
) -> dict[str, Any]:
    """What the node's /v1/audit endpoint answers: ``audit(...).as_dict()`` with the engine's keys,
    its findings listed up to MAX_REPLY_BYTES of JSON (the rest counted in "summary" and
    "findings_omitted");
    a book it does not hold is a 404, a database the audit cannot read a 409, both naming why."""
    try:
        report = audit(
            engine.store,
            trust=engine.trust,
            keys=engine.keys,
            level="chain" if chain_only else "full",
            books=books,
        )
    except AuditError as exc:
        from hubi.bank.api import ApiError  # the node's error reply (only a node calls this)

        if isinstance(exc, UnknownBook):
            raise ApiError(404, "not-found", str(exc), "book") from None
        raise ApiError(409, "conflict", str(exc)) from None
    return report.as_dict(MAX_REPLY_BYTES)  # a reply the client takes: the rest counted
