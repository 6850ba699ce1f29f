"""Probe round 27: every `hubi audit` command closes the database it opened, also when it
fails after the open (a `--book` that names no book, a trust bundle that cannot be read, a
candidates file that is missing). `audit verify` left its SQLite connection open when `--book`
was refused; a command run in-process (a test, an operator's script) kept the file open.

The connections are counted as this process's open descriptors of the database file."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from tests.test_bank_support import book_pingpong, make_bank
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("cli-probe27-audit-closes")

A, B = "BKA-alice", "BKA-bob"


@pytest.fixture(scope="module")
def bank_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = make_world()
    path = tmp_path_factory.mktemp("bank") / "bank.db"
    eng = make_bank(f"sqlite:///{path}", w, accounts=(A, B), fund=1000)
    book_pingpong(eng, w, A, B, 4, batch=2)
    eng.close()
    return path


def _open_fds(path: Path) -> int:
    """Descriptors of this process open on `path` or its WAL/shm files."""
    names = {str(path), f"{path}-wal", f"{path}-shm"}
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") in names
        except OSError:
            pass
    return n


@pytest.mark.parametrize(
    "args, words",
    [
        (["verify", "--book", "BKA-nobody"], "BKA-nobody"),
        (["verify", "--book", "BKA-x…#00000000"], "BKA-x…#00000000"),
        (["locate", "--book", "BKA-nobody"], "BKA-nobody"),
        (
            ["recover", "--book", A, "--payees", "/nonexistent/p", "--purposes", "/nonexistent/q"],
            "/nonexistent/p",
        ),
        (["verify", "--trust", "{empty}"], "consortium.json"),
        (["restore", "--backup", "sqlite:///{missing}"], "missing"),
        (["verify"], None),  # the clean run closes too
    ],
)
def test_the_database_is_closed_however_the_command_ends(
    bank_db: Path, tmp_path: Path, args: list[str], words: str | None
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(empty=empty, missing=tmp_path / "missing.db") for a in args]
    gc.collect()  # a connection an earlier case left open is not counted against this one
    before = _open_fds(bank_db)
    res = CliRunner().invoke(main, ["audit", args[0], "--db", f"sqlite:///{bank_db}", *args[1:]])
    assert "Traceback" not in res.output, res.output
    if words is None:
        assert res.exit_code == 0, res.output
    else:
        assert res.exit_code == 2, res.output
        assert words in res.output, res.output
    assert _open_fds(bank_db) == before, f"`audit {args[0]}` left the database open"
