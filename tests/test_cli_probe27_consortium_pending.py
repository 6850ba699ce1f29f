"""`hubi consortium join/sign` with a pending epoch that is left over or edited: a `sign` killed
(-9) after it installed the epoch but before it removed the pending file left a home where
`sign` said "epoch 2 does not follow epoch 2" and `join` asked for that very `sign`; a pending
file edited after founders signed it was signed again, exit 0, and failed only at the last
founder. Every home is made by the real commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main

pytestmark = pytest.mark.xdist_group("test_cli_probe27_consortium_pending")


def cli(*args: str, code: int = 0) -> str:
    """Run `hubi ARGS` in-process; an exception (a traceback) fails the test."""
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res.output


def snapshot(home: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def pending(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with founders BKA, BKB, BKC where BKE joined while BKC's key was elsewhere
    (HOME/../away): epoch 2 pends in trust/pending-2.json, missing BKC."""
    root = tmp_path_factory.mktemp("pending")
    home = root / "home"
    cli("consortium", "init", "--home", str(home), "--banks", "BKA,BKB,BKC")
    (root / "away").mkdir()
    shutil.move(home / "banks" / "BKC", root / "away" / "BKC")
    out = json.loads(cli("consortium", "join", "--home", str(home), "--bank", "BKE", "--json"))
    assert out["missing"] == ["BKC"]
    return home


@pytest.fixture
def home(pending: Path, tmp_path: Path) -> Path:
    h = tmp_path / "home"
    shutil.copytree(pending, h)
    shutil.copytree(pending.parent / "away" / "BKC", h / "banks" / "BKC")
    return h


def test_a_sign_killed_after_installing_leaves_a_home_that_goes_on(home: Path) -> None:
    pend = home / "trust" / "pending-2.json"
    before = pend.read_bytes()
    out = json.loads(cli("consortium", "sign", "--home", str(home), "--bank", "BKC", "--json"))
    assert out == {"installed": True, "epoch": 2}
    # what `sign` killed between writing consortium.json and removing the pending file leaves
    pend.write_bytes(before)
    installed = (home / "trust" / "consortium.json").read_bytes()

    out = json.loads(cli("consortium", "sign", "--home", str(home), "--bank", "BKC", "--json"))
    assert out == {"installed": True, "epoch": 2}
    assert not pend.exists()
    assert (home / "trust" / "consortium.json").read_bytes() == installed

    pend.write_bytes(before)  # and `join` is not held up by it either
    out = json.loads(cli("consortium", "join", "--home", str(home), "--bank", "BKF", "--json"))
    assert out["installed"] is True and out["epoch"] == 3
    assert not pend.exists()
    show = json.loads(cli("consortium", "show", "--home", str(home), "--json"))
    assert [b["id"] for b in show["banks"]] == ["BKA", "BKB", "BKC", "BKE", "BKF"]


def test_a_pending_epoch_edited_after_founders_signed_is_not_signed(home: Path) -> None:
    pend = home / "trust" / "pending-2.json"
    doc = json.loads(pend.read_bytes())
    for b in doc["banks"]:
        if b["id"] == "BKE":  # someone with write access points the new bank elsewhere
            b["endpoints"] = ["http://203.0.113.9:8700"]
    pend.write_text(json.dumps(doc))
    before = snapshot(home)
    for bank in ("BKB", "BKC"):
        out = json.loads(
            cli("consortium", "sign", "--home", str(home), "--bank", bank, "--json", code=2)
        )
        assert str(pend) in out["message"] and "BKA" in out["message"], out
        assert "does not verify" in out["message"], out
        assert snapshot(home) == before  # nothing signed, nothing installed


@pytest.mark.parametrize(
    "args",
    [
        ["init", "--banks", "BKA,BKB", "--endpoint", "BKA=http://127.0.0.1:8701"]
        + ["--endpoint", "BKA= http://127.0.0.1:8701"],
        ["init", "--banks", "BKA,BKB", "--etcd", "BKB=http://127.0.0.1:2379"]
        + ["--etcd", "BKB=http://127.0.0.1:2379"],
        ["join", "--bank", "BKE", "--endpoint", "http://127.0.0.1:8705"]
        + ["--endpoint", "http://127.0.0.1:8705"],
        [
            "join",
            "--bank",
            "BKE",
            "--etcd",
            "http://127.0.0.1:2379",
            "--etcd",
            "http://127.0.0.1:2379",
        ],
    ],
)
def test_a_url_given_twice_is_a_usage_error(pending: Path, tmp_path: Path, args: list[str]) -> None:
    """It went into the signed file twice: one node listed as two."""
    h = tmp_path / "home"
    if args[0] == "join":
        shutil.copytree(pending, h)
        (h / "trust" / "pending-2.json").unlink()  # drop the pending epoch: join may run
    before = snapshot(h) if h.exists() else {}
    out = cli("consortium", args[0], "--home", str(h), *args[1:], code=2)
    assert "listed twice" in out and "127.0.0.1" in out, out
    assert (snapshot(h) if h.exists() else {}) == before


def test_show_names_a_pending_epoch(home: Path) -> None:
    """`show` listed the installed epoch only: an operator could not tell that one waited."""
    pend = home / "trust" / "pending-2.json"
    doc = json.loads(cli("consortium", "show", "--home", str(home), "--json"))
    assert doc["epoch"] == 1 and doc["pending"] == [str(pend)], doc
    text = "".join(cli("consortium", "show", "--home", str(home)).split())  # wrapped anywhere
    assert "trust/pending-2.jsonwaitsforfounders'signatures" in text, text
    cli("consortium", "sign", "--home", str(home), "--bank", "BKC")
    doc = json.loads(cli("consortium", "show", "--home", str(home), "--json"))
    assert doc["epoch"] == 2 and doc["pending"] == [], doc
