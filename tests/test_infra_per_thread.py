"""PerThread under the bank's store (SQLite and a real PostgreSQL server) and the hot backup's
replica store: a finished thread's connection is closed when another thread opens one, so a
long-running node keeps about one connection per live thread (anyio's worker threads end after a
while idle and new ones take their place)."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from hubi.bank.replica import ReplicaStore
from hubi.bank.store import Store
from tests import servers

postgres_server = servers.postgres_server
postgres_db = servers.postgres_db


def _query_in_threads(query, count: int) -> None:
    """Run `query` once in each of `count` threads, one after the other."""
    for _ in range(count):
        t = threading.Thread(target=query)
        t.start()
        t.join()


def _backends(url: str) -> int:
    """Server-side connections to the database of `url` (other than this one)."""
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0])


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_store_closes_connections_of_finished_threads(dialect, tmp_path: Path, request) -> None:
    url = (
        str(tmp_path / "bank.db") if dialect == "sqlite" else request.getfixturevalue("postgres_db")
    )
    store = Store(url)
    try:
        _query_in_threads(lambda: store.conn().execute("SELECT 1").fetchall(), 6)
        # each thread's open closed the connections of those that had finished before it
        assert store._conns.open_count() <= 2
        if dialect == "postgresql":
            assert _backends(url) <= 2
        # a thread still running keeps its connection while others come and go
        hold, release = threading.Event(), threading.Event()

        def long_lived() -> None:
            c = store.conn()
            hold.set()
            release.wait(10)
            assert c.execute("SELECT 1").fetchall()

        t = threading.Thread(target=long_lived)
        t.start()
        hold.wait(10)
        _query_in_threads(lambda: store.conn().execute("SELECT 1").fetchall(), 3)
        release.set()
        t.join()
    finally:
        store.close()
    assert store._conns.open_count() == 0
    if dialect == "postgresql":
        assert _backends(url) == 0


def test_replica_store_closes_connections_of_finished_threads(tmp_path: Path) -> None:
    replica = ReplicaStore(f"sqlite:///{tmp_path / 'replica.db'}")
    try:
        _query_in_threads(replica.next_seq, 5)
        assert replica._conns.open_count() <= 2
        assert replica.next_seq() == 0
    finally:
        replica.close()
    assert replica._conns.open_count() == 0
