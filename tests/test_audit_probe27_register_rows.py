"""Register rows lost while their records stay in their books. The audit names such a loss only
by position ("register entry 402 is missing"), so `hubi audit restore` asked the backup for
nothing, said "lost 0, restored 0" and exited 1 with the register still short. It now asks the
backup for the records no register row names and puts back the position the backup gives (checked
as a restored record's is); a backup that gives no position for one refuses it by name."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from tests.test_bank_support import book_pingpong, make_bank
from tests.test_bank_support import sqlite_copy as _copy
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("test_audit_probe27_register_rows")

A, B = "BKA-alice", "BKA-bob"
ROWS_ONLY = [(A, 3), (A, 4), (B, 7)]  # register rows lost, records kept
BOTH = [(B, 9)]  # record and register row lost


def _where(names: list[tuple[str, int]]) -> str:
    return " OR ".join(f"(book = '{b}' AND n = {n})" for b, n in names)


def _register(path: Path) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT seq, book, n FROM register ORDER BY seq").fetchall()
    finally:
        con.close()


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = make_world()
    path = tmp_path_factory.mktemp("golden") / "bank.db"
    eng = make_bank(f"sqlite:///{path}", w, accounts=(A, B), fund=10_000, checkpoint_every=8)
    book_pingpong(eng, w, A, B, 12, batch=4)
    eng.close()
    return path


def _lose(golden: Path, tmp_path: Path) -> Path:
    case = tmp_path / "case.db"
    _copy(
        golden,
        case,
        f"DELETE FROM register WHERE {_where(ROWS_ONLY + BOTH)}; "
        f"DELETE FROM records WHERE {_where(BOTH)};",
    )
    return case


def test_restore_puts_back_register_rows_lost_without_their_records(
    golden: Path, tmp_path: Path
) -> None:
    case = _lose(golden, tmp_path)
    db = f"sqlite:///{case}"
    code, out = _cli("audit", "verify", "--db", db, "--json")
    assert code == 1 and json.loads(out)["summary"]["missing"] == 1 + len(ROWS_ONLY + BOTH)
    code, out = _cli("audit", "restore", "--db", db, "--backup", str(golden), "--json")
    doc = json.loads(out)
    assert code == 0, doc["after"]["summary"]
    assert sorted((r["book"], r["record"]) for r in doc["restored"]) == sorted(ROWS_ONLY + BOTH)
    assert doc["ok"] and doc["rejected"] == [] and doc["unavailable"] == []
    assert _register(case) == _register(golden)
    assert _cli("audit", "verify", "--db", db)[0] == 0


def test_a_backup_without_the_positions_refuses_them_by_name(golden: Path, tmp_path: Path) -> None:
    """A standby that lost the same register rows gives the records but no position: refused,
    named, and the restore exits 1 (the register is still short)."""
    case = _lose(golden, tmp_path)
    standby = tmp_path / "standby.db"
    _copy(golden, standby, f"DELETE FROM register WHERE {_where(ROWS_ONLY)};")
    code, out = _cli(
        "audit", "restore", "--db", f"sqlite:///{case}", "--backup", str(standby), "--json"
    )
    doc = json.loads(out)
    assert code == 1 and not doc["ok"]
    assert sorted((r["book"], r["record"]) for r in doc["rejected"]) == sorted(ROWS_ONLY)
    assert all("no register position" in r["reason"] for r in doc["rejected"])
    assert [(r["book"], r["record"]) for r in doc["restored"]] == BOTH
    code, out = _cli("audit", "restore", "--db", f"sqlite:///{case}", "--backup", str(standby))
    assert code == 1 and f"refused {A} #3: the source gives no register position" in out
