"""One bank's consortium state: what it applied from the ordered log, and where it stopped.

A SQLite file (WAL) beside the bank's database, default ``HOME/banks/<BANK>/consortium.db``:

    meta(key, value)       applied_revision, log_hash (chained over every applied event),
                           orderer (which log this state belongs to)
    entries(note_id, ...)  every note entry applied: state ordered | settled | bounced |
                           rejected, the endorsers, the payer's bank's debit result, and this
                           bank's own booking of its side (debit/credit outcome)
    endorsed(note_id, ...) notes this bank endorsed as the payer's bank (a second note with the
                           same payer serial is refused before it reaches the log)
    checkpoints(bank, tree_size, root, revision, obj)   every bank's checkpoints from the log
    positions(...)         settled interbank amounts per pair of banks, added as entries settle
    tallies(name, n)       how many entries are in each state ("entries/settled", ...) and
                           how many reports there are ("reports"), kept by triggers
    reports(id, ...)       what this bank found wrong: forged endorsements, entries with too few
                           endorsements, debit results not signed by the payer's bank, ...

``apply()`` writes the effect of one log event and the new applied revision in one transaction,
so after a crash the bank resumes at the first event whose effect is not stored. The bank's own
bookings (engine debit/credit) are idempotent by note id, so an event replayed after a crash
between the booking and this transaction books nothing twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubi.consortium.errors import ConsortiumError
from hubi.infra.sqlite import ThreadSqlite, stamp_schema

__all__ = ["ConsortiumState", "EntryRow", "Report"]

# PRAGMA user_version: a newer build's file is refused. 2: interbank positions kept in their own
# table as entries settle (version 1 summed every settled entry on each status call); a version-1
# file is brought up by summing its entries once. 3: the number of entries in each state and of
# reports kept in their own table by triggers (version 2 counted every entry and report on each
# status call: 28 ms at 300,000 entries, 77 ms at 300,000 reports); an older file is brought up
# by counting them once.
SCHEMA_VERSION = 3
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS entries (
        note_id BLOB PRIMARY KEY,
        revision INTEGER NOT NULL,
        digest BLOB NOT NULL,
        payer TEXT NOT NULL,
        payee TEXT NOT NULL,
        amount INTEGER NOT NULL,
        serial INTEGER NOT NULL,
        submitter TEXT NOT NULL,
        endorsers TEXT NOT NULL,
        state TEXT NOT NULL,
        reason_code INTEGER,
        reason TEXT,
        debit_revision INTEGER,
        debit_result BLOB,
        local TEXT,
        note BLOB NOT NULL,
        time INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS entries_state ON entries (state)",
    # settled interbank amounts per pair of banks; the sum as decimal text: exact past 64 bits
    """CREATE TABLE IF NOT EXISTS positions (
        payer_bank TEXT NOT NULL,
        payee_bank TEXT NOT NULL,
        amount TEXT NOT NULL,
        notes INTEGER NOT NULL,
        PRIMARY KEY (payer_bank, payee_bank))""",
    """CREATE TABLE IF NOT EXISTS endorsed (
        note_id BLOB PRIMARY KEY,
        digest BLOB NOT NULL,
        time INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        bank TEXT NOT NULL,
        tree_size INTEGER NOT NULL,
        root BLOB NOT NULL,
        revision INTEGER NOT NULL,
        obj BLOB NOT NULL,
        PRIMARY KEY (bank, tree_size))""",
    """CREATE TABLE IF NOT EXISTS reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        revision INTEGER,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        note_id BLOB,
        detail TEXT NOT NULL,
        time INTEGER NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS tallies (name TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    # in the transaction of each write, whatever writes it: never out of step
    """CREATE TRIGGER IF NOT EXISTS entries_tally_insert AFTER INSERT ON entries BEGIN
        INSERT INTO tallies (name, n) VALUES ('entries/' || NEW.state, 1)
        ON CONFLICT (name) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS entries_tally_update AFTER UPDATE OF state ON entries
    WHEN OLD.state IS NOT NEW.state BEGIN
        UPDATE tallies SET n = n - 1 WHERE name = 'entries/' || OLD.state;
        INSERT INTO tallies (name, n) VALUES ('entries/' || NEW.state, 1)
        ON CONFLICT (name) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS entries_tally_delete AFTER DELETE ON entries BEGIN
        UPDATE tallies SET n = n - 1 WHERE name = 'entries/' || OLD.state;
    END""",
    """CREATE TRIGGER IF NOT EXISTS reports_tally_insert AFTER INSERT ON reports BEGIN
        INSERT INTO tallies (name, n) VALUES ('reports', 1)
        ON CONFLICT (name) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS reports_tally_delete AFTER DELETE ON reports BEGIN
        UPDATE tallies SET n = n - 1 WHERE name = 'reports';
    END""",
]

ORDERED = "ordered"
SETTLED = "settled"
BOUNCED = "bounced"
REJECTED = "rejected"
FINAL = (SETTLED, BOUNCED, REJECTED)


@dataclass(frozen=True)
class EntryRow:
    note_id: bytes
    revision: int
    digest: bytes
    payer: str
    payee: str
    amount: int
    serial: int
    submitter: str
    endorsers: list[str]
    state: str
    reason_code: int | None
    reason: str | None
    debit_revision: int | None
    debit_result: bytes | None
    local: dict[str, Any] | None  # this bank's booking of its side (engine outcome summary)
    note: bytes
    time: int

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def as_dict(self) -> dict[str, Any]:
        return {
            "note_id": self.note_id.hex(),
            "revision": self.revision,
            "digest": self.digest.hex(),
            "payer": self.payer,
            "payee": self.payee,
            "amount": self.amount,
            "serial": self.serial,
            "submitter": self.submitter,
            "endorsers": self.endorsers,
            "state": self.state,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "debit_revision": self.debit_revision,
            "debit_result": self.debit_result.hex() if self.debit_result else None,
            "local": self.local,
        }


@dataclass(frozen=True)
class Report:
    id: int
    revision: int | None
    kind: str
    subject: str  # the bank (or key) the report is about
    note_id: bytes | None
    detail: str
    time: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "revision": self.revision,
            "kind": self.kind,
            "subject": self.subject,
            "note_id": self.note_id.hex() if self.note_id else None,
            "detail": self.detail,
            "time": self.time,
        }


_ENTRY_COLS = (
    "note_id, revision, digest, payer, payee, amount, serial, submitter, endorsers, state, "
    "reason_code, reason, debit_revision, debit_result, local, note, time"
)


def _entry(row: tuple) -> EntryRow:
    return EntryRow(
        bytes(row[0]),
        int(row[1]),
        bytes(row[2]),
        row[3],
        row[4],
        int(row[5]),
        int(row[6]),
        row[7],
        json.loads(row[8]),
        row[9],
        row[10],
        row[11],
        row[12],
        bytes(row[13]) if row[13] is not None else None,
        json.loads(row[14]) if row[14] else None,
        bytes(row[15]),
        int(row[16]),
    )


def add_position(c: sqlite3.Connection, payer: str, payee: str, amount: int) -> None:
    """Add a settled amount to the position of the payer's bank towards the payee's."""
    a, b = payer.split("-", 1)[0], payee.split("-", 1)[0]
    row = c.execute(
        "SELECT amount, notes FROM positions WHERE payer_bank = ? AND payee_bank = ?", (a, b)
    ).fetchone()
    total, count = (int(row[0]), int(row[1])) if row else (0, 0)
    c.execute(
        "INSERT INTO positions (payer_bank, payee_bank, amount, notes) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (payer_bank, payee_bank) DO UPDATE SET amount = excluded.amount,"
        " notes = excluded.notes",
        (a, b, str(total + amount), count + 1),
    )


class StateTx:
    """Writes of one applied event (inside ConsortiumState.apply)."""

    def __init__(self, conn: sqlite3.Connection):
        self.c = conn

    def entry(self, note_id: bytes) -> EntryRow | None:
        row = self.c.execute(
            f"SELECT {_ENTRY_COLS} FROM entries WHERE note_id = ?", (note_id,)
        ).fetchone()
        return None if row is None else _entry(row)

    def add_entry(self, e: EntryRow) -> None:
        self.c.execute(
            f"INSERT INTO entries ({_ENTRY_COLS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                e.note_id,
                e.revision,
                e.digest,
                e.payer,
                e.payee,
                e.amount,
                e.serial,
                e.submitter,
                json.dumps(e.endorsers),
                e.state,
                e.reason_code,
                e.reason,
                e.debit_revision,
                e.debit_result,
                json.dumps(e.local) if e.local is not None else None,
                e.note,
                e.time,
            ),
        )

    def update_entry(self, note_id: bytes, **cols: Any) -> None:
        if "local" in cols and cols["local"] is not None:
            cols["local"] = json.dumps(cols["local"])
        sets = ", ".join(f"{k} = ?" for k in cols)
        self.c.execute(f"UPDATE entries SET {sets} WHERE note_id = ?", (*cols.values(), note_id))
        if cols.get("state") == SETTLED:  # an entry settles once (FINAL): counted once
            row = self.c.execute(
                "SELECT payer, payee, amount FROM entries WHERE note_id = ?", (note_id,)
            ).fetchone()
            add_position(self.c, row[0], row[1], int(row[2]))

    def add_checkpoint(self, bank: str, size: int, root: bytes, revision: int, obj: bytes) -> None:
        self.c.execute(
            "INSERT INTO checkpoints (bank, tree_size, root, revision, obj) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (bank, tree_size) DO NOTHING",
            (bank, size, root, revision, obj),
        )

    def last_checkpoint(self, bank: str) -> tuple[int, bytes] | None:
        row = self.c.execute(
            "SELECT tree_size, root FROM checkpoints WHERE bank = ? ORDER BY tree_size DESC LIMIT 1",
            (bank,),
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def report(
        self, revision: int | None, kind: str, subject: str, note_id: bytes | None, detail: str
    ) -> None:
        self.c.execute(
            "INSERT INTO reports (revision, kind, subject, note_id, detail, time) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (revision, kind, subject, note_id, detail, int(time.time())),
        )


class _StateDb(ThreadSqlite):
    """The state's connections, all to the file first opened: the file at the path is checked
    before a thread connects and before each event is applied. An operator who puts a backup
    (or nothing) there while the node runs would otherwise have new threads answer from that
    file while the applier goes on writing to the old one, whose progress is then lost."""

    def __init__(self, path: Path, what: str):
        super().__init__(path, ConsortiumError, what)
        self.ident: tuple[int, int] | None = None

    def same_file(self) -> None:
        """ConsortiumError if the file at the path is not the one first opened."""
        try:
            st = os.stat(self.path)
            now: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            now = None
        if self.ident is None and now is not None:
            self.ident = now
        elif now != self.ident:
            raise ConsortiumError(
                f"consortium state {self.path} was replaced or removed while the node ran: it "
                "applies nothing more; restart the node to open the file now there"
            )

    def _connect(self) -> sqlite3.Connection:
        if self.ident is not None:  # before opening: another file's WAL is not to be touched
            self.same_file()
        conn = super()._connect()
        if self.ident is None:  # the first connection creates a new file: only then its identity
            self.same_file()
        return conn


class ConsortiumState:
    """The consortium state of one bank (thread-safe: one SQLite connection per thread)."""

    def __init__(self, path: str | Path, orderer_id: str):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConsortiumError(
                f"cannot open consortium state {self.path}: folder {self.path.parent} is missing"
            )
        self._db = _StateDb(self.path, f"consortium state {self.path}")
        with self._db.tx() as c:
            had = int(c.execute("PRAGMA user_version").fetchone()[0])
            stamp_schema(c, SCHEMA_VERSION, f"consortium state {self.path}", ConsortiumError)
            self._check_tables(c, had)
            for sql in _SCHEMA:
                c.execute(sql)
            if had < 2:  # a file of version 1 (or before the stamp): its positions, summed once
                rows = c.execute(
                    "SELECT payer, payee, amount FROM entries WHERE state = ?", (SETTLED,)
                ).fetchall()
                for payer, payee, amount in rows:
                    add_position(c, payer, payee, int(amount))
            if had < 3:  # a file of version 2 or before: its tallies, from one COUNT each
                c.execute("DELETE FROM tallies")
                c.execute(
                    "INSERT INTO tallies (name, n) "
                    "SELECT 'entries/' || state, COUNT(*) FROM entries GROUP BY state"
                )
                c.execute("INSERT INTO tallies (name, n) SELECT 'reports', COUNT(*) FROM reports")
            row = c.execute("SELECT value FROM meta WHERE key = 'orderer'").fetchone()
            if row is None:
                if c.execute("SELECT 1 FROM meta LIMIT 1").fetchone() is not None:
                    raise self._damaged("meta has no orderer")
                c.execute("INSERT INTO meta (key, value) VALUES ('orderer', ?)", (orderer_id,))
                c.execute("INSERT INTO meta (key, value) VALUES ('applied_revision', '0')")
                c.execute("INSERT INTO meta (key, value) VALUES ('log_hash', ?)", ("00" * 32,))
            elif row[0] != orderer_id:
                raise ConsortiumError(
                    f"consortium state {self.path} belongs to log {row[0]!r}, not {orderer_id!r}: "
                    "point the node at its own log, or move the state file away to start afresh"
                )
            self._check_rows(c)

    def check_same_file(self) -> None:
        """ConsortiumError naming the file if it was replaced or removed since it was opened
        (a thread that opened it before would go on reading the old one)."""
        self._db.same_file()

    def _damaged(self, what: str) -> ConsortiumError:
        return ConsortiumError(
            f"consortium state {self.path} is damaged: {what}; restore it from a backup (the "
            "node would otherwise answer from, and apply the log onto, a state that is wrong)"
        )

    def _check_tables(self, c: sqlite3.Connection, had: int) -> None:
        """A file with some of the state's tables must have them all: one that went missing
        would come back empty, and the bank would apply the log as if it had never seen it."""
        have = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        tables = {"meta", "entries", "endorsed", "checkpoints", "reports", "positions"}
        tables.add("tallies")
        if not have & tables:
            return  # a new file
        # positions came with schema version 2, tallies with 3: an older file gets them when
        # it is opened
        missing = tables - have - ({"positions"} if had < 2 else set())
        missing -= {"tallies"} if had < 3 else set()
        if missing:
            raise self._damaged(f"table(s) {', '.join(sorted(missing))} missing")

    def _check_rows(self, c: sqlite3.Connection) -> None:
        """The rows the node reads on every request and every event: its progress, and the
        JSON and numbers of the entries (SQLite's json_valid: no Python loop over them)."""
        meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
        rev = meta.get("applied_revision")
        if not isinstance(rev, str) or not rev.isdigit() or not rev.isascii():
            raise self._damaged(f"meta applied_revision {str(rev)[:40]!r} is not a number")
        h = meta.get("log_hash")
        if not isinstance(h, str) or len(h) != 64 or h.strip("0123456789abcdef"):
            raise self._damaged(f"meta log_hash {str(h)[:80]!r} is not 64 hex digits")
        bad = c.execute(
            "SELECT note_id FROM entries WHERE"
            " CASE WHEN json_valid(endorsers) THEN json_type(endorsers) != 'array' ELSE 1 END"
            " OR (local IS NOT NULL AND NOT json_valid(local))"
            " OR typeof(revision) != 'integer' OR typeof(amount) != 'integer'"
            " OR typeof(serial) != 'integer' OR typeof(time) != 'integer' LIMIT 1"
        ).fetchone()
        if bad is not None:
            nid = bytes(bad[0]).hex() if isinstance(bad[0], bytes) else repr(bad[0])[:80]
            raise self._damaged(f"entry {nid} has a field that is not what it should be")
        bad = c.execute(
            "SELECT payer_bank, payee_bank FROM positions WHERE typeof(amount) != 'text'"
            " OR amount = '' OR amount GLOB '*[^0-9]*' LIMIT 1"
        ).fetchone()
        if bad is not None:
            raise self._damaged(f"position {bad[0]} -> {bad[1]} is not a decimal amount")
        bad = c.execute(
            "SELECT name FROM tallies WHERE typeof(n) != 'integer' OR n < 0 LIMIT 1"
        ).fetchone()
        if bad is not None:
            raise self._damaged(f"the tally {str(bad[0])[:40]!r} is not a count")

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------------ progress
    def applied_revision(self) -> int:
        row = self._db.conn().execute("SELECT value FROM meta WHERE key = 'applied_revision'")
        return int(row.fetchone()[0])

    def log_hash(self) -> bytes:
        row = self._db.conn().execute("SELECT value FROM meta WHERE key = 'log_hash'").fetchone()
        return bytes.fromhex(row[0])

    @contextlib.contextmanager
    def apply(self, revision: int, key: bytes, value: bytes, verdict: str) -> Iterator[StateTx]:
        """One event's writes plus the new applied revision and log hash, atomically.

        Raises ConsortiumError if `revision` is not after the applied one (applied twice), or
        if the file was replaced since it was opened."""
        self._db.same_file()
        with self._db.tx() as c:
            have = int(
                c.execute("SELECT value FROM meta WHERE key = 'applied_revision'").fetchone()[0]
            )
            if revision <= have:
                raise ConsortiumError(
                    f"log revision {revision} is not after the applied revision {have}"
                )
            prev = bytes.fromhex(
                c.execute("SELECT value FROM meta WHERE key = 'log_hash'").fetchone()[0]
            )
            yield StateTx(c)
            h = hashlib.sha256(
                prev
                + revision.to_bytes(8, "big")
                + hashlib.sha256(key + b"\0" + value).digest()
                + verdict.encode()
            ).hexdigest()
            c.execute("UPDATE meta SET value = ? WHERE key = 'log_hash'", (h,))
            c.execute("UPDATE meta SET value = ? WHERE key = 'applied_revision'", (str(revision),))

    # ------------------------------------------------------------------------- queries
    def entry(self, note_id: bytes) -> EntryRow | None:
        return StateTx(self._db.conn()).entry(note_id)

    def entries(self, state: str | None = None, limit: int = 1000) -> list[EntryRow]:
        sql = f"SELECT {_ENTRY_COLS} FROM entries"
        params: tuple[Any, ...] = ()
        if state:
            sql += " WHERE state = ?"
            params = (state,)
        sql += " ORDER BY revision LIMIT ?"
        rows = self._db.conn().execute(sql, (*params, limit)).fetchall()
        return [_entry(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """How many entries are in each state (kept as entries are written: no COUNT)."""
        rows = self._db.conn().execute(
            "SELECT substr(name, 9), n FROM tallies WHERE name GLOB 'entries/*' AND n > 0"
        )
        return {r[0]: int(r[1]) for r in rows.fetchall()}

    def positions(self) -> dict[str, dict[str, int]]:
        """Settled interbank amounts: payer's bank -> payee's bank -> total (same at every bank)."""
        rows = self._db.conn().execute(
            "SELECT payer_bank, payee_bank, amount FROM positions ORDER BY payer_bank, payee_bank"
        )
        out: dict[str, dict[str, int]] = {}
        for a, b, amount in rows.fetchall():
            out.setdefault(a, {})[b] = int(amount)
        return out

    def last_checkpoint(self, bank: str) -> int:
        """The largest tree size of `bank`'s checkpoints applied from the log (0: none)."""
        last = StateTx(self._db.conn()).last_checkpoint(bank)
        return last[0] if last else 0

    def report_count(self) -> int:
        """How many reports there are (kept as they are written: no COUNT)."""
        row = self._db.conn().execute("SELECT n FROM tallies WHERE name = 'reports'").fetchone()
        return 0 if row is None else int(row[0])

    def reports(self, after: int = 0, limit: int = 1000) -> list[Report]:
        rows = (
            self._db.conn()
            .execute(
                "SELECT id, revision, kind, subject, note_id, detail, time FROM reports "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            )
            .fetchall()
        )
        return [
            Report(
                int(r[0]),
                r[1],
                r[2],
                r[3],
                bytes(r[4]) if r[4] is not None else None,
                r[5],
                int(r[6]),
            )
            for r in rows
        ]

    def add_report(self, kind: str, subject: str, note_id: bytes | None, detail: str) -> None:
        """A report outside the log order (e.g. a forged endorsement received by this bank)."""
        with self._db.tx() as c:
            StateTx(c).report(None, kind, subject, note_id, detail)

    def add_report_once(
        self, revision: int, kind: str, subject: str, note_id: bytes | None, detail: str
    ) -> bool:
        """A report about log revision `revision` outside the order (an overwrite the watch
        passes over), unless one of that kind is there already; True if added."""
        with self._db.tx() as c:
            seen = c.execute(
                "SELECT 1 FROM reports WHERE revision = ? AND kind = ?", (revision, kind)
            ).fetchone()
            if seen is None:
                StateTx(c).report(revision, kind, subject, note_id, detail)
        return seen is None

    def checkpoints(
        self, bank: str | None = None, after: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Checkpoints applied from the log (of one bank, or every bank's) at log revisions
        after `after`, in log order; at most `limit`."""
        sql = "SELECT bank, tree_size, root, revision FROM checkpoints WHERE revision > ?"
        params: tuple[Any, ...] = (after,)
        if bank:
            sql += " AND bank = ?"
            params += (bank,)
        sql += " ORDER BY revision"
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        rows = self._db.conn().execute(sql, params).fetchall()
        return [
            {"bank": r[0], "tree_size": int(r[1]), "root": bytes(r[2]).hex(), "revision": int(r[3])}
            for r in rows
        ]

    # ---------------------------------------------------------- payer's bank: endorsed
    def endorse_once(self, note_id: bytes, digest: bytes) -> bytes | None:
        """Remember that this bank endorsed `digest` under `note_id`; returns the digest it had
        endorsed before under that id if it differs (double issuance), else None."""
        with self._db.tx() as c:
            row = c.execute("SELECT digest FROM endorsed WHERE note_id = ?", (note_id,)).fetchone()
            if row is not None:
                return None if bytes(row[0]) == digest else bytes(row[0])
            c.execute(
                "INSERT INTO endorsed (note_id, digest, time) VALUES (?, ?, ?)",
                (note_id, digest, int(time.time())),
            )
        return None
