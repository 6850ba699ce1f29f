"""Tamper suite: a real book of thousands of records, on SQLite and on a real PostgreSQL server;
each tampering is applied with plain SQL (as anyone with write access to the database could)
and the audit must detect it and name the right record and the right kind."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hubi.bank import audit
from hubi.bank import records as rec
from hubi.bank.engine import BankEngine
from hubi_core import codec
from tests.test_bank_support import (
    Sql,
    book_pingpong,
    clone_store,
    make_bank,
    make_url,
    postgres_server,  # noqa: F401
    rewrite_and_recompute,
)
from tests.world import World, make_world

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("audit-tamper")]

A, B = "BKA-alice", "BKA-bob"
NOTES = 2400  # each book: 1 funding credit + 2400 debits and credits


@dataclasses.dataclass
class Golden:
    world: World
    url: str
    keys: rec.BookKeys
    memo: audit.AuditMemo
    head_a: int


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Golden]:
    w = make_world()
    path = tmp_path_factory.mktemp("golden") / "bank.db"
    url = f"sqlite:///{path}"
    eng: BankEngine = make_bank(
        url, w, accounts=(A, B), fund=1_000_000, checkpoint_every=500, notices="lazy"
    )
    book_pingpong(eng, w, A, B, NOTES, batch=100)
    head_a = eng.head(A).n
    keys = eng.keys
    eng.close()
    memo = audit.AuditMemo()
    report = audit.audit(url, trust=w.trust, keys=keys, memo=memo)
    assert report.ok, report.findings[:3]
    assert head_a == NOTES + 1 and report.records >= 2 * NOTES
    yield Golden(w, url, keys, memo, head_a)


@pytest.fixture(params=["sqlite", "postgresql"])
def copy(request: pytest.FixtureRequest, tmp_path: Path, golden: Golden) -> Iterator[Sql]:
    url = make_url(request.param, tmp_path, request, "case")
    clone_store(golden.url, url)
    sql = Sql(url)
    yield sql
    sql.close()


def _findings(g: Golden, sql: Sql) -> list[audit.Finding]:
    report = audit.audit(sql.store, trust=g.world.trust, keys=g.keys, memo=g.memo)
    assert not report.ok
    # nothing spills into the other book; register findings are checkpoints only
    assert all(f.book in (A, audit.REGISTER) for f in report.findings), report.findings
    assert all(
        f.kind in ("checkpoint-mismatch", "missing")
        for f in report.findings
        if f.book == audit.REGISTER
    )
    return report.findings


def _book(findings: list[audit.Finding]) -> set[tuple[int, str]]:
    return {(f.record, f.kind) for f in findings if f.book == A}


def _edit_note(sql: Sql, n: int, change: Callable[[codec.Obj], None], delta_follows: bool) -> None:
    r = rec.Record.parse(sql.body(A, n))
    note = codec.decode(r.evidence, codec.NOTE)
    change(note)
    raw = codec.encode(note)  # the payer's signatures are kept: they no longer match
    delta = r.delta
    if delta_follows:
        delta = -note["amount"] if r.kind == rec.DEBIT else note["amount"]
    sql.set_body(A, n, dataclasses.replace(r, evidence=raw, delta=delta).body())


def test_clean_golden_on_both(copy: Sql, golden: Golden) -> None:
    report = audit.audit(copy.store, trust=golden.world.trust, keys=golden.keys, memo=golden.memo)
    assert report.ok and report.checks["checkpoints"] >= 9


def test_delete_one(copy: Sql, golden: Golden) -> None:
    copy.x("DELETE FROM records WHERE book = ? AND n = ?", (A, 700))
    assert _book(_findings(golden, copy)) == {(700, "missing")}


def test_delete_two_adjacent(copy: Sql, golden: Golden) -> None:
    copy.x("DELETE FROM records WHERE book = ? AND n IN (900, 901)", (A,))
    assert _book(_findings(golden, copy)) == {(900, "missing"), (901, "missing")}


def test_alter_an_amount(copy: Sql, golden: Golden) -> None:
    _edit_note(copy, 1200, lambda n: n.values.__setitem__("amount", n["amount"] + 1000), True)
    f = _findings(golden, copy)
    assert _book(f) == {(1200, "altered"), (1200, "balance-mismatch")}
    assert any(x.kind == "checkpoint-mismatch" for x in f)


def test_alter_a_purpose(copy: Sql, golden: Golden) -> None:
    _edit_note(copy, 1300, lambda n: n.values.__setitem__("purpose", "refund"), False)
    assert _book(_findings(golden, copy)) == {(1300, "altered")}


def test_swap_two(copy: Sql, golden: Golden) -> None:
    copy.x("UPDATE records SET n = -1 WHERE book = ? AND n = 400", (A,))
    copy.x("UPDATE records SET n = 400 WHERE book = ? AND n = 1500", (A,))
    copy.x("UPDATE records SET n = 1500 WHERE book = ? AND n = -1", (A,))
    assert _book(_findings(golden, copy)) == {(400, "reordered"), (1500, "reordered")}


def test_reorder(copy: Sql, golden: Golden) -> None:
    # rotate three records: 1600 -> 1602's place, 1601 -> 1600's, 1602 -> 1601's
    bodies = {
        n: (
            copy.body(A, n),
            copy.q("SELECT hchain FROM records WHERE book = ? AND n = ?", (A, n))[0][0],
        )
        for n in (1600, 1601, 1602)
    }
    for dst, src in ((1600, 1601), (1601, 1602), (1602, 1600)):
        copy.set_body(A, dst, bodies[src][0], bytes(bodies[src][1]))
    assert _book(_findings(golden, copy)) == {
        (1600, "reordered"),
        (1601, "reordered"),
        (1602, "reordered"),
    }


def test_truncate_the_tail(copy: Sql, golden: Golden) -> None:
    n = golden.head_a
    copy.x("DELETE FROM records WHERE book = ? AND n > ?", (A, n - 5))
    assert _book(_findings(golden, copy)) == {(k, "truncated") for k in range(n - 4, n + 1)}


def test_duplicate_a_record(copy: Sql, golden: Golden) -> None:
    n = golden.head_a
    body, hchain = copy.q("SELECT body, hchain FROM records WHERE book = ? AND n = 333", (A,))[0]
    copy.x(
        "INSERT INTO records (book, n, body, hchain) VALUES (?, ?, ?, ?)",
        (A, n + 1, bytes(body), bytes(hchain)),
    )
    assert _book(_findings(golden, copy)) == {(n + 1, "duplicated")}


def test_rewrite_and_recompute_without_the_key(copy: Sql, golden: Golden) -> None:
    n = golden.head_a
    rewrite_and_recompute(copy, A, 1800, lambda note: note.values.__setitem__("purpose", "gift"), n)
    f = _findings(golden, copy)
    book = sorted(_book(f))
    assert book[0] == (1800, "bad-signature")  # located at the rewritten record
    assert min(x.record for x in f if x.book == A) == 1800
    assert {k for _, k in book} <= {"bad-signature", "altered", "balance-mismatch"}
    # the coded balance is bound to the record's lsum: it no longer opens there
    assert {r for r, k in book if k == "balance-mismatch"} == {1800}
    # the XOR and hash chains were made consistent again: only signatures (and the head) tell
    assert {k for r, k in book if r == 1800} == {"bad-signature", "balance-mismatch"}
    assert all(k == "bad-signature" for r, k in book if 1800 < r < n)
    assert any(x.kind == "checkpoint-mismatch" for x in f)


def _head_row(sql: Sql, book: str) -> tuple[bytes, bytes]:
    statement, sig = sql.q("SELECT statement, sig FROM books WHERE book = ?", (book,))[0]
    return bytes(statement), bytes(sig)


def test_head_statement_of_another_book(copy: Sql, golden: Golden) -> None:
    """Each head row carries its own leaf and path under the batch's one signed root: another
    book's (validly signed) statement does not name this head."""
    n = golden.head_a
    statement, sig = _head_row(copy, B)
    copy.x("UPDATE books SET statement = ?, sig = ? WHERE book = ?", (statement, sig, A))
    assert _book(_findings(golden, copy)) == {(n, "altered")}


def test_head_path_altered(copy: Sql, golden: Golden) -> None:
    n = golden.head_a
    statement, _ = _head_row(copy, A)
    assert rec.parse_head(statement)[2] == [(A, n, rec.parse_head(statement)[2][0][2])]
    bad = bytearray(statement)
    bad[-1] ^= 1  # the inclusion path (or, for a one-book batch, the head's own hchain)
    copy.x("UPDATE books SET statement = ? WHERE book = ?", (bytes(bad), A))
    assert _book(_findings(golden, copy)) == {(n, "altered")}


def test_head_root_resigned_without_the_key(copy: Sql, golden: Golden) -> None:
    """A head statement whose signed root message changed: the signature no longer verifies."""
    n = golden.head_a
    statement, _ = _head_row(copy, A)
    signed = rec.head_signed(statement)
    forged = bytearray(statement)
    forged[len(signed) - 37] ^= 1  # the signed time: the path still leads to the root
    copy.x("UPDATE books SET statement = ? WHERE book = ?", (bytes(forged), A))
    assert _book(_findings(golden, copy)) == {(n, "bad-signature")}
