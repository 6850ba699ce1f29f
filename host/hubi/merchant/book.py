"""The merchant's own book (DESIGN §2 link 5, §4): one record per bank SettlementNotice.

Built on the bank engine's generic evidence-chained book (``hubi.bank.records``): the merchant
is the keeper of its own book (keeper = book = its account), signs every record with its
account key (sig8 over the ecode, sig9 over the sealed balance) and a head statement, and
stores the records in its outbox database. Record n:

    kind      NOTICE (a notice received)
    evidence  the bank-signed SettlementNotice, exact bytes
    delta     + the credited amount
    lsum      the linear sum of the settled note (payer, serial, amount, purpose, payee): the
              same value the bank's record of that note carries, so the two books interlock
              (the note itself is in the outbox under the notice's note id)
    ecode     ecode_(n-1) XOR lsum;  hchain_n = SHA-256(hchain_(n-1) || n || body)
    coded_bal the new balance (credited so far), ECIES-sealed to the merchant's own key

A record is appended in the same SQLite transaction that marks the note booked in the outbox,
so the outbox and the book never disagree, whatever instant the process dies.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from hubi.bank import records as R
from hubi_core import codec, lsum
from hubi_core.errors import CodecError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS book (
    n       INTEGER PRIMARY KEY,
    note_id BLOB NOT NULL UNIQUE,
    body    BLOB NOT NULL,
    hchain  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS book_head (
    book      TEXT PRIMARY KEY,
    n         INTEGER NOT NULL,
    ecode     BLOB NOT NULL,
    hchain    BLOB NOT NULL,
    coded_bal BLOB,
    last_kind INTEGER NOT NULL,
    last_lsum BLOB NOT NULL,
    statement BLOB NOT NULL,
    sig       BLOB NOT NULL
);
"""


def ensure(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)


def head(db: sqlite3.Connection, book: str) -> R.Head:
    row = db.execute(
        "SELECT n, ecode, hchain, coded_bal, last_kind, last_lsum, statement, sig"
        " FROM book_head WHERE book = ?",
        (book,),
    ).fetchone()
    if row is None:
        return R.Head(book)
    n, ecode, hchain, coded, kind, last_lsum, statement, sig = row
    return R.Head(
        book,
        n,
        bytes(ecode),
        bytes(hchain),
        bytes(coded) if coded is not None else None,
        kind,
        bytes(last_lsum),
        bytes(statement),
        bytes(sig),
    )


@dataclass
class Entry:
    record: R.Record
    note_id: bytes
    hchain: bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.record.n,
            "note_id": self.note_id.hex(),
            "delta": self.record.delta,
            "time": self.record.time,
            "lsum": self.record.lsum.hex(),
            "ecode": self.record.ecode.hex(),
            "hchain": self.hchain.hex(),
        }


def append(
    db: sqlite3.Connection, keys: R.BookKeys, note: codec.Obj, notice: bytes, at: int
) -> Entry:
    """Append the settlement of `note` inside the caller's transaction; returns the entry."""
    book = keys.keeper
    h = head(db, book)
    nid = lsum.note_id(note.signer, note.serial)
    rec, body, hchain = R.append(
        keys,
        h,
        kind=R.NOTICE,
        time=at,
        delta=note["amount"],
        lsum=lsum.of_note(note),
        evidence=bytes(notice),
    )
    statement, sig = R.sign_heads(keys, at, [(book, rec.n, hchain)])
    nh = R.next_head(rec, hchain, statement, sig)
    db.execute(
        "INSERT INTO book (n, note_id, body, hchain) VALUES (?, ?, ?, ?)",
        (rec.n, nid, body, hchain),
    )
    db.execute(
        "INSERT INTO book_head (book, n, ecode, hchain, coded_bal, last_kind, last_lsum,"
        " statement, sig) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (book) DO UPDATE SET n = excluded.n, ecode = excluded.ecode,"
        " hchain = excluded.hchain, coded_bal = excluded.coded_bal,"
        " last_kind = excluded.last_kind, last_lsum = excluded.last_lsum,"
        " statement = excluded.statement, sig = excluded.sig",
        (book, nh.n, nh.ecode, nh.hchain, nh.coded_bal, nh.last_kind, nh.last_lsum, statement, sig),
    )
    return Entry(rec, nid, hchain)


def entries(db: sqlite3.Connection) -> list[Entry]:
    rows = db.execute("SELECT n, note_id, body, hchain FROM book ORDER BY n").fetchall()
    return [Entry(R.Record.parse(bytes(b)), bytes(nid), bytes(hc)) for _n, nid, b, hc in rows]


def count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COUNT(*) FROM book").fetchone()[0])


def balance(db: sqlite3.Connection, keys: R.BookKeys) -> int:
    return keys.balance_of(head(db, keys.keeper))


def audit(
    db: sqlite3.Connection,
    keys: R.BookKeys,
    trust: Any,
    note_of: Any,
) -> list[dict[str, Any]]:
    """Every link of the merchant's book; [] when all hold. note_of(note_id) -> note bytes.

    Findings name the record n and the link: number, hchain, ecode, sig8, sig9, balance,
    evidence (notice unreadable, not bank-signed, not for this merchant, amount != delta),
    lsum (does not match the note in the outbox), head.
    """
    from hubi_core.verify import verify_object

    out: list[dict[str, Any]] = []
    book = keys.keeper

    def bad(n: int, link: str, why: str) -> None:
        out.append({"book": book, "record": n, "link": link, "reason": why})

    prev = R.Head(book)
    bal = 0
    last_hchain = R.ZERO32
    for i, e in enumerate(entries(db), start=1):
        r = e.record
        if r.n != i or r.book != book:
            bad(i, "number", f"record {r.book}#{r.n} stored at {book}#{i}")
        hc = R.chain_hash(last_hchain, r.n, r.body())
        if hc != e.hchain:
            bad(r.n, "hchain", "hash chain does not match the record bytes")
        if r.ecode != R.xor16(prev.ecode, r.lsum):
            bad(r.n, "ecode", "ecode_n != ecode_(n-1) XOR lsum_n")
        for s in keys.check_record(r):
            bad(r.n, s, f"{s} does not verify under {book}'s key")
        try:
            new_bal = keys.open_balance(R.balance_info(book, r.n, r.kind, r.lsum), r.coded_bal)
            if new_bal != bal + r.delta:
                bad(r.n, "balance", f"balance {new_bal} != {bal} + {r.delta}")
            bal = new_bal
        except ValueError as exc:
            bad(r.n, "balance", f"coded balance does not open: {exc}")
        try:
            notice = codec.decode(r.evidence, codec.SETTLEMENT)
            rep = verify_object(notice, trust)
            if not rep.ok:
                bad(r.n, "evidence", f"notice does not verify: {rep.first_failure()}")
            if notice["payee"] != book or notice["amount"] != r.delta:
                bad(r.n, "evidence", "notice is for another payee or amount")
            if notice["note_id"] != e.note_id:
                bad(r.n, "evidence", "notice names another note")
            raw = note_of(e.note_id)
            if raw is None:
                bad(r.n, "lsum", "the settled note is not in the outbox")
            elif lsum.of_note(codec.decode(raw, codec.NOTE)) != r.lsum:
                bad(r.n, "lsum", "lsum does not match the note in the outbox")
        except CodecError as exc:
            bad(r.n, "evidence", f"notice unreadable: {exc}")
        prev = R.Head(book, r.n, r.ecode, e.hchain)
        last_hchain = e.hchain
    h = head(db, book)
    if h.n != prev.n or h.hchain != prev.hchain:
        bad(h.n, "head", f"head names record {h.n}, the book ends at {prev.n}")
    elif h.n and not keys.verify(h.statement, h.sig):
        bad(h.n, "head", "head statement signature does not verify")
    return out
