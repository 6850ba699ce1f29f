"""Recovery of a lost record's fields (meet in the middle on the linear sum) and restore of lost
records from a hot backup, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from hubi.bank import audit, recover, restore
from hubi.bank import records as rec
from hubi.bank.engine import BankEngine
from hubi.bank.store import open_store
from hubi_core import codec, lsum
from tests.test_bank_support import BACKENDS, Sql, clone_store, make_bank, make_url, postgres_server  # noqa: F401
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("audit-recover")

A, B, C = "BKA-ann", "BKA-ben", "BKA-cat"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A booked bank: 150 notes among three accounts with varied amounts and purposes."""
    w = make_world()
    url = f"sqlite:///{tmp_path_factory.mktemp('src') / 'bank.db'}"
    eng = make_bank(url, w, accounts=(A, B, C), fund=100_000, checkpoint_every=64, notices="lazy")
    rng = random.Random(7)
    purposes = [f"invoice {i:04d}" for i in range(300)] + [""]
    serials = {A: 1, B: 1, C: 1}
    for _ in range(150):
        payer, payee = rng.sample([A, B, C], 2)
        p = rng.choice(purposes)
        note = w.note(payer, payee, rng.randint(1, 9999), serial=serials[payer], purpose=p or None)
        serials[payer] += rng.choice([1, 1, 2])  # tokens sometimes skip serials
        assert eng.book(codec.encode(note)).ok
    keys = eng.keys
    eng.close()
    return w, url, keys, purposes


def _copy(kind: str, tmp_path: Path, request: pytest.FixtureRequest, src: str) -> str:
    url = make_url(kind, tmp_path, request, "copy")
    clone_store(src, url)
    return url


def _decoy_accounts(count: int) -> list[str]:
    rng = random.Random(11)
    return [f"BKA-{rng.getrandbits(40):012x}" for _ in range(count)]


@pytest.mark.parametrize("kind", BACKENDS)
def test_recover_names_a_lost_debit_and_credit(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, source
) -> None:  # noqa: ANN001
    w, src, keys, purposes = source
    url = _copy(kind, tmp_path, request, src)
    sql = Sql(url)
    lost = {}
    for book, want_kind in ((A, rec.DEBIT), (B, rec.CREDIT)):
        for n in range(40, 200):
            r = rec.Record.parse(sql.body(book, n))
            if r.kind == want_kind:
                lost[book] = (n, r, codec.decode(r.evidence, codec.NOTE))
                sql.x("DELETE FROM records WHERE book = ? AND n = ?", (book, n))
                break
    sql.close()
    store = open_store(url, migrate=False)
    report = audit.audit(store, trust=w.trust, keys=keys)
    assert {(f.book, f.record, f.kind) for f in report.findings if f.book != audit.REGISTER} == {
        (A, lost[A][0], "missing"),
        (B, lost[B][0], "missing"),
    }
    candidates = _decoy_accounts(20_000) + [A, B, C]
    # a debit: the payee is among the candidates, the serial is one the payer has not used
    n, r, note = lost[A]
    where = recover.locate(store, A, keys=keys)
    assert where.n == n and where.lsum == r.lsum and where.delta == -note["amount"]
    hits = recover.recover(store, A, candidates, purposes, keys=keys)
    assert len(hits) == 1
    h = hits[0]
    # candidates from a file that starts with a byte order mark and names the payee twice: the
    # first line was "\ufeffBKA-..." (no hit), and a name twice was two hits (exit status 1)
    listed = tmp_path / "payees.txt"
    listed.write_text("\ufeff" + "\n".join([note["payee"], *candidates[:50], note["payee"]]))
    assert recover.read_lines(listed)[0] == note["payee"]
    again = recover.recover(store, A, recover.read_lines(listed), purposes, keys=keys)
    assert [(x.payee, x.serial) for x in again] == [(h.payee, h.serial)]
    assert (h.kind, h.payer, h.payee, h.serial, h.amount, h.purpose) == (
        "debit",
        A,
        note["payee"],
        note.serial,
        note["amount"],
        note.get("purpose") or "",
    )
    assert h.note_id == lsum.note_id(A, note.serial) and h.note_in_db
    # a credit: the payer is the unknown account, its serial comes from a range
    n, r, note = lost[B]
    hits = recover.recover(store, B, candidates, purposes, keys=keys, serials=range(1, 200))
    assert [(x.kind, x.payer, x.payee, x.serial, x.amount) for x in hits] == [
        ("credit", note.signer, B, note.serial, note["amount"])
    ]
    # without the bank key the amount must be given; a wrong one finds nothing
    with pytest.raises(recover.RecoveryError, match="private key"):
        recover.recover(store, B, candidates, purposes, serials=range(1, 200))
    assert (
        recover.recover(
            store,
            B,
            candidates,
            purposes,
            amount=note["amount"] + 1,
            kind="credit",
            serials=range(1, 200),
        )
        == []
    )
    assert (
        len(
            recover.recover(
                store,
                B,
                candidates,
                purposes,
                amount=note["amount"],
                kind="credit",
                serials=range(1, 200),
            )
        )
        == 1
    )
    store.close()


def test_recover_refuses_two_adjacent_and_the_tail_works(
    tmp_path: Path, request: pytest.FixtureRequest, source
) -> None:  # noqa: ANN001
    w, src, keys, purposes = source
    url = _copy("sqlite", tmp_path, request, src)
    sql = Sql(url)
    head = int(sql.q("SELECT n FROM books WHERE book = ?", (C,))[0][0])
    last = rec.Record.parse(sql.body(C, head))
    note = codec.decode(last.evidence, codec.NOTE)
    sql.x("DELETE FROM records WHERE book = ? AND n = ?", (C, head))
    sql.x("DELETE FROM records WHERE book = ? AND n IN (10, 11)", (A,))
    sql.close()
    store = open_store(url, migrate=False)
    with pytest.raises(recover.RecoveryError, match="only the XOR"):
        recover.recover(store, A, [B, C], purposes, n=10, keys=keys)
    with pytest.raises(recover.RecoveryError, match="lost records"):
        recover.locate(store, A)
    # the last record: its ecode and balance come from the signed head
    other = note["payee"] if note.signer == C else note.signer
    hits = recover.recover(store, C, [A, B, "BKA-zzz"], purposes, keys=keys, serials=range(1, 400))
    assert [(h.payer, h.payee, h.amount) for h in hits] == [
        (note.signer, note["payee"], note["amount"])
    ]
    assert other in (A, B)
    store.close()


def test_meet_in_the_middle_table() -> None:
    others = [f"BKB-{i:06d}" for i in range(5000)]
    purposes = ["", "rent", "coffee", "tea"]
    target = (
        lsum.counterparty_digest("BKB-004321") + lsum.serial_digest(17) + lsum.purpose_digest("tea")
    ) & recover.MASK
    hits = recover.meet_in_the_middle(target, others, lsum.T_PAYEE, list(range(1, 40)), purposes)
    assert hits == [("BKB-004321", 17, "tea")]
    assert (
        recover.meet_in_the_middle(target + 1, others, lsum.T_PAYEE, list(range(1, 40)), purposes)
        == []
    )


@pytest.mark.parametrize("kind", BACKENDS)
def test_restore_from_a_backup_database(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, source
) -> None:  # noqa: ANN001
    w, src, keys, _ = source
    url = _copy(kind, tmp_path, request, src)
    sql = Sql(url)
    head_b = int(sql.q("SELECT n FROM books WHERE book = ?", (B,))[0][0])
    sql.x("DELETE FROM records WHERE book = ? AND n IN (5, 6, 50)", (A,))
    sql.x("DELETE FROM records WHERE book = ? AND n > ?", (B, head_b - 3))
    sql.close()
    store = open_store(url, migrate=False)
    memo = audit.AuditMemo()
    result = restore.restore(
        store, restore.StoreRecordSource(src), trust=w.trust, keys=keys, memo=memo
    )
    want = [(A, 5), (A, 6), (A, 50)] + [(B, k) for k in range(head_b - 2, head_b + 1)]
    assert sorted(result.wanted) == sorted(want)
    assert (
        sorted(result.restored) == sorted(want) and not result.rejected and not result.unavailable
    )
    assert result.ok and result.after is not None and result.after.ok
    assert not result.before.ok
    # restored byte for byte, signatures included
    a, b = Sql(src), Sql(url)
    assert a.body(A, 50) == b.body(A, 50)
    a.close()
    b.close()
    store.close()


def test_restore_refuses_forged_records_and_reads_a_replica_store(
    tmp_path: Path, request: pytest.FixtureRequest, source
) -> None:  # noqa: ANN001
    w, src, keys, _ = source
    url = _copy("sqlite", tmp_path, request, src)
    sql = Sql(url)
    good = {
        n: (
            sql.body(A, n),
            bytes(sql.q("SELECT hchain FROM records WHERE book = ? AND n = ?", (A, n))[0][0]),
            sql.q("SELECT seq FROM register WHERE book = ? AND n = ?", (A, n))[0][0],
        )
        for n in (20, 21)
    }
    sql.x("DELETE FROM records WHERE book = ? AND n IN (20, 21)", (A,))
    sql.close()
    # a hot backup's replica table (seq, book, n, body, hchain): record 21 forged there
    backup = tmp_path / "replica.db"
    import sqlite3

    con = sqlite3.connect(backup)
    con.execute(
        "CREATE TABLE replica_records (seq BIGINT PRIMARY KEY, book TEXT, n BIGINT, body BLOB, hchain BLOB)"
    )
    forged = rec.Record.parse(good[21][0])
    forged = dataclasses.replace(forged, delta=forged.delta - 1)
    con.execute(
        "INSERT INTO replica_records VALUES (?, ?, ?, ?, ?)",
        (good[20][2], A, 20, good[20][0], good[20][1]),
    )
    con.execute(
        "INSERT INTO replica_records VALUES (?, ?, ?, ?, ?)",
        (good[21][2], A, 21, forged.body(), good[21][1]),
    )
    con.commit()
    con.close()
    store = open_store(url, migrate=False)
    result = restore.restore(
        store, restore.open_source(f"sqlite:///{backup}"), trust=w.trust, keys=keys
    )
    assert result.restored == [(A, 20)]
    assert [(b, n) for b, n, _ in result.rejected] == [(A, 21)]
    assert "sig8" in result.rejected[0][2] or "chain" in result.rejected[0][2]
    assert not result.ok
    assert [(f.book, f.record, f.kind) for f in result.after.findings if f.book == A] == [
        (A, 21, "missing")
    ]
    with pytest.raises(restore.RestoreError, match="signed by the bank"):
        restore.open_source("http://127.0.0.1:9")
    store.close()


def test_restore_writes_no_register_position_the_register_lacks(
    tmp_path: Path, request: pytest.FixtureRequest, source
) -> None:  # noqa: ANN001
    """A record's register position comes unsigned from the backup. One past the register's end
    used to go in as sent, and the next booking then failed on that position for good (a
    position of 10^30 stopped the restore with an OverflowError naming nothing)."""
    w, src, keys, _ = source
    url = _copy("sqlite", tmp_path, request, src)
    sql = Sql(url)
    size = int(sql.q("SELECT size FROM register_head")[0][0])
    rows = {
        n: sql.q(
            "SELECT r.body, r.hchain, g.seq FROM records r JOIN register g"
            " ON g.book = r.book AND g.n = r.n WHERE r.book = ? AND r.n = ?",
            (A, n),
        )[0]
        for n in (20, 21, 22, 23)
    }
    (other,) = sql.q("SELECT seq FROM register WHERE book = ? AND n = 5", (A,))[0]
    sql.x("DELETE FROM records WHERE book = ? AND n IN (20, 21, 22, 23)", (A,))
    sql.x("DELETE FROM register WHERE book = ? AND n IN (20, 21, 22, 23)", (A,))
    sql.close()
    backup = tmp_path / "replica.db"
    import sqlite3

    con = sqlite3.connect(backup)
    con.execute("CREATE TABLE replica_records (seq, book TEXT, n BIGINT, body BLOB, hchain BLOB)")
    sent = {20: size, 21: str(10**30), 22: other, 23: rows[23][2]}  # 23: its true position
    for n, (body, hchain, _) in rows.items():
        con.execute(
            "INSERT INTO replica_records VALUES (?, ?, ?, ?, ?)", (sent[n], A, n, body, hchain)
        )
    con.commit()
    con.close()
    store = open_store(url, migrate=False)
    result = restore.restore(
        store, restore.open_source(f"sqlite:///{backup}"), trust=w.trust, keys=keys
    )
    store.close()
    why = {n: text for _, n, text in result.rejected}
    assert result.restored == [(A, 23)], result.as_dict()
    assert why[20] == f"its register position {size} is not below the register's size {size}"
    assert why[21] == f"its register position {10**30} is not below the register's size {size}"
    assert why[22] == f"its register position {other} holds {A}#5"
    # the bank books on: the next booking takes the register's next positions
    eng = BankEngine(url, w.banks["BKA"], w.trust)
    assert eng.book(codec.encode(w.note(B, C, 5, serial=10_000))).ok
    assert eng.register_size() == size + 2  # its debit and credit records
    eng.close()


def test_one_restore_brings_back_records_lost_with_their_register_rows(
    tmp_path: Path, request: pytest.FixtureRequest, source
) -> None:  # noqa: ANN001
    """Records lost together with their register rows: the audit names missing numbers one by
    one only as far as the rows left account for them, so one restore brought back part and
    exited 1 (a second run did the rest). Restore now goes round until nothing more comes."""
    w, src, keys, _ = source
    url = _copy("sqlite", tmp_path, request, src)
    sql = Sql(url)
    sql.x("DELETE FROM register WHERE (book = ? AND n >= 30) OR (book = ? AND n >= 40)", (A, B))
    sql.x("DELETE FROM records WHERE (book = ? AND n >= 30) OR (book = ? AND n >= 40)", (A, B))
    sql.close()
    store = open_store(url, migrate=False)
    result = restore.restore(store, restore.open_source(src), trust=w.trust, keys=keys)
    store.close()
    assert result.ok, result.as_dict()["after"]["findings"][:5]
    assert len(result.restored) == len(set(result.restored)) > 100
