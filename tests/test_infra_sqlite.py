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


def _user_version(path: Path, set_to: int | None = None) -> int:
    db = sqlite3.connect(path)
    try:
        if set_to is not None:
            db.execute(f"PRAGMA user_version = {set_to}")
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_state_and_log_files_a_newer_build_stamped_are_refused_untouched(tmp_path: Path) -> None:
    """A bank's consortium state and the embedded orderer's log carry their schema number in the
    file's header; an older build refuses a newer file instead of reading (and writing) it."""
    from hubi.consortium import orderer, state
    from hubi.consortium.errors import ConsortiumError, OrdererError
    from hubi.consortium.orderer import SqliteOrderer
    from hubi.consortium.state import ConsortiumState

    opens = [
        ("state.db", lambda p: ConsortiumState(p, "embedded:hubi/x/"), ConsortiumError, state),
        ("log.db", lambda p: SqliteOrderer(p, prefix=b"hubi/x/"), OrdererError, orderer),
    ]
    for name, open_, error, module in opens:
        path, known = tmp_path / name, module.SCHEMA_VERSION
        open_(path).close()
        assert _user_version(path) == known
        _user_version(path, set_to=9)
        before = path.read_bytes()
        words = rf"schema version 9, newer than this build knows \({known}\)"
        with pytest.raises(error, match=words):
            open_(path)
        assert path.read_bytes() == before
        _user_version(path, set_to=0)  # a file from before the stamp: taken, and stamped
        open_(path).close()
        assert _user_version(path) == known
