"""Probes of the kept key files `hubi bank open-account` opens an account with after a kill:
the files are found by the account's name, so what they hold must be that account's."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main

pytestmark = pytest.mark.xdist_group("bank-probe-keys")


def cli(*args: str) -> tuple[int, str]:
    """Run `hubi ARGS` in-process; an exception (a traceback) fails the test."""
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, " ".join(res.output.split())


def test_open_account_refuses_kept_files_of_another_account(tmp_path: Path) -> None:
    """A rerun of open-account finds ACCOUNT.secret and ACCOUNT.template in --out and opens the
    account with them. Files of another account under that name (an operator's copy) opened
    the other account instead, or found it open, and said 'opened BKA-alice' though no
    BKA-alice was opened. Now it is refused, naming both accounts, and nothing is opened."""
    home = tmp_path / "home"
    h = str(home)
    assert cli("consortium", "init", "--home", h, "--banks", "BKA,BKB")[0] == 0
    assert cli("bank", "init", "--home", h, "--bank", "BKA")[0] == 0
    mine = tmp_path / "mallory"
    code, out = cli("bank", "open-account", "--home", h, "--bank", "BKA", "BKA-mallory",
                    "--out", str(mine))  # fmt: skip
    assert code == 0, out
    copies = tmp_path / "copies"
    copies.mkdir()
    for ext in ("secret", "template"):
        shutil.copy(mine / f"BKA-mallory.{ext}", copies / f"BKA-alice.{ext}")
        shutil.copy(mine / f"BKA-mallory.{ext}", copies / f"BKA-trudy.{ext}")
    db = home / "banks" / "BKA" / "bank.db"
    con = sqlite3.connect(db)
    con.execute("DELETE FROM accounts WHERE account = 'BKA-mallory'")  # as in another database
    con.execute("DELETE FROM books WHERE book = 'BKA-mallory'")
    con.commit()
    con.close()
    for account in ("BKA-alice", "BKA-trudy"):
        code, out = cli("bank", "open-account", "--home", h, "--bank", "BKA", account,
                        "--out", str(copies))  # fmt: skip
        assert code != 0, out
        assert f"the kept template is of BKA-mallory, not {account}" in out
    con = sqlite3.connect(db)
    opened = {r[0] for r in con.execute("SELECT account FROM accounts")}
    con.close()
    assert opened == {"BKA-treasury"}
    # the files are left as they were, and the account they are of still opens with them
    assert (copies / "BKA-alice.secret").read_bytes() == (mine / "BKA-mallory.secret").read_bytes()
    code, out = cli("bank", "open-account", "--home", h, "--bank", "BKA", "BKA-mallory",
                    "--out", str(mine))  # fmt: skip
    assert code == 0 and "opened BKA-mallory" in out, out
