"""The entry and report counts of a bank's consortium state (its status's "entries" and
"reports") are kept as entries and reports are written, not counted over every row on each
status call: they agree with a COUNT after a stream of settled, bounced and rejected notes,
restarts, writes that fail and roll back, and when a file of schema version 2 (no counts kept)
is opened and brought up."""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from pathlib import Path

import pytest

from hubi.consortium import entries as ent
from hubi.consortium.errors import ConsortiumError
from hubi.consortium.service import EmbeddedConsortium
from hubi.consortium.state import ConsortiumState, EntryRow
from hubi_core import codec, lsum
from tests.consortium_support import BANKS4, FUNDS, close_embedded, load_trust, make_home

STATES = ["ordered", "settled", "bounced", "rejected"]


def _counted(path: Path) -> dict[str, int]:
    """A COUNT of the entries by state, read from the file itself."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT state, COUNT(*) FROM entries GROUP BY state").fetchall()
    return {s: int(n) for s, n in rows}


def _reports(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM reports").fetchone()[0])


def _row(i: int, state: str) -> EntryRow:
    nid = i.to_bytes(16, "big")
    return EntryRow(
        nid, i, b"d" * 32, "BKA-000001", "BKB-000001", 5, i, "BKB", [], state,
        None, None, None, None, None, b"note", 0,
    )  # fmt: skip


def test_counts_follow_every_write_and_rollback(tmp_path: Path) -> None:
    """Entries added and moved between states at random, some transactions failing half way:
    after each, and after each reopening, the counts are a COUNT of the entries."""
    path = tmp_path / "state.db"
    state = ConsortiumState(path, "embedded:x")
    rng = random.Random(24)
    revision, made = 0, 0
    try:
        for step in range(300):
            revision += 1
            fail = rng.random() < 0.15
            try:
                with state.apply(revision, b"log/n/%d" % step, b"v", "ok") as tx:
                    if made == 0 or rng.random() < 0.5:
                        made += 1
                        tx.add_entry(_row(made, rng.choice(STATES)))
                    else:
                        nid = rng.randint(1, made).to_bytes(16, "big")
                        if tx.entry(nid) is not None:
                            tx.update_entry(nid, state=rng.choice(STATES), reason="r%d" % step)
                    if rng.random() < 0.3:
                        tx.report(revision, "probe", "BKD", None, "step %d" % step)
                    if fail:
                        raise RuntimeError("the applier failed half way")
            except RuntimeError:
                revision -= 1  # rolled back: the revision is free again
                made = len(state.entries(limit=10_000))
            if step % 10 == 3:  # reports outside the log order
                state.add_report("forged-endorsement", "BKC", None, "step %d" % step)
                state.add_report_once(revision, "overwrite", "BKC", None, "step %d" % step)
            assert state.counts() == _counted(path), step
            assert state.report_count() == _reports(path), step
            if step % 97 == 96:
                state.close()
                state = ConsortiumState(path, "embedded:x")
                assert state.counts() == _counted(path)
                assert state.report_count() == _reports(path)
    finally:
        state.close()
    assert sum(_counted(path).values()) == made


def _as_version_2(path: Path, extra: int) -> None:
    """`path` made what schema version 2 left: no counts kept, and `extra` more entries
    written after the counts were last right (a version-2 build went on writing)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        for t in ("entries_tally_insert", "entries_tally_update", "entries_tally_delete"):
            db.execute(f"DROP TRIGGER {t}")
        for t in ("reports_tally_insert", "reports_tally_delete"):
            db.execute(f"DROP TRIGGER {t}")
        db.execute("DROP TABLE tallies")
        for _ in range(extra):
            db.execute(
                "INSERT INTO reports (revision, kind, subject, detail, time)"
                " VALUES (1, 'probe', 'BKD', 'v2', 0)"
            )
        for i in range(extra):
            db.execute(
                "INSERT INTO entries (note_id, revision, digest, payer, payee, amount, serial, "
                "submitter, endorsers, state, note, time) VALUES "
                "(?, 0, x'00', 'BKA-000001', 'BKB-000001', 1, 0, 'BKB', '[]', ?, x'00', 0)",
                (b"v2-%d" % i, STATES[i % 4]),
            )
        db.execute("PRAGMA user_version = 2")
        db.commit()


def test_a_version_2_file_is_counted_once_on_opening(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = ConsortiumState(path, "embedded:x")
    with state.apply(1, b"log/n/1", b"v", "ok") as tx:
        for i in range(1, 30):
            tx.add_entry(_row(i, STATES[i % 3]))
        tx.report(1, "probe", "BKD", None, "before")
    state.close()
    _as_version_2(path, extra=9)
    state = ConsortiumState(path, "embedded:x")
    try:
        assert state.counts() == _counted(path) and sum(state.counts().values()) == 38
        assert state.report_count() == _reports(path) == 10
        with state.apply(2, b"log/n/2", b"v", "ok") as tx:
            tx.add_entry(_row(100, "ordered"))
            tx.update_entry(b"v2-0", state="settled")  # an entry of the version-2 days
            tx.report(2, "probe", "BKD", None, "after")
        assert state.counts() == _counted(path)
        assert state.report_count() == _reports(path) == 11
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    finally:
        state.close()


def test_a_damaged_count_is_named(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    ConsortiumState(path, "embedded:x").close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("INSERT INTO tallies (name, n) VALUES ('entries/settled', 'many')")
        db.commit()
    with pytest.raises(ConsortiumError, match="tally 'entries/settled' is not a count"):
        ConsortiumState(path, "embedded:x")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE tallies")
        db.commit()
    with pytest.raises(ConsortiumError, match=r"table\(s\) tallies missing"):
        ConsortiumState(path, "embedded:x")


def _consortium(home: Path) -> EmbeddedConsortium:
    return EmbeddedConsortium(
        home, prune_interval=None, checkpoint_interval=3600.0, trust=load_trust(home)
    ).start()


def _settle(ec: EmbeddedConsortium, total: int) -> dict[str, int]:
    """Wait until every bank holds `total` entries, none still ordered, the same at every bank
    (a note's debit entry comes after its note is applied); their COUNT."""
    deadline = time.monotonic() + 60
    while True:
        seen = {b: _counted(n.state.path) for b, n in ec.nodes.items()}
        one = seen["BKA"]
        done = sum(one.values()) == total and "ordered" not in one
        if done and all(c == one for c in seen.values()):
            return one
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)


def _check(ec: EmbeddedConsortium, want: dict[str, int]) -> None:
    for bank, n in ec.nodes.items():
        assert n.state.counts() == _counted(n.state.path) == want, bank
        assert n.status()["entries"] == want, bank
        assert n.status()["reports"] == _reports(n.state.path) >= 2, bank


def test_counts_over_a_stream_of_notes_and_restarts(tmp_path: Path) -> None:
    """Settled notes, a debit that bounces, an entry with a forged endorsement and a burnt
    entry (not a note at all), a restart between: every bank's counts are its COUNT."""
    home = tmp_path / "home"
    acc = make_home(home, BANKS4)
    ec = _consortium(home)
    try:
        for i in range(6):
            out = ec.submit("BKB", acc["BKA-000001"].note("BKB-000001", 10 + i))
            assert out["outcome"] == "booked", out
        # a debit that bounces: endorsed, then the payer spends the funds first
        b = ec.nodes["BKB"]
        note = acc["BKA-000002"].note("BKB-000002", FUNDS - 10)
        obj = codec.decode(note, codec.NOTE)
        _, checks = b.collect(note, obj)
        assert ec.engine("BKA").book(acc["BKA-000002"].note("BKA-000003", 100)).ok
        raw = [c.raw for c in checks if c.endorses]
        nid = lsum.note_id(obj.signer, obj.serial)
        assert b.orderer.claim(ent.note_key(nid), ent.NoteEntry(note, raw, "BKB").encode()).created
        # an entry with too few endorsements, and one that is no entry at all
        thin = acc["BKA-000003"].note("BKC-000001", 20)
        tobj = codec.decode(thin, codec.NOTE)
        only = ec.nodes["BKA"].validate(thin)
        tnid = lsum.note_id(tobj.signer, tobj.serial)
        b.orderer.claim(ent.note_key(tnid), ent.NoteEntry(thin, [only], "BKD").encode())
        b.orderer.claim(ent.note_key(b"\x07" * len(nid)), b"not an entry")
        first = _settle(ec, 9)
        assert first["settled"] == 6 and first["bounced"] == 1, first
        assert sum(first.values()) == 9, first
        _check(ec, first)
    finally:
        close_embedded(ec)
    ec = _consortium(home)  # restart: the counts come from the file, and go on
    try:
        _check(ec, first)
        for i in range(3):
            out = ec.submit("BKC", acc["BKA-000004"].note("BKC-000002", 5 + i))
            assert out["outcome"] == "booked", out
        assert _settle(ec, 12) == {**first, "settled": 9}
        _check(ec, {**first, "settled": 9})
    finally:
        close_embedded(ec)


def test_counts_read_no_entry(tmp_path: Path) -> None:
    """counts() and report_count() read the kept counts alone: neither the entries nor the
    reports table is read at all (a COUNT over them took 28 ms at 300,000 entries and 77 ms at
    300,000 reports, on every status call)."""
    state = ConsortiumState(tmp_path / "state.db", "embedded:x")
    try:
        with state.apply(1, b"log/n/1", b"v", "ok") as tx:
            for i in range(1, 50):
                tx.add_entry(_row(i, STATES[i % 4]))
            tx.report(1, "probe", "BKD", None, "one")
        read: set[str] = set()

        def note(action: int, a: str | None, b: str | None, db: str | None, by: str | None) -> int:
            if action == sqlite3.SQLITE_READ and a:
                read.add(a)
            return sqlite3.SQLITE_OK

        conn = state._db.conn()  # this thread's connection, the one counts() uses here
        conn.set_authorizer(note)
        try:
            counts, reports = state.counts(), state.report_count()
        finally:
            conn.set_authorizer(None)
        assert counts == {"ordered": 12, "settled": 13, "bounced": 12, "rejected": 12}
        assert reports == 1
        assert not read & {"entries", "reports"}, read
    finally:
        state.close()
