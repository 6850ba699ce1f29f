"""The merchant's outbox: SQLite (WAL), the merchant's evidence until and after the bank answers.

Tables
  counter   last serial the merchant's account used (Requests and Receipts share it: a
            header serial is per signer, protocol.md §4)
  requests  every Request made, its exact bytes, and which note paid it
  notes     every accepted note: its exact bytes, the Receipt handed back, and the bank's
            final outcome (state pending -> booked | bounced | refused) with the bank's signed
            SettlementNotice or Refusal. Notes are never deleted.
  rejects   every refused scan with the field and reason (and the bytes, when it was a note):
            evidence of forgery or double issuance

Each accepted note is one transaction (BEGIN IMMEDIATE ... COMMIT): the note, its receipt,
the serial the receipt used and the paid request land together or not at all, so a process
killed at any instant leaves either the whole acceptance or none of it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubi import jsonload
from hubi.infra.sqlite import connect_wal, immediate, newer_schema

from . import book
from .config import MerchantError

SCHEMA_VERSION = 1

PENDING = "pending"
BOOKED = "booked"
BOUNCED = "bounced"
REFUSED = "refused"
FINAL = (BOOKED, BOUNCED, REFUSED)
PAGE = 500  # pending notes read at a time by an upload
# the latest wall time believed (9999-12-31 23:59:59 UTC): a kept time past it is damage,
# and a time that big passed SQLite's integers and time.gmtime (every request a traceback)
LATEST_TIME = 253402300799

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counter (
    signer TEXT PRIMARY KEY,
    serial INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    serial   INTEGER PRIMARY KEY,
    time     INTEGER NOT NULL,
    amount   INTEGER NOT NULL,
    currency TEXT NOT NULL,
    purpose  TEXT,
    expiry   INTEGER NOT NULL,
    bytes    BLOB NOT NULL,
    state    TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'paid', 'cancelled')),
    note_id  BLOB
);
CREATE TABLE IF NOT EXISTS notes (
    note_id        BLOB PRIMARY KEY,
    payer          TEXT NOT NULL,
    serial         INTEGER NOT NULL,
    payee          TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    purpose        TEXT,
    note_time      INTEGER NOT NULL,
    bytes          BLOB NOT NULL,
    sha256         BLOB NOT NULL,
    request_serial INTEGER,
    scanned_at     INTEGER NOT NULL,
    receipt        BLOB,
    receipt_serial INTEGER,
    state          TEXT NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'booked', 'bounced', 'refused')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_try       INTEGER,
    last_error     TEXT,
    outcome_at     INTEGER,
    outcome        TEXT,
    notice         BLOB,
    refusal        BLOB,
    UNIQUE (payer, serial)
);
CREATE INDEX IF NOT EXISTS notes_state ON notes (state);
CREATE INDEX IF NOT EXISTS notes_state_order ON notes (state, scanned_at);
CREATE TABLE IF NOT EXISTS rejects (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    field   TEXT NOT NULL,
    reason  TEXT NOT NULL,
    note_id BLOB,
    bytes   BLOB
);
"""


@dataclass
class NoteRow:
    """One accepted note as the outbox holds it."""

    note_id: bytes
    payer: str
    serial: int
    payee: str
    amount: int
    currency: str
    purpose: str | None
    note_time: int
    bytes: bytes
    request_serial: int | None
    scanned_at: int
    receipt: bytes | None
    receipt_serial: int | None
    state: str
    attempts: int
    last_error: str | None
    outcome_at: int | None
    outcome: dict[str, Any] | None
    notice: bytes | None
    refusal: bytes | None
    rowid: int = 0
    damage: str | None = None  # what is wrong with a row edited or damaged outside hubi

    def name(self) -> str:
        """How a message names the note: its id, or its row when the id itself is damaged."""
        return f"note {self.note_id.hex()}" if self.note_id else f"outbox row {self.rowid}"

    def as_dict(self) -> dict[str, Any]:
        out = {
            "note_id": self.note_id.hex(),
            "payer": self.payer,
            "serial": self.serial,
            "payee": self.payee,
            "amount": self.amount,
            "currency": self.currency,
            "purpose": self.purpose,
            "note_time": self.note_time,
            "scanned_at": self.scanned_at,
            "request_serial": self.request_serial,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "outcome": self.outcome,
            "bytes": len(self.bytes),
        }
        if self.damage is not None:
            out["damaged"] = f"outbox row {self.rowid}: {self.damage}"
        return out


@dataclass
class RequestRow:
    serial: int
    time: int
    amount: int
    currency: str
    purpose: str | None
    expiry: int
    bytes: bytes
    state: str
    note_id: bytes | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "time": self.time,
            "amount": self.amount,
            "currency": self.currency,
            "purpose": self.purpose,
            "expiry": self.expiry,
            "state": self.state,
            "note_id": self.note_id.hex() if self.note_id else None,
        }


_NOTE_COLS = (
    "note_id, payer, serial, payee, amount, currency, purpose, note_time, bytes, request_serial,"
    " scanned_at, receipt, receipt_serial, state, attempts, last_error, outcome_at, outcome,"
    " notice, refusal, rowid"
)
_REQ_COLS = "serial, time, amount, currency, purpose, expiry, bytes, state, note_id"

# What each column of a notes row must hold (SQLite keeps whatever was written, whatever the
# declared type): (name, type, NULL allowed, stand-in shown for a damaged value).
_NOTE_TYPES: tuple[tuple[str, type, bool, Any], ...] = (
    ("note_id", bytes, False, b""),
    ("payer", str, False, "?"),
    ("serial", int, False, 0),
    ("payee", str, False, "?"),
    ("amount", int, False, 0),
    ("currency", str, False, ""),
    ("purpose", str, True, None),
    ("note_time", int, False, 0),
    ("bytes", bytes, False, b""),
    ("request_serial", int, True, None),
    ("scanned_at", int, False, 0),
    ("receipt", bytes, True, None),
    ("receipt_serial", int, True, None),
    ("state", str, False, "?"),
    ("attempts", int, False, 0),
    ("last_error", str, True, None),
    ("outcome_at", int, True, None),
    ("outcome", str, True, None),
    ("notice", bytes, True, None),
    ("refusal", bytes, True, None),
)


def _note_row(r: tuple) -> NoteRow:
    """A NoteRow; a value of the wrong type is replaced by a stand-in and named in `damage`
    (an outbox edited by hand must not stop the listing or the upload of the other notes)."""
    vals: list[Any] = []
    damage: list[str] = []
    for (name, kind, nullable, stand_in), v in zip(_NOTE_TYPES, r, strict=False):
        if v is None and nullable:
            vals.append(None)
            continue
        ok = isinstance(v, kind) and not isinstance(v, bool)
        if kind is bytes and isinstance(v, memoryview):
            v, ok = bytes(v), True
        if not ok:
            damage.append(f"{name} is {_shown(v)}, not {_TYPE_WORDS[kind]}")
            v = stand_in
        vals.append(v)
    outcome = vals[17]
    if outcome is not None:
        try:
            vals[17] = jsonload.loads(outcome, "outcome")
        except jsonload.JsonError:
            vals[17] = None
            damage.append(f"outcome is not JSON ({_shown(outcome)})")
        else:
            if not isinstance(vals[17], dict):
                damage.append(f"outcome is {_shown(outcome)}, not a JSON object")
                vals[17] = None
    if vals[13] not in (PENDING, *FINAL):
        damage.append(f"state is {_shown(vals[13])}")
    return NoteRow(*vals, rowid=r[20], damage="; ".join(damage) or None)


_TYPE_WORDS = {bytes: "bytes", str: "text", int: "an integer"}


def _shown(value: Any) -> str:
    from hubi.output import printable

    return printable(repr(value), 40)


def _req_row(r: tuple) -> RequestRow:
    vals = list(r)
    vals[6] = bytes(vals[6])
    vals[8] = bytes(vals[8]) if vals[8] is not None else None
    return RequestRow(*vals)


@functools.cache
def _columns() -> dict[str, list[str]]:
    """The columns of every table of a new outbox (made in memory from the same schema)."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_SCHEMA)
        book.ensure(db)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")]
            for t in tables
            if not t.startswith("sqlite_")
        }
    finally:
        db.close()


class Duplicate(Exception):
    """The note (same note id) is already in the outbox."""

    def __init__(self, row: NoteRow, same_bytes: bool):
        self.row = row
        self.same_bytes = same_bytes
        super().__init__(row.note_id.hex())


def _limit(last: int) -> int:
    """`last` as an SQLite LIMIT: the newest N, N past the rows there are being all of them
    ("--last 99999999999999999999" was an OverflowError traceback)."""
    return min(max(last, 0), (1 << 63) - 1)


def _cannot_write(path: Path) -> bool:
    """True for an existing outbox that cannot be opened for writing: the file, or the folder
    its -wal and -shm files go in, is not writable (access() says so for a read-only mount
    even to root)."""
    try:
        return path.is_file() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))
    except OSError:
        return False


class Outbox:
    """The merchant's SQLite outbox. One connection per process; not shared across threads."""

    def __init__(self, path: Path, read_only: bool | None = None):
        """read_only: True opens it for reading only; None opens it for writing, or for reading
        only when the file or its folder cannot be written (a read-only mount, a backup copy):
        it can be listed all the same, and every write is refused (transaction())."""
        self.path = Path(path)
        self.read_only = bool(read_only) or (read_only is None and _cannot_write(self.path))
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open_read_only() if self.read_only else self._open()
        except (sqlite3.DatabaseError, MerchantError) as exc:
            # not SQLite, damaged, locked past the timeout, or written by a newer hubi
            if getattr(self, "db", None) is not None:
                self.db.close()
            if isinstance(exc, MerchantError):
                raise
            raise MerchantError(f"cannot open the outbox {self.path}: {exc}") from None

    def _open(self) -> None:
        self.db = connect_wal(self.path, "FULL", timeout=30.0)
        self._refuse_newer()
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS), one statement at a time
        book.ensure(self.db)
        self._check_columns()
        self.db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
        )

    def _open_read_only(self) -> None:
        """Open for reading only (no schema made, no row written). A WAL database is read with
        its -shm index (mode=ro); with no -shm and no way to make one (a read-only folder), it
        is read as immutable, which is right only when its -wal holds nothing: else refused."""
        wal = Path(f"{self.path}-wal")
        pending_wal = wal.exists() and wal.stat().st_size > 0
        uri = self.path.absolute().as_uri()  # percent-encoded: a '?' or '#' in a name is a name
        try:
            self._connect_ro(f"{uri}?mode=ro")
        except sqlite3.OperationalError:  # "unable to open database file": no -shm to use
            if pending_wal:
                raise MerchantError(
                    f"cannot read the outbox {self.path} where it is: its journal {wal.name}"
                    f" holds writes not yet in the file, and SQLite needs {self.path.name}-shm"
                    " beside it to read them, which a read-only folder cannot get; copy the"
                    " home to a writable folder and list it there"
                ) from None
            self._connect_ro(f"{uri}?immutable=1")
        self._refuse_newer()
        self._check_columns()

    def _connect_ro(self, uri: str) -> None:
        db = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA query_only=ON")  # a write by mistake fails, whatever the file
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the file is read here
        except BaseException:
            db.close()
            raise
        self.db = db

    def _check_columns(self) -> None:
        """MerchantError naming the file if a table lacks a column this build uses (a table
        replaced by hand: IF NOT EXISTS keeps it, and every query on it would fail later)."""
        for table, want in _columns().items():
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if not have and self.read_only:  # an older hubi's outbox: this one adds it
                raise MerchantError(
                    f"the outbox {self.path} has no table {table}, which this hubi adds when it"
                    " opens the outbox for writing: open it once in a writable home"
                )
            missing = [c for c in want if c not in have]
            if missing:
                raise MerchantError(
                    f"the outbox {self.path} is damaged: its table {table} has no column"
                    f" {', '.join(missing)} (restore it from a backup)"
                )

    def _refuse_newer(self) -> None:
        """MerchantError for an outbox a newer hubi wrote (checked before anything is written:
        this build would keep notes in it by rules older than the file's)."""
        has_meta = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        row = has_meta and self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row and str(row[0]).isascii() and str(row[0]).isdigit() and int(row[0]) > SCHEMA_VERSION:
            raise MerchantError(newer_schema(f"the outbox {self.path}", row[0], SCHEMA_VERSION))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any exception); MerchantError naming the
        outbox when another program held its write lock past the wait (a scan ended in a
        traceback, its --json output no JSON)."""
        if self.read_only:
            raise MerchantError(
                f"cannot write to the outbox {self.path}: it was opened read-only (the file or"
                " its folder cannot be written); nothing was written"
            )
        began = False
        try:
            with immediate(self.db):
                began = True
                yield self.db
        except sqlite3.OperationalError as exc:
            if began:
                raise
            why = str(exc)
            if "locked" in why:  # the busy wait ran out
                wait = self.db.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
                why += f": another program held its write lock for {wait:g} s"
            raise MerchantError(
                f"cannot write to the outbox {self.path} ({why}); nothing more was written,"
                " what was kept before stays kept: run this again"
            ) from None

    # ------------------------------------------------------------------------- serials
    def _next_serial(self, signer: str) -> int:
        row = self.db.execute("SELECT serial FROM counter WHERE signer = ?", (signer,)).fetchone()
        if row is not None and (not isinstance(row[0], int) or row[0] < 0):
            raise MerchantError(
                f"the outbox {self.path} is damaged: the serial counter of {signer} is"
                f" {_shown(row[0])} (restore it from a backup)"
            )
        serial = (row[0] if row else 0) + 1
        self.db.execute(
            "INSERT INTO counter (signer, serial) VALUES (?, ?)"
            " ON CONFLICT (signer) DO UPDATE SET serial = excluded.serial",
            (signer, serial),
        )
        return serial

    # ------------------------------------------------------------------------- the clock
    def _mark_time(self, when: int) -> None:
        """Keep the newest wall time this outbox has written (meta 'clock'), never lowered:
        what a clock stepped back is compared with (inside the caller's transaction)."""
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES ('clock', ?) ON CONFLICT (key) DO UPDATE"
            " SET value = excluded.value"
            " WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)"
            f" OR length(value) > 12 OR CAST(value AS INTEGER) > {LATEST_TIME}",  # damaged
            (str(int(when)),),
        )

    def forget_later_times(self, now: int) -> int | None:
        """The operator says this computer's clock is right: the newest time this outbox
        wrote becomes `now` (a clock once set ahead had left a later one, and every request
        warned for ever). Returns the time forgotten, or None when there was none later."""
        with self.transaction():
            newest = self.newest_time()
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES ('clock', ?) ON CONFLICT (key) DO UPDATE"
                " SET value = excluded.value",
                (str(int(now)),),
            )
        return newest if newest is not None and newest > now else None

    def newest_time(self) -> int | None:
        """The newest wall time this outbox has written (a request made, a note kept, a scan
        rejected, an upload tried), or None when it has written none. An outbox of an older
        hubi (no meta 'clock' yet) is read from its tables."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'clock'").fetchone()
        kept = row[0] if row is not None and isinstance(row[0], str) else ""
        # a damaged value (not digits, or past LATEST_TIME) is read from the tables instead
        if kept.isascii() and kept.isdigit() and len(kept) <= 12 and int(kept) <= LATEST_TIME:
            return int(kept)
        times = [
            self.db.execute(
                f"SELECT max({col}) FROM {table} WHERE typeof({col}) = 'integer'"
                f" AND {col} BETWEEN 0 AND {LATEST_TIME}"
            ).fetchone()[0]
            for table, col in (("requests", "time"), ("notes", "scanned_at"), ("rejects", "at"))
        ]
        known = [t for t in times if isinstance(t, int)]
        return max(known) if known else None

    # ------------------------------------------------------------------------ requests
    def add_request(self, signer: str, build: Callable[[int], tuple[bytes, dict[str, Any]]]) -> int:
        """Allocate the next serial, build the signed request with it, store it: one transaction.

        build(serial) -> (request bytes, {time, amount, currency, purpose, expiry}).
        """
        with self.transaction():
            serial = self._next_serial(signer)
            raw, info = build(serial)
            self._mark_time(info["time"])
            self.db.execute(
                f"INSERT INTO requests ({_REQ_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', NULL)",
                (
                    serial,
                    info["time"],
                    info["amount"],
                    info["currency"],
                    info.get("purpose"),
                    info["expiry"],
                    raw,
                ),
            )
        return serial

    def request(self, serial: int) -> RequestRow | None:
        if not 0 < serial < 1 << 63:  # past SQLite's integers: an OverflowError, not "none"
            return None
        r = self.db.execute(
            f"SELECT {_REQ_COLS} FROM requests WHERE serial = ?", (serial,)
        ).fetchone()
        return _req_row(r) if r else None

    def open_request(self) -> RequestRow | None:
        """The most recent request still open (not paid, not cancelled)."""
        r = self.db.execute(
            f"SELECT {_REQ_COLS} FROM requests WHERE state = 'open' ORDER BY serial DESC LIMIT 1"
        ).fetchone()
        return _req_row(r) if r else None

    def open_requests(self) -> list[RequestRow]:
        rows = self.db.execute(
            f"SELECT {_REQ_COLS} FROM requests WHERE state = 'open' ORDER BY serial"
        ).fetchall()
        return [_req_row(r) for r in rows]

    def requests(self) -> list[RequestRow]:
        rows = self.db.execute(f"SELECT {_REQ_COLS} FROM requests ORDER BY serial").fetchall()
        return [_req_row(r) for r in rows]

    def cancel_request(self, serial: int) -> bool:
        with self.transaction():
            cur = self.db.execute(
                "UPDATE requests SET state = 'cancelled' WHERE serial = ? AND state = 'open'",
                (serial,),
            )
        return cur.rowcount == 1

    # --------------------------------------------------------------------------- notes
    def find(self, note_id: bytes) -> NoteRow | None:
        r = self.db.execute(
            f"SELECT {_NOTE_COLS} FROM notes WHERE note_id = ?", (note_id,)
        ).fetchone()
        return _note_row(r) if r else None

    def accept(
        self,
        note: dict[str, Any],
        raw: bytes,
        signer: str,
        request_serial: int | None,
        make_receipt: Callable[[int], bytes] | None,
        now: int | None = None,
    ) -> tuple[NoteRow, int | None]:
        """Store an accepted note, mark its request paid and keep its receipt: one transaction.

        note: {note_id, payer, serial, payee, amount, currency, purpose, time}.
        make_receipt(serial) -> receipt bytes, called inside the transaction with the serial
        allocated for it. Raises Duplicate if the note id is already stored, and ValueError if
        the request is no longer open (the transaction is then rolled back).
        """
        now = int(time.time()) if now is None else now
        with self.transaction():
            old = self.find(note["note_id"])
            if old is not None:
                raise Duplicate(old, old.bytes == raw)
            if request_serial is not None:
                cur = self.db.execute(
                    "UPDATE requests SET state = 'paid', note_id = ? WHERE serial = ?"
                    " AND state = 'open'",
                    (note["note_id"], request_serial),
                )
                if cur.rowcount != 1:
                    raise ValueError(f"request #{request_serial} is no longer open")
            self._mark_time(now)
            receipt = None
            receipt_serial = None
            if make_receipt is not None:
                receipt_serial = self._next_serial(signer)
                receipt = make_receipt(receipt_serial)
            self.db.execute(
                "INSERT INTO notes (note_id, payer, serial, payee, amount, currency, purpose,"
                " note_time, bytes, sha256, request_serial, scanned_at, receipt, receipt_serial)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    note["note_id"],
                    note["payer"],
                    note["serial"],
                    note["payee"],
                    note["amount"],
                    note["currency"],
                    note.get("purpose"),
                    note["time"],
                    raw,
                    hashlib.sha256(raw).digest(),
                    request_serial,
                    now,
                    receipt,
                    receipt_serial,
                ),
            )
        row = self.find(note["note_id"])
        assert row is not None
        return row, receipt_serial

    def add_reject(
        self,
        field: str,
        reason: str,
        note_id: bytes | None = None,
        raw: bytes | None = None,
        now: int | None = None,
    ) -> None:
        now = int(time.time()) if now is None else now
        with self.transaction():
            self.db.execute(
                "INSERT INTO rejects (at, field, reason, note_id, bytes) VALUES (?, ?, ?, ?, ?)",
                (now, field, reason, note_id, raw),
            )
            self._mark_time(now)

    def rejects(self, last: int | None = None) -> list[dict[str, Any]]:
        """Rejected scans, oldest first; with `last`, the newest `last` of them only."""
        sql = (  # the evidence's size, not the evidence: a blob's length, 0 for anything else
            "SELECT id, at, field, reason, note_id,"
            " CASE WHEN typeof(bytes) = 'blob' THEN length(bytes) ELSE 0 END FROM rejects"
        )
        if last is None:
            rows = self.db.execute(f"{sql} ORDER BY id").fetchall()
        else:
            newest = self.db.execute(f"{sql} ORDER BY id DESC LIMIT ?", (_limit(last),))
            rows = newest.fetchall()[::-1]
        return [
            {
                "id": r[0],
                "at": r[1],
                "field": r[2],
                "reason": r[3],
                # evidence kept as found: a value of the wrong type is not one to show
                "note_id": r[4].hex() if isinstance(r[4], bytes) else None,
                "bytes": r[5] if isinstance(r[5], int) else 0,
            }
            for r in rows
        ]

    def notes(self, state: str | None = None, last: int | None = None) -> list[NoteRow]:
        """Notes in the order this outbox kept them (of one state); with `last`, the newest
        `last` of them only. Kept order (rowid: notes are never deleted) is the order they
        were scanned here: a clock stepped back (scanned_at is wall time) must not reorder
        them."""
        where, params = ("WHERE state = ?", (state,)) if state is not None else ("", ())
        if last is None:
            sql = f"SELECT {_NOTE_COLS} FROM notes {where} ORDER BY rowid"
            return [_note_row(r) for r in self.db.execute(sql, params).fetchall()]
        sql = f"SELECT {_NOTE_COLS} FROM notes {where} ORDER BY rowid DESC LIMIT ?"
        rows = self.db.execute(sql, (*params, _limit(last))).fetchall()
        return [_note_row(r) for r in reversed(rows)]

    def receipt_serials(self, newest: int) -> list[tuple[int, int]]:
        """(receipt serial, rowid) of the `newest` notes kept with a receipt, newest first (a
        value edited by hand into another type is left out); rowid order needs no index."""
        rows = self.db.execute(
            "SELECT receipt_serial, rowid FROM notes WHERE receipt IS NOT NULL"
            " AND typeof(receipt_serial) = 'integer' ORDER BY rowid DESC LIMIT ?",
            (newest,),
        )
        return [(r[0], r[1]) for r in rows]

    def receipt_at(self, rowid: int) -> bytes | None:
        r = self.db.execute("SELECT receipt FROM notes WHERE rowid = ?", (rowid,)).fetchone()
        return bytes(r[0]) if r and isinstance(r[0], bytes) else None

    def reject_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM rejects").fetchone()[0])

    def pending(self) -> list[NoteRow]:
        return self.notes(PENDING)

    def pending_walk(self, size: int = PAGE) -> tuple[int, Iterator[list[NoteRow]]]:
        """The notes pending now, in the order ``pending()`` lists them, `size` rows at a
        time (an outbox of a long offline spell must not be loaded whole): their count, and
        the pages. Notes accepted meanwhile wait for the next walk."""
        top = self.db.execute("SELECT MAX(rowid) FROM notes").fetchone()[0] or 0
        count = self.db.execute(
            "SELECT COUNT(*) FROM notes WHERE state = 'pending' AND rowid <= ?", (top,)
        ).fetchone()[0]
        return int(count), self._pending_pages(top, size)

    def _pending_pages(self, top: int, size: int) -> Iterator[list[NoteRow]]:
        """Keyset pages by rowid, the order ``pending()`` lists (a scan time damaged by hand
        or stepped back by the clock changes nothing)."""
        sql = (
            f"SELECT {_NOTE_COLS} FROM notes WHERE state = 'pending' AND rowid <= ?"
            " AND rowid > ? ORDER BY rowid LIMIT ?"
        )
        after = 0
        while True:
            rows = self.db.execute(sql, (top, after, size)).fetchall()
            if not rows:
                return
            after = rows[-1][20]
            yield [_note_row(r) for r in rows]
            if len(rows) < size:
                return

    def record_attempt(self, note_id: bytes, error: str | None, now: int | None = None) -> None:
        from hubi.output import printable

        now = int(time.time()) if now is None else now
        if error is not None:  # often the bank's words: no terminal controls, bounded
            error = printable(error)
        with self.transaction():
            self.db.execute(
                "UPDATE notes SET attempts = attempts + 1, last_try = ?, last_error = ?"
                " WHERE note_id = ?",
                (now, error, note_id),
            )
            self._mark_time(now)

    def record_outcome(
        self,
        note_id: bytes,
        state: str,
        outcome: dict[str, Any],
        notice: bytes | None = None,
        refusal: bytes | None = None,
        on_commit: Callable[[sqlite3.Connection], None] | None = None,
        now: int | None = None,
    ) -> bool:
        """Keep the bank's final answer for a pending note. False if it already had one.

        on_commit(db) runs inside the same transaction (e.g. to append to the local book).
        """
        if state not in FINAL:
            raise ValueError(f"not a final state: {state}")
        now = int(time.time()) if now is None else now
        with self.transaction():
            cur = self.db.execute(
                "UPDATE notes SET state = ?, outcome_at = ?, outcome = ?, notice = ?,"
                " refusal = ?, last_error = NULL WHERE note_id = ? AND state = 'pending'",
                (state, now, json.dumps(outcome, sort_keys=True), notice, refusal, note_id),
            )
            if cur.rowcount != 1:
                return False
            self._mark_time(now)
            if on_commit is not None:
                on_commit(self.db)
        return True

    def counts(self) -> dict[str, int]:
        out = {PENDING: 0, BOOKED: 0, BOUNCED: 0, REFUSED: 0}
        for state, n in self.db.execute("SELECT state, COUNT(*) FROM notes GROUP BY state"):
            out[state] = n
        return out

    def integrity(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]
