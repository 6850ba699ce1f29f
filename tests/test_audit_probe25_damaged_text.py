"""Probe round 25, the audit of a damaged database: text cells whose bytes are not UTF-8 (a
tampered SQLite file) stopped `hubi audit verify` with sqlite3's "Could not decode to UTF-8" and
exit 2, so no other book was checked; a table rebuilt in another shape (a column dropped) stopped
it with SQL's "no such column", naming no table; a books or register_head table rebuilt without
its key held a second head or size the audit never looked at, and was audited clean. Each is now
a finding (the undecodable name shown with its bytes escaped) or one line naming the column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.bank import audit
from hubi.bank.store import StoreError, open_store
from hubi.cli import main
from tests.servers import postgres_server  # noqa: F401
from tests.test_bank_support import (
    BACKENDS,
    book_pingpong,
    make_bank,
    make_url,
    open_sql,
    sqlite_copy,
)
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("audit-probe25-text")

A, B = "BKA-alice", "BKA-bob"
BAD = "CAST(x'ff41' AS TEXT)"  # text whose bytes are not UTF-8
SHOWN = "b'\\xffA'"  # how a finding names it


@pytest.fixture(scope="module")
def bank_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small clean bank: A and B funded, 8 notes between them, a checkpoint every 4."""
    w = make_world()
    path = tmp_path_factory.mktemp("bank") / "bank.db"
    eng = make_bank(f"sqlite:///{path}", w, accounts=(A, B), fund=1000, checkpoint_every=4)
    book_pingpong(eng, w, A, B, 8, batch=2)
    eng.close()
    assert audit.audit(f"sqlite:///{path}").ok
    return path


def _damaged(src: Path, tmp_path: Path, script: str) -> str:
    """A copy of `src` with `script` applied by plain sqlite3; its URL."""
    return sqlite_copy(src, tmp_path / "case.db", script)


def _verify(url: str, *extra: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["audit", "verify", "--db", url, *extra])
    assert "Traceback" not in res.output and "OperationalError" not in res.output, res.output
    return res.exit_code, res.output


def _found(url: str) -> dict[tuple[str, int, str], str]:
    return {(f.book, f.record, f.kind): f.detail for f in audit.audit(url).findings}


@pytest.mark.parametrize("as_blob", [False, True], ids=["text", "blob"])
def test_a_record_under_a_book_name_that_is_not_utf8_is_a_finding(
    bank_db: Path, tmp_path: Path, as_blob: bool
) -> None:
    """The stray record is named at its own book and number, the name's bytes escaped; the
    other book's damage is still found (the audit went on)."""
    bad = "x'ff41'" if as_blob else BAD
    url = _damaged(
        bank_db,
        tmp_path,
        f"UPDATE records SET book = {bad} WHERE book = '{A}' AND n = 2;"
        f"UPDATE records SET hchain = zeroblob(32) WHERE book = '{B}' AND n = 3;",
    )
    found = _found(url)
    assert (A, 2, "missing") in found, found
    assert SHOWN in found[(A, 2, "altered")], found
    assert (B, 3, "altered") in found, found
    code, out = _verify(url)
    assert code == 1 and SHOWN in out and B in out, out
    code, out = _verify(url, "--json")
    doc = json.loads(out)
    assert code == 1 and not doc["ok"], out
    assert {(f["book"], f["record"]) for f in doc["findings"]} >= {(A, 2), (B, 3)}, out


def test_a_head_whose_book_is_not_utf8_is_a_finding(bank_db: Path, tmp_path: Path) -> None:
    url = _damaged(bank_db, tmp_path, f"UPDATE books SET book = {BAD} WHERE book = '{A}'")
    found = _found(url)
    assert (f"(book {SHOWN})", 0, "altered") in found, found
    assert any(b == A and kind == "truncated" for b, _, kind in found), found  # A lost its head
    code, out = _verify(url, "--chain-only")
    assert code == 1 and SHOWN in out, out


def test_a_register_entry_whose_book_is_not_utf8_is_a_finding(
    bank_db: Path, tmp_path: Path
) -> None:
    url = _damaged(bank_db, tmp_path, f"UPDATE register SET book = {BAD} WHERE seq = 3")
    found = _found(url)
    assert SHOWN in found[("(register)", 3, "altered")], found
    code, out = _verify(url)
    assert code == 1 and "(register)" in out, out


def test_locate_and_restore_read_past_a_name_that_is_not_utf8(
    bank_db: Path, tmp_path: Path
) -> None:
    """locate names the lost record's linear sum; restore brings it back from the backup, and
    the stray row under the damaged name is still reported (never a false "clean")."""
    url = _damaged(
        bank_db, tmp_path, f"UPDATE records SET book = {BAD} WHERE book = '{A}' AND n = 2"
    )
    res = CliRunner().invoke(main, ["audit", "locate", "--db", url, "--book", A])
    assert res.exit_code == 0 and f"{A} #2: lsum" in res.output, res.output
    res = CliRunner().invoke(
        main, ["audit", "restore", "--db", url, "--backup", f"sqlite:///{bank_db}"]
    )
    assert res.exit_code == 1, res.output
    assert "lost 1, restored 1" in res.output and "still has findings" in res.output, res.output
    found = _found(url)
    assert list(found) == [(A, 2, "altered")] and SHOWN in found[(A, 2, "altered")], found


@pytest.mark.parametrize(
    "script, column",
    [
        ("ALTER TABLE records DROP COLUMN hchain", "records.hchain"),
        ("DROP TABLE books; CREATE TABLE books (x)", "books.book"),
        ("ALTER TABLE register_head RENAME COLUMN size TO sz", "register_head.size"),
    ],
    ids=["dropped", "reshaped", "renamed"],
)
def test_a_table_of_another_shape_is_one_line_naming_the_column(
    bank_db: Path, tmp_path: Path, script: str, column: str
) -> None:
    url = _damaged(bank_db, tmp_path, script)
    for cmd in (
        ["verify", "--db", url],
        ["locate", "--db", url, "--book", A],
        ["restore", "--db", url, "--backup", f"sqlite:///{bank_db}"],
    ):
        res = CliRunner().invoke(main, ["audit", *cmd])
        assert res.exit_code == 2, res.output
        assert column in res.output and "damaged" in res.output, res.output
        assert "Traceback" not in res.output and "no such column" not in res.output, res.output


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_dropped_column_is_named_on_either_store(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = make_url(kind, tmp_path, request)
    make_bank(url, make_world(), accounts=(A,), fund=10).close()
    sql = open_sql(url)
    sql.x("ALTER TABLE checkpoints DROP COLUMN frontier")
    sql.store.close()
    with pytest.raises(StoreError, match=r"lacks the column\(s\) checkpoints\.frontier"):
        open_store(url, create=False, migrate=False)


def test_a_second_head_of_a_book_is_a_finding(bank_db: Path, tmp_path: Path) -> None:
    """books rebuilt without its key, A's head stored twice (the copy says 3 records): the
    engine may book on either, so the audit must not call it clean."""
    url = _damaged(
        bank_db,
        tmp_path,
        "CREATE TABLE b2 AS SELECT * FROM books; DROP TABLE books; ALTER TABLE b2 RENAME TO books;"
        f"INSERT INTO books SELECT * FROM books WHERE book = '{A}';"
        "UPDATE books SET n = 3 WHERE rowid = (SELECT max(rowid) FROM books);",
    )
    for level in ("full", "chain"):
        report = audit.audit(url, level=level)
        assert [(f.book, f.record, f.kind) for f in report.findings] == [(A, 0, "altered")], report
        assert "2 signed heads" in report.findings[0].detail
    code, out = _verify(url, "--chain-only")
    assert code == 1 and "2 signed heads" in out, out


@pytest.mark.parametrize(
    "script, rows",
    [
        (
            "CREATE TABLE h2 (id, size); INSERT INTO h2 SELECT * FROM register_head;"
            "DROP TABLE register_head; ALTER TABLE h2 RENAME TO register_head;"
            "INSERT INTO register_head VALUES (1, 5);",
            2,
        ),
        ("DELETE FROM register_head", 0),
    ],
    ids=["two", "none"],
)
def test_a_register_head_that_is_not_one_row_is_a_finding(
    bank_db: Path, tmp_path: Path, script: str, rows: int
) -> None:
    url = _damaged(bank_db, tmp_path, script)
    found = _found(url)
    assert f"has {rows} rows, not one" in found[("(register)", 0, "altered")], found
    code, out = _verify(url)
    assert code == 1 and f"{rows} rows" in out, out
