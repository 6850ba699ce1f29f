"""Probe 25r of the audit of records stored under a book cell that holds no book name (bytes in
a BLOB, or text whose bytes are not UTF-8): each such name was looked up with
"CAST(book AS BLOB) = ?", which no index serves, so the audit scanned the whole records table
once per such name; a tampered file with 30,000 of them took minutes (quadratic), where the
module promises an audit's time follows the rows stored. Now both forms are looked up on the
table's key. Every stray record is still a finding at its own book and number."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from hubi.bank import audit
from tests.test_bank_support import book_pingpong, make_bank
from tests.world import make_world

A, B = "BKA-alice", "BKA-bob"
STRAYS = 30_000
BOUND = 30.0  # seconds: the indexed lookups take about 1 s here, the table scans minutes


def test_many_records_under_names_that_are_not_utf8_are_audited_in_linear_time(
    tmp_path: Path,
) -> None:
    w = make_world()
    path = tmp_path / "bank.db"
    eng = make_bank(f"sqlite:///{path}", w, accounts=(A, B), fund=1000, checkpoint_every=4)
    book_pingpong(eng, w, A, B, 8, batch=2)
    eng.close()
    values = [b"\xfe" + i.to_bytes(4, "big") for i in range(STRAYS)]
    db = sqlite3.connect(path)
    db.execute(f"UPDATE records SET book = x'ff41' WHERE book = '{A}' AND n = 2")
    db.execute(f"UPDATE records SET book = CAST(x'ff41' AS TEXT) WHERE book = '{A}' AND n = 3")
    db.executemany(
        "INSERT INTO records (book, n, body, hchain) VALUES (CAST(? AS TEXT), 1, x'00', ?)",
        [(v, bytes(32)) for v in values],
    )
    db.commit()
    db.close()
    t0 = time.monotonic()
    report = audit.audit(f"sqlite:///{path}")
    took = time.monotonic() - t0
    found = {(f.book, f.record, f.kind): f.detail for f in report.findings}
    assert "stored under book b'\\xffA'" in found[(A, 2, "altered")], found.get((A, 2, "altered"))
    assert "stored under book b'\\xffA'" in found[(A, 3, "altered")], found.get((A, 3, "altered"))
    named = {f.book for f in report.findings if f.record == 1 and f.kind == "altered"}
    missed = [v for v in values if f"(book {v!r})" not in named]
    assert not missed, missed[:5]
    assert took < BOUND, f"the audit took {took:.1f} s"
