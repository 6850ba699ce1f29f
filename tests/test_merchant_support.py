"""Shared set-up of the merchant tests: a bank home, a merchant home, payers that sign notes.

Everything is real: KMC matrices, bank-sealed templates, signed notes, a SQLite outbox, and
`hubi` processes started as a user would start them.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubi import kmc, qrscan
from hubi.merchant import Merchant, init_from_bank_home
from hubi_core import codec

T0 = 1_760_000_000
MERCHANT = "BKB-000000000007"
PAYER = "BKA-000000000042"
ROOT = Path(__file__).resolve().parents[1]
HUBI = [sys.executable, "-m", "hubi.cli"]


@dataclass
class Payer:
    account: str
    private: int
    template: codec.Obj
    serial: int = 0

    def note(
        self,
        amount: int,
        payee: str = MERCHANT,
        purpose: str | None = "coffee",
        time: int | None = None,
        serial: int | None = None,
    ) -> bytes:
        if serial is None:
            self.serial += 1
            serial = self.serial
        n = codec.make_note(
            self.template,
            serial,
            T0 + 100 + serial if time is None else time,
            amount,
            payee,
            purpose,
        )
        return codec.encode(codec.sign(n, self.private))


@dataclass
class Shop:
    """A bank home with banks BKA and BKB, a merchant home for MERCHANT, and payers."""

    root: Path
    bank_home: Path
    home: Path
    payers: dict[str, Payer] = field(default_factory=dict)

    def merchant(self) -> Merchant:
        return Merchant.open(self.home)

    def payer(self, account: str = PAYER, currency: str = "CNY") -> Payer:
        if account not in self.payers:
            bank = account.split("-")[0]
            priv, tpl = kmc.issue_account(
                kmc.load_kmc(self.bank_home, bank),
                kmc.load_bank_identity(self.bank_home, bank),
                account,
                len(self.payers) + 100,
                T0,
                currency,
            )
            self.payers[account] = Payer(account, priv, tpl)
        return self.payers[account]


_SHOPS: dict[bytes, Path] = {}


def _build_shop(root: Path, seed: bytes) -> None:
    kmc.create_home(root / "bankhome", ["BKA", "BKB"], time=T0, seed=seed)
    init_from_bank_home(root / "merchant", root / "bankhome", MERCHANT, now=T0, template_serial=7)


def make_shop(root: Path, seed: bytes = b"merchant-tests") -> Shop:
    """A fresh shop at `root`: built once per worker and seed (~0.5 s of key generation), then
    copied; the homes hold no absolute path, and copytree keeps the secrets' modes."""
    template = _SHOPS.get(seed)
    if template is None:
        template = Path(tempfile.mkdtemp(prefix="hubi-shop-"))
        atexit.register(shutil.rmtree, template, True)
        _build_shop(template, seed)
        _SHOPS[seed] = template
    shutil.copytree(template, root, dirs_exist_ok=True)
    return Shop(root, root / "bankhome", root / "merchant")


def frames(note: bytes, folder: Path, screen_px: int = 240, prefix: str = "") -> list[Path]:
    """PNG frames the token would show for note (drawn with the firmware's encoder)."""
    paths = qrscan.render_frames(note, folder / f"{prefix}tmp", screen_px)
    out = []
    for p in paths:
        dst = folder / f"{prefix}{p.name}"
        p.replace(dst)
        out.append(dst)
    (folder / f"{prefix}tmp").rmdir()
    return out


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "host"), str(ROOT / "shared"), e.get("PYTHONPATH", "")]
    )
    e.pop("HUBI_MERCHANT_HOME", None)
    e["COLUMNS"] = "200"
    return e


def hubi(*args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `hubi` command line in a child process."""
    proc = subprocess.run(
        [*HUBI, *args], capture_output=True, text=True, timeout=timeout, env=env(), cwd=ROOT
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"hubi {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
    return proc


def hubi_json(*args: str, timeout: float = 60) -> tuple[int, Any]:
    proc = hubi(*args, "--json", timeout=timeout)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"not JSON ({exc}): {proc.stdout!r}\n{proc.stderr}") from None


def test_shop_is_consistent(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    with shop.merchant() as m:
        assert m.account == MERCHANT and m.currency == "CNY"
        assert m.identity.template["account"] == MERCHANT
        assert "key=<secret>" in repr(m.identity)
    assert oct((shop.home / "account.secret").stat().st_mode & 0o777) == "0o600"
