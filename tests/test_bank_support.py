"""Shared pieces of the bank test suites (no tests here): worlds, banks, store URLs, tampering.

``store_url`` is parametrized over both stores: a SQLite file under ``tmp_path`` and a fresh
database on the real PostgreSQL server of ``tests.servers``.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hubi.bank import records as rec
from hubi.bank.engine import BankEngine
from hubi.bank.store import open_store
from hubi_core import codec
from tests.servers import postgres_db, postgres_server, postgres_url  # noqa: F401
from tests.world import World, make_world

__all__ = [
    "BACKENDS",
    "Sql",
    "book_pingpong",
    "clone_store",
    "make_bank",
    "make_url",
    "open_sql",
    "rewrite_and_recompute",
]

BACKENDS = ["sqlite", "postgresql"]


def make_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest, name: str = "bank") -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / (name + '.db')}"
    server = request.getfixturevalue("postgres_server")
    import re
    import uuid

    db = "t_%s_%s" % (
        re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:30],
        uuid.uuid4().hex[:8],
    )
    url = server.create_database(db)
    request.addfinalizer(lambda: server.drop_database(db))
    return url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL on each store (SQLite file, real PostgreSQL)."""
    return make_url(request.param, tmp_path, request)


def make_bank(
    url: str,
    world: World,
    bank: str = "BKA",
    accounts: tuple[str, ...] = (),
    fund: int = 0,
    **kw: Any,
) -> BankEngine:
    """An engine on `url` with its treasury and `accounts` open (and funded with `fund`)."""
    eng = BankEngine(url, world.banks[bank], world.trust, **kw)
    eng.setup_treasury(world.kmcs[bank])
    for a in accounts:
        acct = world.accounts.get(a) or world.open_account(a)
        eng.open_account(acct.template)
        if fund:
            assert eng.fund(a, fund).status == "booked"
    return eng


def book_pingpong(
    eng: BankEngine, world: World, a: str, b: str, count: int, batch: int = 50
) -> list[bytes]:
    """`count` notes alternating a->b and b->a (amounts and purposes vary); returns them."""
    notes = []
    for i in range(count):
        payer, payee = (a, b) if i % 2 == 0 else (b, a)
        serial = 1000 + i // 2
        notes.append(
            codec.encode(
                world.note(payer, payee, 10 + (i * 7) % 90, serial=serial, purpose=f"order {i}")
            )
        )
    for k in range(0, len(notes), batch):
        outs = eng.book_many(notes[k : k + batch])
        assert all(o.status == "booked" for o in outs), [o.reason for o in outs if not o.ok][:3]
    return notes


# ----------------------------------------------------------------------------- raw SQL access


class Sql:
    """Direct SQL on a bank database, as a tamperer with write access would use it."""

    def __init__(self, url: str):
        self.url = url
        self.store = open_store(url, migrate=False)
        self.tx = self.store.reader()

    def q(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.tx.all(sql, params)

    def x(self, sql: str, params: tuple = ()) -> None:
        self.tx.execute(sql, params)

    def body(self, book: str, n: int) -> bytes:
        return bytes(self.q("SELECT body FROM records WHERE book = ? AND n = ?", (book, n))[0][0])

    def set_body(self, book: str, n: int, body: bytes, hchain: bytes | None = None) -> None:
        if hchain is None:
            self.x("UPDATE records SET body = ? WHERE book = ? AND n = ?", (body, book, n))
        else:
            self.x(
                "UPDATE records SET body = ?, hchain = ? WHERE book = ? AND n = ?",
                (body, hchain, book, n),
            )

    def close(self) -> None:
        self.store.close()


def open_sql(url: str) -> Sql:
    return Sql(url)


def sqlite_copy(src: Path, dst: Path, script: str = "") -> str:
    """`src` copied to `dst` by sqlite3's online backup, with `script` (a damage, a loss) run
    on the copy; its URL."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    b.executescript(script)
    b.commit()
    b.close()
    return f"sqlite:///{dst}"


def clone_store(src: str, dst: str) -> None:
    """Copy a bank database (every table, row for row) into an empty one of either kind."""
    if src.startswith("sqlite:") and dst.startswith("sqlite:"):
        s = src.split("sqlite://", 1)[1]
        d = dst.split("sqlite://", 1)[1]
        con = sqlite3.connect(s)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        shutil.copy(s, d)
        return
    a = open_store(src, migrate=False)
    b = open_store(dst)
    ra = a.reader()
    tables = [
        "meta",
        "accounts",
        "books",
        "records",
        "register",
        "notes",
        "double_issues",
        "checkpoints",
        "counters",
        "allowances",
    ]
    with b.transaction() as tx:
        tx.execute("DELETE FROM register_head")
        tables.append("register_head")
        for t in tables:
            rows = ra.all(f"SELECT * FROM {t}")
            if not rows:
                continue
            cols = [c[0] for c in ra.execute(f"SELECT * FROM {t} LIMIT 1").description]
            marks = ",".join("?" * len(cols))
            tx.executemany(
                f"INSERT INTO {t} ({','.join(cols)}) VALUES ({marks})", [tuple(r) for r in rows]
            )
    a.close()
    b.close()


def rewrite_and_recompute(
    sql: Sql, book: str, n: int, change: Callable[[codec.Obj], None], head_n: int
) -> None:
    """What a writer without the bank key can do: change record n's note, recompute its lsum
    and every later XOR code and hash-chain value (signatures stay as they were)."""
    from hubi_core import lsum

    r = rec.Record.parse(sql.body(book, n))
    note = codec.decode(r.evidence, codec.NOTE)
    change(note)
    raw = codec.encode(note)
    new_lsum = lsum.of_note(note)
    amount = note["amount"]
    delta = -amount if r.kind == rec.DEBIT else amount
    prev = rec.Record.parse(sql.body(book, n - 1)) if n > 1 else None
    prev_h = (
        bytes(sql.q("SELECT hchain FROM records WHERE book = ? AND n = ?", (book, n - 1))[0][0])
        if n > 1
        else rec.ZERO32
    )
    ecode = rec.xor16(prev.ecode if prev else rec.ZERO16, new_lsum)
    r2 = dataclasses.replace(r, evidence=raw, lsum=new_lsum, delta=delta, ecode=ecode)
    body = r2.body()
    h = rec.chain_hash(prev_h, n, body)
    sql.set_body(book, n, body, h)
    for k in range(n + 1, head_n + 1):
        rk = rec.Record.parse(sql.body(book, k))
        ecode = rec.xor16(ecode, rk.lsum)
        rk2 = dataclasses.replace(rk, ecode=ecode)
        body = rk2.body()
        h = rec.chain_hash(h, k, body)
        sql.set_body(book, k, body, h)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    yield make_world()
