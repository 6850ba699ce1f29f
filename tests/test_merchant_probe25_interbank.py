"""Probe 25 of `hubi merchant upload` against a real consortium (bank node processes over a
real etcd cluster) whose other bank is down: the shop's bank answers its interbank notes with
503 ``consortium-unavailable``.

That 503 stopped the whole upload, so the notes of the shop's own bank's payers, which that
bank books on its own, waited behind an outage of another bank. Now the interbank notes are
left pending with the bank's reason (and are not asked about again in that run), the others
are booked, and the next upload, once the other bank is back, settles the rest.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hubi.merchant import Merchant, import_identity
from hubi_core import codec
from tests.consortium_support import Consortium
from tests.servers import etcd_cluster  # noqa: F401
from tests.test_merchant_support import hubi, hubi_json

BANKS2 = ["BKA", "BKB"]
SHOP = "BKB-000004"


@pytest.fixture
def cons(etcd_cluster, tmp_path: Path) -> Consortium:  # noqa: F811
    c = Consortium(tmp_path / "cons", etcd_cluster.client_urls, BANKS2, settle_timeout=3.0)
    c.start()
    try:
        yield c
    finally:
        c.close()


def _shop(c: Consortium, tmp_path: Path) -> Path:
    """A merchant home for SHOP, imported from its key and template, trusting c's file."""
    acct = c.accounts[SHOP]
    key = tmp_path / "shop.key"
    key.write_text(f"{acct.key:064x}\n")
    tpl = tmp_path / "shop.tpl"
    tpl.write_bytes(codec.encode(acct.template))
    home = tmp_path / "shop"
    import_identity(home, key, tpl, c.home / "trust")
    return home


def _pay(home: Path, c: Consortium, payer: str, amount: int) -> bytes:
    with Merchant.open(home) as m:
        m.request(amount, "test", expires=600)
        note = c.accounts[payer].note(SHOP, amount)
        res = m.accept(note)
        assert res.ok, res.verdict.message()
    return note


def test_another_banks_outage_does_not_hold_back_the_shops_own_banks_notes(
    cons: Consortium, tmp_path: Path
) -> None:
    home = _shop(cons, tmp_path)
    # oldest first: an interbank note, then two of the shop's own bank's payers
    inter = _pay(home, cons, "BKA-000001", 300)
    own = [_pay(home, cons, "BKB-000001", 200), _pay(home, cons, "BKB-000002", 100)]
    later = _pay(home, cons, "BKA-000002", 50)
    cons.nodes["BKA"].stop()
    url = cons.url("BKB")
    code, rep = hubi_json("merchant", "--home", str(home), "upload", "--bank", url,
                          "--retries", "0", timeout=180)  # fmt: skip
    assert code == 1 and not rep["ok"], rep
    states = [it["state"] for it in rep["items"]]
    assert states == ["pending", "booked", "booked", "pending"], rep["items"]
    first, *_, last = rep["items"]
    assert "consortium-unavailable" in first["detail"], first
    assert "other banks now" in first["detail"] and first["attempts"] == 1, first
    assert last["attempts"] == 0 and last["detail"] == first["detail"], last
    assert rep["stopped"] is None, rep
    with Merchant.open(home) as m:
        rows = {r.bytes: r for r in m.notes()}
        assert [rows[x].state for x in (inter, *own, later)] == states
        assert "consortium-unavailable" in (rows[inter].last_error or "")
        assert m.audit_book() == []
    assert cons.balance(SHOP) == cons.balance("BKB-000003") + 300  # the two own notes only
    # the other bank is back: the next upload settles the interbank notes (uploads again
    # while the consortium still answers "not settled yet", as a shop would)
    cons.nodes["BKA"].start()
    deadline = time.monotonic() + 60
    while True:
        proc = hubi("merchant", "--home", str(home), "upload", "--bank", url, timeout=180)
        if proc.returncode == 0:
            break
        assert time.monotonic() < deadline, proc.stdout + proc.stderr
    with Merchant.open(home) as m:
        assert m.outbox.counts() == {"pending": 0, "booked": 4, "bounced": 0, "refused": 0}
        assert m.audit_book() == []
