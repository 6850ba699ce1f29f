"""`hubi audit verify` run without the keys for notes or balances ended with "clean: every link
checks out", though it checked neither (a line above said so, easily missed by an auditor). The
closing line now says what was not checked and how to check it; the JSON gains `not_checked`
(its other fields as they were)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main

pytestmark = pytest.mark.xdist_group("cli-audit-clean-line")

NO_ENV = {"HUBI_HOME": None, "HUBI_DB": None, "HUBI_BANK": None}


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False, env=NO_ENV)
    return res.exit_code, " ".join(res.output.split())  # rich's wrapping undone


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A home made by the real commands; BKA's database with an account funded."""
    home = tmp_path_factory.mktemp("clean") / "home"
    for args in (
        ["consortium", "init", "--home", str(home), "--banks", "BKA,BKB"],
        ["bank", "init", "--home", str(home), "--bank", "BKA"],
        ["bank", "open-account", "BKA-amy", "--home", str(home), "--bank", "BKA", "--fund", "9"],
    ):
        code, out = cli(*args)
        assert code == 0, out
    return home, f"sqlite:///{home / 'banks' / 'BKA' / 'bank.db'}"


@pytest.mark.parametrize(
    "keys, closing, not_checked",
    [
        ((), "(notes and balances not checked: give --home or --trust)", ["notes", "balances"]),
        (("--trust", "{home}/trust"), "(balances not checked: give --home)", ["balances"]),
        (("--home", "{home}"), "", []),
        (
            ("--home", "{home}", "--chain-only"),
            "(signatures, notes and balances not checked: --chain-only)",
            ["signatures", "notes", "balances"],
        ),
    ],
    ids=["no-keys", "trust", "home", "chain-only"],
)
def test_the_closing_line_says_what_was_not_checked(
    bank: tuple[Path, str], keys: tuple[str, ...], closing: str, not_checked: list[str]
) -> None:
    home, url = bank
    args = ["audit", "verify", "--db", url, *(k.format(home=home) for k in keys)]
    code, out = cli(*args)
    assert code == 0, out
    assert out.endswith(f"clean: every link checks out {closing}".strip()), out
    code, out = cli(*args, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["not_checked"] == not_checked, doc
    assert {"bank", "level", "ok", "books", "records", "checks", "summary", "findings"} <= set(doc)
