"""Naming the fields of a lost record from the evidence chains (DESIGN §4), by meet in the middle.

A lost record n of book B leaves behind:
- its linear sum: ``lsum_n = ecode_(n-1) XOR ecode_n`` where ``ecode_n = ecode_(n+1) XOR
  lsum_(n+1)`` (or the signed head's ecode when n was the last record);
- its amount: ``delta_n = balance_n - balance_(n-1)``, with ``balance_n = balance_(n+1) -
  delta_(n+1)`` (or the head's coded balance), opened with the bank's private key; the sign
  says debit (B paid) or credit (B was paid).

``lsum = d(account) + d(serial) + d(amount) + d(purpose) + d(counterparty)  (mod 2^128)``. For
a debit the account is B and the counterparty (payee) unknown; for a credit the counterparty is
B and the account (the payer) unknown. With the amount known, what is left is
``d(other) + d(serial) + d(purpose) = T``. The search builds a sorted table of one side — the
low 64 bits of d(other) for every candidate account (10^6 of them) — and looks up
``T - d(serial) - d(purpose)`` for every (serial, purpose) pair; a hit on 64 bits is confirmed on
all 128. Candidate serials of a debit are the payer's serials the bank has not seen booked
(around the neighbours' serials), of a credit a range given by the caller.

Signatures of a lost record cannot be recovered: ``restore`` fetches the record itself from a hot
backup. What this names is what an operator needs to ask for it, or to confirm it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hubi import objects
from hubi.bank import records as rec
from hubi.bank.store import Store, display_url
from hubi_core import codec, ids, lsum, wire
from hubi_core.errors import HubiError

__all__ = [
    "LostRecord",
    "Recovered",
    "RecoveryError",
    "digests",
    "locate",
    "meet_in_the_middle",
    "read_lines",
    "read_payees",
    "read_purposes",
    "recover",
]

MASK = (1 << 128) - 1
M64 = (1 << 64) - 1
_BOM = b"\xef\xbb\xbf"
MAX_LINE = 256  # bytes of a line of a candidates file (an account id is 32, a purpose 64)
MAX_CANDIDATES = 2_000_000  # lines of a payees file (twice the figure bench/bank.md measures)
MAX_PURPOSES = 1_000_000  # lines of a purposes file
MAX_SERIALS = 1_000_000  # serials one search tries (as `--serials` allows)
MAX_PAIRS = 1_000_000_000  # (serial, purpose) lookups of one search: minutes, not days


class RecoveryError(RuntimeError):
    """Recovery is impossible as asked; the message says what is missing."""


@dataclass(frozen=True)
class LostRecord:
    """What the chains say about a lost record."""

    book: str
    n: int
    lsum: bytes
    delta: int | None  # None without the bank key (pass amount= then)
    known_serials: frozenset[int]  # serials of the book's own debits still present


@dataclass(frozen=True)
class Recovered:
    book: str
    n: int
    kind: str  # debit | credit
    payer: str
    payee: str
    serial: int
    amount: int
    purpose: str
    lsum: bytes
    note_id: bytes
    note_in_db: bool  # the bank's notes table holds a note with these fields
    candidates: int  # (other account) x (serial, purpose) combinations covered
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "book": self.book,
            "record": self.n,
            "kind": self.kind,
            "payer": self.payer,
            "payee": self.payee,
            "serial": self.serial,
            "amount": self.amount,
            "purpose": self.purpose,
            "lsum": self.lsum.hex(),
            "note_id": self.note_id.hex(),
            "note_in_db": self.note_in_db,
            "candidates": self.candidates,
            "seconds": round(self.seconds, 3),
        }


def _row(tx: Any, book: str, n: int) -> rec.Record | None:
    body = tx.scalar("SELECT body FROM records WHERE book = ? AND n = ?", (book, n))
    if body is None:
        return None
    if not isinstance(body, bytes | bytearray | memoryview):
        raise RecoveryError(
            f"record {book}#{n} is stored as {type(body).__name__}, not bytes: it was altered "
            "(hubi audit verify names it)"
        )
    try:
        return rec.Record.parse(bytes(body))
    except rec.RecordFormatError:
        return None


def _head_fields(book: str, head: tuple) -> None:
    """The head's fields a lost last record is recovered from: RecoveryError when a damaged
    row holds something else (a TypeError naming nothing, before)."""
    blobs = bytes | bytearray | memoryview
    kinds = {"ecode": blobs, "coded_bal": blobs, "last_kind": int, "last_lsum": blobs}
    for (name, kind), value in zip(kinds.items(), head[1:], strict=True):
        if not isinstance(value, kind):
            raise RecoveryError(
                f"book {book}'s head holds {type(value).__name__} as its {name}: the head row "
                "was altered (hubi audit verify names it)"
            )


def locate(
    store: Store, book: str, n: int | None = None, keys: rec.BookKeys | None = None
) -> LostRecord:
    """The lost record's lsum (and, with the bank key, its delta) from its neighbours.

    `n` defaults to the book's one missing record number (RecoveryError if none or several)."""
    tx = store.reader()
    head = tx.one(
        "SELECT n, ecode, coded_bal, last_kind, last_lsum FROM books WHERE book = ?", (book,)
    )
    if head is None:
        raise RecoveryError(f"no book {book} in {display_url(store.url)}")
    head_n = head[0]
    if not isinstance(head_n, int) or isinstance(head_n, bool) or head_n < 0:
        raise RecoveryError(
            f"book {book}'s head holds record count {head_n!r}, not a number: the head row was "
            "altered (hubi audit verify names it)"
        )
    numbers = tx.all("SELECT n FROM records WHERE book = ?", (book,))
    present = {r[0] for r in numbers if isinstance(r[0], int)}
    if n is None:
        # the numbers 1..head_n not stored, gap by gap over the stored rows: a damaged head
        # count costs no more than the rows there are (eleven are enough to answer)
        def gaps() -> Iterable[int]:
            at = 1
            for k in sorted(x for x in present if 1 <= x <= head_n):
                yield from range(at, k)
                at = k + 1
            yield from range(at, head_n + 1)

        lost: list[int] = []
        for k in gaps():
            lost.append(k)
            if len(lost) > 10:
                break
        if not lost:
            raise RecoveryError(
                f"book {book} has no lost record (records 1..{head_n} are all there)"
            )
        if len(lost) > 1:
            raise RecoveryError(
                f"book {book} lost records {lost[:10]}{'...' if len(lost) > 10 else ''}: name one with "
                "--record whose neighbours are both there (two lost side by side leave only the "
                "XOR of their sums: restore those)"
            )
        n = lost[0]
    if n in present:
        raise RecoveryError(f"record {book}#{n} is not lost")
    if not 1 <= n <= head_n:
        raise RecoveryError(f"record {n} is outside book {book} (1..{head_n})")
    before = _row(tx, book, n - 1) if n > 1 else None
    if n > 1 and before is None:
        raise RecoveryError(
            f"record {book}#{n - 1} is lost too: the XOR chain gives only the XOR of both sums"
        )
    ecode_prev = before.ecode if before else rec.ZERO16
    after = _row(tx, book, n + 1) if n < head_n else None
    if n < head_n:
        if after is None:
            raise RecoveryError(
                f"record {book}#{n + 1} is lost too: the XOR chain gives only the XOR of both sums"
            )
        ecode_n = rec.xor16(after.ecode, after.lsum)
    else:
        _head_fields(book, head)
        ecode_n = bytes(head[1])
    ls = rec.xor16(ecode_prev, ecode_n)
    delta = None
    if keys is not None:
        bal_prev = 0
        if before is not None:
            bal_prev = keys.open_balance(
                rec.balance_info(book, before.n, before.kind, before.lsum), before.coded_bal
            )
        if after is not None:
            bal_after = keys.open_balance(
                rec.balance_info(book, after.n, after.kind, after.lsum), after.coded_bal
            )
            bal_n = bal_after - after.delta
        else:
            bal_n = keys.open_balance(
                rec.balance_info(book, n, int(head[3]), bytes(head[4])), bytes(head[2])
            )
        delta = bal_n - bal_prev
    # the payer's serials booked in other records (the bank's note index; a lost index, or a
    # damaged serial cell skipped here, only widens the search)
    serials = {
        r[0]
        for r in tx.all(
            "SELECT serial FROM notes WHERE payer = ? AND debit_n IS NOT NULL AND debit_n <> ?",
            (book, n),
        )
        if isinstance(r[0], int) and not isinstance(r[0], bool)
    }
    return LostRecord(book, n, ls, delta, frozenset(serials))


# ----------------------------------------------------------------------------- the search


def _prefix(tag: int) -> Any:
    return hashlib.sha256(lsum.LSUM_DOMAIN + bytes([tag]))


def digests(tag: int, values: Sequence[bytes]) -> bytes:
    """Concatenated 16-byte lsum digests d(tag, v) of every value (one SHA-256 each)."""
    base = _prefix(tag)
    out = bytearray(16 * len(values))  # not a list of small bytes: millions of candidates
    at = 0
    for v in values:
        h = base.copy()
        h.update(v)
        out[at : at + 16] = h.digest()[:16]
        at += 16
    return bytes(out)


def _halves(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    a = np.frombuffer(raw, dtype=">u8").reshape(-1, 2)
    return a[:, 0].astype(np.uint64), a[:, 1].astype(np.uint64)


def meet_in_the_middle(
    target: int,
    others: Sequence[str],
    other_tag: int,
    serials: Sequence[int],
    purposes: Sequence[str],
) -> list[tuple[str, int, str]]:
    """All (other, serial, purpose) with d(other_tag, other) + d(serial) + d(purpose) == target
    (mod 2^128). The table is the low 64 bits of d(other) for every candidate, sorted; each
    (serial, purpose) pair looks up target - d(serial) - d(purpose) in it."""
    if not others or not serials or not purposes:
        return []
    o_raw = digests(other_tag, [o.encode() for o in others])
    o_hi, o_lo = _halves(o_raw)
    order = np.argsort(o_lo, kind="stable")
    table = o_lo[order]
    s_raw = digests(lsum.T_SERIAL, [s.to_bytes(8, "big") for s in serials])
    p_raw = digests(lsum.T_PURPOSE, [p.encode() for p in purposes])
    s_int = [int.from_bytes(s_raw[i : i + 16], "big") for i in range(0, len(s_raw), 16)]
    p_hi, p_lo = _halves(p_raw)
    t_lo = np.uint64(target & M64)
    hits = []
    with np.errstate(over="ignore"):
        for si, sd in enumerate(s_int):
            want = (t_lo - np.uint64(sd & M64)) - p_lo  # wraps mod 2^64, as the low half must
            pos = np.searchsorted(table, want)
            pos[pos >= len(table)] = 0
            for pj in np.nonzero(table[pos] == want)[0]:
                # every candidate with this low half (duplicates in the table are adjacent)
                k = int(pos[pj])
                while k < len(table) and table[k] == want[pj]:
                    oi = int(order[k])
                    full = (
                        int.from_bytes(o_raw[16 * oi : 16 * oi + 16], "big")
                        + sd
                        + int.from_bytes(p_raw[16 * int(pj) : 16 * int(pj) + 16], "big")
                    ) & MASK
                    if full == target:
                        hits.append((others[oi], serials[si], purposes[int(pj)]))
                    k += 1
    del o_hi, p_hi
    return hits


def recover(
    store: Store,
    book: str,
    candidates: Sequence[str],
    purposes: Sequence[str],
    *,
    n: int | None = None,
    keys: rec.BookKeys | None = None,
    amount: int | None = None,
    kind: str | None = None,
    serials: Iterable[int] | None = None,
    serial_window: int = 64,
) -> list[Recovered]:
    """Name the fields of lost record `n` of `book`: every combination that fits (normally one).

    `candidates` are the possible counterparties (the payee of a debit, the payer of a credit);
    `purposes` the possible purposes ("" for none). The amount comes from the balances (needs
    `keys`) unless given; `kind` ('debit'/'credit') follows from the amount's sign unless given.
    Serials: a debit's defaults to the payer's serials up to ``max(booked) + serial_window`` that
    no remaining record uses; a credit's must be given (`serials`)."""
    t0 = time.perf_counter()
    lost = locate(store, book, n, keys)
    delta = lost.delta
    if amount is None:
        if delta is None:
            raise RecoveryError(
                "the lost record's amount comes from the balance difference, which needs the bank's "
                "private key (--home) — or give the amount"
            )
        if delta == 0:
            raise RecoveryError("balance difference is 0: the lost record moved no money")
        amount = abs(delta)
    if kind is None:
        if delta is None:
            raise RecoveryError(
                "without the bank's key, say whether the lost record was a debit or a credit"
            )
        kind = "debit" if delta < 0 else "credit"
    if kind not in ("debit", "credit"):
        raise RecoveryError("kind must be debit or credit")
    if delta is not None and (amount, kind) != (abs(delta), "debit" if delta < 0 else "credit"):
        # a search for other fields than the record's finds nothing, and said only that
        raise RecoveryError(
            f"the balances on either side say record {book}#{lost.n} was a "
            f"{'debit' if delta < 0 else 'credit'} of {abs(delta)}, not a {kind} of {amount}: "
            "leave --amount and --kind out when the bank key is at hand"
        )
    if serials is None:
        if kind == "credit":
            raise RecoveryError(
                "a credit's serial is the payer's: give a serial range (--serials A-B)"
            )
        top = max(lost.known_serials, default=0) + serial_window
        if top - len(lost.known_serials) > MAX_SERIALS:
            # a payer whose serials jumped (a token may start anywhere below 2^64): the unused
            # ones below its highest were listed one by one, for ever
            raise RecoveryError(
                f"{book}'s serials reach {top - serial_window:,}: more than {MAX_SERIALS:,} unused"
                " ones below that to try; give the range around the lost one (--serials A-B)"
            )
        serial_list = [s for s in range(1, top + 1) if s not in lost.known_serials]
    else:
        serial_list = sorted(set(serials))
    target = int.from_bytes(lost.lsum, "big") - lsum.amount_digest(amount)
    if kind == "debit":
        target -= lsum.account_digest(book)
        other_tag = lsum.T_PAYEE
    else:
        target -= lsum.counterparty_digest(book)
        other_tag = lsum.T_ACCOUNT
    target &= MASK
    purposes = list(dict.fromkeys(purposes))
    if len(serial_list) * len(purposes) > MAX_PAIRS:
        raise RecoveryError(
            f"{len(serial_list):,} serials x {len(purposes):,} purposes is more than the "
            f"{MAX_PAIRS:,} combinations one search tries: narrow --serials or the purposes"
        )
    candidates = list(dict.fromkeys(candidates))  # a name twice is one candidate, one hit
    hits = meet_in_the_middle(target, candidates, other_tag, serial_list, purposes)
    out = []
    elapsed = time.perf_counter() - t0
    for other, serial, purpose in hits:
        payer, payee = (book, other) if kind == "debit" else (other, book)
        nid = lsum.note_id(payer, serial)
        in_db = False
        row = store.reader().one(
            "SELECT payer, payee, amount, note FROM notes WHERE note_id = ?", (nid,)
        )
        # a damaged row is no match (never int() or bytes() of its cells: bytes(2**40) is a TB)
        note_blob = row[3] if row is not None else None
        if (
            row is not None
            and (row[0], row[1], row[2]) == (payer, payee, amount)
            and isinstance(note_blob, bytes | bytearray | memoryview)
        ):
            try:
                note = codec.decode(bytes(note_blob), codec.NOTE)
                in_db = (note.get("purpose") or "") == purpose
            except ValueError:
                in_db = False
        out.append(
            Recovered(
                book,
                lost.n,
                kind,
                payer,
                payee,
                serial,
                amount,
                purpose,
                lost.lsum,
                nid,
                in_db,
                len(candidates) * len(serial_list) * len(purposes),
                elapsed,
            )
        )
    return out


def read_lines(path: Any, max_lines: int = MAX_CANDIDATES) -> list[str]:
    """Candidate file: one value per line (UTF-8, a byte order mark allowed: editors on some
    systems write one; CRLF or LF); blank lines count as "" (no purpose). Read line by line and
    refused past `max_lines` lines or a line of MAX_LINE bytes: /dev/zero, a FIFO or a misnamed
    backup filled memory or waited for ever."""
    out: list[str] = []
    at = 0
    with objects.open_regular(path) as fh:
        while raw := fh.readline(MAX_LINE + 2):
            if len(out) >= max_lines:
                raise RecoveryError(
                    f"{path} has more than {max_lines:,} lines: at most that many are tried at once"
                )
            if len(raw) == MAX_LINE + 2 and not raw.endswith(b"\n"):
                raise RecoveryError(
                    f"{path} line {len(out) + 1} is longer than {MAX_LINE} bytes: not a list of "
                    "one value a line"
                )
            skip = len(_BOM) if at == 0 and raw.startswith(_BOM) else 0
            try:
                text = raw[skip:].decode()
            except UnicodeDecodeError as exc:
                raise RecoveryError(
                    f"{path} is not UTF-8 text (byte {at + skip + exc.start}): {exc.reason}"
                ) from None
            out.append(text.rstrip("\r\n"))
            at += len(raw)
    return out


def read_payees(path: Any) -> list[str]:
    """Account ids, one a line; blanks skipped, spaces around an id dropped (an id has none). A
    line that is no account id is refused by number: it can never fit (swapped files, a header)."""
    out = []
    for i, line in enumerate(read_lines(path, MAX_CANDIDATES), 1):
        if line := line.strip():
            try:
                out.append(ids.check_account_id(line))
            except HubiError as exc:
                raise RecoveryError(f"{path} line {i}: {exc}") from None
    if not out:
        raise RecoveryError(f"{path} lists no account id: nothing to search")
    return out


def read_purposes(path: Any) -> list[str]:
    """Purposes, one a line ("" for a blank line; an empty file: no purpose). A line no note's
    purpose can be (over 64 bytes, a control or bidirectional character) is refused by number."""
    lines = read_lines(path, MAX_PURPOSES)
    for i, line in enumerate(lines, 1):
        try:
            wire.utf8_text(line.encode(), f"{path} line {i}", codec.MAX_TEXT)
        except HubiError as exc:
            raise RecoveryError(str(exc)) from None
    return lines or [""]
