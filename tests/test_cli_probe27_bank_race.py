"""Two `hubi bank open-account ACCOUNT` run at once (a script retried, two operators): both
found no key file, both issued a key, the second's files replaced the first's, and the database
kept the first's account. The account was open with a key no file held (lost for good), and
ACCOUNT.template was not its template. The key is now checked for, written and its account
opened under a lock on the folder, so the second run finds the first's files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hubi import kmc
from hubi.commands import bank as bank_cmd
from hubi_core import codec, ec, suite, verify

pytestmark = pytest.mark.xdist_group("test_cli_probe27_bank_race")

HUBI = str(Path(sys.executable).with_name("hubi"))
RUNS = 3  # waves of ACCOUNTS accounts, each opened by two processes at once
ACCOUNTS = 4


def test_open_account_twice_at_once_keeps_the_opened_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    kmc.create_home(home, ["BKA", "BKB"], seed=b"probe27-race")
    bka = ["--home", str(home), "--bank", "BKA"]
    r = subprocess.run([HUBI, "bank", "init", *bka], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    trust = kmc.load_trust(home / "trust")
    lost: list[str] = []
    for wave in range(RUNS):
        names = [f"BKA-w{wave}a{i}" for i in range(ACCOUNTS)]
        procs = [
            subprocess.Popen(
                [HUBI, "bank", "open-account", name, *bka, "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in names
            for _ in range(2)
        ]
        codes = [p.wait(timeout=120) for p in procs]
        for p in procs:
            p.stdout.close()  # type: ignore[union-attr]
            p.stderr.close()  # type: ignore[union-attr]
        for k, name in enumerate(names):
            # one of the two opened it (the other was refused)
            assert sorted(codes[2 * k : 2 * k + 2])[0] == 0, codes
            with bank_cmd._engine(home, "BKA", None) as eng:  # the bank's own database
                info = eng.account(name)
            assert info is not None and info.template is not None, name
            opened = info.template
            key_file = home / "accounts" / f"{name}.secret"
            tpl_file = home / "accounts" / f"{name}.template"
            tpl = codec.decode(opened, codec.TEMPLATE)
            sealed = ec.encode_point(ec.decode_point(verify.template_key(tpl, trust)), True)
            key = int.from_bytes(key_file.read_bytes(), "big")
            if tpl_file.read_bytes() != opened or suite.public_key(key, compressed=True) != sealed:
                lost.append(name)
    assert not lost, f"accounts opened with a key their files do not hold: {lost}"


def test_init_twice_at_once_keeps_the_treasury_key(tmp_path: Path) -> None:
    """The same race for `hubi bank init` of new books: the treasury's key file."""
    lost: list[int] = []
    for run in range(RUNS * 2):
        home = tmp_path / f"home{run}"
        kmc.create_home(home, ["BKA", "BKB"], seed=b"probe27-init")
        bka = ["--home", str(home), "--bank", "BKA"]
        procs = [
            subprocess.Popen(
                [HUBI, "bank", "init", *bka],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        assert 0 in [p.wait(timeout=120) for p in procs]
        with bank_cmd._engine(home, "BKA", None) as eng:  # the treasury as the books have it
            tpl = eng.template(eng.treasury)
            sealed = ec.encode_point(ec.decode_point(verify.template_key(tpl, eng.trust)), True)
        key = kmc.read_key(home / "banks" / "BKA" / kmc.TREASURY_SECRET)
        ok = suite.public_key(key, compressed=True) == sealed
        if not ok:
            lost.append(run)
    assert not lost, f"runs whose treasury key file is not the database's: {lost}"
