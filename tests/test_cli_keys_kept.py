"""The command-line tools never lose what is already written: a key file is never overwritten
(nor left unwritten after what it belongs to is committed), an installed consortium file is never
replaced by one that does not verify, a pending epoch is never silently replaced; bad input gets
a clear error naming it, no traceback, no hang. Every home here is made by the real commands."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main

pytestmark = pytest.mark.xdist_group("cli-keys-kept")


def cli(*args: str, code: int | None = 0, env: dict[str, str] | None = None) -> str:
    """Run `hubi ARGS` in-process; an exception (a traceback) fails the test."""
    res = CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)
    if code is not None:
        assert res.exit_code == code, res.output
    else:
        assert res.exit_code != 0, res.output
    return res.output


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file under `home` (keys, trust bundle, pending epochs) with its bytes."""
    return {
        str(p.relative_to(home)): p.read_bytes()
        for p in sorted(home.rglob("*"))
        if p.is_file() and not p.name.startswith("bank.db")
    }


@pytest.fixture(scope="module")
def founded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home made by `hubi consortium init --banks BKA,BKB` (copied by each test)."""
    home = tmp_path_factory.mktemp("founded") / "home"
    cli("consortium", "init", "--home", str(home), "--banks", "BKA,BKB")
    return home


@pytest.fixture
def home(founded: Path, tmp_path: Path) -> Path:
    h = tmp_path / "home"
    shutil.copytree(founded, h)
    return h


# 1 ------------------------------------------------------------------------- bank init


def test_bank_init_never_overwrites_the_treasury_key(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bank init` with another database wrote a new treasury key over the one the first
    database's treasury needs (gone for good: a key is random). The key is kept with its
    Template, and another database of the bank opens its treasury with that same key."""
    h = str(home)
    monkeypatch.chdir(tmp_path)  # a relative database (':memory:') lands here, if anywhere
    cli("bank", "init", "--home", h, "--bank", "BKA")
    secret = home / "banks" / "BKA" / "treasury.secret"
    kept = secret.read_bytes()
    assert (home / "banks" / "BKA" / "treasury.template").is_file()
    for n, (args, env) in enumerate(
        [(["--db", str(tmp_path / "a.db")], None), ([], {"HUBI_DB": f"sqlite:///{tmp_path}/b.db"})]
    ):
        out = json.loads(
            cli("bank", "init", "--home", h, "--bank", "BKA", *args, "--json", env=env)
        )
        assert out["treasury_created"] is False and secret.read_bytes() == kept, out
        db = ["--db", str(tmp_path / "ab"[n]) + ".db"]
        cli("bank", "open-account", f"BKA-c{n}", "--home", h, "--bank", "BKA", *db, "--out",
            str(tmp_path / f"k{n}"), "--fund", "5")  # fmt: skip  # funded: the key signs
    # a home from before the Template was kept beside the key: refused, the key left as it is
    (home / "banks" / "BKA" / "treasury.template").unlink()
    out = flat(cli("bank", "init", "--home", h, "--bank", "BKA", "--db", str(tmp_path / "c.db"),
                   code=1))  # fmt: skip
    assert f"{secret} already holds the treasury key of another database" in out, out
    assert "no treasury.template beside it" in out and secret.read_bytes() == kept
    # a database that keeps nothing is no bank's database
    for url in (":memory:", "sqlite:///:memory:", "sqlite://:memory:"):
        out = flat(cli("bank", "init", "--home", h, "--bank", "BKA", "--db", url, code=2))
        assert "in-memory SQLite database" in out and "--db" in out, out  # a usage error
        assert secret.read_bytes() == kept
    assert not (tmp_path / ":memory:").exists()
    out = cli("bank", "init", "--home", h, "--bank", "BKA", "--json")
    assert json.loads(out)["treasury_created"] is False
    assert secret.read_bytes() == kept


class Killed(BaseException):
    """What nothing in the process catches: it stops the command where it is, as kill -9."""


def _killed_at_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's next open_account dies before it commits, as a kill -9 would stop it."""
    from hubi.bank.engine import BankEngine

    real = BankEngine.open_account

    def dies(self, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        monkeypatch.setattr(BankEngine, "open_account", real)
        raise Killed

    monkeypatch.setattr(BankEngine, "open_account", dies)


def test_a_key_is_on_disk_before_its_account_is_committed_and_a_rerun_finishes(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bank init` and `bank open-account` committed the account, then wrote its key: a kill
    between the two (10 of 19 kills in a probe) left an account no key will ever sign for, and
    the rerun refused ("already open"). The key and Template are now written first, and a
    rerun opens the account with them."""
    h = ["--home", str(home), "--bank", "BKA"]
    _killed_at_commit(monkeypatch)
    with pytest.raises(Killed):
        CliRunner().invoke(main, ["bank", "init", *h], catch_exceptions=False)
    secret = home / "banks" / "BKA" / "treasury.secret"
    kept = secret.read_bytes()
    out = json.loads(cli("bank", "init", *h, "--json"))
    assert out["treasury_created"] is False and secret.read_bytes() == kept
    _killed_at_commit(monkeypatch)
    with pytest.raises(Killed):
        CliRunner().invoke(main, ["bank", "open-account", "BKA-amy", *h], catch_exceptions=False)
    key = home / "accounts" / "BKA-amy.secret"
    kept = key.read_bytes()
    cli("bank", "open-account", "BKA-amy", *h, "--fund", "7")  # the treasury's key signs it
    assert key.read_bytes() == kept
    assert "BKA-amy" in cli("bank", "show", "BKA-amy", *h)


# 2 ----------------------------------------------------------------- bank open-account


def test_open_account_never_overwrites_a_key_and_checks_the_folder_first(
    home: Path, tmp_path: Path
) -> None:
    h = str(home)
    bka = ["--home", h, "--bank", "BKA"]
    other = tmp_path / "other.db"
    cli("bank", "init", *bka, "--db", str(other))
    cli("bank", "init", *bka)
    cli("bank", "open-account", "BKA-amy", *bka)
    key = home / "accounts" / "BKA-amy.secret"
    kept = key.read_bytes()
    out = flat(cli("bank", "open-account", "BKA-amy", *bka, code=1))
    assert "account BKA-amy is already open at BKA: a second key is never issued" in out, out
    assert key.read_bytes() == kept
    # another database of the bank opens the account with the key kept for it
    cli("bank", "open-account", "BKA-amy", *bka, "--db", str(other), "--fund", "3")
    assert key.read_bytes() == kept
    # --out that cannot be a folder: refused before the account is opened
    (tmp_path / "notadir").write_text("a file\n")
    bad = tmp_path / "notadir" / "sub"
    out = flat(cli("bank", "open-account", "BKA-bo", *bka, "--out", str(bad), code=1))
    assert f"cannot write the account's key to {bad}" in out and "nothing was opened" in out
    # so a retry opens it, and its key is written
    good = tmp_path / "keys"
    cli("bank", "open-account", "BKA-bo", *bka, "--out", str(good))
    assert len((good / "BKA-bo.secret").read_bytes()) == 32
    assert (good / "BKA-bo.template").exists()


# 3, 4 --------------------------------------------------------------- consortium join


def test_join_whose_signatures_do_not_verify_keeps_the_consortium_file(home: Path) -> None:
    h = str(home)
    trust_before = snapshot(home / "trust")
    # BKB's identity file holds another key (BKA's): BKB's signature cannot verify
    ident = home / "banks" / "BKB" / "identity.secret"
    ident.write_bytes((home / "banks" / "BKA" / "identity.secret").read_bytes())
    out = flat(cli("consortium", "join", "--home", h, "--bank", "BKC", code=2))
    assert "epoch 2 not installed" in out and "signature of founder BKB does not verify" in out
    after = snapshot(home / "trust")
    assert after["consortium.json"] == trust_before["consortium.json"]
    assert not any(k.startswith("epochs") for k in after)
    # the installed file still loads and verifies
    shown = json.loads(cli("consortium", "show", "--home", h, "--json"))
    assert shown["epoch"] == 1 and [b["id"] for b in shown["banks"]] == ["BKA", "BKB"]


def test_second_join_while_an_epoch_is_pending_is_refused(home: Path, tmp_path: Path) -> None:
    h = str(home)
    (home / "banks" / "BKB").rename(tmp_path / "BKB")  # BKB signs elsewhere, later
    out = json.loads(cli("consortium", "join", "--home", h, "--bank", "BKC", "--json"))
    assert out["installed"] is False and out["missing"] == ["BKB"]
    pending = home / "trust" / "pending-2.json"
    kept = snapshot(home)
    out = flat(cli("consortium", "join", "--home", h, "--bank", "BKD", code=2))
    assert f"epoch pending in {pending}" in out and "hubi consortium sign" in out, out
    assert "deleting that file" in out
    assert snapshot(home) == kept  # nothing replaced, no keys made for BKD
    # finishing the pending epoch still works
    (tmp_path / "BKB").rename(home / "banks" / "BKB")
    out = json.loads(cli("consortium", "sign", "--home", h, "--bank", "BKB", "--json"))
    assert out == {"installed": True, "epoch": 2}


# 5 --------------------------------------------------------------- consortium init


def test_init_never_overwrites_bank_keys(home: Path) -> None:
    (home / "trust" / "consortium.json").unlink()
    kept = snapshot(home)
    out = flat(cli("consortium", "init", "--home", str(home), "--banks", "BKA,BKB", code=2))
    assert "already holds bank files that would be overwritten" in out, out
    for b in ("BKA", "BKB"):
        assert str(home / "banks" / b / "kmc.secret") in out
        assert str(home / "banks" / b / "identity.secret") in out
    assert snapshot(home) == kept
    # only BKA's keys there: still refused, naming only them
    shutil.rmtree(home / "banks" / "BKB")
    shutil.rmtree(home / "trust")
    out = flat(cli("consortium", "init", "--home", str(home), "--banks", "BKA,BKB", code=2))
    assert str(home / "banks" / "BKA" / "kmc.secret") in out and "BKB" not in out.split(":")[-1]
    assert (home / "banks" / "BKA" / "kmc.secret").read_bytes() == kept["banks/BKA/kmc.secret"]
    assert not (home / "banks" / "BKB").exists()


# 6 --------------------------------------------------------------- consortium sign --file


def _limit_memory() -> None:  # an unbounded read fails fast instead of filling the machine
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def hubi_proc(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`hubi ARGS` in a child process (a hang is a failure, not a stuck test run)."""
    code = "import sys; from hubi.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit_memory,
        env={**os.environ, "COLUMNS": "400"},
    )


def test_sign_file_that_is_no_consortium_file(home: Path, tmp_path: Path) -> None:
    h = str(home)
    before = snapshot(home)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (2 << 20))
    cases = [
        (fifo, "not a file to read"),
        (Path("/dev/zero"), "not a file to read"),
        (deep, "nested too deeply"),
        (binary, "not UTF-8 text"),
        (big, "too long for a consortium file"),
    ]
    for path, words in cases:
        try:
            r = hubi_proc("consortium", "sign", "--home", h, "--bank", "BKA", "--file", str(path))
        except subprocess.TimeoutExpired:
            pytest.fail(f"`hubi consortium sign --file {path}` hangs")
        err = flat(r.stdout + r.stderr)
        assert r.returncode == 2, err
        assert "Traceback" not in err and str(path) in err and words in err, err
    assert snapshot(home) == before


def test_sign_tampered_pending_epoch_is_refused_cleanly(home: Path, tmp_path: Path) -> None:
    h = str(home)
    (home / "banks" / "BKB").rename(tmp_path / "BKB")
    cli("consortium", "join", "--home", h, "--bank", "BKC", "--endpoint", "http://127.0.0.1:1")
    (tmp_path / "BKB").rename(home / "banks" / "BKB")
    pending = home / "trust" / "pending-2.json"
    pending.write_text(pending.read_text().replace("http://127.0.0.1:1", "http://127.0.0.1:2"))
    before = snapshot(home)
    out = flat(cli("consortium", "sign", "--home", h, "--bank", "BKB", code=2))
    assert str(pending) in out and "does not verify" in out, out
    after = snapshot(home)
    assert after["trust/consortium.json"] == before["trust/consortium.json"]
    assert json.loads(cli("consortium", "show", "--home", h, "--json"))["epoch"] == 1


# 7 ------------------------------------------------------------------------ hubi demo


@pytest.mark.parametrize("where", ["notadir/sub", "/proc/hubi-demo"])
def test_demo_workdir_that_cannot_be_made(tmp_path: Path, where: str) -> None:
    (tmp_path / "notadir").write_text("a file\n")
    workdir = Path(where) if where.startswith("/") else tmp_path / where
    res = CliRunner().invoke(main, ["demo", "--workdir", str(workdir)], catch_exceptions=False)
    assert res.exit_code == 1, res.output
    out = "".join(res.output.split())  # the console may wrap a long path anywhere
    assert f"cannotmakethedemo'sfolder{workdir}" in out and "pickanother--workdir" in out, out
    res = CliRunner().invoke(
        main, ["demo", "--workdir", str(workdir), "--json"], catch_exceptions=False
    )
    assert res.exit_code == 1 and str(workdir) in json.loads(res.output)["error"]
