"""ThreadSqlite: one connection per thread, and none left behind by threads that finished."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from hubi.infra.sqlite import ThreadSqlite


class Failed(Exception):
    pass


def _in_thread(db: ThreadSqlite, out: list[sqlite3.Connection]) -> None:
    def use() -> None:
        with db.tx() as c:
            c.execute("INSERT INTO t VALUES (?)", (threading.current_thread().name,))
        out.append(db.conn())

    t = threading.Thread(target=use)
    t.start()
    t.join()


def test_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    db = ThreadSqlite(tmp_path / "x.db", Failed, "test database")
    with db.tx() as c:
        c.execute("CREATE TABLE t (who TEXT)")
    assert db.open_count() == 1
    left: list[sqlite3.Connection] = []
    for _ in range(5):
        _in_thread(db, left)
    # each new thread's open closed the one before it, whose thread had finished
    assert db.open_count() == 2  # this thread's and the last thread's
    for c in left[:-1]:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            c.execute("SELECT 1")
    assert left[-1].execute("SELECT COUNT(*) FROM t").fetchone() == (5,)
    # a thread still running keeps its connection open while others come and go
    hold, release = threading.Event(), threading.Event()
    kept: list[sqlite3.Connection] = []

    def long_lived() -> None:
        kept.append(db.conn())
        hold.set()
        release.wait(10)

    t = threading.Thread(target=long_lived)
    t.start()
    hold.wait(10)
    _in_thread(db, left)
    release.set()
    t.join()
    assert kept[0].execute("SELECT COUNT(*) FROM t").fetchone() == (6,)
    db.close()
    assert db.open_count() == 0
    with pytest.raises(Failed, match="test database is closed"):
        db.conn()
