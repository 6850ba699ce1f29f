"""Audit of a bank database damaged cell by cell, as a disk fault or a careless hand with sqlite3
leaves it: a NULL or mistyped cell, a head whose cached fields no longer match its last record,
a count overwritten with a huge number, a book that is not there. Each damage is a finding that
names book, record and kind (or a clear error), never a traceback; a damaged count costs no more
time and memory than the rows that are stored."""

from __future__ import annotations

import dataclasses
import multiprocessing
import resource
import sqlite3
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from hubi.bank import audit, recover
from hubi.bank import records as rec
from hubi.bank.api import ApiError
from hubi.bank.engine import BankEngine
from hubi.bank.store import open_store
from hubi.cli import main
from hubi_core import codec
from tests.test_bank_support import book_pingpong, make_bank
from tests.world import World, make_world

pytestmark = pytest.mark.xdist_group("audit-damaged")

A, B = "BKA-alice", "BKA-bob"
HUGE = 2**63 - 1
# the columns of a table rebuilt without its NOT NULL constraints, so a cell can be NULL
LOOSE_RECORDS = (
    "CREATE TABLE r2 (book TEXT, n BIGINT, body BLOB, hchain BLOB);"
    "INSERT INTO r2 SELECT book, n, body, hchain FROM records; DROP TABLE records;"
    "ALTER TABLE r2 RENAME TO records;"
)
LOOSE_BOOKS = (
    "CREATE TABLE b2 AS SELECT * FROM books; DROP TABLE books; ALTER TABLE b2 RENAME TO books;"
)


@dataclasses.dataclass
class Golden:
    world: World
    path: Path
    keys: rec.BookKeys
    head: int  # A's last record


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Golden:
    """A small clean bank: A and B funded, 12 notes between them (A's book: 13 records)."""
    w = make_world()
    path = tmp_path_factory.mktemp("golden") / "bank.db"
    url = f"sqlite:///{path}"
    eng = make_bank(url, w, accounts=(A, B), fund=10_000, checkpoint_every=8, notices="lazy")
    book_pingpong(eng, w, A, B, 12, batch=4)
    head = eng.head(A).n
    keys = eng.keys
    eng.close()
    report = audit.audit(url, trust=w.trust, keys=keys)
    assert report.ok, report.findings
    assert head == 13
    return Golden(w, path, keys, head)


@pytest.fixture
def damage(golden: Golden, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """A copy of the golden database with `script` applied by plain sqlite3; its URL."""

    def make(script: str) -> str:
        dst = tmp_path / "case.db"
        src = sqlite3.connect(golden.path)
        out = sqlite3.connect(dst)
        src.backup(out)
        src.close()
        out.executescript(script)
        out.commit()
        out.close()
        return f"sqlite:///{dst}"

    yield make


def _audit(g: Golden, url: str, level: str = "full", **kw: Any) -> audit.AuditReport:
    return audit.audit(url, trust=g.world.trust, keys=g.keys, level=level, **kw)


def _found(report: audit.AuditReport) -> set[tuple[str, int, str]]:
    return {(f.book, f.record, f.kind) for f in report.findings}


def _bounded(fn: Callable[[], Any], seconds: float = 60, memory: int = 1 << 31) -> Any:
    """fn() in a forked child limited to `memory` bytes of address space and killed after
    `seconds`: a loop or allocation driven by a damaged number fails the test, and the test
    run goes on."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        try:
            send.send(("ok", fn()))
        except BaseException as exc:  # noqa: BLE001 - handed to the parent as text
            send.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))

    proc = ctx.Process(target=child)
    proc.start()
    try:
        if not recv.poll(seconds):
            pytest.fail(f"no answer within {seconds} s (a damaged number drove a loop)")
        status, value = recv.recv()
    finally:
        proc.kill()
        proc.join()
    assert status == "ok", value
    return value


# ------------------------------------------------------------------ A: the head's cached fields


def _coded_bal(g: Golden, url: str, n: int) -> bytes:
    st = open_store(url, migrate=False)
    try:
        body = st.reader().scalar("SELECT body FROM records WHERE book = ? AND n = ?", (A, n))
        return rec.Record.parse(bytes(body)).coded_bal
    finally:
        st.close()


@pytest.mark.parametrize("level", ["full", "chain"])
@pytest.mark.parametrize(
    "column, value",
    [
        ("coded_bal", "NULL"),
        ("coded_bal", "x'0102030405'"),
        ("coded_bal", "previous"),  # a valid blob, of record head-1
        ("last_kind", "3 - last_kind"),  # debit <-> credit
        ("last_lsum", "zeroblob(16)"),
    ],
)
def test_head_cache_that_differs_from_the_last_record_is_altered(
    golden: Golden, damage: Callable[[str], str], level: str, column: str, value: str
) -> None:
    url = damage("")
    if value == "previous":
        value = "x'%s'" % _coded_bal(golden, url, golden.head - 1).hex()
    sql = sqlite3.connect(url.split("sqlite:///", 1)[1])
    sql.execute(f"UPDATE books SET {column} = {value} WHERE book = ?", (A,))
    sql.commit()
    sql.close()
    report = _audit(golden, url, level)
    assert _found(report) == {(A, golden.head, "altered")}
    assert column in report.findings[0].detail


def test_balance_of_a_head_without_coded_balance_is_refused(
    golden: Golden, damage: Callable[[str], str]
) -> None:
    url = damage(f"UPDATE books SET coded_bal = NULL WHERE book = '{A}'")
    eng = BankEngine(url, golden.world.banks["BKA"], golden.world.trust)
    try:
        with pytest.raises(rec.ChainError, match=f"book {A}'s head is at record 13 but holds no"):
            eng.balance(A)
        note = golden.world.note(A, B, 5, serial=5000)
        with pytest.raises(rec.ChainError, match="no coded balance"):
            eng.book(codec.encode(note))  # a balance of 0 would be signed into record 14
        assert eng.head(A).n == golden.head
        assert eng.balance(B) > 0  # the other book is untouched
    finally:
        eng.close()


# --------------------------------------------------------- B: damaged counts stay bounded


def test_huge_head_count_is_one_finding_and_real_truncation_stays_per_record(
    golden: Golden, damage: Callable[[str], str]
) -> None:
    h = golden.head
    url = damage(
        f"DELETE FROM records WHERE book = '{A}' AND n >= {h - 1};"
        f"UPDATE books SET n = {HUGE} WHERE book = '{A}';"
    )
    report = _bounded(lambda: _audit(golden, url))
    book = {(f.record, f.kind): f.detail for f in report.findings if f.book == A}
    # the two records the register still names are lost one by one (restore fetches them);
    # the rest of the head's count is one finding naming the range
    assert set(book) == {
        (h - 1, "truncated"),
        (h, "truncated"),
        (h + 1, "truncated"),
        (HUGE, "altered"),  # the signed head statement names another n
    }
    assert f"{h + 1}..{HUGE}" in book[(h + 1, "truncated")]
    assert report.lost()[:3] == [(A, h - 1), (A, h), (A, h + 1)]
    chain = _bounded(lambda: _audit(golden, url, "chain"))
    assert {(f.book, f.record, f.kind) for f in chain.findings} == {
        (A, h - 1, "truncated"),
        (A, h, "truncated"),
        (A, h + 1, "truncated"),
        (A, HUGE, "altered"),
    }


def test_huge_record_number_is_one_missing_range(
    golden: Golden, damage: Callable[[str], str]
) -> None:
    h = golden.head
    url = damage(f"UPDATE records SET n = {2**62} WHERE book = '{A}' AND n = 3")
    report = _bounded(lambda: _audit(golden, url))
    book = {(f.record, f.kind): f.detail for f in report.findings if f.book == A}
    assert set(book) == {(3, "missing"), (h + 1, "missing"), (2**62, "reordered")}
    assert f"{h + 1}..{2**62 - 1}" in book[(h + 1, "missing")]


def test_huge_register_size_is_one_finding(golden: Golden, damage: Callable[[str], str]) -> None:
    url = damage(f"UPDATE register_head SET size = {HUGE}")
    st = open_store(url, migrate=False)
    entries = int(st.reader().scalar("SELECT COUNT(*) FROM register"))
    st.close()
    report = _bounded(lambda: _audit(golden, url))
    assert _found(report) == {(audit.REGISTER, entries, "missing")}
    assert f"{entries}..{HUGE - 1}" in report.findings[0].detail


def test_locate_with_a_huge_head_count_names_the_first_lost_numbers(
    golden: Golden, damage: Callable[[str], str]
) -> None:
    h = golden.head
    url = damage(f"UPDATE books SET n = {HUGE} WHERE book = '{A}'")

    def locate() -> str:
        st = open_store(url, migrate=False)
        try:
            recover.locate(st, A, keys=golden.keys)
        except recover.RecoveryError as exc:
            return str(exc)
        finally:
            st.close()
        return "no error"

    message = _bounded(locate)
    assert f"lost records {list(range(h + 1, h + 11))}..." in message


# ------------------------------------------------- C: NULL and mistyped cells are findings


@pytest.mark.parametrize("level", ["full", "chain"])
@pytest.mark.parametrize(
    "script, want",
    [
        ("UPDATE records SET body = 'hello' WHERE book = '{A}' AND n = 3", {"3 altered"}),
        ("UPDATE records SET body = 12345 WHERE book = '{A}' AND n = 3", {"3 altered"}),
        (
            LOOSE_RECORDS + "UPDATE records SET body = NULL WHERE book = '{A}' AND n = 3",
            {"3 altered"},
        ),
        (
            LOOSE_RECORDS + "UPDATE records SET hchain = NULL WHERE book = '{A}' AND n = 3",
            {"3 altered"},
        ),
        ("UPDATE records SET hchain = 7 WHERE book = '{A}' AND n = 3", {"3 altered"}),
        ("UPDATE records SET n = 'abc' WHERE book = '{A}' AND n = 3", {"3 missing", "3 altered"}),
        (
            LOOSE_RECORDS + "UPDATE records SET book = NULL WHERE book = '{A}' AND n = 3",
            {"3 missing", "3 altered"},
        ),
        (LOOSE_BOOKS + "UPDATE books SET hchain = NULL WHERE book = '{A}'", {"13 altered"}),
        (
            LOOSE_BOOKS + "UPDATE books SET sig = NULL, statement = NULL WHERE book = '{A}'",
            {"13 altered"},
        ),
        (LOOSE_BOOKS + "UPDATE books SET n = NULL WHERE book = '{A}'", {"13 altered"}),
        ("UPDATE books SET n = 'zz' WHERE book = '{A}'", {"13 altered"}),
        ("UPDATE books SET n = -5 WHERE book = '{A}'", {"13 altered"}),
    ],
    ids=[
        "body-text",
        "body-int",
        "body-null",
        "hchain-null",
        "hchain-int",
        "n-text",
        "book-null",
        "head-hchain-null",
        "head-sig-null",
        "head-n-null",
        "head-n-text",
        "head-n-negative",
    ],
)
def test_damaged_cell_is_a_finding(
    golden: Golden, damage: Callable[[str], str], level: str, script: str, want: set[str]
) -> None:
    url = damage(script.replace("{A}", A))
    report = _audit(golden, url, level)
    expected = {(A, int(n), kind) for n, kind in (w.split() for w in want)}
    assert _found(report) == expected, report.findings
    assert all(f.detail for f in report.findings)


def test_damaged_register_entry_is_a_finding(golden: Golden, damage: Callable[[str], str]) -> None:
    url = damage("UPDATE register SET n = 'q' WHERE seq = 5")
    report = _audit(golden, url)
    assert _found(report) == {(audit.REGISTER, 5, "altered")}
    assert "'q'" in report.findings[0].detail


@pytest.mark.parametrize("value", ["x'ff00'", "'BKA'"], ids=["not-utf8", "text"])
def test_damaged_bank_id_is_a_clear_error(
    golden: Golden, damage: Callable[[str], str], value: str
) -> None:
    url = damage(f"UPDATE meta SET value = {value} WHERE key = 'bank'")
    for home in ([], ["--home", str(golden.path.parent)]):  # with --home: UnicodeDecodeError
        res = CliRunner().invoke(main, ["audit", "verify", "--db", url, *home])
        assert res.exit_code == 2 and "meta 'bank'" in res.output, res.output
    with pytest.raises(audit.AuditError, match="meta 'bank'"):
        _audit(golden, url)


# ------------------------------------------------------------------ D: a book that is not there


def test_audit_of_an_unknown_book_is_an_error(golden: Golden) -> None:
    url = f"sqlite:///{golden.path}"
    res = CliRunner().invoke(main, ["audit", "verify", "--db", url, "--book", "BKA-nobody"])
    assert res.exit_code == 2 and "no book BKA-nobody" in res.output, res.output
    with pytest.raises(audit.UnknownBook, match="no book BKA-nobody"):
        _audit(golden, url, books=["BKA-nobody"])
    assert _audit(golden, url, books=[A]).ok  # a book that is there still audits
    st = open_store(url, migrate=False)
    try:
        engine = SimpleNamespace(store=st, trust=golden.world.trust, keys=golden.keys)
        with pytest.raises(ApiError) as err:
            audit.api_audit(engine, books=["BKA-nobody"])
        assert (err.value.status, err.value.code, err.value.field) == (404, "not-found", "book")
        assert "no book BKA-nobody" in err.value.message
    finally:
        st.close()


def test_a_damaged_head_fails_its_own_notes_not_the_batch_they_came_in(tmp_path: Path) -> None:
    """On a node, notes arriving together are booked in one transaction. A note on a book
    whose head's coded balance is garbage failed the whole batch (every upload in it: 500
    ShortBlob). Now the batch is booked again note by note: only that book's note fails, with
    409 book-damaged naming the error, and its neighbours are booked."""
    from concurrent.futures import Future

    from hubi.bank.backend import EngineBackend

    w = make_world()
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    c, d = "BKA-carol", "BKA-dave"
    make_bank(url, w, accounts=(A, B, c, d), fund=1_000).close()
    con = sqlite3.connect(tmp_path / "bank.db")
    con.execute("UPDATE books SET coded_bal = x'0102030405' WHERE book = ?", (A,))
    con.commit()
    con.close()
    backend = EngineBackend(BankEngine(url, w.banks["BKA"], w.trust))
    try:
        notes = [codec.encode(w.note(A, B, 5, serial=1)), codec.encode(w.note(c, d, 7, serial=1))]
        batch: list[tuple[bytes, Future]] = [(n, Future()) for n in notes]
        backend.commits._book(batch)
        assert batch[1][1].result().status == "booked"
        assert "coded balance is 5 bytes" in str(batch[0][1].exception())
        with pytest.raises(ApiError) as err:
            backend.upload(notes[0])
        assert (err.value.status, err.value.code) == (409, "book-damaged")
        assert "ShortBlob: coded balance is 5 bytes" in err.value.message
        with pytest.raises(ApiError) as err:
            backend.account_info(A)
        assert (err.value.status, err.value.code) == (409, "book-damaged")
        assert backend.account_info(d)["balance"] == 1_007
    finally:
        backend.close()
    report = audit.audit(url, trust=w.trust, books=[c, d])
    assert report.ok, report.findings


def test_recovery_names_a_damaged_head_or_neighbour(golden: Golden, damage) -> None:  # noqa: ANN001
    """Recovering a lost record reads its neighbours and, for the last record, the head: a
    damaged cell there was a TypeError naming nothing."""
    url = damage(f"DELETE FROM records WHERE book = '{A}' AND n = {golden.head};"
                 f"UPDATE books SET coded_bal = 'zz' WHERE book = '{A}'")  # fmt: skip
    st = open_store(url, migrate=False)
    with pytest.raises(recover.RecoveryError, match="head holds str as its coded_bal"):
        recover.locate(st, A, keys=golden.keys)
    st.close()
    url = damage(f"DELETE FROM records WHERE book = '{A}' AND n = 7;"
                 f"UPDATE records SET body = 'text' WHERE book = '{A}' AND n = 6")  # fmt: skip
    st = open_store(url, migrate=False)
    with pytest.raises(recover.RecoveryError, match=f"record {A}#6 is stored as str"):
        recover.locate(st, A, keys=golden.keys)
    st.close()
