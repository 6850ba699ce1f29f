"""The bank store's SQLite URL options: the durability it is asked for, and clear refusals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hubi.bank.store import Store, StoreError, display_url, open_store, parse_url
from tests.servers import postgres_db  # noqa: F401


@pytest.mark.parametrize(("option", "pragma"), [("NORMAL", 1), ("full", 2), ("EXTRA", 3)])
def test_sqlite_synchronous_option_reaches_the_connection(
    tmp_path: Path, option: str, pragma: int
) -> None:
    store = Store(f"sqlite:///{tmp_path}/b.db?synchronous={option}")
    try:
        assert store.conn().execute("PRAGMA synchronous").fetchone()[0] == pragma
        assert store.conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def test_sqlite_synchronous_off_or_unknown_is_refused_by_name(tmp_path: Path) -> None:
    for bad in ("OFF", "sometimes"):
        with pytest.raises(
            StoreError, match=f"synchronous must be NORMAL, FULL or EXTRA, not {bad.upper()}"
        ):
            Store(f"sqlite:///{tmp_path}/b.db?synchronous={bad}")
    assert not (tmp_path / "b.db").exists()


def test_a_misspelt_sqlite_option_is_refused_by_name(tmp_path: Path) -> None:
    """`?synchronus=full` was ignored: the operator asked for FULL and got NORMAL, unaware."""
    with pytest.raises(
        StoreError,
        match=r"unknown option synchronus \(a SQLite URL takes synchronous and max_bytes\)",
    ):
        Store(f"sqlite:///{tmp_path}/b.db?synchronus=full")
    assert not (tmp_path / "b.db").exists()


def test_a_database_a_newer_hubi_migrated_is_refused(tmp_path: Path) -> None:
    """A node, an audit or `bank init` of an older build would read records by rules it does
    not know, or write old ones among them: each refuses the database and says why."""
    url = f"sqlite:///{tmp_path}/b.db"
    Store(url).close()
    db = sqlite3.connect(tmp_path / "b.db")
    db.execute("INSERT INTO schema_version VALUES (99, 'from a newer hubi', 0)")
    db.commit()
    db.close()
    before = (tmp_path / "b.db").read_bytes()
    words = r"schema version 99, newer than this build knows \(\d+\)"
    with pytest.raises(StoreError, match=words):
        Store(url)  # bank init, a node: migrates
    with pytest.raises(StoreError, match=words):
        open_store(url, create=False, migrate=False)  # an audit
    assert (tmp_path / "b.db").read_bytes() == before


def test_sqlite_in_a_missing_folder_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="folder .*nowhere does not exist"):
        Store(f"sqlite:///{tmp_path}/nowhere/b.db")


def test_sqlite_max_bytes_caps_the_database_file(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/b.db?max_bytes=1048576")
    try:
        page = store.conn().execute("PRAGMA page_size").fetchone()[0]
        assert store.conn().execute("PRAGMA max_page_count").fetchone()[0] == 1048576 // page
    finally:
        store.close()


def test_sqlite_max_bytes_that_is_no_size_is_refused_by_name(tmp_path: Path) -> None:
    for bad in ("lots", "-5", "1000", "²"):  # '²' passed str.isdigit(), then failed int()
        with pytest.raises(StoreError, match=f"max_bytes must be .* not '{bad}'"):
            Store(f"sqlite:///{tmp_path}/b.db?max_bytes={bad}")
    assert not (tmp_path / "b.db").exists()


def test_sqlite_urls_name_one_file_however_many_slashes() -> None:
    """`sqlite:///abs` and `sqlite:////abs` (the second is what ``"sqlite:///" + str(path)``
    makes of an absolute path) name the same file, spelled once, as messages print it."""
    assert parse_url("sqlite:///tmp/b.db").target == "/tmp/b.db"
    assert parse_url("sqlite:////tmp/b.db").target == "/tmp/b.db"
    assert parse_url("sqlite:b.db").target == parse_url("b.db").target == "b.db"


def test_a_hot_backup_reads_its_url_as_the_books_do(tmp_path: Path) -> None:
    """The replica's database had its own URL parser, which made `?max_bytes=...` part of the
    file name. Every spelling now lands in the file `parse_url` names, and nowhere else; the
    books' options, which a replica does not apply, are refused by name."""
    from hubi.bank.replica import ReplicaError, ReplicaStore

    target = tmp_path / "r.db"
    with pytest.raises(ReplicaError, match=r"takes no options \(max_bytes\)"):
        ReplicaStore(f"sqlite:///{target}?max_bytes=1000000")
    assert not list(tmp_path.iterdir())
    for url in (f"sqlite:///{target}", f"sqlite://{target}", f"sqlite:{target}", str(target)):
        ReplicaStore(url).close()  # it writes its schema on opening
        assert parse_url(url).target == str(target)
        names = {p.name for p in tmp_path.iterdir()} - {"r.db-wal", "r.db-shm"}
        assert names == {"r.db"}, (url, names)


@pytest.fixture(params=["sqlite", "postgresql"])
def replica_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A hot backup's database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_db")
    return str(tmp_path / "r.db")


def test_a_hot_backup_database_a_newer_hubi_wrote_is_refused(replica_url: str) -> None:
    """The replica's database had no schema number: an older build would have stored records
    in a newer one's. It now records one when it is made, and refuses a newer one (or one that
    is not a number) before it stores anything."""
    from hubi.bank.replica import SCHEMA_VERSION, ReplicaError, ReplicaStore

    store = ReplicaStore(replica_url)
    try:
        assert store.get_meta("schema") == str(SCHEMA_VERSION)
        store.put([(0, "BKA-000001", 1, b"body", b"h" * 32)])
        store.set_meta("schema", str(SCHEMA_VERSION + 1))
    finally:
        store.close()
    with pytest.raises(
        ReplicaError,
        match=rf"hot backup's database .* has schema version {SCHEMA_VERSION + 1}, newer than"
        rf" this build knows \({SCHEMA_VERSION}\)",
    ):
        ReplicaStore(replica_url)
    for bad in ("two", ""):
        _set_replica_schema(replica_url, bad)
        with pytest.raises(ReplicaError, match=f"schema number that is not a number: '{bad}'"):
            ReplicaStore(replica_url)
    # this build's own number: opens as before
    _set_replica_schema(replica_url, str(SCHEMA_VERSION))
    store = ReplicaStore(replica_url)
    try:
        assert store.count() == 1
    finally:
        store.close()


def test_a_hot_backup_counts_its_records_as_it_stores_them(replica_url: str) -> None:
    """/health gave the records held by a COUNT over them all on every health check (at 10^6
    rows: 2 s cold, 0.03 s warm). The count is kept as records are stored, and counted once in a
    database that has none."""
    from hubi.bank.replica import ReplicaStore

    store = ReplicaStore(replica_url)
    try:
        rows = [(i, "BKA-000001", i + 1, b"body", bytes(32)) for i in range(5)]
        assert store.put(rows[:3]) == 3 and store.count() == 3
        assert store.put(rows) == 2 and store.count() == 5  # the three held are not counted again
        assert store.get_meta("records") == "5"
        with store.tx() as c:  # a database from before the kept count
            store._exec(c, "DELETE FROM replica_meta WHERE key = 'records'")
        assert store.count() == 5 and store.get_meta("records") == "5"
        assert store.put([(9, "BKA-000002", 1, b"b", bytes(32))]) == 1 and store.count() == 6
    finally:
        store.close()


def _set_replica_schema(url: str, value: str) -> None:
    """Write the schema number behind the store's back (as a newer build or damage would)."""
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            db.execute("UPDATE replica_meta SET value = %s WHERE key = 'schema'", (value,))
        return
    with sqlite3.connect(url) as db:
        db.execute("UPDATE replica_meta SET value = ? WHERE key = 'schema'", (value,))
    db.close()


def test_a_refused_url_does_not_repeat_its_password() -> None:
    """A URL of the wrong scheme is quoted in the error; its password was quoted with it."""
    with pytest.raises(StoreError) as caught:
        parse_url("mysql://bob:hunter2@db.example/books")
    assert "hunter2" not in str(caught.value)
    assert "'mysql://bob:***@db.example/books': scheme must be" in str(caught.value)


def test_a_password_in_the_query_is_not_shown_either() -> None:
    """libpq also takes ?password= (and ?sslpassword=): errors and the serve log showed it."""
    shown = display_url("postgresql://u@127.0.0.1:1/db?sslmode=disable&password=topsecret")
    assert shown == "postgresql://u@127.0.0.1:1/db?sslmode=disable&password=***"
    shown = display_url("postgresql://u:pw1@h/db?SSLPASSWORD=pw2&password=pw3")
    assert "pw" not in shown and shown.count("***") == 3, shown
    # a URL urlsplit refuses: the part after the scheme is not shown at all
    assert display_url("postgresql://u:pw@[::1") == "postgresql://… (not a URL that parses)"
    assert display_url("sqlite:///rel/b.db") == "sqlite:///rel/b.db"  # as given


def test_a_database_that_lost_a_table_is_refused_by_name(tmp_path: Path) -> None:
    """The notes index dropped: the audit said clean (it reads the records) while every booking
    failed on the missing table. Opening the books now names what is gone, for a command that
    reads them and for `bank init` (which migrates) alike."""
    url = f"sqlite:///{tmp_path}/b.db"
    open_store(url).close()
    con = sqlite3.connect(tmp_path / "b.db")
    con.execute("DROP TABLE notes")
    con.execute("DROP TABLE merkle_nodes")
    con.commit()
    con.close()
    for create in (False, True):
        with pytest.raises(StoreError) as caught:
            open_store(url, create=create)
        assert "lacks the table(s) notes, merkle_nodes of its schema" in str(caught.value)
