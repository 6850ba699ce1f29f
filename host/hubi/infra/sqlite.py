"""One WAL-mode SQLite connection per thread to one database file, with write transactions."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path


class ThreadSqlite:
    """Connections are opened lazily per thread and all closed by close(). Errors are raised as
    `error` (the caller's exception class) with a message naming `what`."""

    def __init__(self, path: Path, error: type[Exception], what: str):
        self.path = Path(path)
        self._error = error
        self._what = what
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.closed = False

    def conn(self) -> sqlite3.Connection:
        if self.closed:
            raise self._error(f"{self._what} is closed")
        c = getattr(self._local, "conn", None)
        if c is None:
            try:
                c = sqlite3.connect(
                    str(self.path), timeout=60, isolation_level=None, check_same_thread=False
                )
                c.execute("PRAGMA journal_mode=WAL")
                c.execute("PRAGMA synchronous=NORMAL")
                c.execute("PRAGMA busy_timeout=60000")
            except sqlite3.Error as exc:
                raise self._error(f"cannot open {self._what}: {exc}") from None
            self._local.conn = c
            with self._lock:
                self._conns.append(c)
        return c

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): committed on success, rolled back on error."""
        c = self.conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def close(self) -> None:
        self.closed = True
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(sqlite3.Error):
                c.close()
