"""Probe round 26, `--book` and the names `hubi audit` prints: a long book name read from a
damaged database is printed cut (its head, '…#' and 8 hex digits of its SHA-256), and that
text, pasted back into `--book` of `audit verify`, `locate` or `recover`, named no book. The
cut form now stands for the one whole name in the database it was printed from; a cut form
that stands for none is refused, naming --book. So does a name printed with its control
characters escaped."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from tests.test_bank_support import book_pingpong, make_bank
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("cli-probe26-cut-book")

A, B = "BKA-alice", "BKA-bob"
HEAD = "BKA-" + "x" * 120  # two damaged names alike far past the 80 characters shown
LONG_A, LONG_B = HEAD + "-alice", HEAD + "-bob"
CUT = re.compile(r"BKA-x+…#[0-9a-f]{8}")


@pytest.fixture(scope="module")
def bank_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = make_world()
    path = tmp_path_factory.mktemp("bank") / "bank.db"
    eng = make_bank(f"sqlite:///{path}", w, accounts=(A, B), fund=1000)
    book_pingpong(eng, w, A, B, 6, batch=2)
    eng.close()
    return path


def _damaged(src: Path, tmp_path: Path) -> str:
    """A copy of `src` whose two books were renamed (head, records, register) to the two long
    names, and record 3 of each deleted."""
    dst = tmp_path / "case.db"
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    for new, old in ((LONG_A, A), (LONG_B, B)):
        for table in ("books", "records", "register"):
            b.execute(f"UPDATE {table} SET book = ? WHERE book = ?", (new, old))
        b.execute("DELETE FROM records WHERE book = ? AND n = 3", (new,))
    b.commit()
    b.close()
    return f"sqlite:///{dst}"


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["audit", *args])
    assert "Traceback" not in res.output, res.output
    return res.exit_code, res.output


def _printed(url: str) -> dict[str, str]:
    """The cut text verify printed for each long name (told apart by --json's whole names)."""
    code, out = _run("verify", "--db", url, "--chain-only")
    assert code == 1, out
    cut = sorted(set(CUT.findall(out)))
    assert len(cut) == 2 and all(len(c) == 80 for c in cut), out
    by_tag = {c[-8:]: c for c in cut}
    return {n: by_tag[hashlib.sha256(n.encode()).hexdigest()[:8]] for n in (LONG_A, LONG_B)}


def test_a_printed_cut_name_names_its_book_again(bank_db: Path, tmp_path: Path) -> None:
    url = _damaged(bank_db, tmp_path)
    printed = _printed(url)
    for name, cut in printed.items():
        code, out = _run("verify", "--db", url, "--chain-only", "--book", cut, "--json")
        assert code == 1, out
        doc = json.loads(out)
        assert {f["book"] for f in doc["findings"]} == {name}, out
        assert (name, 3, "missing") in {
            (f["book"], f["record"], f["kind"]) for f in doc["findings"]
        }
        code, out = _run("locate", "--db", url, "--book", cut, "--json")
        assert code == 0, out
        doc = json.loads(out)
        assert doc["book"] == name and doc["record"] == 3, out
        code, out = _run("locate", "--db", url, "--book", cut)
        assert code == 0 and f"{cut} #3: lsum" in " ".join(out.split()), out


def test_recover_takes_the_printed_cut_name(bank_db: Path, tmp_path: Path) -> None:
    url = _damaged(bank_db, tmp_path)
    cut = _printed(url)[LONG_A]
    payees = tmp_path / "payees.txt"
    purposes = tmp_path / "purposes.txt"
    payees.write_text(f"{B}\n")
    purposes.write_text("order 0\n")
    code, out = _run(
        "recover", "--db", url, "--book", cut, "--payees", str(payees),
        "--purposes", str(purposes), "--amount", "10", "--kind", "debit", "--json",
    )  # fmt: skip
    assert "no book" not in out and "BadParameter" not in out, out
    assert code in (0, 1) and "candidates" in json.loads(out), out


def test_a_cut_name_that_stands_for_no_book_is_refused(bank_db: Path, tmp_path: Path) -> None:
    url = _damaged(bank_db, tmp_path)
    cut = _printed(url)[LONG_A]
    wrong = cut[:-8] + ("0" * 8 if not cut.endswith("0" * 8) else "1" * 8)
    for cmd in ("verify", "locate"):
        code, out = _run(cmd, "--db", url, "--book", wrong)
        assert code == 2, out
        assert "--book" in out and "cut for printing" in out and "no book" in out, out
        code, out = _run(cmd, "--db", url, "--book", wrong, "--json")  # JSON, as any failure
        assert code == 2 and json.loads(out)["error"] == "PrintedName", out
        assert "cut for printing" in json.loads(out)["message"], out


def test_a_whole_name_and_a_short_one_are_taken_as_given(bank_db: Path, tmp_path: Path) -> None:
    url = _damaged(bank_db, tmp_path)
    code, out = _run("locate", "--db", url, "--book", LONG_B, "--json")
    assert code == 0 and json.loads(out)["book"] == LONG_B, out
    code, out = _run("verify", "--db", f"sqlite:///{bank_db}", "--book", A, "--json")
    assert code == 0 and json.loads(out)["ok"], out


ESC_NAME = "BKA-\x1bcarol"  # a damaged name with a control character: printed escaped
ESC_SHOWN = "BKA-\\x1bcarol"


def test_a_printed_escaped_name_names_its_book_again(bank_db: Path, tmp_path: Path) -> None:
    dst = tmp_path / "esc.db"
    a, b = sqlite3.connect(bank_db), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    for table in ("books", "records", "register"):
        b.execute(f"UPDATE {table} SET book = ? WHERE book = ?", (ESC_NAME, B))
    b.execute("DELETE FROM records WHERE book = ? AND n = 3", (ESC_NAME,))
    b.commit()
    b.close()
    url = f"sqlite:///{dst}"
    code, out = _run("verify", "--db", url, "--chain-only")
    assert code == 1 and ESC_SHOWN in out and "\x1b" not in out, out
    code, out = _run("locate", "--db", url, "--book", ESC_SHOWN, "--json")
    assert code == 0, out
    assert json.loads(out)["book"] == ESC_NAME and json.loads(out)["record"] == 3, out
    code, out = _run("verify", "--db", url, "--chain-only", "--book", ESC_SHOWN, "--json")
    assert code == 1 and {f["book"] for f in json.loads(out)["findings"]} == {ESC_NAME}, out
    # a name with a backslash the database does not hold is still "no book", as before
    code, out = _run("locate", "--db", url, "--book", "BKA-\\nobody")
    assert code == 2 and "no book" in out, out
