"""Provisioning a token from a bank's home folder (hubi.kmc layout).

The bank side: issue the account (KMC key + bank-sealed Template), sign an OfflineAllowance,
upload the public trust files (consortium.json, every bank's public matrix) in clear, then
send the secret part (account key, template, PIN, consortium digest, allowance, time) in ONE
message ECIES-sealed to the transport key the token reported in GET_INFO. The token checks
everything against the consortium before it stores a byte of the key (firmware/core/wallet.py).
"""

from __future__ import annotations

import hashlib
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubi import kmc
from hubi.token.client import TokenClient
from hubi_core import codec, ecies, ids, tokenmsg


@dataclass
class Issued:
    account: str
    private: int
    template: codec.Obj

    def __repr__(self) -> str:
        return f"Issued(account={self.account!r}, key=<secret>)"


def make_allowance(
    bank: kmc.BankIdentity,
    account: str,
    cap: int,
    first_serial: int,
    expiry: int,
    serial: int | None = None,
    now: int | None = None,
) -> codec.Obj:
    """A bank-signed OfflineAllowance: the token signs at most `cap` minor units offline."""
    now = int(_time.time()) if now is None else now
    serial = now if serial is None else serial
    obj = codec.Obj(
        codec.ALLOWANCE,
        bank.bank,
        serial,
        now,
        {"amount": cap, "account": account, "expiry": expiry, "first_serial": first_serial},
    )
    codec.sign(obj, bank.private)
    codec.encode(obj)
    return obj


def issue(home: Path, account: str, serial: int | None = None, now: int | None = None) -> Issued:
    bank = ids.bank_of(account)
    k = kmc.load_kmc(home, bank)
    ident = kmc.load_bank_identity(home, bank)
    now = int(_time.time()) if now is None else now
    priv, tpl = kmc.issue_account(k, ident, account, serial or now, now)
    codec.encode(tpl)
    return Issued(account, priv, tpl)


def trust_files(home: Path) -> dict[str, bytes]:
    """consortium.json and every <BANK>.pub of the home's trust bundle."""
    tdir = Path(home) / "trust"
    files = {"consortium.json": (tdir / "consortium.json").read_bytes()}
    for p in sorted((tdir / "matrices").glob("*.pub")):
        files[p.name] = p.read_bytes()
    return files


def seal_bundle(
    transport_key: bytes,
    issued: Issued,
    pin: str,
    consortium_json: bytes,
    allowance: codec.Obj | None,
    now: int,
) -> bytes:
    plain = tokenmsg.encode_bundle(
        {
            "key": issued.private.to_bytes(32, "big"),
            "template": codec.encode(issued.template),
            "pin": pin.encode(),
            "consortium": hashlib.sha256(consortium_json).digest(),
            "allowance": codec.encode(allowance) if allowance is not None else None,
            "time": now,
        }
    )
    return ecies.seal(transport_key, plain, tokenmsg.PROVISION_INFO)


def provision(
    tok: TokenClient,
    home: Path,
    account: str,
    pin: str,
    allowance_cap: int | None = None,
    allowance_days: int = 30,
    first_serial: int = 1,
    now: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    issued: Issued | None = None,
    allowance: codec.Obj | None = None,
) -> dict[str, Any]:
    """Issue `account` from the bank's KMC in `home` and load it into the token.

    `issued`: an account the bank already opened (key + template); `allowance`: an
    OfflineAllowance the bank recorded (BankEngine.issue_allowance); without one, an allowance
    of `allowance_cap` is signed here with the bank's key."""
    tokenmsg.check_pin(pin)  # before ~68 KB of trust files go over the link, not after
    info = tok.info()
    if info["state"] != "blank":
        raise RuntimeError(
            f"token already holds account {info['account']}: wipe it first (hubi token wipe)"
        )
    tk = info.get("transport_key")
    if not tk:
        raise RuntimeError("token reports no transport key")
    now = int(_time.time()) if now is None else now
    issued = issued or issue(home, account, now=now)
    files = trust_files(home)
    for name, data in files.items():
        cb = (lambda d, t, n=name: progress(n, d, t)) if progress else None
        digest = tok.upload_file(name, data, progress=cb)
        if digest != hashlib.sha256(data).digest():
            raise RuntimeError(f"token stored {name} with another digest (link corruption?)")
    if allowance is None and allowance_cap:
        bank = kmc.load_bank_identity(home, ids.bank_of(account))
        allowance = make_allowance(
            bank, account, allowance_cap, first_serial, now + allowance_days * 86400, now=now
        )
    blob = seal_bundle(bytes.fromhex(tk), issued, pin, files["consortium.json"], allowance, now)
    return tok.provision_commit(blob)
