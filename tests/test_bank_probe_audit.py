"""Probes of the audit's range findings: a count overwritten with a huge number is one finding
with its last number (``through``), and ``lost()`` names at most MAX_LOST of its numbers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hubi.bank import audit
from tests.test_bank_support import make_bank
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("bank-probe-audit")

HUGE = 2**62


def test_lost_names_at_most_as_many_numbers_as_it_is_asked() -> None:
    """lost(most) named most + 1 numbers of a range finding (MAX_LOST + 1 = 100,001 asked of
    a backup, documented as at most 100,000)."""
    wide = audit.Finding("BKA-a", 1, "truncated", "head says more", through=HUGE)
    report = audit.AuditReport("BKA", "full", [wide])
    assert len(report.lost()) == audit.MAX_LOST
    assert report.lost(3) == [("BKA-a", 1), ("BKA-a", 2), ("BKA-a", 3)]
    one = audit.Finding("BKA-a", 1, "missing", "no record 1")
    report = audit.AuditReport("BKA", "full", [one, audit.Finding("BKA-a", 5, "truncated", "", through=HUGE)])  # fmt: skip
    assert report.lost(3) == [("BKA-a", 1), ("BKA-a", 5), ("BKA-a", 6)]


def test_a_range_finding_keeps_its_last_number_from_a_worker(tmp_path: Path) -> None:
    """`hubi audit verify --level chain --workers N` spreads books over processes, which
    handed their findings back without ``through``: a range finding came back as a finding
    for one number (lost() then named one record of the range, JSON no "through")."""
    w = make_world()
    path = tmp_path / "bank.db"
    books = ("BKA-alice", "BKA-bob", "BKA-carol")
    make_bank(f"sqlite:///{path}", w, accounts=books, fund=100).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE books SET n = ? WHERE book = 'BKA-bob'", (HUGE,))
    con.commit()
    con.close()
    one = audit.audit(f"sqlite:///{path}", level="chain")
    two = audit.audit(f"sqlite:///{path}", level="chain", workers=2)
    assert two.checks.get("workers") == 2
    assert [f.as_dict() for f in two.findings] == [f.as_dict() for f in one.findings]
    (wide,) = [f for f in two.findings if f.kind == "truncated"]
    assert (wide.book, wide.record, wide.through) == ("BKA-bob", 2, HUGE)
    assert two.lost(4) == [("BKA-bob", 2), ("BKA-bob", 3), ("BKA-bob", 4), ("BKA-bob", 5)]
