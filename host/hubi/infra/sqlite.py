"""One WAL-mode SQLite connection per thread to one database file, with write transactions."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from hubi.infra.per_thread import PerThread


def connect_wal(
    path: str | Path, synchronous: str = "NORMAL", timeout: float = 60.0
) -> sqlite3.Connection:
    """A connection to a WAL-mode database, usable from any thread, with explicit transactions
    (autocommit otherwise) and `timeout` seconds of waiting for another writer's lock."""
    c = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute(f"PRAGMA synchronous={synchronous}")
    c.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return c


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
