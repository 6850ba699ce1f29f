"""Helpers of the consortium suites (tests/test_consortium*.py): homes with several banks and
funded accounts, consortia of real bank node processes over a real etcd cluster, signed calls.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hubi import kmc as kmc_mod
from hubi.bank.auth import Signer, bank_signer
from hubi.consortium import service
from hubi.consortium.supervisor import init_home, setup_bank
from hubi.infra import _process
from hubi_core import codec
from hubi_core.consortium import Consortium as ConsortiumFile
from hubi_core.verify import Trust
from tests.bank_nodes import NodeProcess

BANKS4 = ["BKA", "BKB", "BKC", "BKD"]
FUNDS = 100_000


@dataclass
class Account:
    id: str
    key: int = field(repr=False)
    template: codec.Obj
    serial: int = 0

    def note(
        self, payee: str, amount: int, serial: int | None = None, purpose: str = "test"
    ) -> bytes:
        if serial is None:
            self.serial += 1
            serial = self.serial
        obj = codec.make_note(self.template, serial, int(time.time()), amount, payee, purpose)
        return codec.encode(codec.sign(obj, self.key))


def load_accounts(home: Path) -> dict[str, Account]:
    out = {}
    for p in sorted((Path(home) / "accounts").glob("*.json")):
        d = json.loads(p.read_text())
        tpl = codec.decode(bytes.fromhex(d["template"]), codec.TEMPLATE)
        out[d["account"]] = Account(d["account"], int(d["key"], 16), tpl)
    return out


_TEMPLATES: dict[tuple[Any, ...], Path] = {}
_MATRICES: dict[str, Any] = {}


def load_trust(home: Path) -> Trust:
    """load_trust with the public matrices checked once per worker (they are the same in every
    home made here: ~1 s saved per load)."""
    cons = ConsortiumFile.from_json((Path(home) / "trust" / "consortium.json").read_text())
    for b in cons.bank_ids():
        if b not in _MATRICES:
            _MATRICES[b] = kmc_mod.load_trust(Path(home) / "trust").matrices[b]
    trust = Trust(cons, {b: _MATRICES[b] for b in cons.bank_ids()})
    cons.check_signatures(trust)
    return trust


def make_home(
    dest: Path,
    banks: list[str],
    *,
    accounts: int = 4,
    funds: int = FUNDS,
    name: str | None = None,
    endpoints: dict[str, list[str]] | None = None,
    orderer: str | None = None,
) -> dict[str, Account]:
    """A home with `banks`, each with a treasury and `accounts` funded accounts, a consortium
    file named `name` (unique by default) listing `endpoints` and `orderer`, signed by every
    founder. The expensive part (keys, funding) is built once per worker and copied."""
    name = name or "t" + uuid.uuid4().hex[:10]
    key = (tuple(banks), accounts, funds)
    tpl = _TEMPLATES.get(key)
    if tpl is None:
        tpl = Path(tempfile.mkdtemp(prefix="hubi-consortium-home-")) / "home"
        trust = init_home(tpl, banks, name="template", orderer=None, seed=b"consortium-tests")
        for b in banks:
            setup_bank(tpl, b, accounts, funds, trust=trust)
        _TEMPLATES[key] = tpl
    shutil.copytree(tpl, dest, dirs_exist_ok=True)
    trust = load_trust(dest)
    cons = trust.consortium
    cons.name = name
    for b, eps in (endpoints or {}).items():
        cons.banks[b].endpoints = list(eps)
    if orderer:
        cons.orderer = {"kind": orderer, "prefix": f"hubi/{name}/"}
    cons.signatures = {}
    for b in banks:
        cons.sign(b, kmc_mod.load_bank_identity(dest, b).private)
    kmc_mod.save_trust(dest / "trust", cons, trust.matrices)
    return load_accounts(dest)


def quiet_consortium(home: Path) -> Iterator[tuple[service.EmbeddedConsortium, dict]]:
    """An embedded consortium of BANKS4 at `home` whose log holds the notes alone: no
    checkpoints, and no forgetting but what the test asks for; (consortium, accounts)."""
    accounts = make_home(home, BANKS4)
    ec = service.EmbeddedConsortium(
        home, prune_interval=None, checkpoint_interval=3600.0, trust=load_trust(home)
    )
    ec.start()
    try:
        yield ec, accounts
    finally:
        close_embedded(ec)


def _each(act: Callable[[Any], object], items: list[Any]) -> None:
    """`act` on every item at once, in threads; then the first exception any of them raised."""
    failed: list[BaseException] = []

    def run(item: Any) -> None:
        try:
            act(item)
        except BaseException as exc:  # noqa: BLE001 - raised again below, in the caller
            failed.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise failed[0]


def close_embedded(ec: service.EmbeddedConsortium) -> None:
    """ec.close(), with the banks' nodes first stopped at once: each stop joins its threads
    (tenths of a second under load), one after the other in close(). close() then finds them
    stopped."""
    try:
        _each(lambda n: n.stop(), list(ec.nodes.values()))
    finally:
        ec.close()


def copy_sqlite(src: Path, dst: Path) -> None:
    """Copy a SQLite database (WAL and all) as its online backup does, while it may be in use;
    a bank's consortium state backed up, or put back."""
    with (
        contextlib.closing(sqlite3.connect(src)) as a,
        contextlib.closing(sqlite3.connect(dst)) as b,
    ):
        a.backup(b)


class Consortium:
    """Real bank node processes (``hubi bank serve``) of one home, over an etcd cluster."""

    def __init__(
        self,
        root: Path,
        etcd_urls: list[str],
        banks: list[str] = BANKS4,
        *,
        accounts: int = 4,
        checkpoint_every: int | None = 8,
        settle_timeout: float = 10.0,
        prune_interval: float = 0.5,
        log_level: str = "warning",
    ):
        self.root = Path(root)
        self.home = self.root / "home"
        self.banks = list(banks)
        self.etcd_urls = list(etcd_urls)
        self.name = "t" + uuid.uuid4().hex[:10]
        extra = ["--checkpoint-every", str(checkpoint_every)] if checkpoint_every else []
        self.nodes = {
            b: NodeProcess(self.home, b, extra=extra + ["--log-level", log_level], name=b)
            for b in banks
        }
        self.accounts = make_home(
            self.home,
            banks,
            accounts=accounts,
            name=self.name,
            endpoints={b: [n.url] for b, n in self.nodes.items()},
            orderer="etcd",
        )
        for i, b in enumerate(banks):
            own = self.etcd_urls[i % len(self.etcd_urls)]
            cfg = service.NodeConfig(
                "etcd",
                etcd=[own] + [u for u in self.etcd_urls if u != own],
                settle_timeout=settle_timeout,
                checkpoint_interval=0.5,
                prune_interval=prune_interval,
            )
            service.write_config(self.home, b, cfg)
        # idle connections dropped before the nodes' own keep-alive (uvicorn: 5 s) closes them:
        # a request sent on one just as the node closes it fails with "Server disconnected"
        self.http = httpx.Client(timeout=30, limits=httpx.Limits(keepalive_expiry=2.0))

    @property
    def prefix(self) -> bytes:
        return f"hubi/{self.name}/".encode()

    def start(self) -> Consortium:
        """Start the nodes at once, then wait for each: a node's start is mostly its imports,
        and nothing in it waits for the others."""
        try:
            for n in self.nodes.values():
                n.spawn()
            for n in self.nodes.values():
                n.wait_ready()
        except BaseException:
            for n in self.nodes.values():  # those that did start: not left running
                n.kill9()
            raise
        return self

    def close(self) -> None:
        self.http.close()
        for n in self.nodes.values():
            n.close()

    def __enter__(self) -> Consortium:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, bank: str) -> str:
        return self.nodes[bank].url

    def signer(self, bank: str) -> Signer:
        return bank_signer(self.home, bank)

    def upload(self, bank: str, note: bytes, timeout: float = 30.0) -> httpx.Response:
        return self.http.post(
            self.url(bank) + "/v1/notes",
            content=note,
            headers={"content-type": "application/octet-stream"},
            timeout=timeout,
        )

    def get(self, bank: str, path: str, params: dict[str, Any] | None = None) -> Any:
        """A GET signed by the bank itself (role SELF); JSON, or AssertionError naming why."""
        from urllib.parse import urlencode

        qs = urlencode(params or {})
        headers = self.signer(bank).headers(bank, "GET", path, qs or None)
        r = self.http.get(self.url(bank) + path + (("?" + qs) if qs else ""), headers=headers)
        assert r.status_code == 200, f"GET {path} at {bank}: {r.status_code} {r.text[:300]}"
        return r.json()

    def status(self, bank: str) -> dict[str, Any]:
        return self.get(bank, "/v1/consortium/status")

    def reports(self, bank: str) -> list[dict[str, Any]]:
        return self.get(bank, "/v1/consortium/reports")["reports"]

    def balance(self, account: str) -> int:
        bank = account.split("-")[0]
        return int(self.get(bank, f"/v1/accounts/{account}")["balance"])

    def wait_caught_up(
        self, timeout: float = 60.0, banks: list[str] | None = None, at_least: int = 0
    ) -> int:
        """Wait until every bank applied the same revision, `at_least` (one the test wrote: the
        banks may all still stand before it), with the same log hash; returns it."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = {b: self.status(b) for b in (banks or self.banks)}
            revs = {s["applied_revision"] for s in st.values()}
            pending = sum(s["entries"].get("ordered", 0) for s in st.values())
            if len(revs) == 1 and pending == 0 and min(revs) >= at_least:
                hashes = {s["log_hash"] for s in st.values()}
                assert len(hashes) == 1, f"banks disagree about the log: {st}"
                return revs.pop()
            last = st
            time.sleep(0.2)
        top = max(s["applied_revision"] for s in last.values())
        behind = {
            b: {k: s.get(k) for k in ("applying", "halted", "last_error", "applier", "pruning")}
            | {"log": _process.log_tail(self.nodes[b].log, lines=15)}
            for b, s in last.items()
            if s["applied_revision"] < top or s["entries"].get("ordered")
        }
        raise AssertionError(
            "banks did not catch up: "
            + json.dumps({b: (s["applied_revision"], s["entries"]) for b, s in last.items()})
            + "; behind: "
            + json.dumps(behind, indent=1)
        )
