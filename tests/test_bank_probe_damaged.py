"""Hostile and clumsy probes of the code that books on, and restores into, a damaged database:
a head row with a NULL, mistyped or short cell (a careless hand with sqlite3, a disk fault) and
a backup whose register positions collide. Each is named in plain words where it is, and
nothing else fails with it."""

from __future__ import annotations

import dataclasses
import sqlite3
from concurrent.futures import Future
from pathlib import Path

import pytest

from hubi.bank import audit, restore
from hubi.bank import records as rec
from hubi.bank.api import ApiError
from hubi.bank.backend import EngineBackend
from hubi.bank.engine import BankEngine
from hubi.bank.store import open_store
from hubi_core import codec
from tests.test_bank_support import book_pingpong, make_bank
from tests.world import World, make_world

pytestmark = pytest.mark.xdist_group("bank-probe-damaged")

A, B, C, D = "BKA-alice", "BKA-bob", "BKA-carol", "BKA-dave"
# the books table rebuilt without its NOT NULL constraints, so a cell can be NULL
LOOSE_BOOKS = (
    "CREATE TABLE b2 AS SELECT * FROM books; DROP TABLE books; ALTER TABLE b2 RENAME TO books;"
)


@dataclasses.dataclass
class Golden:
    world: World
    path: Path
    keys: rec.BookKeys


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Golden:
    """A small clean bank: four accounts funded, 12 notes between A and B (A: 13 records)."""
    w = make_world()
    path = tmp_path_factory.mktemp("golden") / "bank.db"
    eng = make_bank(f"sqlite:///{path}", w, accounts=(A, B, C, D), fund=10_000, checkpoint_every=8)
    book_pingpong(eng, w, A, B, 12, batch=4)
    keys = eng.keys
    eng.close()
    return Golden(w, path, keys)


def _damaged(g: Golden, tmp_path: Path, script: str) -> str:
    """A copy of the golden database with `script` applied by plain sqlite3; its URL."""
    dst = tmp_path / "case.db"
    src, out = sqlite3.connect(g.path), sqlite3.connect(dst)
    src.backup(out)
    src.close()
    out.executescript(script)
    out.commit()
    out.close()
    return f"sqlite:///{dst}"


def _restore_from_golden(g: Golden, url: str) -> restore.RestoreResult:
    """Restore the damaged copy at `url` from the golden database, as a standby would."""
    st = open_store(url, migrate=False)
    src = restore.StoreRecordSource(f"sqlite:///{g.path}")
    try:
        return restore.restore(st, src, trust=g.world.trust, keys=g.keys)
    finally:
        src.close()
        st.close()


# ------------------------------------------------ booking on a head with a damaged cell


@pytest.mark.parametrize(
    "script, named",
    [
        (LOOSE_BOOKS + "UPDATE books SET n = NULL", "record count is NULL"),
        ("UPDATE books SET n = 'zz'", "record count is text 'zz'"),
        ("UPDATE books SET n = -3", "record count is -3"),
        (LOOSE_BOOKS + "UPDATE books SET hchain = NULL", "hchain is NULL"),
        ("UPDATE books SET hchain = x'01'", "hchain is 1 bytes"),
        ("UPDATE books SET ecode = 5", "ecode is 5"),
        ("UPDATE books SET ecode = x'01'", "ecode is 1 bytes"),
        ("UPDATE books SET last_kind = 'q'", "last_kind is text 'q'"),
        (LOOSE_BOOKS + "UPDATE books SET last_lsum = NULL", "last_lsum is NULL"),
        ("UPDATE books SET last_lsum = x'01'", "last_lsum is 1 bytes"),
        ("UPDATE books SET coded_bal = 'zz'", "coded_bal is text 'zz'"),
    ],
    ids=[
        "n-null",
        "n-text",
        "n-negative",
        "hchain-null",
        "hchain-short",
        "ecode-int",
        "ecode-short",
        "kind-text",
        "lsum-null",
        "lsum-short",
        "coded-bal-text",
    ],
)
def test_a_damaged_head_cell_fails_its_own_note_named_not_the_batch(
    golden: Golden, tmp_path: Path, script: str, named: str
) -> None:
    """A NULL or mistyped cell in a head row was a TypeError or ValueError: not one of the
    errors a damaged book is known by, so the node failed every note of the group commit with
    it (a 500 naming nothing). A short hchain or ecode, or an integer ecode, was booked on: the
    bank signed a record chained onto the damage. Now the head is refused, naming the cell, and
    only that book's note fails (409 book-damaged); the note beside it is booked."""
    url = _damaged(golden, tmp_path, script + f" WHERE book = '{A}'")
    w = golden.world
    backend = EngineBackend(BankEngine(url, w.banks["BKA"], w.trust))
    try:
        notes = [
            codec.encode(w.note(A, B, 5, serial=5000)),
            codec.encode(w.note(C, D, 7, serial=5000)),
        ]
        batch: list[tuple[bytes, Future]] = [(n, Future()) for n in notes]
        backend.commits._book(batch)
        assert batch[1][1].result().status == "booked"
        err = batch[0][1].exception()
        assert isinstance(err, rec.ChainError), repr(err)
        assert f"book {A}'s head row is damaged: its {named}" in str(err)
        with pytest.raises(ApiError) as api_err:
            backend.upload(notes[0])
        assert (api_err.value.status, api_err.value.code) == (409, "book-damaged")
        assert named in api_err.value.message
        with pytest.raises(ApiError) as api_err:
            backend.account_info(A)
        assert (api_err.value.status, api_err.value.code) == (409, "book-damaged")
    finally:
        backend.close()
    st = open_store(url, migrate=False)
    try:  # nothing was booked on A's damaged head
        assert st.reader().scalar("SELECT COUNT(*) FROM records WHERE book = ?", (A,)) == 13
    finally:
        st.close()


# ------------------------------------------------ restoring beside damaged cells


@pytest.mark.parametrize(
    "script, lost",
    [
        (LOOSE_BOOKS + "UPDATE books SET n = NULL WHERE book = '{A}'", 5),
        ("UPDATE books SET n = 'zz' WHERE book = '{A}'", 5),
        ("UPDATE books SET hchain = 'zz' WHERE book = '{A}'", 13),
        ("UPDATE records SET hchain = 'zz' WHERE book = '{A}' AND n = 4", 5),
        ("UPDATE records SET body = 'zz' WHERE book = '{A}' AND n = 6", 5),
    ],
    ids=["head-n-null", "head-n-text", "head-hchain-text", "prev-hchain-text", "next-body-text"],
)
def test_restore_beside_a_damaged_cell_restores_and_does_not_crash(
    golden: Golden, tmp_path: Path, script: str, lost: int
) -> None:
    """Restore reads the lost record's neighbours and its book's head to check the record
    against; a damaged cell there (which the audit names as altered) stopped the restore with a
    TypeError or ValueError naming nothing. A damaged cell now links nothing, as a neighbour
    that is not there: the record is checked against the rest, and goes back."""
    url = _damaged(
        golden,
        tmp_path,
        script.replace("{A}", A) + f";DELETE FROM records WHERE book = '{A}' AND n = {lost}",
    )
    result = _restore_from_golden(golden, url)
    assert result.restored == [(A, lost)], result.as_dict()
    assert not result.rejected
    assert (A, lost) not in result.after.lost()  # the damaged cell is still a finding
    assert not result.ok and any(f.kind == "altered" for f in result.after.findings)


@pytest.mark.parametrize(
    "script, why",
    [
        (
            "UPDATE register_head SET size = 'zz'",
            "its register position {seq} cannot be checked: the register's size is text 'zz', "
            "not a count",
        ),
        (
            "UPDATE register SET seq = 'abc' WHERE book = '{A}' AND n = 5",
            "the register has it at position text 'abc', not {seq}",
        ),
    ],
    ids=["size-text", "own-position-text"],
)
def test_restore_names_a_damaged_register_it_cannot_check_a_position_against(
    golden: Golden, tmp_path: Path, script: str, why: str
) -> None:
    """The register's size, or the position the register has for a record, damaged: restore
    stopped with a ValueError. The position the backup gives cannot be checked then, so the
    record is refused, saying why (a position is never brought back once written without)."""
    st = open_store(f"sqlite:///{golden.path}", migrate=False)
    seq = st.reader().scalar("SELECT seq FROM register WHERE book = ? AND n = 5", (A,))
    st.close()
    url = _damaged(
        golden,
        tmp_path,
        script.replace("{A}", A) + f";DELETE FROM records WHERE book = '{A}' AND n = 5",
    )
    result = _restore_from_golden(golden, url)
    assert result.rejected == [(A, 5, why.format(seq=seq))], result.as_dict()
    assert not result.restored


def test_restore_refuses_two_records_a_backup_puts_at_one_position(
    golden: Golden, tmp_path: Path
) -> None:
    """Register positions come unsigned from the backup. A backup that gave two lost records
    one position had both restored: the first took the position (perhaps another's), the
    second went back with no register row, a hole no later restore fills (the record is not
    lost any more). Both claims are now refused, by name; a record with a position of its own
    still goes back."""
    st = open_store(f"sqlite:///{golden.path}", migrate=False)
    tx = st.reader()
    rows = {
        (b, n): tx.one(
            "SELECT r.body, r.hchain, g.seq FROM records r JOIN register g"
            " ON g.book = r.book AND g.n = r.n WHERE r.book = ? AND r.n = ?",
            (b, n),
        )
        for b, n in ((A, 5), (B, 3), (A, 9))
    }
    st.close()
    lose = " OR ".join(f"(book = '{b}' AND n = {n})" for b, n in rows)
    url = _damaged(golden, tmp_path, f"DELETE FROM records WHERE {lose};"
                   f"DELETE FROM register WHERE {lose}")  # fmt: skip
    backup = tmp_path / "replica.db"  # a replica store whose seq is not unique: a hostile node
    con = sqlite3.connect(backup)
    con.execute("CREATE TABLE replica_records (seq, book TEXT, n BIGINT, body BLOB, hchain BLOB)")
    taken = rows[(A, 5)][2]
    for (b, n), (body, hchain, seq) in rows.items():
        sent = taken if (b, n) == (B, 3) else seq
        con.execute(
            "INSERT INTO replica_records VALUES (?, ?, ?, ?, ?)", (sent, b, n, body, hchain)
        )
    con.commit()
    con.close()
    st = open_store(url, migrate=False)
    src = restore.open_source(f"sqlite:///{backup}")
    try:
        result = restore.restore(st, src, trust=golden.world.trust, keys=golden.keys)
        reg = dict(st.reader().all("SELECT seq, book || '#' || n FROM register"))
    finally:
        src.close()  # type: ignore[attr-defined]
        st.close()
    assert result.restored == [(A, 9)], result.as_dict()
    assert sorted(result.rejected) == [
        (A, 5, f"its register position {taken} is the one the source gives {B}#3 too"),
        (B, 3, f"its register position {taken} is the one the source gives {A}#5 too"),
    ]
    assert reg[rows[(A, 9)][2]] == f"{A}#9"
    assert taken not in reg  # no claim was written
    assert set(result.after.lost()) == {(A, 5), (B, 3)}  # still lost: a sound backup can
    st = open_store(url, migrate=False)
    src = restore.StoreRecordSource(f"sqlite:///{golden.path}")
    try:
        again = restore.restore(st, src, trust=golden.world.trust, keys=golden.keys)
    finally:
        src.close()
        st.close()
    assert sorted(again.restored) == [(A, 5), (B, 3)] and again.ok, again.as_dict()
    assert audit.audit(url, trust=golden.world.trust, keys=golden.keys).ok
