"""Probe round 27, `hubi bank` inputs: a `fund --purpose` the note cannot take (over 64 bytes,
a control character) was refused by the note's own check, "Oversize: purpose is 5000 bytes",
naming no option, after a treasury serial was taken; `show` of a malformed account id said
"not open", sending the operator looking for it; `book DIR` passed over a FIFO in the folder
without a word. Now the first two are usage errors naming the option or argument (exit 2,
nothing booked), and the FIFO is named as refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hubi import kmc
from tests.test_cli_probe27_bank_json import hubi

pytestmark = pytest.mark.xdist_group("test_cli_probe27_bank_inputs")


@pytest.fixture(scope="module")
def bka(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    h = tmp_path_factory.mktemp("probe27") / "home"
    kmc.create_home(h, ["BKA", "BKB"], seed=b"probe27-inputs")
    args = ["--home", str(h), "--bank", "BKA"]
    for cmd in (["bank", "init", *args], ["bank", "open-account", "BKA-amy", *args]):
        r = hubi(*cmd)
        assert r.returncode == 0, r.stderr
    return args


def _treasury_records(bka: list[str]) -> int:
    r = hubi("bank", "show", "BKA-treasury", *bka, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)["head"]["n"]


@pytest.mark.parametrize(
    "purpose, words",
    [("x" * 65, "65 bytes, over the limit 64"), ("a\tb", "control character (U+0009)")],
)
def test_a_purpose_the_note_cannot_take_is_a_usage_error(
    bka: list[str], purpose: str, words: str
) -> None:
    before = _treasury_records(bka)
    r = hubi("bank", "fund", "BKA-amy", "100", *bka, "--purpose", purpose, "--json")
    assert r.returncode == 2, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert "'--purpose'" in doc["message"] and words in doc["message"], doc
    assert _treasury_records(bka) == before  # nothing signed, nothing booked
    r = hubi("bank", "fund", "BKA-amy", "100", *bka, "--purpose", "x" * 64)
    assert r.returncode == 0, r.stdout + r.stderr  # the limit itself is taken


def test_show_of_a_malformed_account_id_names_it(bka: list[str]) -> None:
    r = hubi("bank", "show", "bad id", *bka)
    assert r.returncode == 2, r.stdout + r.stderr
    err = " ".join(r.stderr.split())
    assert "Invalid value for ACCOUNT" in err and "BANK-LOCAL" in err, err


def test_book_of_a_folder_names_a_fifo_in_it(bka: list[str], tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "sub").mkdir()  # subfolders are not notes: passed over
    r = hubi("bank", "book", str(tmp_path), *bka, "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "pipe" in r.stdout and "FIFO" in r.stdout, r.stdout
    assert "sub" not in r.stdout.replace(str(tmp_path), ""), r.stdout
