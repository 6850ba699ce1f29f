"""Probe round 25, `hubi audit` text output: a book name read from a damaged database was cut at
80 characters, so two damaged names alike in their first 79 printed alike and a finding could
not say which book it was about. A cut name now keeps its head and a short hash of the whole;
--json keeps every name whole."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from tests.test_bank_support import make_bank
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("audit-probe25-names")

A, B = "BKA-alice", "BKA-bob"
HEAD = "BKA-" + "x" * 120  # two damaged names alike far past the 80 characters shown
LONG_A, LONG_B = HEAD + "-alice", HEAD + "-bob"


@pytest.fixture(scope="module")
def bank_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bank") / "bank.db"
    make_bank(f"sqlite:///{path}", make_world(), accounts=(A, B), fund=100).close()
    return path


def _damaged(src: Path, tmp_path: Path) -> str:
    """A copy of `src` whose two books' records were moved under the two long names."""
    dst = tmp_path / "case.db"
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    for new, old in ((LONG_A, A), (LONG_B, B)):
        b.execute("UPDATE records SET book = ? WHERE book = ?", (new, old))
    b.commit()
    b.close()
    return f"sqlite:///{dst}"


def _tag(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def test_two_long_damaged_names_alike_in_their_head_print_apart(
    bank_db: Path, tmp_path: Path
) -> None:
    url = _damaged(bank_db, tmp_path)
    res = CliRunner().invoke(main, ["audit", "verify", "--db", url, "--chain-only"])
    assert res.exit_code == 1, res.output
    shown = set(re.findall(r"BKA-x+\S*", res.output))
    assert len(shown) == 2, res.output  # one text for each book, not one for both
    for name in (LONG_A, LONG_B):
        assert f"…#{_tag(name)}" in res.output, res.output
    for text in shown:
        assert len(text) == 80 and text.startswith("BKA-xxxx"), text
    # JSON names each book whole
    res = CliRunner().invoke(main, ["audit", "verify", "--db", url, "--chain-only", "--json"])
    assert res.exit_code == 1, res.output
    books = {f["book"] for f in json.loads(res.output)["findings"]}
    assert {LONG_A, LONG_B} <= books, books


def test_restore_lines_tell_the_long_names_apart(bank_db: Path, tmp_path: Path) -> None:
    url = _damaged(bank_db, tmp_path)
    res = CliRunner().invoke(
        main, ["audit", "restore", "--db", url, "--backup", f"sqlite:///{bank_db}"]
    )
    assert res.exit_code == 1, res.output
    for name in (LONG_A, LONG_B):
        assert f"…#{_tag(name)}" in res.output, res.output


def test_names_that_fit_are_shown_whole(bank_db: Path, tmp_path: Path) -> None:
    """A name of exactly 80 characters is not cut (nor hashed)."""
    dst = tmp_path / "fit.db"
    a, b = sqlite3.connect(bank_db), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    fits = "BKA-" + "y" * 76
    b.execute("UPDATE records SET book = ? WHERE book = ?", (fits, B))
    b.commit()
    b.close()
    res = CliRunner().invoke(main, ["audit", "verify", "--db", f"sqlite:///{dst}", "--chain-only"])
    assert res.exit_code == 1 and fits in res.output and "…#" not in res.output, res.output
