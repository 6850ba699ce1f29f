"""`hubi audit` output of text read from a damaged or hostile database.

Found: book names, bank ids and details were printed as stored: a book name holding a
right-to-left override or an ESC sequence made a finding line show another book's name (or
rewrite the screen). They are now shown escaped (\\u202e, \\x1b) in text; JSON escapes them
itself and keeps the exact name.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from tests.test_bank_support import make_bank
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("audit-probe24-output")

A, B = "BKA-alice", "BKA-bob"
# shown as "BKA-bob" plus a reversed tail; the ESC sequence would clear the screen
HOSTILE = "BKA-\u202ebob\x1b[2J\u2066x"
RAW = ("\u202e", "\x1b", "\u2066")


@pytest.fixture(scope="module")
def bank_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bank") / "bank.db"
    make_bank(f"sqlite:///{path}", make_world(), accounts=(A, B), fund=100).close()
    return path


def _damaged(src: Path, tmp_path: Path, *sql: tuple[str, tuple]) -> str:
    dst = tmp_path / "case.db"
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    for q, args in sql:
        b.execute(q, args)
    b.commit()
    b.close()
    return f"sqlite:///{dst}"


def _clean_of_raw(text: str) -> None:
    for c in RAW:
        assert c not in text, f"raw {c!r} in {text!r}"


def test_a_hostile_book_name_is_escaped_in_the_finding_line(bank_db: Path, tmp_path: Path) -> None:
    """A record moved under a book name with controls: the finding names it escaped."""
    url = _damaged(bank_db, tmp_path, ("UPDATE records SET book = ? WHERE book = ?", (HOSTILE, B)))
    res = CliRunner().invoke(main, ["audit", "verify", "--db", url, "--chain-only"])
    assert res.exit_code == 1, res.output
    _clean_of_raw(res.output)
    assert "BKA-\\u202ebob\\x1b[2J\\u2066x" in res.output, res.output
    res = CliRunner().invoke(main, ["audit", "verify", "--db", url, "--chain-only", "--json"])
    assert res.exit_code == 1, res.output
    _clean_of_raw(res.output)  # the encoder escapes them
    doc = json.loads(res.output)
    assert HOSTILE in {f["book"] for f in doc["findings"]}  # and keeps the exact name


def test_a_hostile_bank_id_is_escaped(bank_db: Path, tmp_path: Path) -> None:
    url = _damaged(
        bank_db, tmp_path, ("UPDATE meta SET value = ? WHERE key = 'bank'", (b"BKA\x1b]0;x\x07",))
    )
    res = CliRunner().invoke(main, ["audit", "verify", "--db", url, "--chain-only"])
    assert "\x1b" not in res.output and "\x07" not in res.output, res.output
    assert "\\x1b" in res.output, res.output


def test_a_hostile_book_argument_is_escaped_in_the_error(bank_db: Path, tmp_path: Path) -> None:
    """`--book` names a book the database does not hold: the error names it escaped."""
    url = _damaged(bank_db, tmp_path)
    for cmd in ("verify", "locate"):
        res = CliRunner().invoke(main, ["audit", cmd, "--db", url, "--book", HOSTILE])
        assert res.exit_code == 2, res.output
        _clean_of_raw(res.output)
        assert "\\u202e" in res.output, res.output


def test_hostile_candidate_files_are_refused_by_line_and_shown_escaped(
    bank_db: Path, tmp_path: Path
) -> None:
    """`hubi audit recover` with candidate files a hostile hand wrote: each refused with the file
    and line named, the line's controls shown escaped, exit 2."""
    url = _damaged(bank_db, tmp_path)
    good = tmp_path / "good.txt"
    good.write_text(f"{A}\n")
    cases = {
        "payees": [
            (f"{A}\n{HOSTILE}\n".encode(), "line 2"),
            (b"BKA-a\xff\n", "not UTF-8"),
            (b"BKA-" + b"a" * 100_000 + b"\n", "longer than"),
            (b"\n\n", "no account id"),
        ],
        "purposes": [(f"rent\n{HOSTILE}\n".encode(), "line 2"), (b"\xc3\n", "not UTF-8")],
    }
    for which, files in cases.items():
        for i, (body, said) in enumerate(files):
            f = tmp_path / f"{which}{i}.txt"
            f.write_bytes(body)
            files_args = {"payees": good, "purposes": good, which: f}
            args = ["audit", "recover", "--db", url, "--book", A, "--amount", "5", "--kind"]
            args += ["debit", "--payees", str(files_args["payees"])]
            args += ["--purposes", str(files_args["purposes"])]
            res = CliRunner().invoke(main, args)
            assert res.exit_code == 2, (which, i, res.output)
            _clean_of_raw(res.output)
            assert said in res.output and f.name in res.output, (which, i, res.output)


def test_restore_names_a_hostile_book_escaped(bank_db: Path, tmp_path: Path) -> None:
    """A record moved under a hostile book name, restored from the clean original: the lines
    about the hostile book (not in the backup) show it escaped."""
    url = _damaged(bank_db, tmp_path, ("UPDATE records SET book = ? WHERE book = ?", (HOSTILE, B)))
    res = CliRunner().invoke(
        main, ["audit", "restore", "--db", url, "--backup", f"sqlite:///{bank_db}"]
    )
    assert res.exit_code == 1, res.output
    _clean_of_raw(res.output)
    assert "BKA-\\u202ebob\\x1b[2J\\u2066x" in res.output, res.output
