"""One database connection per thread, none left behind by threads that finished."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class PerThread(Generic[C]):
    """Connections opened lazily by `connect`, one per thread.

    Threads come and go (anyio's worker threads end after a while idle, a log reader is restarted
    after an error), so when a thread opens its connection, those of finished threads are closed:
    a long-running process keeps about one connection per live thread, not one per thread it ever
    ran. ``close()`` closes them all; a thread that asks again afterwards gets a new one."""

    def __init__(self, connect: Callable[[], C]):
        self._connect = connect
        self._local = threading.local()
        self._open: list[tuple[threading.Thread, C]] = []
        self._lock = threading.Lock()

    def get(self) -> C:
        conn: C | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                done = [c for t, c in self._open if not t.is_alive()]
                self._open = [(t, c) for t, c in self._open if t.is_alive()]
                self._open.append((threading.current_thread(), conn))
            _close_all(done)
        return conn

    def discard(self) -> None:
        """Forget this thread's connection (closed under it: the server went away); the
        thread's next `get` opens a new one."""
        conn: C | None = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._lock:
            self._open = [(t, c) for t, c in self._open if c is not conn]
        _close_all([conn])

    def open_count(self) -> int:
        """Connections open now (one per live thread that asked, at most)."""
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        with self._lock:
            conns, self._open = [c for _, c in self._open], []
            self._local = threading.local()
        _close_all(conns)


def _close_all(conns: list[C]) -> None:
    for c in conns:
        with contextlib.suppress(Exception):  # closing is best effort: the peer may be gone
            c.close()
