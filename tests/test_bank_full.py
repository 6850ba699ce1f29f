"""A bank node whose database is full: uploads get 503 ``store-full`` naming the cause and the
remedy, nothing accepted before is lost or half-booked, and once there is room the refused note
books. Two ways to fill it, each a real `hubi bank serve`:
- a SQLite file capped with the store URL's ``max_bytes`` (SQLite fails the write exactly as on a
  full disk);
- PostgreSQL with the bank's database in a tablespace on a small real disk (a tmpfs), whose
  writes fail with ENOSPC: the server answers ``disk_full`` (SQLSTATE 53100)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from psycopg import sql

from hubi.bank import audit as audit_mod
from hubi.bank.client import BankClient, BankError
from hubi.bank.engine import BankEngine
from hubi.bank.store import Store
from hubi.infra.postgres_server import ensure_traversable
from tests import bank_nodes
from tests.bank_nodes import Account, NodeProcess, prepare_bank
from tests.servers import shared_postgres
from tests.small_disk import resize, small_disk, used

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes

FUNDS = 10**6
AMOUNT = 7


def _prepare(home: Path, db: str) -> tuple[Account, Account]:
    """The treasury and two funded accounts in `db`."""
    accts = prepare_bank(home, "BKA", db, accounts=2, funds=FUNDS)
    return accts["BKA-000001"], accts["BKA-000002"]


def _fill_then_make_room(
    home: Path,
    db: str,
    node: NodeProcess,
    payer_payee: tuple[Account, Account],
    full_words: str,
    make_room: Callable[[], None],
    remedy: str,
) -> None:
    """Upload notes from payer to payee through `node` until the database is full; check the
    refusal (one line holding the database's `full_words` and the `remedy`), the books and,
    after `make_room`, that the refused note books once."""
    a, b = payer_payee
    booked: list[bytes] = []
    refused = None
    with BankClient(node.url, timeout=30) as client:
        for serial in range(1, 2000):
            note = a.note(b.id, AMOUNT, serial)
            try:
                assert client.upload(note).booked
            except BankError as exc:
                refused = (note, exc)
                break
            booked.append(note)
        assert refused is not None, "the database never filled"
        note, exc = refused
        assert (exc.status, exc.code) == (503, "store-full"), exc
        assert full_words in exc.message and remedy in exc.message, exc.message
        assert "nothing was stored" in exc.message and "\n" not in exc.message, exc.message
        assert len(booked) >= 5
        # still full: the same note is refused the same way, and the node stays up
        with pytest.raises(BankError, match="store-full"):
            client.upload(note)
        assert client.health()["status"] == "ok"
    node.stop()
    # room first: a new PostgreSQL session may have to write its relation-cache file, and a
    # full disk refuses the session itself (FATAL "could not write init file")
    make_room()
    # everything answered booked is booked once, the refused note not at all, the books clean
    with BankEngine.open(db, home=home, bank="BKA") as eng:
        assert eng.balance(a.id) == FUNDS - AMOUNT * len(booked)
        assert eng.balance(b.id) == FUNDS + AMOUNT * len(booked)
        report = audit_mod.audit(eng.store, trust=eng.trust, keys=eng.keys)
        assert report.ok, [f.as_dict() for f in report.findings][:5]
    node.start()
    with BankClient(node.url, timeout=30) as client:
        out = client.upload(note)
        assert out.booked and not out.duplicate
    node.stop()
    with BankEngine.open(db, home=home, bank="BKA") as eng:
        assert eng.balance(a.id) == FUNDS - AMOUNT * (len(booked) + 1)
        assert audit_mod.audit(eng.store, trust=eng.trust, keys=eng.keys).ok


def test_a_full_sqlite_database_answers_store_full_and_loses_nothing(
    tmp_path: Path, bank_world, nodes
) -> None:
    home = bank_world.home
    db = f"sqlite:///{tmp_path}/bank.db"
    pair = _prepare(home, db)
    with Store(db) as store:  # about 30 bookings of room beyond what is there
        c = store.conn()
        size = (
            c.execute("PRAGMA page_count").fetchone()[0]
            * c.execute("PRAGMA page_size").fetchone()[0]
        )
    node = nodes(home, "BKA", db=f"{db}?max_bytes={size + 64 * 1024}").start()

    def make_room() -> None:  # a larger cap
        node.db = f"{db}?max_bytes={size + 1024 * 1024}"

    _fill_then_make_room(
        home,
        db,
        node,
        pair,
        "(database or disk is full)",
        make_room,
        "raise the database's max_bytes",
    )


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A folder of this test's own under the system's temporary folder (1777)."""
    d = Path(tempfile.mkdtemp(prefix="hubi-full-disk-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_full_postgresql_disk_answers_store_full_and_loses_nothing(
    outside_tmp: Path, bank_world, nodes
) -> None:
    home = bank_world.home
    server = shared_postgres()
    name = f"hubi_full_{os.getpid()}"
    # the bank's whole database (its copy of the catalogs too) in a tablespace on that disk;
    # mounted outside pytest's tree, whose root any pytest session starting meanwhile makes
    # 0700 again (the server, another user, then cannot reach the tablespace)
    with small_disk(outside_tmp / "disk", 64 * 2**20, owner=server.os_user) as disk:
        ensure_traversable(disk)  # the server runs as its own user
        with server.connect(autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(
                    sql.Identifier(name), sql.Literal(str(disk))
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} TABLESPACE {}").format(
                    sql.Identifier(name), sql.Identifier(name)
                )
            )
        try:
            db = server.url_for(name)
            pair = _prepare(home, db)
            resize(disk, used(disk) + 256 * 1024)  # a few dozen bookings of room
            node = nodes(home, "BKA", db=db).start()
            _fill_then_make_room(
                home,
                db,
                node,
                pair,
                "No space left on device)",
                lambda: resize(disk, 64 * 2**20),
                "free disk space on the database server",
            )
        finally:
            server.drop_database(name)
            with server.connect(autocommit=True) as conn:
                conn.execute(sql.SQL("DROP TABLESPACE IF EXISTS {}").format(sql.Identifier(name)))
