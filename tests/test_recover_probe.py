"""`hubi audit recover` fed hostile or mistaken inputs: candidate files that never end or block,
with stray spaces, swapped or empty; --amount/--kind that contradict the balances; a payer whose
serials jumped; a search too wide to finish. Each is refused by name (exit 2), not searched."""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi import kmc
from hubi.bank import recover
from hubi.cli import main
from hubi_core import codec

pytestmark = pytest.mark.xdist_group("recover-probe")

HUBI = [sys.executable, "-m", "hubi.cli"]


def run(*args: str, code: int) -> dict:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == code, res.output
    return json.loads(res.output)


def _limit_memory() -> None:  # the code before the fix read /dev/zero until memory ran out
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def run_proc(*args: str) -> subprocess.CompletedProcess[str]:
    """In a child with a deadline: the faults here hung or filled memory."""
    return subprocess.run(
        [*HUBI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_memory,
        env={**os.environ, "COLUMNS": "400"},
    )


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """BKA-amy paid BKA-bo 12 notes (serials 1..12, amount 10*s, purpose 'item s'): amy's
    records 2..13 are those debits, record 1 her funding."""
    root = tmp_path_factory.mktemp("recover-probe")
    home = root / "home"
    kmc.create_home(home, ["BKA", "BKB"], seed=b"probe")
    h = str(home)
    for args in (
        ("bank", "init"),
        ("bank", "open-account", "BKA-amy", "--fund", "100000"),
        ("bank", "open-account", "BKA-bo"),
    ):
        res = CliRunner().invoke(main, [*args, "--home", h, "--bank", "BKA"])
        assert res.exit_code == 0, res.output
    book_notes(home, root / "notes", range(1, 13))
    return home, home / "banks" / "BKA" / "bank.db"


def book_notes(home: Path, folder: Path, serials: range | list[int]) -> None:
    accounts = home / "accounts"
    priv = int.from_bytes((accounts / "BKA-amy.secret").read_bytes(), "big")
    tpl = codec.decode((accounts / "BKA-amy.template").read_bytes(), codec.TEMPLATE)
    folder.mkdir()
    for s in serials:
        amount = 10 * (s % 1000)
        note = codec.make_note(tpl, s, 1_760_000_000, amount, "BKA-bo", f"item {s}")
        note = codec.sign(note, priv)
        (folder / f"{s:020d}.note").write_bytes(codec.encode(note))
    res = CliRunner().invoke(
        main, ["bank", "book", str(folder), "--home", str(home), "--bank", "BKA"]
    )
    assert res.exit_code == 0, res.output


def lose(src: Path, dst: Path, *numbers: int) -> str:
    """A copy of the bank database without amy's records `numbers`."""
    con = sqlite3.connect(src)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    shutil.copy(src, dst)
    con = sqlite3.connect(dst)
    for n in numbers:
        con.execute("DELETE FROM records WHERE book = 'BKA-amy' AND n = ?", (n,))
    con.commit()
    con.close()
    return f"sqlite:///{dst}"


def recover_args(url: str, home: Path, payees: Path, purposes: Path, *more: str) -> list[str]:
    return [
        "audit",
        "recover",
        "--db",
        url,
        "--home",
        str(home),
        "--book",
        "BKA-amy",
        "--payees",
        str(payees),
        "--purposes",
        str(purposes),
        "--json",
        *more,
    ]


def test_candidate_files_that_never_end_or_block_are_refused(bank, tmp_path: Path) -> None:  # noqa: ANN001
    """/dev/zero was read until memory ran out (a MemoryError after minutes), a FIFO waited for
    ever for a writer."""
    home, db = bank
    url = lose(db, tmp_path / "b.db", 13)
    purposes = tmp_path / "purposes"
    purposes.write_text("item 12\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for payees, words in (("/dev/zero", "a character device"), (fifo, "a FIFO")):
        res = run_proc(*recover_args(url, home, Path(payees), purposes))
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert f"{payees}: {words}, not a file to read" in json.loads(res.stdout)["message"]


def test_a_line_too_long_or_too_many_lines_are_refused(tmp_path: Path) -> None:
    one_line = tmp_path / "one-line"
    one_line.write_bytes(b"BKA-" + b"x" * 10_000)  # no line break: it was read whole
    with pytest.raises(recover.RecoveryError, match="line 1 is longer than 256 bytes"):
        recover.read_lines(one_line)
    many = tmp_path / "many"
    many.write_text("BKA-a\n" * 6)
    assert len(recover.read_lines(many, max_lines=6)) == 6
    with pytest.raises(recover.RecoveryError, match="has more than 5 lines"):
        recover.read_lines(many, max_lines=5)


def test_candidate_lines_are_taken_as_an_operator_writes_them(bank, tmp_path: Path) -> None:  # noqa: ANN001
    """A payee with a space or tab around it (a spreadsheet's export), in a CRLF file with a byte
    order mark, was searched as written and fit nothing (exit 1, 'no combination fits')."""
    home, db = bank
    url = lose(db, tmp_path / "b.db", 13)
    payees = tmp_path / "payees"
    payees.write_bytes(b"\xef\xbb\xbfBKA-nobody\r\n  BKA-bo \t\r\n\r\n")
    purposes = tmp_path / "purposes"
    purposes.write_bytes(b"\xef\xbb\xbfitem 1\r\n\r\nitem 12\r\nitem 12\r\n")
    found = run(*recover_args(url, home, payees, purposes), code=0)
    assert found["found"] == 1
    got = found["candidates"][0]
    assert (got["payee"], got["serial"], got["amount"], got["purpose"]) == (
        "BKA-bo",
        12,
        120,
        "item 12",
    )


@pytest.mark.parametrize(
    ("payees", "purposes", "words"),
    [
        # the files swapped: it searched purposes as accounts and said nothing fits
        ("item 12\n", "BKA-bo\n", "payees line 1: account id 'item 12' must look like BANK-LOCAL"),
        ("\n  \n", "item 12\n", "payees lists no account id: nothing to search"),
        ("BKA-bo\n", "item 1\nitem\t12\n", "purposes line 2 contains a control character (U+0009)"),
        (
            "BKA-bo\n",
            "item \u202e21\n",
            "purposes line 1 contains a bidirectional control (U+202E)",
        ),
        ("BKA-bo\n", "x" * 65 + "\n", "purposes line 1 is 65 bytes, over the limit 64"),
    ],
)
def test_candidates_no_record_can_hold_are_refused_by_line(
    bank,
    tmp_path: Path,
    payees: str,
    purposes: str,
    words: str,  # noqa: ANN001
) -> None:
    home, db = bank
    url = lose(db, tmp_path / "b.db", 13)
    (tmp_path / "payees").write_text(payees)
    (tmp_path / "purposes").write_text(purposes)
    err = run(*recover_args(url, home, tmp_path / "payees", tmp_path / "purposes"), code=2)
    assert err["error"] == "RecoveryError" and words in err["message"], err


@pytest.mark.parametrize(
    ("more", "words"),
    [
        (["--amount", "119"], "was a debit of 120, not a debit of 119"),
        (["--kind", "credit", "--serials", "1-20"], "was a debit of 120, not a credit of 120"),
    ],
)
def test_amount_or_kind_that_contradict_the_balances_are_refused(
    bank,
    tmp_path: Path,
    more: list[str],
    words: str,  # noqa: ANN001
) -> None:
    """With the bank key at hand, a mistyped --amount or --kind was searched for instead of the
    record's own, and the answer was 'no combination fits' (exit 1)."""
    home, db = bank
    url = lose(db, tmp_path / "b.db", 13)
    (tmp_path / "payees").write_text("BKA-bo\n")
    (tmp_path / "purposes").write_text("item 12\n")
    args = recover_args(url, home, tmp_path / "payees", tmp_path / "purposes")
    err = run(*args, *more, code=2)
    assert err["error"] == "RecoveryError" and words in err["message"], err
    agreeing = run(*args, "--amount", "120", "--kind", "debit", code=0)
    assert agreeing["found"] == 1


def test_the_first_and_the_last_record_lost_together(bank, tmp_path: Path) -> None:  # noqa: ANN001
    """Two lost records: named, and each recovered with --record; exit 1 when nothing fits or
    several do, 0 only for exactly one."""
    home, db = bank
    url = lose(db, tmp_path / "b.db", 1, 13)
    payees, purposes = tmp_path / "payees", tmp_path / "purposes"
    payees.write_text("BKA-bo\nBKA-treasury\n")
    purposes.write_text("item 12\n\nfunding\n")
    err = run(*recover_args(url, home, payees, purposes), code=2)
    assert "lost records [1, 13]" in err["message"], err
    last = run(*recover_args(url, home, payees, purposes, "--record", "13"), code=0)
    assert [(c["record"], c["serial"]) for c in last["candidates"]] == [(13, 12)]
    first = run(
        *recover_args(url, home, payees, purposes, "--record", "1", "--serials", "0-9"), code=0
    )
    assert [(c["kind"], c["payer"]) for c in first["candidates"]] == [("credit", "BKA-treasury")]
    purposes.write_text("item 3\n")
    assert run(*recover_args(url, home, payees, purposes, "--record", "13"), code=1)["found"] == 0


def test_a_payer_whose_serials_jumped_is_asked_for_a_range(bank, tmp_path: Path) -> None:  # noqa: ANN001
    """amy's token went on at serial 10^12: a lost debit's default serials were every unused one
    below it, listed for ever."""
    home, db = bank
    jumped = tmp_path / "jumped"
    shutil.copytree(home, jumped)
    book_notes(jumped, tmp_path / "notes", [10**12 + 1])
    url = lose(jumped / "banks" / "BKA" / "bank.db", tmp_path / "b.db", 13)
    (tmp_path / "payees").write_text("BKA-bo\n")
    (tmp_path / "purposes").write_text("item 12\n")
    args = recover_args(url, jumped, tmp_path / "payees", tmp_path / "purposes", "--record", "13")
    res = run_proc(*args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "serials reach 1,000,000,000,001" in json.loads(res.stdout)["message"]
    assert run(*args, "--serials", "10-20", code=0)["candidates"][0]["serial"] == 12


def test_a_search_that_would_take_days_is_refused(bank, tmp_path: Path) -> None:  # noqa: ANN001
    """10^6 serials x 2,000 purposes (2x10^9 lookups) ran for many minutes before an answer."""
    home, db = bank
    url = lose(db, tmp_path / "b.db", 13)
    (tmp_path / "payees").write_text("BKA-bo\n")
    (tmp_path / "purposes").write_text("".join(f"item {i}\n" for i in range(2000)))
    args = recover_args(url, home, tmp_path / "payees", tmp_path / "purposes")
    res = run_proc(*args, "--serials", "0-999999")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "1,000,000 serials x 2,000 purposes is more than" in json.loads(res.stdout)["message"]
