"""The ordering service's interface, and the embedded orderer on SQLite.

An orderer keeps one append-only keyspace under a prefix and gives every key it creates a
revision, increasing in the order of creation. That is all the consortium needs:

- ``claim(key, value)``: create ``key`` only if it never existed (one atomic step). Of any number
  of concurrent claims of one key, across all banks, exactly one gets ``created=True``; the others
  get the winner's value and revision. A note id claimed this way settles at most once.
- ``events(after)``: every created key with revision > ``after``, in revision order, then the
  new ones as they come (blocking), until ``stop`` is set. Each bank applies these in order and
  remembers the last revision it applied, so it resumes exactly there after a restart.
- ``get``, ``put`` (plain overwrite, for reports and marks outside the log), ``scan``,
  ``revision``.
- ``forget(through, marks=..., record=...)``: delete the log's keys created at or before
  revision ``through``, once every bank has applied them, so that the log does not grow for
  ever. Each deletion happens only while every bank's mark (``marks``: keys holding
  :func:`revision_value`) still stands at or past ``through``, and writes under ``record`` with
  it the newest create revision forgotten so far (never lowered): a bank whose state went back
  (restored from an older backup) stops the forgetting as soon as its lower mark lands, and
  finds under ``record`` whether anything it has still to apply went before. It is the newest
  key forgotten, not ``through``, so that a bank restored while a round ran, which lost
  nothing if every key that went is older than its state, is not stopped for nothing. A claim
  of a forgotten key succeeds again; the appliers, which all hold the first one, make it settle
  nothing.

Two implementations share it: :class:`hubi.consortium.etcd_orderer.EtcdOrderer` (a real etcd
cluster: Raft; etcd revisions are the order) and :class:`SqliteOrderer` (one SQLite file; for one
machine, e.g. ``make demo``; several processes on that machine may share the file).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hubi.consortium.errors import MarkFell, OrdererError
from hubi.infra.sqlite import ThreadSqlite, stamp_schema

__all__ = [
    "Claim",
    "LogEvent",
    "Orderer",
    "SqliteOrderer",
    "mark_stands",
    "read_revision",
    "revision_value",
]


def revision_value(revision: int) -> bytes:
    """A revision as a value beside the log (a bank's mark, how far the log forgot): 20 ASCII
    digits, so that byte order is number order and etcd can compare marks in a transaction."""
    return b"%020d" % revision


def read_revision(value: bytes) -> int | None:
    """The revision in a value written by :func:`revision_value` (or plain digits); None if it
    is not one."""
    return int(value) if value.isdigit() and len(value) <= 20 else None


def mark_stands(value: bytes | None, through: int) -> bool:
    """Whether a bank's mark (None: it has none) lets the log forget through ``through``."""
    return value is not None and (read_revision(value) or 0) >= through


@dataclass(frozen=True)
class Claim:
    """Outcome of a claim: ``created`` (this call created the key), the key's create revision
    (its place in the order) and the value stored under it (ours if created)."""

    created: bool
    revision: int
    value: bytes


@dataclass(frozen=True)
class LogEvent:
    revision: int
    key: bytes  # relative to the orderer's prefix
    value: bytes


class Orderer(Protocol):
    """What the consortium needs from an ordering service (see the module docstring)."""

    kind: str
    description: str

    def claim(self, key: bytes, value: bytes) -> Claim: ...

    def get(self, key: bytes) -> Claim | None: ...

    def put(self, key: bytes, value: bytes) -> int: ...

    def scan(self, prefix: bytes) -> list[tuple[bytes, bytes, int]]: ...

    def events(
        self, after: int, stop: threading.Event, prefix: bytes = b"log/"
    ) -> Iterator[LogEvent]: ...

    def revision(self) -> int: ...

    def forget(
        self,
        through: int,
        prefix: bytes = b"log/",
        *,
        marks: Sequence[bytes] = (),
        record: bytes | None = None,
    ) -> int: ...

    def health(self) -> dict[str, bool]: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------ SQLite

SCHEMA_VERSION = 1  # PRAGMA user_version: a newer build's file is refused
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS log (
        rev INTEGER PRIMARY KEY AUTOINCREMENT,
        key BLOB NOT NULL UNIQUE,
        value BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS kv (
        key BLOB PRIMARY KEY,
        value BLOB NOT NULL,
        rev INTEGER NOT NULL)""",
]


class SqliteOrderer:
    """The embedded orderer: the same interface over one SQLite file (WAL).

    Keys created by ``claim`` go to an append-only table whose AUTOINCREMENT row id is the
    revision; ``put`` keys (reports) to a second table and do not appear in ``events``. Within
    one process, waiters wake as soon as a claim commits; other processes sharing the file see
    new entries within ``poll`` seconds.
    """

    kind = "embedded"

    def __init__(self, path: str | Path, *, prefix: bytes = b"", poll: float = 0.05):
        self.path = Path(path)
        self.prefix = prefix
        self.poll = poll
        self.description = f"embedded SQLite orderer {self.path}"
        if not self.path.parent.is_dir():
            raise OrdererError(f"cannot open {self.path}: folder {self.path.parent} does not exist")
        self._db = ThreadSqlite(self.path, OrdererError, self.description)
        self._cond = threading.Condition()
        with self._db.tx() as c:
            stamp_schema(c, SCHEMA_VERSION, self.description, OrdererError)
            for sql in _SCHEMA:
                c.execute(sql)

    def __repr__(self) -> str:
        return f"SqliteOrderer({str(self.path)!r})"

    def _k(self, key: bytes) -> bytes:
        return self.prefix + key

    def claim(self, key: bytes, value: bytes) -> Claim:
        k = self._k(key)
        try:
            with self._db.tx() as c:
                row = c.execute("SELECT rev, value FROM log WHERE key = ?", (k,)).fetchone()
                if row is not None:
                    return Claim(False, int(row[0]), bytes(row[1]))
                cur = c.execute("INSERT INTO log (key, value) VALUES (?, ?)", (k, value))
                rev = int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise OrdererError(f"claim of {key!r} in {self.description} failed: {exc}") from None
        with self._cond:
            self._cond.notify_all()
        return Claim(True, rev, value)

    def get(self, key: bytes) -> Claim | None:
        c = self._db.conn()
        row = c.execute("SELECT rev, value FROM log WHERE key = ?", (self._k(key),)).fetchone()
        if row is not None:
            return Claim(False, int(row[0]), bytes(row[1]))
        row = c.execute("SELECT rev, value FROM kv WHERE key = ?", (self._k(key),)).fetchone()
        return None if row is None else Claim(False, int(row[0]), bytes(row[1]))

    def put(self, key: bytes, value: bytes) -> int:
        with self._db.tx() as c:
            return _put(c, self._k(key), value)

    def scan(self, prefix: bytes) -> list[tuple[bytes, bytes, int]]:
        p = self._k(prefix)
        n = len(self.prefix)
        c = self._db.conn()
        rows = c.execute(
            "SELECT key, value, rev FROM log WHERE substr(key, 1, ?) = ? "
            "UNION ALL SELECT key, value, rev FROM kv WHERE substr(key, 1, ?) = ? ORDER BY 1",
            (len(p), p, len(p), p),
        ).fetchall()
        return [(bytes(k)[n:], bytes(v), int(r)) for k, v, r in rows]

    def revision(self) -> int:
        return _head(self._db.conn())

    def forget(
        self,
        through: int,
        prefix: bytes = b"log/",
        *,
        marks: Sequence[bytes] = (),
        record: bytes | None = None,
    ) -> int:
        p = self._k(prefix)
        try:
            with self._db.tx() as c:  # one transaction: the marks cannot fall in between
                for mark in marks:
                    row = c.execute("SELECT value FROM kv WHERE key = ?", (self._k(mark),))
                    found = row.fetchone()
                    if not mark_stands(None if found is None else bytes(found[0]), through):
                        raise MarkFell(mark, through, 0)
                revs = c.execute(
                    "DELETE FROM log WHERE rev <= ? AND substr(key, 1, ?) = ? RETURNING rev",
                    (through, len(p), p),
                ).fetchall()
                if not revs:
                    return 0
                gone, top = len(revs), max(r[0] for r in revs)
                if record is not None:  # never lowered (a key a stopped round left behind)
                    row = c.execute("SELECT value FROM kv WHERE key = ?", (self._k(record),))
                    found = row.fetchone()
                    before = (read_revision(bytes(found[0])) or 0) if found is not None else 0
                    _put(c, self._k(record), revision_value(max(before, int(top))))
                return gone
        except sqlite3.Error as exc:
            raise OrdererError(f"forgetting the log in {self.description} failed: {exc}") from None

    def events(
        self, after: int, stop: threading.Event, prefix: bytes = b"log/"
    ) -> Iterator[LogEvent]:
        p = self._k(prefix)
        n = len(self.prefix)
        last = after
        while not stop.is_set():
            rows = (
                self._db.conn()
                .execute(
                    "SELECT rev, key, value FROM log WHERE rev > ? ORDER BY rev LIMIT 512",
                    (last,),
                )
                .fetchall()
            )
            for rev, key, value in rows:
                last = int(rev)
                k = bytes(key)
                if k.startswith(p):
                    yield LogEvent(last, k[n:], bytes(value))
                if stop.is_set():
                    return
            if not rows:
                with self._cond:
                    self._cond.wait(self.poll)

    def health(self) -> dict[str, bool]:
        try:
            self._db.conn().execute("SELECT 1").fetchone()
            return {str(self.path): True}
        except (sqlite3.Error, OrdererError):
            return {str(self.path): False}

    def close(self) -> None:
        self._db.close()
        with self._cond:
            self._cond.notify_all()


def _put(c: sqlite3.Connection, key: bytes, value: bytes) -> int:
    rev = _head(c)  # revisions count the log's keys only: a key beside it takes the current one
    c.execute(
        "INSERT INTO kv (key, value, rev) VALUES (?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, rev = excluded.rev",
        (key, value, rev),
    )
    return rev


def _head(c: sqlite3.Connection) -> int:
    """The last revision given out: AUTOINCREMENT's counter, which forget() does not lower."""
    row = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'log'").fetchone()
    return int(row[0]) if row else 0


def wait_until(predicate: object, timeout: float, interval: float = 0.01) -> bool:
    """Poll a zero-argument callable until it returns true or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
