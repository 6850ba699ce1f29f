"""Probe round 26, damaged cells the audit tools read with int() or bytes(): a merkle_nodes row
(a kept subtree) whose level or hash is text stopped `hubi audit verify` with a bare ValueError
or TypeError (exit 2, no book checked), and an integer in its hash cell would have been taken as
a count of zero bytes to allocate (bytes(2**40): a terabyte); a notes row whose serial is text
stopped `hubi audit locate` the same way. The kept subtree is now an `altered` finding and the
audit goes on; the damaged serial is passed over (the note index only narrows the search).
Also: record rows numbered NULL (a page of them) hid the rest of their book from the walk;
register entries at a NULL, negative or text position, or past the register's size, were never
read; and `hubi audit restore` into a records table rebuilt without its key failed on its
ON CONFLICT clause."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.bank import audit
from hubi.cli import main
from tests.servers import postgres_server  # noqa: F401
from tests.test_bank_support import (
    BACKENDS,
    book_pingpong,
    clone_store,
    make_bank,
    make_url,
    open_sql,
    sqlite_copy,
)
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("audit-probe26-cells")

A, B = "BKA-alice", "BKA-bob"


@pytest.fixture(scope="module")
def bank_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = make_world()
    path = tmp_path_factory.mktemp("bank") / "bank.db"
    eng = make_bank(f"sqlite:///{path}", w, accounts=(A, B), fund=1000, checkpoint_every=4)
    book_pingpong(eng, w, A, B, 8, batch=2)
    eng.close()
    assert audit.audit(f"sqlite:///{path}").ok
    return path


def _damaged(src: Path, tmp_path: Path, script: str) -> str:
    return sqlite_copy(src, tmp_path / "case.db", script)


@pytest.mark.parametrize(
    "row, shown",
    [
        ("'x', 0, x'00'", "text 'x'"),
        ("9, 0, 'abc'", "text 'abc'"),
        ("9, 1, 1099511627776", "1099511627776"),
    ],
    ids=["level-text", "hash-text", "hash-number"],
)
def test_an_unreadable_kept_subtree_is_a_finding(
    bank_db: Path, tmp_path: Path, row: str, shown: str
) -> None:
    url = _damaged(
        bank_db,
        tmp_path,
        f"INSERT INTO merkle_nodes (level, idx, hash) VALUES ({row});"
        f"UPDATE records SET hchain = zeroblob(32) WHERE book = '{B}' AND n = 3;",
    )
    found = {(f.book, f.record, f.kind): f.detail for f in audit.audit(url).findings}
    detail = found[(audit.REGISTER, 0, "altered")]
    assert "merkle_nodes" in detail and shown in detail, found
    assert (B, 3, "altered") in found, found  # the audit went on
    res = CliRunner().invoke(main, ["audit", "verify", "--db", url, "--json"])
    assert res.exit_code == 1, res.output
    assert any("merkle_nodes" in f["detail"] for f in json.loads(res.output)["findings"])


@pytest.mark.parametrize("value", ["'abc'", "NULL", "1.5"], ids=["text", "null", "real"])
def test_locate_passes_over_a_damaged_serial_in_the_note_index(
    bank_db: Path, tmp_path: Path, value: str
) -> None:
    url = _damaged(
        bank_db,
        tmp_path,
        f"CREATE TABLE n2 AS SELECT * FROM notes; DROP TABLE notes; ALTER TABLE n2 RENAME TO notes;"
        f"UPDATE notes SET serial = {value} WHERE payer = '{A}' AND debit_n IS NOT NULL;"
        f"DELETE FROM records WHERE book = '{A}' AND n = 3;",
    )
    res = CliRunner().invoke(main, ["audit", "locate", "--db", url, "--book", A, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["book"] == A and doc["record"] == 3 and len(doc["lsum"]) == 32, doc


def test_a_page_of_records_numbered_null_does_not_hide_the_rest_of_the_book(
    bank_db: Path, tmp_path: Path
) -> None:
    """records rebuilt without its constraints, 5,001 rows of B numbered NULL (more than a page
    of the walk) and B's record 3 altered: the walk paged on `n > last` and stopped at the page
    ending on NULL, calling B's records truncated and missing the altered one."""
    url = _damaged(
        bank_db,
        tmp_path,
        "CREATE TABLE r2 AS SELECT * FROM records; DROP TABLE records;"
        "ALTER TABLE r2 RENAME TO records;"
        "CREATE INDEX r2_key ON records (book, n);"
        "INSERT INTO records (book, n, body, hchain) WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL"
        " SELECT i + 1 FROM k WHERE i < 5001)"
        f" SELECT book, NULL, body, hchain FROM records, k WHERE book = '{B}' AND n = 1;"
        f"UPDATE records SET hchain = zeroblob(32) WHERE book = '{B}' AND n = 3;",
    )
    for level in ("chain", "full"):
        kinds = {(f.book, f.record, f.kind) for f in audit.audit(url, level=level).findings}
        assert (B, 3, "altered") in kinds, sorted(kinds)[:20]
        assert not any(k == "truncated" for _, _, k in kinds), sorted(kinds)[:20]


@pytest.mark.parametrize(
    "seq, at",
    [("NULL", 0), ("-5", 0), ("'seven'", 0), ("1000", 1000)],
    ids=["null", "negative", "text", "past-the-size"],
)
def test_a_register_entry_outside_the_register_is_a_finding(
    bank_db: Path, tmp_path: Path, seq: str, at: int
) -> None:
    """An entry the walk over positions 0..size-1 never read was audited clean; one at or past
    the size stands where the next booking's entry goes."""
    url = _damaged(
        bank_db, tmp_path, f"INSERT INTO register (seq, book, n) VALUES ({seq}, '{A}', 2)"
    )
    found = {(f.book, f.record, f.kind): f.detail for f in audit.audit(url).findings}
    assert list(found) == [(audit.REGISTER, at, "altered")], found
    assert "outside the register's" in found[(audit.REGISTER, at, "altered")], found
    res = CliRunner().invoke(main, ["audit", "verify", "--db", url])
    assert res.exit_code == 1 and "outside the register" in " ".join(res.output.split()), res.output


@pytest.mark.parametrize("kind", BACKENDS)
def test_restore_into_a_records_table_rebuilt_without_its_key(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The restore inserted with ON CONFLICT (book, n), which a table without its key cannot
    take: it stopped with the database's error (exit 2) and put nothing back."""
    url = make_url(kind, tmp_path, request)
    w = make_world()
    eng = make_bank(url, w, accounts=(A, B), fund=1000)
    book_pingpong(eng, w, A, B, 6, batch=2)
    eng.close()
    backup = f"sqlite:///{tmp_path / 'backup.db'}"
    clone_store(url, backup)
    sql = open_sql(url)
    sql.x("CREATE TABLE r2 AS SELECT * FROM records")
    sql.x("DROP TABLE records")
    sql.x("ALTER TABLE r2 RENAME TO records")
    sql.x("DELETE FROM records WHERE book = ? AND n = 3", (A,))
    sql.close()
    assert [(f.book, f.record, f.kind) for f in audit.audit(url).findings] == [(A, 3, "missing")]
    res = CliRunner().invoke(main, ["audit", "restore", "--db", url, "--backup", backup])
    assert res.exit_code == 0, res.output
    assert "lost 1, restored 1" in res.output and "audit clean again" in res.output, res.output
    assert audit.audit(url).ok
