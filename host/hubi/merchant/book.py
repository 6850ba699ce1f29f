"""The merchant's own book (DESIGN §2 link 5, §4): one record per bank SettlementNotice.

Each record keeps the bank-signed notice's exact bytes and the evidence chains of DESIGN §4:
    lsum_n   = linear sum of the settled note (payer, serial, amount, purpose, payee): the same
               value the bank's record of that note carries, so the two books interlock
    ecode_n  = ecode_(n-1) XOR lsum_n                 (ecode_0 = 0)
    hchain_n = SHA-256(hchain_(n-1) || n:u64 || record bytes)
    balance_n = balance_(n-1) + credited amount       (what the bank has credited so far)
The record bytes are ``note_id || notice``. A record is appended in the same SQLite
transaction that marks the note booked in the outbox, so the two never disagree.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from typing import Any

from hubi_core import lsum

_SCHEMA = """
CREATE TABLE IF NOT EXISTS book (
    number   INTEGER PRIMARY KEY,
    note_id  BLOB NOT NULL UNIQUE,
    payer    TEXT NOT NULL,
    amount   INTEGER NOT NULL,
    balance  INTEGER NOT NULL,
    bank     TEXT NOT NULL,
    notice   BLOB NOT NULL,
    lsum     BLOB NOT NULL,
    ecode    BLOB NOT NULL,
    hchain   BLOB NOT NULL,
    at       INTEGER NOT NULL
);
"""

ZERO = bytes(16)
ZERO32 = bytes(32)


@dataclass
class BookRecord:
    number: int
    note_id: bytes
    payer: str
    amount: int
    balance: int
    bank: str
    notice: bytes
    lsum: bytes
    ecode: bytes
    hchain: bytes
    at: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "note_id": self.note_id.hex(),
            "payer": self.payer,
            "amount": self.amount,
            "balance": self.balance,
            "bank": self.bank,
            "lsum": self.lsum.hex(),
            "ecode": self.ecode.hex(),
            "hchain": self.hchain.hex(),
            "at": self.at,
        }


def ensure(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def _hchain(prev: bytes, number: int, note_id: bytes, notice: bytes) -> bytes:
    return hashlib.sha256(prev + number.to_bytes(8, "big") + note_id + notice).digest()


def append(
    db: sqlite3.Connection,
    note: Any,
    notice: bytes,
    bank: str,
    at: int,
) -> BookRecord:
    """Append the settlement of `note` (a decoded Note) inside the caller's transaction."""
    last = db.execute(
        "SELECT number, balance, ecode, hchain FROM book ORDER BY number DESC LIMIT 1"
    ).fetchone()
    number, balance, ecode, hchain = (0, 0, ZERO, ZERO32) if last is None else last
    number += 1
    nid = lsum.note_id(note.signer, note.serial)
    ls = lsum.of_note(note)
    rec = BookRecord(
        number,
        nid,
        note.signer,
        note["amount"],
        balance + note["amount"],
        bank,
        bytes(notice),
        ls,
        _xor(bytes(ecode), ls),
        _hchain(bytes(hchain), number, nid, bytes(notice)),
        at,
    )
    db.execute(
        "INSERT INTO book (number, note_id, payer, amount, balance, bank, notice, lsum, ecode,"
        " hchain, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            rec.number,
            rec.note_id,
            rec.payer,
            rec.amount,
            rec.balance,
            rec.bank,
            rec.notice,
            rec.lsum,
            rec.ecode,
            rec.hchain,
            rec.at,
        ),
    )
    return rec


def records(db: sqlite3.Connection) -> list[BookRecord]:
    rows = db.execute(
        "SELECT number, note_id, payer, amount, balance, bank, notice, lsum, ecode, hchain, at"
        " FROM book ORDER BY number"
    ).fetchall()
    return [
        BookRecord(
            r[0],
            bytes(r[1]),
            r[2],
            r[3],
            r[4],
            r[5],
            bytes(r[6]),
            bytes(r[7]),
            bytes(r[8]),
            bytes(r[9]),
            r[10],
        )
        for r in rows
    ]


def audit(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Findings (empty when every link holds): numbering, ecode, hchain, balance."""
    findings = []
    ecode, hchain, balance = ZERO, ZERO32, 0
    for i, rec in enumerate(records(db), start=1):
        if rec.number != i:
            findings.append({"record": rec.number, "link": "number", "expected": i})
        ecode = _xor(ecode, rec.lsum)
        if rec.ecode != ecode:
            findings.append({"record": rec.number, "link": "ecode"})
        hchain = _hchain(hchain, rec.number, rec.note_id, rec.notice)
        if rec.hchain != hchain:
            findings.append({"record": rec.number, "link": "hchain"})
        balance += rec.amount
        if rec.balance != balance:
            findings.append({"record": rec.number, "link": "balance"})
        ecode, hchain = rec.ecode, rec.hchain
    return findings
