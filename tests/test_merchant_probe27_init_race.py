"""Two `hubi merchant init` on one home at once (a script retried, two terminals): each found
no merchant.json, each wrote its key, template and settings, and each said "set up" with exit
status 0, while the home kept one identity only (or one's key with the other's template); a
loser could also fail on the other's `trust.tmp`, naming no merchant. The home is now set up
under a lock on its folder: one init wins, the others are refused as a home that holds one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hubi import kmc
from hubi.merchant import Merchant
from hubi_core import codec

from .test_merchant_support import HUBI, ROOT, T0, env

pytestmark = pytest.mark.xdist_group("test_merchant_probe27_init_race")

ACCOUNTS = [f"BKB-00000000001{i}" for i in range(4)]
WAVES = 2


def test_inits_at_once_set_up_one_merchant(tmp_path: Path) -> None:
    bank_home = tmp_path / "bankhome"
    kmc.create_home(bank_home, ["BKA", "BKB"], time=T0, seed=b"probe27-init-race")
    keys: dict[str, bytes] = {}
    for n, account in enumerate(ACCOUNTS):  # what `hubi bank open-account` hands over
        priv, tpl = kmc.issue_account(
            kmc.load_kmc(bank_home, "BKB"),
            kmc.load_bank_identity(bank_home, "BKB"),
            account,
            10 + n,
            T0,
        )
        keys[account] = priv.to_bytes(32, "big")
        (tmp_path / f"{account}.secret").write_bytes(keys[account])
        (tmp_path / f"{account}.template").write_bytes(codec.encode(tpl))
    for wave in range(WAVES):
        home = tmp_path / f"shop{wave}"
        procs = [
            subprocess.Popen(
                [
                    *HUBI,
                    "merchant",
                    "--home",
                    str(home),
                    "init",
                    "--key",
                    str(tmp_path / f"{account}.secret"),
                    "--template",
                    str(tmp_path / f"{account}.template"),
                    "--trust",
                    str(bank_home / "trust"),
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env(),
                cwd=ROOT,
            )
            for account in ACCOUNTS
        ]
        said: list[tuple[int, str, str]] = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            said.append((p.returncode, out, err))
        winners = [a for a, (code, _o, _e) in zip(ACCOUNTS, said, strict=True) if code == 0]
        assert len(winners) == 1, f"wave {wave}: {len(winners)} inits said set up: {said}"
        for account, (code, out, err) in zip(ACCOUNTS, said, strict=True):
            assert "Traceback" not in err, err
            answer = json.loads(out)
            if account in winners:
                assert answer["ok"] and answer["account"] == account, answer
            else:  # refused by name, as a home that holds a merchant
                assert code == 2 and not answer["ok"], answer
                assert "already holds a merchant" in answer["message"], answer
        with Merchant.open(home) as m:  # one whole identity: the winner's key and template
            assert m.account == winners[0]
        assert (home / "account.secret").read_bytes() == keys[winners[0]]
        assert not list(home.glob("*.tmp")) and not list(home.glob(".*.tmp"))
