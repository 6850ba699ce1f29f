"""A small deterministic world for tests: two banks, their KMCs, a consortium, some accounts."""

from __future__ import annotations

from dataclasses import dataclass, field

from hubi import kmc as kmc_mod
from hubi_core import codec
from hubi_core.consortium import Consortium
from hubi_core.verify import Trust

T0 = 1_760_000_000


@dataclass
class Account:
    id: str
    private: int
    template: codec.Obj


@dataclass
class World:
    kmcs: dict[str, kmc_mod.Kmc]
    consortium: Consortium
    banks: dict[str, kmc_mod.BankIdentity]
    trust: Trust
    accounts: dict[str, Account] = field(default_factory=dict)
    _serial: int = 0

    def open_account(self, account: str, currency: str = "CNY") -> Account:
        bank = account.split("-")[0]
        # Deterministic separating key per account so bytes are reproducible across runs.
        sep_scalar = (int.from_bytes(account.encode(), "big") * 7919 + 12345) % (1 << 250) + 1
        priv, sep = self.kmcs[bank].issue(account, separating=sep_scalar)
        self._serial += 1
        tpl = codec.make_template(bank, self._serial, T0, account, currency, sep)
        codec.sign(tpl, self.banks[bank].private)
        acct = Account(account, priv, tpl)
        self.accounts[account] = acct
        return acct

    def note(
        self,
        payer: str,
        payee: str,
        amount: int,
        serial: int = 1,
        purpose: str | None = "coffee+cake!",
    ) -> codec.Obj:
        acct = self.accounts[payer]
        n = codec.make_note(acct.template, serial, T0 + 100 + serial, amount, payee, purpose)
        return codec.sign(n, acct.private)

    def request(
        self, payee: str, amount: int, serial: int = 1, purpose: str | None = "coffee+cake!"
    ) -> codec.Obj:
        acct = self.accounts[payee]
        r = codec.make_request(payee, serial, T0 + 50, acct.template, amount, T0 + 3600, purpose)
        return codec.sign(r, acct.private)


def make_world(banks: tuple[str, ...] = ("BKA", "BKB")) -> World:
    kmcs = {b: kmc_mod.Kmc.create(b, seed=b"test-seed-" + b.encode()) for b in banks}
    cons, idents = kmc_mod.make_consortium(
        "test",
        kmcs,
        endpoints={b: [f"http://127.0.0.1:{18000 + i}"] for i, b in enumerate(sorted(banks))},
        time=T0,
        separating={b: 1000 + i for i, b in enumerate(sorted(banks))},
    )
    trust = Trust(cons, {b: k.public for b, k in kmcs.items()})
    return World(kmcs, cons, idents, trust)
