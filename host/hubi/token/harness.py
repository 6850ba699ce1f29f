"""A small bank world around simulated tokens, for the tests and the benchmark.

w = TokenWorld(tmp_path)                      # two banks, KMCs, consortium, trust bundle
state = w.provisioned("BKA-000000000042", "1234", cap=100000)   # a provisioned token's
                                              # flash, made once and copied per use
with w.sim(state, profile="m5stack_core") as sim, w.client(sim) as tok:
    note = w.pay_on_device(sim, tok, w.request("BKB-000000000007", 1234), "1234")
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hubi import kmc
from hubi.token import provision as prov
from hubi.token.client import TokenClient
from hubi.token.sim import Simulator, wheel_presses
from hubi_core import codec, ids

FAST = {"kdf_iterations": 1000, "pin_backoff_ms": 40}


class TokenWorld:
    def __init__(
        self, root: Path, banks: tuple[str, ...] = ("BKA", "BKB"), seed: bytes = b"hubi-token"
    ) -> None:
        self.root = Path(root)
        self.home = self.root / "home"
        self.trust = kmc.create_home(self.home, list(banks), seed=seed)
        self._payees: dict[str, prov.Issued] = {}
        self._serial = 0
        self._snapshots: dict[tuple[Any, ...], Path] = {}
        self.n = 0

    # ------------------------------------------------------------------ objects
    def payee(self, account: str) -> prov.Issued:
        if account not in self._payees:
            self._payees[account] = prov.issue(self.home, account, serial=len(self._payees) + 1)
        return self._payees[account]

    def request(
        self, payee: str, amount: int, purpose: str | None = "coffee+cake!", expiry: int = 3600
    ) -> bytes:
        p = self.payee(payee)
        self._serial += 1
        now = int(time.time())
        req = codec.make_request(
            payee, self._serial, now, p.template, amount, now + expiry, purpose
        )
        codec.sign(req, p.private)
        return codec.encode(req)

    def balance_notice(self, note: bytes, balance: int, serial: int = 9) -> bytes:
        """The payer's bank's BalanceNotice for `note` (balance sealed to the payer's key)."""
        from hubi_core import ecies
        from hubi_core.verify import verify_object

        n = codec.decode(note, codec.NOTE)
        bank = kmc.load_bank_identity(self.home, ids.bank_of(n.signer))
        payer_key = verify_object(note, self.trust).key
        blob = ecies.seal(
            payer_key, balance.to_bytes(8, "big"), b"hubi/balance/1\x00" + n.signer.encode()
        )
        values = {
            "amount": n["amount"],
            "payee": n["payee"],
            "payer": n.signer,
            "note_id": codec.note_id(n.signer, n.serial),
            "balance": blob,
        }
        bn = codec.Obj(codec.BALANCE, bank.bank, serial, int(time.time()), values)
        codec.sign(bn, bank.private)
        return codec.encode(bn)

    def receipt(self, note: bytes, serial: int = 3) -> bytes:
        """The payee's Receipt for `note`."""
        n = codec.decode(note, codec.NOTE)
        p = self.payee(n["payee"])
        values = {
            "template": p.template,
            "amount": n["amount"],
            "purpose": n.get("purpose"),
            "payer": n.signer,
            "note_id": codec.note_id(n.signer, n.serial),
        }
        if values["purpose"] is None:
            del values["purpose"]
        rc = codec.Obj(codec.RECEIPT, n["payee"], serial, int(time.time()), values)
        codec.sign(rc, p.private)
        return codec.encode(rc)

    # ------------------------------------------------------------------ simulators
    def new_state(self, name: str | None = None) -> Path:
        self.n += 1
        d = self.root / (name or f"tok{self.n}")
        shutil.rmtree(d, ignore_errors=True)
        return d

    def sim(
        self,
        state: Path,
        profile: str = "headless",
        settings: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Simulator:
        s = dict(FAST)
        s.update(settings or {})
        return Simulator(state, profile, s, **kw)

    @contextmanager
    def running(
        self, state: Path, profile: str = "headless", **kw: Any
    ) -> Iterator[tuple[Simulator, TokenClient]]:
        sim = self.sim(state, profile, **kw)
        sim.start()
        try:
            sim.wait_ready()
            tok = TokenClient.open(sim.port)
            try:
                yield sim, tok
            finally:
                tok.close()
        finally:
            sim.stop()

    def provision(
        self, tok: TokenClient, account: str, pin: str, cap: int | None = 100000
    ) -> dict[str, Any]:
        return prov.provision(tok, self.home, account, pin, cap)

    def provisioned(
        self,
        account: str = "BKA-000000000042",
        pin: str = "1234",
        cap: int = 100000,
        profile: str = "headless",
        kdf_iterations: int = FAST["kdf_iterations"],
    ) -> Path:
        """A copy of a freshly provisioned token's state folder (provisioned once, then copied).
        The keystore keeps the KDF cost it was created with."""
        key = (account, pin, cap, profile, kdf_iterations)
        snap = self._snapshots.get(key)
        if snap is None:
            snap = self.new_state(f"snap-{len(self._snapshots)}")
            settings = {"kdf_iterations": kdf_iterations}
            with self.running(snap, profile, settings=settings) as (_sim, tok):
                self.provision(tok, account, pin, cap)
            self._snapshots[key] = snap
        d = self.new_state()
        shutil.copytree(snap / "flash", d / "flash")
        return d

    # ------------------------------------------------------------------ payments
    def pay(
        self, sim: Simulator, tok: TokenClient, request: bytes, pin: str, wheel: bool = True
    ) -> bytes:
        """Pay a request: on a screen board the script confirms and types the PIN (with the
        3-button wheel, or digit keys); headless, the PIN goes over the link."""
        if sim.profile == "headless":
            r = tok.pay(request)
            assert r.summary is not None
            return tok.confirm_pay(pin)
        keys = wheel_presses(pin) if wheel else " ".join(pin) + " enter"
        sim.press("confirm: ok", "pin: " + keys)
        r = tok.pay(request, timeout_ms=20000)
        assert r.note is not None
        return r.note
