"""Probe round 29: usage errors with standard error closed, and counts that agree with their
nouns.

With stderr closed (`2>&-`), click wrote its usage errors ("Usage: ... Error: No such option")
to stdout, where a script reads the command's output; the descriptor 2 was also left free, so
the next file the command opened became its stderr. Now a closed stderr is /dev/null, as a
closed stdout already was: the usage error is lost, the exit status (2) still says it. With
--json the error stays the JSON document on stdout. Run as real processes through `sh`, which
closes the descriptor the way a user's shell does.

`hubi audit verify` said "1 books" (and `hubi bank` "1 records"): the count and its noun now
agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_bank_support import make_bank
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("test_cli_probe29_streams_wording")

A, B = "BKA-alice", "BKA-bob"


def _hubi(*args: str, close: str = "2>&-") -> subprocess.CompletedProcess[str]:
    """`hubi ARGS` run by sh with `close` applied (a closed descriptor, as a shell leaves it)."""
    return subprocess.run(
        ["sh", "-c", f'exec "$@" {close}', "sh", sys.executable, "-m", "hubi.cli", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


USAGE_ERRORS = [
    ["bank", "book", "--bad-option"],  # an unknown option
    ["audit", "verify"],  # a missing required option
    ["merchant", "scan", "--count", "x"],  # a value of the wrong type
]


@pytest.mark.parametrize("args", USAGE_ERRORS)
def test_a_usage_error_with_stderr_closed_is_not_written_to_stdout(args: list[str]) -> None:
    r = _hubi(*args)
    assert r.returncode == 2, r
    assert r.stdout == "", r.stdout  # was "Usage: hubi ...\nError: ..." on stdout


@pytest.mark.parametrize("args", USAGE_ERRORS)
def test_a_usage_error_under_json_with_stderr_closed_is_the_json_document(
    args: list[str],
) -> None:
    r = _hubi(*args, "--json")
    assert r.returncode == 2, r
    doc = json.loads(r.stdout)
    assert doc["error"] == "UsageError" and doc["message"], doc


def test_a_usage_error_with_stderr_open_is_still_on_stderr() -> None:
    r = _hubi("bank", "book", "--bad-option", close="")
    assert r.returncode == 2 and r.stdout == ""
    assert "No such option '--bad-option'" in r.stderr and "bank book [OPTIONS]" in r.stderr


def test_both_streams_closed_exit_2_quietly() -> None:
    r = _hubi("bank", "book", "--bad-option", close=">&- 2>&-")
    assert r.returncode == 2, r


def test_help_still_goes_to_stdout_with_stderr_closed() -> None:
    r = _hubi("bank", "book", "--help")
    assert r.returncode == 0 and "bank book [OPTIONS]" in r.stdout, r


def test_a_closed_stderr_is_taken_by_dev_null() -> None:
    """Descriptor 2 is held by /dev/null: a database or log the command opens next is not
    where a child process's (or C library's) errors land."""
    code = (
        "import os, sys; from hubi.output import safe_streams; safe_streams(); "
        "print(os.readlink('/proc/self/fd/2'), sys.stderr.fileno())"
    )
    r = subprocess.run(
        ["sh", "-c", 'exec "$@" 2>&-', "sh", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.split() == ["/dev/null", "2"], r


# ------------------------------------------------------------------------ counts and nouns


def test_counted_agrees() -> None:
    from hubi.output import counted  # here: the module's other tests run without it too

    assert counted(1, "book") == "1 book"
    assert counted(2, "book") == "2 books"
    assert counted(0, "record") == "0 records"
    assert counted(1000, "record") == "1,000 records"
    assert counted(1, "entry", "entries") == "1 entry"
    assert counted(3, "entry", "entries") == "3 entries"


@pytest.fixture(scope="module")
def bank_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bank with two funded accounts: each book holds its one funding record."""
    path = tmp_path_factory.mktemp("bank") / "bank.db"
    make_bank(f"sqlite:///{path}", make_world(), accounts=(A, B), fund=1000).close()
    return path


def test_audit_verify_of_one_book_says_1_book_1_record(bank_db: Path) -> None:
    r = _hubi("audit", "verify", "--db", f"sqlite:///{bank_db}", "--book", B, close="")
    assert r.returncode == 0, r
    first = " ".join(r.stdout.split())
    assert "bank BKA: 1 book, 1 record, level full" in first, first


def test_audit_verify_of_all_books_says_books_records(bank_db: Path) -> None:
    r = _hubi("audit", "verify", "--db", f"sqlite:///{bank_db}", close="")
    assert r.returncode == 0, r
    first = " ".join(r.stdout.split())
    assert "bank BKA: 3 books, 4 records, level full" in first, first
