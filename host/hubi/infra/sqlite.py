"""One WAL-mode SQLite connection per thread to one database file, with write transactions."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from hubi.infra.per_thread import PerThread


def connect_wal(
    path: str | Path, synchronous: str = "NORMAL", timeout: float = 60.0
) -> sqlite3.Connection:
    """A connection to a WAL-mode database, usable from any thread, with explicit transactions
    (autocommit otherwise) and `timeout` seconds of waiting for another writer's lock."""
    c = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    try:  # a file that is no database fails here: closed now, not when collected
        _wal_mode(c, timeout)
        c.execute(f"PRAGMA synchronous={synchronous}")
        c.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    except BaseException:
        c.close()
        raise
    return c


def _wal_mode(c: sqlite3.Connection, timeout: float) -> None:
    """PRAGMA journal_mode=WAL, tried again while another connection holds the new file: SQLite
    answers that switch "database is locked" at once, without its busy wait, so two processes
    opening a new database together (the demo's two bank nodes on one orderer log) failed."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            c.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (the write lock at once, so no deadlock on upgrade) ... COMMIT; ROLLBACK
    and re-raise on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def newer_schema(what: str, have: object, known: int) -> str:
    """The refusal of a database a newer hubi wrote (an older build would read its rows by rules
    it does not know, or write old ones among them)."""
    return (
        f"{what} has schema version {have}, newer than this build knows ({known}):"
        " open it with the hubi that wrote it, or a newer one"
    )


def stamp_schema(conn: sqlite3.Connection, known: int, what: str, error: type[Exception]) -> None:
    """Give a new database this build's schema number (PRAGMA user_version, in the file's
    header), and refuse one that a newer build stamped: call it before creating any table."""
    have = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if have > known:
        raise error(newer_schema(what, have, known))
    if have < known:
        conn.execute(f"PRAGMA user_version = {int(known)}")


class ThreadSqlite:
    """A WAL-mode connection per thread (:class:`PerThread`: a finished thread's is closed when
    another thread opens one, all by close()). Errors are raised as `error` (the caller's
    exception class) with a message naming `what`."""

    def __init__(self, path: Path, error: type[Exception], what: str):
        self.path = Path(path)
        self._error = error
        self._what = what
        self._conns: PerThread[sqlite3.Connection] = PerThread(self._connect)
        self.closed = False

    def _connect(self) -> sqlite3.Connection:
        try:
            return connect_wal(self.path)
        except sqlite3.Error as exc:
            raise self._error(f"cannot open {self._what}: {exc}") from None

    def conn(self) -> sqlite3.Connection:
        if self.closed:
            raise self._error(f"{self._what} is closed")
        return self._conns.get()

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): committed on success, rolled back on error."""
        c = self.conn()
        with immediate(c):
            yield c

    def close(self) -> None:
        self.closed = True
        self._conns.close()

    def open_count(self) -> int:
        """How many connections are open (one per live thread that used this database)."""
        return self._conns.open_count()
