"""Hot backup (DESIGN §1 热备份): a node that copies a primary's records and hands out named
records, with their signatures, on request.

The replica pulls ``GET /v1/replication/log?from=SEQ`` from its primary, signed with the bank's
own identity key (role ``bank``: only the bank itself may replicate its register), and keeps every
record in its own database, in the primary's register order:

    replica_records(seq PRIMARY KEY, book, n, body, hchain)   UNIQUE (book, n)
    replica_meta(key PRIMARY KEY, value)                      primary bank id, schema number

Before storing a record it checks the keeper's signatures (sig8 over the evidence code, sig9 over
the coded balance) under the bank's public key from the trust bundle, and the SHA-256 hash chain
against the previous record of the same book when it holds that one. A record that fails is not
stored; the replica stops pulling and reports it in /health (a primary that serves bad records
is exactly what an audit should look at). So does a primary whose history was rewritten: one
whose register is shorter than what the replica holds, or that serves under a new sequence
number a record the replica holds with other bytes (restored from an older copy).

It serves ``POST /v1/backup/records`` (the bank itself or a regulator): ``hubi audit restore
--backup URL`` asks for exactly the records its audit found missing and puts them back.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hubi.bank import records as rec_mod
from hubi.bank.auth import Signer
from hubi.bank.client import BankClient, BankError, BankUnavailable
from hubi.bank.store import StoreError, display_url, live_conn, parse_url
from hubi.infra.per_thread import PerThread
from hubi.infra.sqlite import connect_wal, immediate, newer_schema
from hubi.output import counted

log = logging.getLogger("hubi.bank.replica")

SCHEMA_VERSION = 1  # in replica_meta under 'schema'; a newer number is refused
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS replica_records (
        seq BIGINT PRIMARY KEY,
        book TEXT NOT NULL,
        n BIGINT NOT NULL,
        body {BLOB} NOT NULL,
        hchain {BLOB} NOT NULL,
        UNIQUE (book, n))""",
    "CREATE TABLE IF NOT EXISTS replica_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
]


class ReplicaError(RuntimeError):
    pass


class RegisterGap(Exception):
    """The primary's register has an entry whose record it did not send (lost at the primary):
    the backup holds what comes before and asks again, so that it resumes once the primary's
    operator restores the record. It skipped the entry and looked up to date without it."""


class ReplicaStore:
    """The replica's own database: SQLite (file path or sqlite:///path) or PostgreSQL URL."""

    def __init__(self, url: str):
        self.url = url
        self._where = parse_url(url)  # the books' own URL rules: one reading of a URL
        if self._where.options:  # synchronous=, max_bytes= are the books' store's, not applied here
            raise ReplicaError(
                f"{display_url(url)}: a hot backup's database takes no options"
                f" ({', '.join(sorted(self._where.options))})"
            )
        self.pg = self._where.dialect == "postgresql"
        self._conns: PerThread[Any] = PerThread(self._connect)
        blob = "BYTEA" if self.pg else "BLOB"
        with self.tx() as c:  # a refusal rolls back the tables a new file just got
            for sql in SCHEMA:
                self._exec(c, sql.format(BLOB=blob))
            self._stamp_schema(c)

    def _stamp_schema(self, c: Any) -> None:
        """Record this build's schema number in a new database; refuse one a newer hubi wrote
        (this build would store records in it by rules older than the file's)."""
        rows = self._exec(c, "SELECT value FROM replica_meta WHERE key = 'schema'").fetchall()
        if not rows:
            self._exec(
                c,
                "INSERT INTO replica_meta (key, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )
            return
        what, have = f"the hot backup's database {display_url(self.url)}", str(rows[0][0])
        if not (have.isascii() and have.isdigit()):
            raise ReplicaError(f"{what} has a schema number that is not a number: {have[:20]!r}")
        if int(have) > SCHEMA_VERSION:
            raise ReplicaError(newer_schema(what, have, SCHEMA_VERSION))

    def _connect(self) -> Any:
        # StoreError, as the books' store says it: named, no traceback from `serve`, a 503 and
        # a retry (not a stop) from the pull loop; the URL shown without its password
        if self.pg:
            import psycopg

            try:
                return psycopg.connect(self._where.target, autocommit=True)
            except psycopg.Error as exc:
                raise StoreError(
                    f"cannot connect to the hot backup's PostgreSQL {display_url(self.url)}: {exc}"
                ) from None
        path = self._where.target
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return connect_wal(path)
        except (OSError, sqlite3.Error) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise StoreError(
                f"cannot open the hot backup's SQLite database {path}: {why}"
            ) from None

    def conn(self) -> Any:
        return live_conn(self._conns)

    def _exec(self, c: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.pg:
            sql = sql.replace("?", "%s")
        return c.execute(sql, tuple(params))

    @contextlib.contextmanager
    def tx(self):  # type: ignore[no-untyped-def]
        c = self.conn()
        if self.pg:
            with c.transaction():
                yield c
        else:
            with immediate(c):
                yield c

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._exec(self.conn(), sql, params).fetchall()

    def next_seq(self) -> int:
        """The register position to pull next (positions start at 0)."""
        row = self.query("SELECT MAX(seq) FROM replica_records")
        return 0 if row[0][0] is None else int(row[0][0]) + 1

    def count(self) -> int:
        """Records held: kept in replica_meta as they are stored (/health asks for it, and a
        COUNT reads every row: 2 s cold, 0.03 s warm, at 10^6), counted once in a database
        without it."""
        held = self.get_meta("records")
        if held is not None:
            return int(held)
        with self.tx() as c:
            return self._held(c)

    def _held(self, c: Any) -> int:
        """The kept count of records, in transaction `c`; counted (and kept) if there is none."""
        row = self._exec(c, "SELECT value FROM replica_meta WHERE key = 'records'").fetchone()
        if row is not None:
            return int(row[0])
        n = int(self._exec(c, "SELECT COUNT(*) FROM replica_records").fetchone()[0])
        self._set_meta(c, "records", str(n))
        return n

    def previous(self, book: str, n: int) -> bytes | None:
        """hchain of record n-1 of `book` (32 zero bytes for n = 1), None if not held."""
        if n == 1:
            return rec_mod.ZERO32
        rows = self.query(
            "SELECT hchain FROM replica_records WHERE book = ? AND n = ?", (book, n - 1)
        )
        return bytes(rows[0][0]) if rows else None

    def put(self, rows: Sequence[tuple[int, str, int, bytes, bytes]]) -> int:
        """Store (seq, book, n, body, hchain) rows; rows already held are skipped."""
        if not rows:
            return 0
        added = 0
        with self.tx() as c:
            held = self._held(c)
            for seq, book, n, body, hchain in rows:
                cur = self._exec(
                    c,
                    "INSERT INTO replica_records (seq, book, n, body, hchain) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (seq, book, n, body, hchain),
                )
                if cur.rowcount == 0:
                    self._same_as_held(c, seq, book, n, body)
                added += max(cur.rowcount, 0)
            self._set_meta(c, "records", str(held + added))
        return added

    def _same_as_held(self, c: Any, seq: int, book: str, n: int, body: bytes) -> None:
        """A row not inserted is already held: it must be this very record at this very place
        (else the primary rewrote its history, and keeping both versions quietly hides it)."""
        held = self._exec(
            c,
            "SELECT seq, body FROM replica_records WHERE seq = ? OR (book = ? AND n = ?)",
            (seq, book, n),
        ).fetchall()
        if any(int(s) != seq or bytes(b) != bytes(body) for s, b in held):
            raise ReplicaError(
                f"record {book}#{n} (seq {seq}) from the primary differs from the one this"
                " backup holds: the primary's history was rewritten (restored from an older"
                " copy?); pulling stopped, the held records are kept"
            )

    def get(self, names: Sequence[tuple[str, int]]) -> dict[tuple[str, int], tuple]:
        out: dict[tuple[str, int], tuple] = {}
        for book, n in names:
            rows = self.query(
                "SELECT seq, book, n, body, hchain FROM replica_records WHERE book = ? AND n = ?",
                (book, n),
            )
            if rows:
                out[(book, n)] = rows[0]
        return out

    def get_meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM replica_meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as c:
            self._set_meta(c, key, value)

    def _set_meta(self, c: Any, key: str, value: str) -> None:
        self._exec(
            c,
            "INSERT INTO replica_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def close(self) -> None:
        self._conns.close()


def record_json(seq: int, book: str, n: int, body: bytes, hchain: bytes) -> dict[str, Any]:
    """How a record travels over HTTP: its exact bytes plus a readable view."""
    out: dict[str, Any] = {
        "seq": int(seq),
        "book": book,
        "number": int(n),
        "body": bytes(body).hex(),
        "hchain": bytes(hchain).hex(),
    }
    with contextlib.suppress(rec_mod.RecordFormatError, ValueError):
        out["record"] = rec_mod.Record.parse(bytes(body)).to_json()
    return out


def parse_record_json(doc: dict[str, Any]) -> tuple[int, str, int, bytes, bytes]:
    """(seq, book, n, body, hchain) from a record as served; ValueError if malformed."""
    if not isinstance(doc, dict):
        raise ValueError(f"malformed record entry: {str(doc)[:40]!r}")
    try:
        seq = int(doc["seq"])
        book = str(doc["book"])
        n = int(doc["number"])
        body = bytes.fromhex(doc["body"])
        hchain = bytes.fromhex(doc["hchain"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed record entry: {exc!r}") from None
    if len(hchain) != 32:
        raise ValueError(f"record {book}#{n}: hchain must be 32 bytes")
    return seq, book, n, body, hchain


class Replica:
    """The backend of a hot-backup node: a pull loop plus record lookups for the API."""

    UPLOAD_KINDS: frozenset[int] = frozenset()

    def __init__(
        self,
        bank: str,
        primary_url: str,
        store: ReplicaStore,
        signer: Signer,
        bank_public_key: bytes,
        poll_interval: float = 0.2,
        batch: int = 1000,
    ):
        self.bank = bank
        self.primary_url = primary_url
        self.store = store
        self.signer = signer
        self.verifier = rec_mod.BookVerifier(bank, bank_public_key)
        self.poll_interval = poll_interval
        self.batch = batch
        self.error: str | None = None  # last pull problem (transient or fatal)
        self.fatal: str | None = None  # a record that failed verification: pulling stopped
        self.last_pull: float | None = None
        self.on_records: list[Any] = []  # callbacks(count) for metrics
        # why the node's database lock is not its own now (a PostgreSQL session that ended:
        # hubi.bank.server): nothing is pulled into the database until it is None again
        self.fenced: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: BankClient | None = None
        held = store.get_meta("bank")
        if held is not None and held != bank:
            raise ReplicaError(f"replica database holds bank {held}'s records, not {bank}'s")
        if held is None:
            store.set_meta("bank", bank)

    # ------------------------------------------------------------------------ pulling
    def start(self) -> None:
        if self._thread is None:
            self._client = BankClient(self.primary_url, self.signer, self.bank, timeout=30)
            self._thread = threading.Thread(target=self._run, name="replica-pull", daemon=True)
            self._thread.start()

    def fence(self, why: str | None) -> None:
        """Pull nothing, saying `why` (/health degraded), or pull again (None)."""
        self.fenced = why

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._wake(self._thread, timeout=35)
            self._thread = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _wake(self, thread: threading.Thread, timeout: float) -> None:
        """Wait for the pull thread to end, shutting the client's sockets down meanwhile: a
        primary that accepted the request and never answers held the thread (and the node's
        stop) for the whole 30 s read timeout, and closing a socket from another thread does
        not wake a read blocked on it. Again and again: a request may connect just after."""
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            if self._client is not None:
                self._client.interrupt()  # shutdown(SHUT_RDWR): the blocked read returns at once
            thread.join(0.2)

    def _run(self) -> None:
        delay = self.poll_interval
        while not self._stop.is_set():
            if self.fenced is not None:  # another backup may be writing this database now
                self._stop.wait(self.poll_interval)
                continue
            try:
                got = self.pull_once()
                self.error = None
                delay = 0 if got >= self.batch else self.poll_interval
            except (BankError, BankUnavailable) as exc:
                if self._stop.is_set():  # its socket shut down by stop(): nothing went wrong
                    return
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("replica: pulling from %s failed: %s", self.primary_url, self.error)
                delay = min(max(delay * 2, 0.2), 5.0)
            except RegisterGap as exc:
                if self.error != str(exc):
                    log.error("replica: %s", exc)
                self.error = str(exc)
                delay = self.poll_interval
            except ReplicaError as exc:
                self.fatal = self.error = str(exc)
                log.error("replica: stopped pulling: %s", exc)
                return
            except Exception as exc:  # keep the node serving what it has
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("replica: unexpected error while pulling")
                delay = min(max(delay * 2, 0.2), 5.0)
            if delay:
                self._stop.wait(delay)

    @contextlib.contextmanager
    def _pulling(self) -> Iterator[BankClient]:
        """The pull loop's client, or (not started: catch_up, operator tools) one for this
        call, closed after it: left to the collector, each held a connection to the primary
        (a descriptor here, one at the primary) until a cyclic collection happened to run."""
        if self._client is not None:
            yield self._client
            return
        with BankClient(self.primary_url, self.signer, self.bank) as client:
            yield client

    def pull_once(self) -> int:
        """Fetch and store one batch after the last held sequence number; returns its size."""
        with self._pulling() as client:
            return self._pull(client)

    def _pull(self, client: BankClient) -> int:
        start = self.store.next_seq()
        doc = client.replication_log(start, self.batch)
        if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
            # a primary that answers the replication log with something else is looked at,
            # as one that serves bad records is: not retried for ever with a traceback each time
            raise ReplicaError(
                f"the primary's replication log is not a list of records: {str(doc)[:80]}"
            )
        size = doc.get("register_size")
        if type(size) is int and size < start:
            # a primary restored from an older copy: what it books next would reuse numbers
            # this backup holds, and the backup is what the operator should restore from
            raise ReplicaError(
                f"the primary's register has {counted(size, 'entry', 'entries')}, fewer than the "
                f"{start} this backup"
                " holds: the primary went back in time (restored from an older copy?); pulling"
                " stopped, the held records are kept"
            )
        try:
            rows = [parse_record_json(d) for d in doc["records"]]
        except ValueError as exc:
            raise ReplicaError(f"the primary's replication log: {exc}") from None
        # entries come in register order, one for each position: one missing is a record the
        # primary lost (its log joins entries to records), not the end of the log
        held = []
        for r in rows:
            if r[0] != start + len(held):
                break
            held.append(r)
        gap = (
            start + len(held)
            if len(held) < len(rows) or (not rows and type(size) is int and size > start)
            else None
        )
        checked = self._check(held)
        self.store.put(checked)
        self.last_pull = time.time()
        for cb in self.on_records:
            cb(len(checked))
        if gap is not None:
            raise RegisterGap(
                f"the primary's register entry {gap} came without its record (lost at the"
                " primary?): this backup holds everything before it and asks again; the"
                " primary's operator: hubi audit verify names it, hubi audit restore puts it back"
            )
        return len(rows)

    def _check(self, rows: list[tuple[int, str, int, bytes, bytes]]) -> list[tuple]:
        batch_chain: dict[tuple[str, int], bytes] = {}
        prev_seq = self.store.next_seq() - 1
        for seq, book, n, body, hchain in rows:
            where = f"record {book}#{n} (seq {seq})"
            if seq <= prev_seq:
                raise ReplicaError(f"{where}: sequence numbers from the primary do not increase")
            prev_seq = seq
            try:
                rec = rec_mod.Record.parse(body)
            except rec_mod.RecordFormatError as exc:
                raise ReplicaError(f"{where}: {exc}") from None
            if rec.book != book or rec.n != n or rec.keeper != self.bank:
                raise ReplicaError(f"{where}: body names {rec.keeper}/{rec.book}#{rec.n}")
            bad = self.verifier.check_record(rec)
            if bad:
                raise ReplicaError(f"{where}: keeper signature(s) {', '.join(bad)} do not verify")
            prev = batch_chain.get((book, n - 1)) or self.store.previous(book, n)
            if prev is not None and rec_mod.chain_hash(prev, n, body) != hchain:
                raise ReplicaError(f"{where}: hash chain does not follow record {n - 1}")
            batch_chain[(book, n)] = hchain
        return rows

    def catch_up(self, timeout: float = 30.0) -> int:
        """Pull until the primary has nothing newer (tests, operator tools)."""
        deadline = time.monotonic() + timeout
        total = 0
        with self._pulling() as client:  # one connection for all the batches
            while time.monotonic() < deadline:
                got = self._pull(client)
                total += got
                if got < self.batch:
                    return total
        raise TimeoutError("replica did not catch up in time")

    # ------------------------------------------------------------------------ serving
    def health(self) -> dict[str, Any]:
        out = {
            "primary": self.primary_url,
            "records": self.store.count(),
            "next_seq": self.store.next_seq(),
            "last_pull": self.last_pull,
            "error": self.error,
            "stopped": self.fatal,
        }
        if self.fenced is not None:  # the route answers "degraded"
            out["node_lock"] = self.fenced
        return out

    def records(
        self, names: Sequence[tuple[str, int]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        got = self.store.get(names)
        found, missing = [], []
        for book, n in names:
            row = got.get((book, n))
            if row is None:
                missing.append({"book": book, "number": n})
            else:
                found.append(record_json(*row))
        return found, missing

    def close(self) -> None:
        self.stop()
        self.store.close()
