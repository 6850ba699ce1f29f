"""Signed requests and roles probed as an attacker would (a real node process, real HTTP).

- An inclusion proof carries the record itself (amount, time, evidence): any signed caller got
  one for any book, so a customer read other customers' records that /book refuses it. A
  customer now gets proofs of its own book only (403 role-denied otherwise).
- The nonce cache dropped a (caller, nonce) pair at the very second its request's time was
  still inside the window, so the request could be replayed once at that edge.
"""

from __future__ import annotations

import httpx
import pytest

from hubi import kmc
from hubi.bank import auth
from hubi.bank.client import BankClient, BankError
from tests import bank_nodes
from tests.bank_nodes import prepare_bank

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes


@pytest.fixture
def node(bank_world, nodes, tmp_path):
    accts = prepare_bank(bank_world.home, "BKA", str(tmp_path / "bka.db"), accounts=3)
    n = nodes(bank_world.home, "BKA", str(tmp_path / "bka.db"), name="bka").start()
    a = list(accts.values())
    assert BankClient(n.url).upload(a[0].note(a[1].id, 77, serial=1)).booked
    BankClient(n.url, bank_world.bank_signer("BKA")).checkpoint_now()
    return n, a


def test_a_customer_gets_inclusion_proofs_of_its_own_book_only(bank_world, node):
    n, a = node
    mine = BankClient(n.url, a[0].signer)
    assert mine.inclusion_proof(a[0].id, 1)["record"]
    with pytest.raises(BankError) as caught:
        mine.inclusion_proof(a[1].id, 2)  # the credit of 77 to another customer
    assert caught.value.status == 403 and caught.value.code == "role-denied"
    # the regulator and the bank itself still get any book's proof
    assert BankClient(n.url, bank_world.regulator).inclusion_proof(a[1].id, 2)["record"]
    assert BankClient(n.url, bank_world.bank_signer("BKA")).inclusion_proof(a[1].id, 2)


def test_a_request_at_the_window_edge_is_not_replayed(bank_world):
    trust = kmc.load_trust(bank_world.home / "trust")
    now = [1_800_000_000.0]
    checker = auth.Authenticator("BKA", trust, window=300, clock=lambda: now[0])
    signer = bank_world.regulator
    path = "/v1/checkpoints"
    headers = signer.headers("BKA", "GET", path, now=now[0] + 300)  # the latest time accepted
    got = {k.lower(): v for k, v in headers.items()}
    assert checker.authenticate("GET", path, "", got, b"").role == auth.Role.REGULATOR
    now[0] += 600  # the request's time is now 300 s behind: still inside the window
    with pytest.raises(auth.AuthError) as caught:
        checker.authenticate("GET", path, "", got, b"")
    assert caught.value.code == "replayed-nonce"
    now[0] += 1  # past the window: stale, whatever the cache holds
    with pytest.raises(auth.AuthError) as caught:
        checker.authenticate("GET", path, "", got, b"")
    assert caught.value.code == "stale-timestamp"


def test_hostile_headers_get_a_named_4xx(bank_world, node):
    """Probes that already behaved: kept so they stay so."""
    n, a = node
    reg = bank_world.regulator
    url = n.url + "/v1/checkpoints"

    def send(headers: dict[str, str] | list[tuple[str, str]]) -> httpx.Response:
        return httpx.get(url, headers=headers, timeout=30)

    h = reg.headers("BKA", "GET", "/v1/checkpoints")
    assert send(h).status_code == 200
    assert send(h).json()["error"] == "replayed-nonce"
    # a signature over one path used on another
    h = reg.headers("BKA", "GET", "/v1/checkpoints/latest")
    assert send(h).json()["error"] == "bad-signature"
    # signed for another bank
    h = reg.headers("BKB", "GET", "/v1/checkpoints")
    assert send(h).json()["error"] == "bad-signature"
    # header names in odd case work; a second, different caller header does not win
    h = reg.headers("BKA", "GET", "/v1/checkpoints")
    odd = [(k.upper(), v) for k, v in h.items()] + [("x-hubi-caller", "BKA")]
    assert send(odd).status_code == 200
    for name, value, code in [
        ("X-Hubi-Time", "-5", "bad-header"),
        ("X-Hubi-Time", "9" * 40, "bad-header"),
        ("X-Hubi-Time", "99999999999", "stale-timestamp"),
        ("X-Hubi-Nonce", "é" * 20, "bad-header"),
        ("X-Hubi-Caller", "BKA-" + "9" * 5000, "unknown-caller"),
        ("X-Hubi-Caller", "ÉTAT", "unknown-caller"),
    ]:
        h = reg.headers("BKA", "GET", "/v1/checkpoints")
        h[name] = value
        r = httpx.get(url, headers={k: v.encode("latin-1") for k, v in h.items()}, timeout=30)
        assert r.status_code in (400, 401) and r.json()["error"] == code, (name, r.text)
    # a regulator's key on an operator's route
    r = BankClient(n.url, reg)
    with pytest.raises(BankError) as caught:
        r.checkpoint_now()
    assert caught.value.code == "role-denied"
