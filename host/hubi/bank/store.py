"""The bank's database: SQLite (WAL) by default, PostgreSQL by URL; one schema, one migration tool.

URLs
- ``sqlite:///abs/path/bank.db``, ``sqlite://rel/path.db`` or a plain file path: SQLite in WAL
  mode (``synchronous=NORMAL``: a killed process loses nothing committed; pass
  ``?synchronous=FULL`` to survive power loss too).
- ``postgresql://user:pass@host:port/db`` (or ``postgres://``): PostgreSQL through psycopg 3.

Schema (``MIGRATIONS``; ``schema_version`` lists what is applied; ``hubi bank init`` / every open
applies what is missing, under a lock, so several processes may open one database at once):

    meta(key, value)                                  bank id, bank public key, checkpoint interval
    accounts(account, template, role, overdraft, flags, opened_at)
    books(book, n, ecode, hchain, coded_bal, last_kind, last_lsum, statement, sig)   signed heads
    records(book, n, body, hchain)                    record bytes (records.Record) + hash chain
    register(seq, book, n)                            every record in booking order (Merkle leaves)
    register_head(id = 1, size)
    notes(note_id, digest, payer, serial, payee, amount, status, ..., refusal, settlement, balance_notice)
    double_issues(digest, note_id, ...)               second notes with a used payer serial
    notices(id, account, kind, note_id, obj, time)    what each account may fetch
    checkpoints(tree_size, root, obj, frontier, time) signed RFC 9162 tree heads
    merkle_nodes(level, idx, hash)                    perfect subtrees of 2^level >= 256 leaves
                                                      (version 2; written with each checkpoint)
    counters(name, value)                             blocks of serials for bank-signed objects
    allowances(account, serial, cap, expiry, first_serial, obj, spent)

Locking. PostgreSQL: a booking locks the book rows it appends to (``SELECT ... FOR UPDATE``, in
account order, so two bookings never deadlock) and, just before commit, the single register_head
row (so register positions follow commit order and a checkpoint never has a gap below it).
Different accounts book in parallel; only the register append serialises. A booking reads the
note rows before it verifies the notes and does not read them again under the lock: a note (or
double issue) that another connection recorded meanwhile fails the insert on its unique key,
the transaction rolls back (``StoreConflict``) and the engine decides that batch again. The
writes and the COMMIT go out in psycopg's pipeline mode, one round trip. SQLite has one writer
at a time: ``transaction()`` is ``BEGIN IMMEDIATE``, which is the per-account lock and the
register lock at once; the engine keeps that section short by signing before it takes the lock
(optimistically, re-signing only if a head moved meanwhile).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote_to_bytes, urlsplit

from hubi.infra.per_thread import PerThread
from hubi.infra.sqlite import connect_wal, immediate, newer_schema

__all__ = [
    "MIGRATIONS",
    "Store",
    "StoreConflict",
    "StoreError",
    "Tx",
    "full_reason",
    "open_store",
]


class StoreError(RuntimeError):
    """A database that cannot be opened, migrated or used; the message names URL and step."""


class StoreConflict(StoreError):
    """A PostgreSQL transaction rolled back because a row it inserted had been inserted by
    another connection meanwhile (a unique key); the caller decides again on fresh reads."""


# --------------------------------------------------------------------------------- migrations
# One list for both databases: {BLOB} {ID} are filled in per dialect. Never edit an applied step;
# add a new number.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "books, records, register, notes, notices, checkpoints",
        [
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value {BLOB} NOT NULL)",
            """CREATE TABLE accounts (
                account TEXT PRIMARY KEY,
                template {BLOB},
                role TEXT NOT NULL DEFAULT 'customer',
                overdraft BIGINT NOT NULL DEFAULT 0,
                flags BIGINT NOT NULL DEFAULT 0,
                opened_at BIGINT NOT NULL)""",
            """CREATE TABLE books (
                book TEXT PRIMARY KEY,
                n BIGINT NOT NULL,
                ecode {BLOB} NOT NULL,
                hchain {BLOB} NOT NULL,
                coded_bal {BLOB},
                last_kind INTEGER NOT NULL,
                last_lsum {BLOB} NOT NULL,
                statement {BLOB} NOT NULL,
                sig {BLOB} NOT NULL)""",
            """CREATE TABLE records (
                book TEXT NOT NULL,
                n BIGINT NOT NULL,
                body {BLOB} NOT NULL,
                hchain {BLOB} NOT NULL,
                PRIMARY KEY (book, n))""",
            """CREATE TABLE register (
                seq BIGINT PRIMARY KEY,
                book TEXT NOT NULL,
                n BIGINT NOT NULL)""",
            "CREATE INDEX register_book ON register (book, n)",
            """CREATE TABLE register_head (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                size BIGINT NOT NULL)""",
            "INSERT INTO register_head (id, size) VALUES (1, 0)",
            """CREATE TABLE notes (
                note_id {BLOB} PRIMARY KEY,
                digest {BLOB} NOT NULL,
                payer TEXT NOT NULL,
                serial BIGINT NOT NULL,
                payee TEXT NOT NULL,
                amount BIGINT NOT NULL,
                status TEXT NOT NULL,
                reason_code INTEGER,
                reason TEXT,
                debit_n BIGINT,
                credit_n BIGINT,
                allowance BIGINT,
                settle_status INTEGER,
                time BIGINT NOT NULL,
                note {BLOB} NOT NULL,
                refusal {BLOB},
                settlement {BLOB},
                balance_notice {BLOB})""",
            "CREATE INDEX notes_payer ON notes (payer, serial)",
            "CREATE INDEX notes_payee ON notes (payee)",
            """CREATE TABLE double_issues (
                digest {BLOB} PRIMARY KEY,
                note_id {BLOB} NOT NULL,
                payer TEXT NOT NULL,
                serial BIGINT NOT NULL,
                payee TEXT NOT NULL,
                note {BLOB} NOT NULL,
                refusal {BLOB} NOT NULL,
                time BIGINT NOT NULL)""",
            "CREATE INDEX double_issues_note ON double_issues (note_id)",
            """CREATE TABLE notices (
                id {ID},
                account TEXT NOT NULL,
                kind INTEGER NOT NULL,
                note_id {BLOB} NOT NULL,
                obj {BLOB} NOT NULL,
                time BIGINT NOT NULL)""",
            "CREATE INDEX notices_account ON notices (account, id)",
            """CREATE TABLE checkpoints (
                tree_size BIGINT PRIMARY KEY,
                root {BLOB} NOT NULL,
                obj {BLOB} NOT NULL,
                frontier {BLOB} NOT NULL,
                time BIGINT NOT NULL)""",
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            """CREATE TABLE allowances (
                account TEXT NOT NULL,
                serial BIGINT NOT NULL,
                cap BIGINT NOT NULL,
                expiry BIGINT NOT NULL,
                first_serial BIGINT NOT NULL,
                obj {BLOB} NOT NULL,
                spent BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (account, serial))""",
        ],
    ),
    (
        2,
        "merkle_nodes: perfect subtrees of the register, for proofs in O(log n)",
        [
            """CREATE TABLE merkle_nodes (
                level INTEGER NOT NULL,
                idx BIGINT NOT NULL,
                hash {BLOB} NOT NULL,
                PRIMARY KEY (level, idx))""",
        ],
    ),
]

_DIALECT_WORDS = {
    "sqlite": {"BLOB": "BLOB", "ID": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"BLOB": "BYTEA", "ID": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"},
}
_PG_MIGRATION_LOCK = 0x68756269  # "hubi": advisory lock key while migrating


def _fill(sql: str, dialect: str) -> str:
    return sql.format(**_DIALECT_WORDS[dialect])


@dataclass(frozen=True)
class Location:
    dialect: str  # 'sqlite' | 'postgresql'
    target: str  # file path or libpq URL
    options: dict[str, str]


SQLITE_OPTIONS = ("synchronous", "max_bytes")  # what a sqlite:///path?... URL may set


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The sqlite:/// URL of a file, its path %-escaped as parse_url reads it back: a folder
    named with '#', '?' or '%' would otherwise name another file ("shop #1" -> "shop ")."""
    return "sqlite:///" + quote(_path_bytes(os.fspath(path)))


def _path_bytes(text: str) -> bytes:
    """A path's bytes as the file system takes them. A name the locale could not decode (a
    folder "Zürich" under LANG=C with PYTHONUTF8=0) holds lone surrogates, and quoting it as
    UTF-8 text was a UnicodeEncodeError in every command that made the URL."""
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:  # a character the locale's encoding has not: as UTF-8
        return text.encode("utf-8", "surrogateescape")


def _unquote_path(text: str) -> str:
    """parse_url's reading of a URL's path: %-escapes and characters alike back to the bytes
    sqlite_url quoted, then to the name the file system knows (os.fsdecode)."""
    return os.fsdecode(unquote_to_bytes(_path_bytes(text)))


def parse_url(url: str | os.PathLike[str]) -> Location:
    """Where a database is: ``sqlite:///path``, a file path, or ``postgresql://...``."""
    text = os.fspath(url)
    if text.startswith(("postgresql://", "postgres://")):
        return Location("postgresql", text, {})
    if text.startswith("sqlite:"):
        parts = urlsplit(text)
        path = _unquote_path(parts.netloc + parts.path if parts.netloc else parts.path)
        if path.startswith("//"):  # sqlite:////abs/path: one leading slash is the path's
            path = "/" + path.lstrip("/")
        if not path:
            raise StoreError(f"database URL {display_url(text)!r} names no file")
        opts = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return Location("sqlite", path, opts)
    if "://" in text:
        raise StoreError(
            f"database URL {display_url(text)!r}: scheme must be sqlite:// or postgresql://"
        )
    return Location("sqlite", text, {})


def _max_bytes(value: str | None, url: str) -> int | None:
    """The ``max_bytes`` option of a SQLite URL: a cap on the database file (not its WAL), so
    that a full database is refused cleanly before the disk itself fills up."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) < 65536:
        raise StoreError(
            f"{display_url(url)}: max_bytes must be a whole number of bytes, at least 65536, "
            f"not {value!r}"
        )
    return int(value)


def live_conn(conns: PerThread[Any]) -> Any:
    """This thread's connection; a new one if the PostgreSQL server dropped the old (it went
    away and came back): psycopg never reconnects, so the thread would fail for ever."""
    conn = conns.get()
    if getattr(conn, "closed", False):
        conns.discard()
        conn = conns.get()
    return conn


@functools.cache
def down_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the database is unreachable, busy or full: a 503 for the caller,
    not a bug (psycopg imported on first use, not by every command that loads this module)."""
    out: tuple[type[BaseException], ...] = (StoreError, sqlite3.OperationalError)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return out
    return out + (psycopg.OperationalError,)


def full_reason(exc: BaseException) -> str | None:
    """The database's own words if `exc` says that it (or its disk) is full, else None: SQLite's
    SQLITE_FULL (a full disk, or the ``max_bytes`` cap), PostgreSQL's disk_full (53100)."""
    if isinstance(exc, sqlite3.OperationalError):
        full = exc.sqlite_errorname == "SQLITE_FULL"
    else:  # a server that crashed on a full disk closes the connection: no SQLSTATE then
        full = getattr(exc, "sqlstate", None) == "53100" or "No space left" in str(exc)
    # the first line: PostgreSQL's own HINT ("Check free disk space.") says what the caller's
    # remedy says again
    return str(exc).strip().splitlines()[0] if full else None


# libpq takes a password in the URL's user part and in its query (?password=, ?sslpassword=)
BLOB_TYPES = (bytes, bytearray, memoryview)  # what a bytes column reads back as


def _text(raw: bytes) -> str | bytes:
    """A SQLite text cell: its raw bytes when they are not UTF-8 (a damaged or tampered file),
    so they read as a BLOB there would (a finding for the audit) and every other row still reads;
    sqlite3's own decoding fails the whole query."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def describe_cell(v: Any) -> str:
    """A stored cell as an error or an audit finding names it (a damaged one may hold NULL,
    text or a number where bytes belong, or the other way round)."""
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return f"text {v[:40]!r}"
    if isinstance(v, BLOB_TYPES):
        return f"{len(v)} bytes"
    return repr(v)[:40]


_QUERY_SECRET = re.compile(r"(?i)((?:^|&)(?:ssl)?password=)[^&]*")


def display_url(url: str) -> str:
    """URL with any password replaced by *** (for messages and logs)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # e.g. "postgresql://[::1": where a password would be is anyone's guess
        return url.partition("://")[0] + "://… (not a URL that parses)"
    query = _QUERY_SECRET.sub(r"\1***", parts.query)
    if not password and query == parts.query:
        return url  # as given (a round trip through urlsplit may respell it)
    netloc = parts.netloc.replace(":" + password + "@", ":***@") if password else parts.netloc
    return parts._replace(netloc=netloc, query=query).geturl()


# PostgreSQL connections (the store's and the node lock's, hubi.bank.server.PgNodeLock): libpq's
# keepalives break an idle connection whose peer is gone in ~11 s, and tcp_user_timeout one
# whose data goes unacknowledged in 6 s, not after the kernel's minutes of retransmits; neither
# ends a wait whose bytes a middlebox (or a hung relay) acknowledges and never forwards:
# WaitWatch below does, and `bounded` for one query.
PG_KEEPALIVES: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 6000,  # milliseconds
}
PG_CONNECT_TIMEOUT = 5  # seconds: a server that accepts TCP and never says hello
WAIT_LOOK_AFTER = 3.0  # seconds a statement may wait before the watchdog asks the server
WAIT_LOOK_EVERY = 1.0  # seconds between two looks
WAIT_IDLE_LOOKS = 2  # looks that find the session not working on our statement before a cut
# libpq's prefix of a message the server sent (in English: a server whose lc_messages is
# another language is taken as not answering, as before)
_SERVER_SAID = re.compile(r"\b(?:FATAL|ERROR|PANIC):")
# the states of a session that is not working on a statement: only these (or a session gone)
# say an answer was lost; any other ('active', and 'disabled' where track_activities is off
# for the database or user, or one unknown) leaves the wait alone: a lock wait there showed
# 'disabled' and was cut after 5 s
WAIT_IDLE_STATES = frozenset({"idle", "idle in transaction", "idle in transaction (aborted)"})


def pg_connect_options(target: str) -> dict[str, Any]:
    """psycopg.connect's keyword arguments for the bank's PostgreSQL connections: a connect
    timeout and PG_KEEPALIVES, each only where the URL does not set its own."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(target)
    want: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT, **PG_KEEPALIVES}
    return {k: v for k, v in want.items() if k not in given}


def _cut(fd: int) -> None:
    """Shut a connection's socket down under libpq: a thread waiting on it wakes at once with
    an error (the fd stays libpq's to close)."""
    with contextlib.suppress(OSError):
        dup = socket.socket(fileno=os.dup(fd))
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()


def bounded(conn: Any, query: Callable[[Any], Any], timeout: float) -> Any:
    """query(conn), its connection cut (the query then fails, psycopg.OperationalError) if it
    has not returned within `timeout` s: neither statement_timeout (the server's) nor libpq's
    keepalives (idle connections only) end a wait for an answer that a cut network swallowed,
    or one that a middlebox acknowledges and never forwards."""
    guard = threading.Lock()
    done = False
    fd = conn.fileno()  # psycopg.Error if the connection is closed already

    def cut() -> None:
        with guard:
            if not done:  # (the connection, and so fd, is libpq's as long as the query runs)
                _cut(fd)

    timer = threading.Timer(timeout, cut)
    timer.daemon = True
    timer.start()
    try:
        return query(conn)
    finally:
        with guard:
            done = True
        timer.cancel()


def _quiet_ms(fd: int) -> int | None:
    """Milliseconds since the socket last received data (Linux's TCP_INFO), None where unknown:
    a large answer still arriving over a slow link leaves its session idle on the server and
    must not be taken for a lost one."""
    info = getattr(socket, "TCP_INFO", None)
    if info is None:
        return None
    try:
        with socket.socket(fileno=os.dup(fd)) as dup:
            raw = dup.getsockopt(socket.IPPROTO_TCP, info, 104)
    except OSError:
        return None
    return int.from_bytes(raw[52:56], sys.byteorder) if len(raw) >= 56 else None  # last_data_recv


@dataclass
class _Wait:
    fd: int
    pid: int  # the session's server process
    since: float | None  # monotonic start of the current wait; None: the thread is not waiting
    depth: int = 1
    idle: int = 0  # looks in a row that found the session idle while we waited
    looked: float | None = None  # the wait those looks were about
    cut: str | None = None  # why the watchdog cut the connection
    pgconn: Any = None  # libpq's connection (psycopg.pq.PGconn): is it waiting for an answer?


def _answer_due(pgconn: Any) -> bool:
    """libpq still waits for (part of) an answer on `pgconn` (PQtransactionStatus ACTIVE); False
    once it has the whole answer and the thread is turning rows into Python objects, however
    long that takes (a large read of JSON, say): a session idle on the server then is no sign of
    a lost answer, and a cut would only break the next statement. True where unknown."""
    from psycopg import pq

    try:
        return bool(pgconn.transaction_status == pq.TransactionStatus.ACTIVE)
    except Exception:  # noqa: BLE001 - unknown: as before, the server's word decides
        return True


class WaitWatch:
    """Bounds a PostgreSQL wait whose answer is lost. A thread marks its waits on the server
    (:meth:`waiting`); a watchdog looks at any wait older than WAIT_LOOK_AFTER s from a
    connection of its own: a session the server shows working (a long query, a lock wait) is
    left alone; a session the server shows idle or gone while we wait for its answer (the
    answer was lost on the way), or a server that cannot be reached at all, gets the waiting
    connection cut, so the caller fails (StoreError, a 503) in seconds instead of hanging for
    as long as the network path does."""

    def __init__(self, target: str, url: str):
        self.target, self.url = target, url
        self._lock = threading.Lock()
        self._busy: dict[int, _Wait] = {}  # thread id -> its wait
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.cuts = 0

    @contextlib.contextmanager
    def waiting(self, conn: Any) -> Iterator[None]:
        """Mark the calling thread waiting on `conn` while the block runs (nested: the outer
        wait goes on); a psycopg error after a cut is a StoreError that says why."""
        import psycopg

        tid = threading.get_ident()
        with self._lock:
            w = self._busy.get(tid)
            prev = w.since if w is not None else None
            if w is not None:
                w.depth += 1
                if w.since is None:
                    w.since = time.monotonic()
        if w is None:
            try:
                w = _Wait(conn.fileno(), conn.info.backend_pid, time.monotonic())
                w.pgconn = conn.pgconn
            except psycopg.Error:  # closed already: the statement fails on its own
                yield
                return
            with self._lock:
                self._busy[tid] = w
            if self._thread is None:
                self._start()
        try:
            yield
        except psycopg.Error as exc:
            if w.cut:
                raise StoreError(w.cut) from exc
            raise
        finally:
            with self._lock:
                w.depth -= 1
                w.since = prev
                if w.depth == 0:
                    del self._busy[tid]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Inside :meth:`waiting`: the block is the caller's own work (planning, signing), not a
        wait on the server; the wait starts again after it (a COMMIT's)."""
        with self._lock:
            w = self._busy.get(threading.get_ident())
            if w is not None:
                w.since = None
        try:
            yield
        finally:
            if w is not None:
                with self._lock:
                    w.since = time.monotonic()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._done.is_set():
                return
            self._thread = threading.Thread(target=self._watch, name="store-waits", daemon=True)
        self._thread.start()

    def close(self) -> None:
        # under the lock: a look under way then cuts nothing (Store.close closes the
        # connections next, and a closed fd's number may soon be another connection's)
        with self._lock:
            self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(WAIT_LOOK_EVERY):
            now = time.monotonic()
            with self._lock:
                late = [
                    (tid, w, w.since)
                    for tid, w in self._busy.items()
                    if w.since is not None and now - w.since >= WAIT_LOOK_AFTER
                ]
            if not late:
                continue
            states, why = self._look(sorted({w.pid for _, w, _ in late}))
            with self._lock:
                if self._done.is_set():
                    return
                for tid, w, since in late:
                    if self._busy.get(tid) is not w or w.since != since or w.cut:
                        continue  # that wait ended meanwhile
                    if not _answer_due(w.pgconn):  # its answer came: the rows are being read
                        w.idle = 0
                        continue
                    if states is None:
                        if why is not None:  # the server cannot be reached at all
                            self._cut(w, f"cannot reach it ({why})")
                        continue
                    state = states.get(w.pid, "gone")
                    if state != "gone" and state not in WAIT_IDLE_STATES:
                        # working on it, not ours to see (None), or not told ('disabled')
                        w.idle = 0
                        continue
                    if w.looked != since:
                        w.looked, w.idle = since, 0
                    quiet = _quiet_ms(w.fd)
                    if quiet is not None and quiet < WAIT_LOOK_EVERY * 1000:
                        w.idle = 0  # its answer is still coming in
                        continue
                    w.idle += 1
                    if w.idle >= WAIT_IDLE_LOOKS:
                        self._cut(w, f"its session is {state}: the answer was lost on the way")

    def _cut(self, w: _Wait, why: str) -> None:
        """(Under the lock: the connection, and so its fd, is the waiting thread's until it
        leaves :meth:`waiting`.)"""
        waited = time.monotonic() - (w.since or time.monotonic())
        w.cut = (
            f"PostgreSQL {display_url(self.url)} gave no answer for {waited:.0f} s and the node "
            f"cut the connection ({why}); a new one is made on the next use"
        )
        self.cuts += 1
        _cut(w.fd)

    def _look(self, pids: list[int]) -> tuple[dict[int, str | None] | None, str | None]:
        """The server's state of each session (pg_stat_activity), from a connection of its own:
        (states, None); (None, why) when the server cannot be reached; (None, None) when it
        answered with an error (full of connections, say): no reason to cut anything."""
        import psycopg

        try:
            conn = psycopg.connect(self.target, autocommit=True, **pg_connect_options(self.target))
        except psycopg.Error as exc:
            # a refused connection carries no SQLSTATE (psycopg has no result to read it from):
            # the server's own words ("FATAL:  sorry, too many clients already") say that it
            # answered; only a server that did not is "cannot reach it"
            if getattr(exc, "sqlstate", None) or _SERVER_SAID.search(str(exc)):
                return None, None
            return None, str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "error"
        try:  # the look itself must not hang where the wait did
            rows = bounded(
                conn,
                lambda c: c.execute(
                    "SELECT pid, state FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
                ).fetchall(),
                WAIT_LOOK_AFTER,
            )
        except psycopg.Error as exc:
            if getattr(exc, "sqlstate", None):
                return None, None
            return None, "its answer to a look did not come"
        finally:
            conn.close()
        return {int(pid): state for pid, state in rows}, None


class Tx:
    """One connection inside (or outside) a transaction; SQL is written with ``?`` placeholders."""

    def __init__(self, store: Store, conn: Any):
        self.store = store
        self.conn = conn
        self.pg = store.dialect == "postgresql"
        self._waits = store._waits

    def _wait(self) -> contextlib.AbstractContextManager[None]:
        """A wait on the server, bounded by the store's watchdog (PostgreSQL)."""
        return self._waits.waiting(self.conn) if self._waits else contextlib.nullcontext()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.pg else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._wait():
            return self.conn.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.pg:
            with self._wait(), self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self.conn.executemany(sql, rows)

    def insert_many(
        self,
        table: str,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """INSERT rows (tuples in `columns` order). SQLite: executemany. PostgreSQL: one
        statement over ``unnest`` of one array per column (`types`: their PostgreSQL types), so
        a batch costs one round trip and one executor run instead of one per row."""
        if not rows:
            return
        if self.pg:
            with self._wait():
                self.conn.execute(
                    _bulk_sql("insert", table, tuple(columns), tuple(types)), _arrays(rows)
                )
        else:
            self.conn.executemany(_bulk_sql("values", table, tuple(columns), ()), rows)

    def update_many(
        self,
        table: str,
        key: str,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """UPDATE table SET columns WHERE key = ..., one row per tuple (the columns' values, the
        key last). PostgreSQL: one ``UPDATE ... FROM unnest(...)`` (`types`: columns', then key's)."""
        if not rows:
            return
        if self.pg:
            sql = _bulk_sql("update", table, (*columns, key), tuple(types))
            with self._wait():
                self.conn.execute(sql, _arrays(rows))
        else:
            self.conn.executemany(_bulk_sql("set", table, (*columns, key), ()), rows)

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        with self._wait():  # (pipeline mode: the fetch is the wait)
            cur = self.execute(sql, params)
            try:
                return cur.fetchone()
            finally:
                cur.close()  # SQLite: an unfinished SELECT would pin an old snapshot

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._wait():
            cur = self.execute(sql, params)
            try:
                return cur.fetchall()
            finally:
                cur.close()

    def scalar(self, sql: str, params: Sequence[Any] = (), default: Any = None) -> Any:
        row = self.one(sql, params)
        return default if row is None else row[0]

    def among(self, column: str, values: Sequence[Any]) -> tuple[str, tuple]:
        """``column IN (...)`` as (SQL, params): one array parameter on PostgreSQL, so the
        statement text is the same for any number of values (and gets prepared once)."""
        if self.pg:
            return f"{column} = ANY(?)", (list(values),)
        return f"{column} IN ({','.join('?' * len(values))})", tuple(values)

    def all_among(self, select: str, column: str, values: Sequence[Any]) -> list[tuple]:
        """Rows of ``select WHERE column IN values`` (each value once), 500 values a statement."""
        uniq = list(dict.fromkeys(values))
        rows: list[tuple] = []
        for i in range(0, len(uniq), 500):
            cond, params = self.among(column, uniq[i : i + 500])
            rows += self.all(f"{select} WHERE {cond}", params)
        return rows

    # --- meta
    def meta(self, key: str) -> bytes | None:
        v = self.scalar("SELECT value FROM meta WHERE key = ?", (key,))
        return None if v is None else bytes(v)

    def set_meta(self, key: str, value: bytes) -> None:
        self.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def data_version(self) -> int | None:
        """SQLite: a number that changes whenever another connection commits to the database
        (``PRAGMA data_version``); None on PostgreSQL (no such counter)."""
        if self.pg:
            return None
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def lock_books(self, books: Sequence[str], columns: str = "book") -> list[tuple] | None:
        """PostgreSQL: row-lock the books' head rows in a fixed order and return their
        `columns` as locked (one statement instead of a lock and a read). SQLite: None (the
        transaction already holds the one write lock)."""
        if not self.pg or not books:
            return None
        # LockRows sits above the Sort, so rows lock in book order and two bookings never
        # deadlock; a row locked after a wait is re-read as committed by the other booking
        return self.all(
            f"SELECT {columns} FROM books WHERE book = ANY(?) ORDER BY book FOR UPDATE",
            (sorted(set(books)),),
        )

    def append_register(self, entries: Sequence[tuple[str, int]]) -> int:
        """Append (book, n) entries to the register; the register's new size. PostgreSQL: one
        statement, and the register_head row it updates stays locked until commit, so positions
        follow commit order."""
        k = len(entries)
        if self.pg:
            books, ns = [e[0] for e in entries], [e[1] for e in entries]
            return int(self.scalar(_REGISTER_APPEND_PG, (k, k, books, ns)))
        size = int(self.scalar(_REGISTER_BUMP, (k,)))
        self.conn.executemany(
            "INSERT INTO register (seq, book, n) VALUES (?, ?, ?)",
            [(size - k + i, book, n) for i, (book, n) in enumerate(entries)],
        )
        return size


_REGISTER_BUMP = "UPDATE register_head SET size = size + ? WHERE id = 1 RETURNING size"
_REGISTER_APPEND_PG = (
    "WITH h AS (UPDATE register_head SET size = size + %s WHERE id = 1 RETURNING size), "
    "a AS (INSERT INTO register (seq, book, n) "
    "SELECT h.size - %s + v.i - 1, v.book, v.n FROM h, "
    "unnest(%b::text[], %b::bigint[]) WITH ORDINALITY AS v(book, n, i)) "
    "SELECT size FROM h"
)


@functools.lru_cache(maxsize=64)
def _bulk_sql(how: str, table: str, columns: tuple[str, ...], types: tuple[str, ...]) -> str:
    cols = ", ".join(columns)
    if how == "values":
        return f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(columns))})"
    if how == "set":
        sets = ", ".join(f"{c} = ?" for c in columns[:-1])
        return f"UPDATE {table} SET {sets} WHERE {columns[-1]} = ?"
    arrays = ", ".join(f"%b::{t}[]" for t in types)
    if how == "insert":
        return f"INSERT INTO {table} ({cols}) SELECT * FROM unnest({arrays})"
    sets = ", ".join(f"{c} = v.{c}" for c in columns[:-1])
    key = columns[-1]
    return (
        f"UPDATE {table} AS t SET {sets} FROM unnest({arrays}) AS v({cols}) WHERE t.{key} = v.{key}"
    )


def _arrays(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    return [list(col) for col in zip(*rows)]


class Store:
    """A bank database. Thread-safe: each thread gets its own connection."""

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        create: bool = True,
        migrate: bool = True,
        books: bool = True,
    ):
        self.url = os.fspath(url)
        self.location = parse_url(self.url)
        self.dialect = self.location.dialect
        self._local = threading.local()  # the thread's open transaction
        self._conns: PerThread[Any] = PerThread(self._connect)
        self._closed = False
        self._waits: WaitWatch | None = None
        if self.dialect == "postgresql":
            self._waits = WaitWatch(self.location.target, self.url)
        if self.dialect == "sqlite":
            unknown = sorted(set(self.location.options) - set(SQLITE_OPTIONS))
            if unknown:  # a misspelt synchronous=FULL would leave the default in force
                raise StoreError(
                    f"{display_url(self.url)}: unknown option {', '.join(unknown)}"
                    f" (a SQLite URL takes {' and '.join(SQLITE_OPTIONS)})"
                )
            sync = self.location.options.get("synchronous", "NORMAL").upper()
            if sync not in ("NORMAL", "FULL", "EXTRA"):  # OFF can corrupt books on power loss
                raise StoreError(
                    f"{display_url(self.url)}: synchronous must be NORMAL, FULL or EXTRA, "
                    f"not {sync}"
                )
            self._sync = sync
            self._max_bytes = _max_bytes(self.location.options.get("max_bytes"), self.url)
            parent = Path(self.location.target).parent
            if not parent.is_dir():
                raise StoreError(f"cannot open {self.url}: folder {parent} does not exist")
        if not create:
            self._require_existing(books)
        if migrate:
            self.migrate()

    def __repr__(self) -> str:
        return f"Store({display_url(self.url)!r})"

    def _require_existing(self, books: bool) -> None:
        """Not `create` (every command but `hubi bank init`: an audit, a restore, a node): the
        database must be there and (with `books`) hold the books' schema. A mistyped path must
        not leave an empty database behind, nor be served or audited "clean" with no books."""
        if self.dialect == "sqlite" and not Path(self.location.target).is_file():
            where = self.location.target
            hint = ""
            if self.url.startswith("sqlite:///") and not self.url.startswith("sqlite:////"):
                hint = f" ({self.url} names the absolute path {where})"
            what = "is a folder, not a database file" if Path(where).is_dir() else "does not exist"
            raise StoreError(f"no database at {where}: the file {what}{hint}")
        if not books:
            return
        try:
            if self.dialect == "sqlite":
                sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            else:
                sql = "SELECT 1 WHERE to_regclass('schema_version') IS NOT NULL"
            found = self.reader().scalar(sql)
        except Exception as exc:  # e.g. SQLite's "file is not a database"
            self.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot read {display_url(self.url)}: {exc}") from None
        if not found:
            self.close()
            raise StoreError(
                f"{display_url(self.url)} holds no bank books (no hubi schema in it; "
                "`hubi bank init` creates them)"
            )
        try:
            versions = {int(r[0]) for r in self.reader().all("SELECT version FROM schema_version")}
            self._refuse_newer(versions)
            self._refuse_missing_tables(versions)
        except StoreError:
            self.close()
            raise

    def _refuse_missing_tables(self, versions: set[int]) -> None:
        """StoreError for a database that lacks a table its schema versions made: one dropped
        (the notes index, say) audited clean while every booking failed on it."""
        want = [t for v, _, steps in MIGRATIONS if v in versions for t in _created_tables(steps)]
        if self.dialect == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        have = {str(r[0]) for r in self.reader().all(sql)}
        missing = [t for t in want if t not in have]
        if missing:
            raise StoreError(
                f"{display_url(self.url)} lacks the table(s) {', '.join(missing)} of its schema: "
                "the database is damaged (restore it from a backup)"
            )
        self._refuse_missing_columns(versions)

    def _refuse_missing_columns(self, versions: set[int]) -> None:
        """StoreError naming each column a table lacks (a table rebuilt in another shape): the
        audit would stop on SQL's "no such column" without naming the table."""
        want = {
            t: cols
            for v, _, steps in MIGRATIONS
            if v in versions
            for t, cols in _created_columns(steps).items()
        }
        if self.dialect == "sqlite":
            sql = (
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p "
                "WHERE m.type = 'table'"
            )
        else:
            sql = (
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema()"
            )
        have = {(str(t), str(c)) for t, c in self.reader().all(sql)}
        missing = [f"{t}.{c}" for t, cols in want.items() for c in cols if (t, c) not in have]
        if missing:
            raise StoreError(
                f"{display_url(self.url)} lacks the column(s) {', '.join(missing)} of its "
                "schema: the database is damaged (restore it from a backup)"
            )

    def _refuse_newer(self, versions: set[int]) -> None:
        """StoreError for a database a newer hubi migrated: this build would read its records
        by rules it does not know, or write old ones among them."""
        known = max(v for v, _, _ in MIGRATIONS)
        if versions and max(versions) > known:
            raise StoreError(newer_schema(display_url(self.url), max(versions), known))

    # --- connections
    def _connect(self) -> Any:
        if self.dialect == "sqlite":
            try:
                conn = connect_wal(self.location.target, self._sync, timeout=120)
                conn.text_factory = _text
                if self._max_bytes:  # a write past it fails as on a full disk (SQLITE_FULL)
                    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
                    conn.execute(f"PRAGMA max_page_count = {max(1, self._max_bytes // page)}")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite database {self.url}: {exc}") from None
            return conn
        import psycopg

        target = self.location.target
        try:
            return psycopg.connect(target, autocommit=True, **pg_connect_options(target))
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL {display_url(self.url)}: {exc}".strip()
            ) from None

    def conn(self) -> Any:
        if self._closed:
            raise StoreError(f"store {display_url(self.url)} is closed")
        return live_conn(self._conns)

    def close(self) -> None:
        self._closed = True
        if self._waits is not None:
            self._waits.close()
        self._conns.close()
        self._local = threading.local()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions
    @contextlib.contextmanager
    def transaction(self, pipeline: bool = False) -> Iterator[Tx]:
        """A write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: READ COMMITTED).

        `pipeline` (PostgreSQL): statements whose results are not read go out without waiting
        for the server (psycopg's pipeline mode), so the writes and the COMMIT of a booking
        cost one round trip; an error shows at the next read or at commit.
        Nested calls on one thread join the outer transaction (they commit with it)."""
        outer = getattr(self._local, "tx", None)
        if outer is not None:
            yield outer
            return
        conn = self.conn()
        tx = Tx(self, conn)
        self._local.tx = tx
        try:
            if self.dialect == "sqlite":
                with immediate(conn):
                    yield tx
            else:
                from psycopg import errors as pg_errors

                assert self._waits is not None
                try:  # BEGIN and COMMIT are waits on the server; the body's own work is not
                    with (
                        self._waits.waiting(conn),
                        conn.pipeline() if pipeline else contextlib.nullcontext(),
                        conn.transaction(),
                        self._waits.paused(),
                    ):
                        yield tx
                except pg_errors.UniqueViolation as exc:
                    raise StoreConflict(f"{display_url(self.url)}: {exc}".strip()) from None
        finally:
            self._local.tx = None

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Tx]:
        """A read-only consistent snapshot (SQLite WAL read transaction; PG REPEATABLE READ)."""
        conn = self.conn()
        if self.dialect == "sqlite":
            conn.execute("BEGIN")
            try:
                yield Tx(self, conn)
            finally:
                conn.execute("COMMIT")
        else:
            assert self._waits is not None
            with self._waits.waiting(conn), conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                with self._waits.paused():
                    yield Tx(self, conn)

    def reader(self) -> Tx:
        """Autocommit access: each statement sees the latest committed data."""
        return Tx(self, self.conn())

    # --- migrations
    def migrate(self) -> list[int]:
        """Apply every missing migration; returns the versions applied now."""
        applied: list[int] = []
        have: set[int] | None = None  # the versions found, once read
        conn = self.conn()
        try:
            with self.transaction() as tx:
                if self.dialect == "postgresql":
                    tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_MIGRATION_LOCK,))
                tx.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version ("
                    "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)"
                )
                have = {int(r[0]) for r in tx.all("SELECT version FROM schema_version")}
                self._refuse_newer(have)
                for version, description, steps in MIGRATIONS:
                    if version in have:
                        continue
                    for step in steps:
                        tx.execute(_fill(step, self.dialect))
                    tx.execute(
                        "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                        (version, description, int(__import__("time").time())),
                    )
                    applied.append(version)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(self._migration_failed(have, exc)) from exc
        del conn
        assert have is not None
        self._refuse_missing_tables(have | set(applied))
        return applied

    def _migration_failed(self, have: set[int] | None, exc: BaseException) -> str:
        """What an upgrade that failed says: the schema versions it went from and to, that the
        transaction left the database as it was, and what to do (a full disk is the usual cause;
        it said only "migrating ... failed: database or disk is full")."""
        url = display_url(self.url)
        why = f"{type(exc).__name__}: {exc}"
        known = max(v for v, _, _ in MIGRATIONS)
        if have is None:  # before the versions were read: the database could not be written
            return f"migrating {url} failed: {why}"
        if not have:
            return f"creating the bank's books (schema version {known}) in {url} failed: {why}"
        if full_reason(exc) is not None:
            fix = "free space on its disk"
            if self.dialect == "sqlite":
                fix += " (or raise the URL's max_bytes)"
        else:
            fix = "remove its cause"
        return (
            f"migrating {url} from schema version {max(have)} to {known} failed: {why}; nothing "
            f"was changed (it is still at version {max(have)}): {fix} and run `hubi bank init` "
            "again, or go on with the hubi that wrote it"
        )

    def durability_risks(self) -> list[str]:
        """The server's settings under which a commit it acknowledged can be lost in a crash
        of it or of its host ("fsync=off", ...); [] on SQLite (its URL refuses synchronous=OFF).
        One query (a node asks at start)."""
        if self.dialect != "postgresql":
            return []
        rows = self.reader().all(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('fsync', 'synchronous_commit', 'full_page_writes') ORDER BY name"
        )
        return [f"{name}={value}" for name, value in rows if value == "off"]

    def schema_version(self) -> int:
        return int(self.reader().scalar("SELECT MAX(version) FROM schema_version", default=0) or 0)

    # --- counters
    def reserve(self, name: str, count: int) -> int:
        """Reserve `count` consecutive values of counter `name`; returns the first (from 1)."""
        with self.transaction() as tx:
            row = tx.one(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value "
                "RETURNING value",
                (name, count),
            )
        assert row is not None
        return int(row[0]) - count + 1


def _created_tables(steps: Sequence[str]) -> list[str]:
    return [m.group(1) for step in steps if (m := re.match(r"\s*CREATE TABLE (\w+)", step))]


def _created_columns(steps: Sequence[str]) -> dict[str, list[str]]:
    """Each table the steps create, with the columns it is created with."""
    out: dict[str, list[str]] = {}
    for step in steps:
        m = re.match(r"\s*CREATE TABLE (\w+) \((.*)\)\s*$", step, re.S)
        if m:
            inner = re.sub(r"\([^()]*\)", "", m.group(2))  # PRIMARY KEY (a, b), CHECK (...)
            words = [part.split()[0] for part in inner.split(",") if part.strip()]
            out[m.group(1)] = [w for w in words if w.upper() not in ("PRIMARY", "UNIQUE")]
    return out


def open_store(
    url: str | os.PathLike[str], *, create: bool = True, migrate: bool = True, books: bool = True
) -> Store:
    """Open the bank database at `url`: made if missing (`create`; otherwise it must exist and,
    with `books`, hold the books' schema: StoreError names what is missing), and brought to the
    newest schema (`migrate`)."""
    return Store(url, create=create, migrate=migrate, books=books)
