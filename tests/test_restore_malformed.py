"""A backup that holds one malformed record among good ones: `hubi audit restore` stopped on it
(RestoreError out of ``_coerce``, or a TypeError reading a damaged cell of a database backup),
the good records not restored and none reported. The malformed one is now refused on its own,
named with the field that is wrong, and the good ones go back."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hubi.bank import restore
from hubi.bank.replica import record_json
from hubi.bank.store import open_store
from hubi.cli import main
from tests.test_bank_support import book_pingpong, make_bank
from tests.test_bank_support import sqlite_copy as _copy
from tests.world import World, make_world

pytestmark = pytest.mark.xdist_group("restore-malformed")

A, B = "BKA-alice", "BKA-bob"
LOST = [(A, 4), (A, 5), (A, 9), (B, 6)]
BAD = (A, 5)


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path]:
    """A small clean bank: A and B funded, 12 notes between them (13 records each)."""
    w = make_world()
    path = tmp_path_factory.mktemp("golden") / "bank.db"
    eng = make_bank(f"sqlite:///{path}", w, accounts=(A, B), fund=10_000, checkpoint_every=8)
    book_pingpong(eng, w, A, B, 12, batch=4)
    eng.close()
    return w, path


def _lose(golden: Path, tmp_path: Path) -> str:
    where = " OR ".join(f"(book = '{b}' AND n = {n})" for b, n in LOST)
    return _copy(golden, tmp_path / "case.db", f"DELETE FROM records WHERE {where};")


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.output


@pytest.mark.parametrize(
    "cell, said",
    [
        ("body = 'abc'", "its body is text 'abc', not bytes"),
        ("body = NULL", "its body is NULL, not bytes"),
        ("hchain = 7", "its hchain is 7, not bytes"),
    ],
    ids=["body-text", "body-null", "hchain-int"],
)
def test_cli_restore_refuses_the_malformed_record_and_restores_the_rest(
    golden: tuple[World, Path], tmp_path: Path, cell: str, said: str
) -> None:
    """A second bank database as the backup, one lost record's cell damaged with sqlite3."""
    _, path = golden
    url = _lose(path, tmp_path)
    backup = _copy(
        path,
        tmp_path / "backup.db",
        f"CREATE TABLE r2 AS SELECT * FROM records; DROP TABLE records;"  # no NOT NULL
        f" ALTER TABLE r2 RENAME TO records;"
        f" UPDATE records SET {cell} WHERE book = '{BAD[0]}' AND n = {BAD[1]};",
    )
    code, out = _cli("audit", "restore", "--db", url, "--backup", backup, "--json")
    doc = json.loads(out)
    assert code == 1, out
    good = [w for w in LOST if w != BAD]
    assert sorted((r["book"], r["record"]) for r in doc["restored"]) == sorted(good), doc
    assert doc["rejected"] == [
        {"book": A, "record": 5, "reason": f"the source sent it malformed: {said}"}
    ]
    assert doc["unavailable"] == [] and doc["malformed"] == []
    # the text output names it too, and the audit afterwards names only the one still missing
    code, out = _cli("audit", "restore", "--db", url, "--backup", backup)
    text = " ".join(out.split())
    assert code == 1 and f"refused {A} #5: the source sent it malformed: {said}" in text, out
    code, out = _cli("audit", "verify", "--db", url, "--json")
    findings = json.loads(out)["findings"]
    assert code == 1
    assert {(f["book"], f["record"], f["kind"]) for f in findings if f["book"] == A} == {
        (A, 5, "missing")
    }, findings
    assert not [f for f in findings if f["book"] == B], findings


class JsonSource:
    """Records as a hot-backup node serves them (``/v1/backup/records``: hex JSON), from a
    bank database; `spoil` edits one record's JSON."""

    def __init__(self, path: Path, spoil: dict[tuple[str, int], dict[str, Any]]):
        self.path, self.spoil = path, spoil

    def fetch(self, names: list[tuple[str, int]]) -> list[dict[str, Any]]:
        con = sqlite3.connect(self.path)
        out = []
        for book, n in names:
            row = con.execute(
                "SELECT g.seq, r.body, r.hchain FROM records r JOIN register g"
                " ON g.book = r.book AND g.n = r.n WHERE r.book = ? AND r.n = ?",
                (book, n),
            ).fetchone()
            if row:
                out.append(
                    {
                        **record_json(row[0], book, n, row[1], row[2]),
                        **self.spoil.get((book, n), {}),
                    }
                )
        con.close()
        return out


def test_restore_from_a_node_refuses_an_odd_length_hex_body_alone(
    golden: tuple[World, Path], tmp_path: Path
) -> None:
    """The case the fault was found with: a body whose hex has odd length raised RestoreError
    out of the restore. Also: a record naming no number is named in `malformed`."""
    w, path = golden
    url = _lose(path, tmp_path)
    body = (
        sqlite3.connect(path)
        .execute("SELECT body FROM records WHERE book = ? AND n = 5", (A,))
        .fetchone()[0]
    )
    odd = bytes(body).hex()[:-1]
    spoil = {BAD: {"body": odd}, (B, 6): {"number": "six"}}
    store = open_store(url, migrate=False)
    try:
        result = restore.restore(store, JsonSource(path, spoil), trust=w.trust)
    finally:
        store.close()
    assert sorted(result.restored) == [(A, 4), (A, 9)], result.as_dict()
    assert result.rejected == [
        (A, 5, f"the source sent it malformed: its body is {len(odd)} hex digits, an odd number"
               " (cut short?)")
    ]  # fmt: skip
    assert result.malformed == [f"a record of {B} whose number is text 'six'"]
    assert result.unavailable == [(B, 6)]
    assert set(result.after.lost()) == {BAD, (B, 6)}
    # a sound copy later: both go back, and the audit is clean
    store = open_store(url, migrate=False)
    try:
        again = restore.restore(store, JsonSource(path, {}), trust=w.trust)
    finally:
        store.close()
    assert sorted(again.restored) == [BAD, (B, 6)] and again.ok, again.as_dict()
