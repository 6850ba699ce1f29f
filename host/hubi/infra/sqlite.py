"""One WAL-mode SQLite connection per thread to one database file, with write transactions."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path


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
    """Connections are opened lazily per thread; a finished thread's is closed when another
    thread opens one, and all by close(). Errors are raised as `error` (the caller's exception
    class) with a message naming `what`."""

    def __init__(self, path: Path, error: type[Exception], what: str):
        self.path = Path(path)
        self._error = error
        self._what = what
        self._local = threading.local()
        # each connection with the thread it was opened for, so a finished thread's can close
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._lock = threading.Lock()
        self.closed = False

    def conn(self) -> sqlite3.Connection:
        if self.closed:
            raise self._error(f"{self._what} is closed")
        c = getattr(self._local, "conn", None)
        if c is None:
            try:
                c = connect_wal(self.path)
            except sqlite3.Error as exc:
                raise self._error(f"cannot open {self._what}: {exc}") from None
            self._local.conn = c
            with self._lock:
                # threads come and go (a log reader restarted after an error, a pool that shrank):
                # close what finished threads left open, so connections do not pile up until close
                done = [x for t, x in self._conns if not t.is_alive()]
                self._conns = [(t, x) for t, x in self._conns if t.is_alive()]
                self._conns.append((threading.current_thread(), c))
            _close_all(done)
        return c

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): committed on success, rolled back on error."""
        c = self.conn()
        with immediate(c):
            yield c

    def close(self) -> None:
        self.closed = True
        with self._lock:
            conns, self._conns = self._conns, []
        _close_all(c for _, c in conns)

    def open_count(self) -> int:
        """How many connections are open (one per live thread that used this database)."""
        with self._lock:
            return len(self._conns)


def _close_all(conns: Iterable[sqlite3.Connection]) -> None:
    for c in conns:
        with contextlib.suppress(sqlite3.Error):
            c.close()
