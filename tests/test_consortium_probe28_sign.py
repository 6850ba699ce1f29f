"""`hubi consortium sign` by a bank that is not a founder (round 28): it exited 2, the status
of a usage error, though the command was well formed and only refused; now 1, with a message
that names the founders, and nothing is signed. Every home is made by the real commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main

pytestmark = pytest.mark.xdist_group("test_consortium_probe28_sign")


def cli(*args: str, code: int = 0) -> str:
    """Run `hubi ARGS` in-process; an exception (a traceback) fails the test."""
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res.output


@pytest.fixture(scope="module")
def pending(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Founders BKA, BKB, BKC; BKE joined while BKC's key was elsewhere: epoch 2 pends."""
    root = tmp_path_factory.mktemp("sign")
    home = root / "home"
    cli("consortium", "init", "--home", str(home), "--banks", "BKA,BKB,BKC")
    shutil.move(home / "banks" / "BKC", root / "BKC")
    out = json.loads(cli("consortium", "join", "--home", str(home), "--bank", "BKE", "--json"))
    assert out["installed"] is False and out["missing"] == ["BKC"], out
    return home


@pytest.mark.parametrize("bank", ["BKE", "BKX"], ids=["joining-bank", "stranger"])
def test_a_non_founder_signing_is_refused_with_exit_1(pending: Path, bank: str) -> None:
    before = (pending / "trust" / "pending-2.json").read_bytes()
    said = " ".join(
        cli("consortium", "sign", "--home", str(pending), "--bank", bank, code=1).split()
    )
    assert f"{bank} is not a founder of" in said, said
    assert "(founders: BKA, BKB, BKC): only a founder signs a new epoch" in said, said
    doc = json.loads(
        cli("consortium", "sign", "--home", str(pending), "--bank", bank, "--json", code=1)
    )
    assert doc["error"] == "ValueError" and "nothing was signed" in doc["message"], doc
    assert (pending / "trust" / "pending-2.json").read_bytes() == before  # nothing signed


def test_a_non_founder_on_an_epoch_already_installed_is_refused_with_exit_1(
    tmp_path: Path,
) -> None:
    """The pending file a `sign` killed after installing leaves: the other path to the check."""
    home = tmp_path / "home"
    cli("consortium", "init", "--home", str(home), "--banks", "BKA,BKB")
    cli("consortium", "join", "--home", str(home), "--bank", "BKE")  # every founder here: installed
    installed = home / "trust" / "consortium.json"
    leftover = home / "trust" / "pending-2.json"
    shutil.copy(installed, leftover)
    said = " ".join(cli("consortium", "sign", "--home", str(home), "--bank", "BKE", code=1).split())
    assert "BKE is not a founder of" in said and "nothing was signed" in said, said
    cli("consortium", "sign", "--home", str(home), "--bank", "BKA")  # a founder: told, exit 0
    assert not leftover.exists()
