"""`hubi bank ... --json` failures that were click's own "Error: ..." text on stderr, with
nothing on stdout: `show` of an account not open, `open-account` over a kept key or into an
--out it cannot write, `init` whose treasury is open but whose key file is gone. A script reading
stdout got no document, while every other failure (and every usage error) is one. Each is now
{"error", "message"} on stdout, with the exit status it had (1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hubi import kmc

pytestmark = pytest.mark.xdist_group("test_cli_probe27_bank_json")

HUBI = str(Path(sys.executable).with_name("hubi"))


def hubi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HUBI, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("probe27") / "home"
    kmc.create_home(h, ["BKA", "BKB"], seed=b"probe27-json")
    bka = ["--home", str(h), "--bank", "BKA"]
    for args in (["bank", "init", *bka], ["bank", "open-account", "BKA-amy", *bka]):
        r = hubi(*args)
        assert r.returncode == 0, r.stderr
    return h


def _json_failure(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)  # a document, not an empty stdout
    assert set(doc) == {"error", "message"}, doc
    for w in words:
        assert w in doc["message"], doc


def test_show_of_an_account_not_open_is_json(home: Path) -> None:
    r = hubi("bank", "show", "BKA-nobody", "--home", str(home), "--bank", "BKA", "--json")
    _json_failure(r, "BKA-nobody", "not open")


def test_open_account_refusals_are_json(home: Path, tmp_path: Path) -> None:
    bka = ["--home", str(home), "--bank", "BKA"]
    key = home / "accounts" / "BKA-amy.secret"
    kept = key.read_bytes()
    r = hubi("bank", "open-account", "BKA-amy", *bka, "--json")
    _json_failure(r, "account BKA-amy is already open at BKA")
    assert key.read_bytes() == kept
    (tmp_path / "notadir").write_text("a file\n")
    bad = tmp_path / "notadir" / "sub"
    r = hubi("bank", "open-account", "BKA-bo", *bka, "--out", str(bad), "--json")
    _json_failure(r, f"cannot write the account's key to {bad}", "nothing was opened")
    r = hubi("bank", "show", "BKA-bo", *bka, "--json")
    _json_failure(r, "BKA-bo", "not open")


def test_init_with_its_treasury_key_gone_is_json(home: Path, tmp_path: Path) -> None:
    secret = home / "banks" / "BKA" / kmc.TREASURY_SECRET
    aside = tmp_path / "treasury.secret"
    secret.rename(aside)
    try:
        r = hubi("bank", "init", "--home", str(home), "--bank", "BKA", "--json")
        _json_failure(r, f"{secret} is missing")
    finally:
        aside.rename(secret)
