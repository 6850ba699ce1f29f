"""A peer bank's inclusion proofs (real bank node processes over the embedded orderer). A proof
carries the record itself (amount, time, the note); any peer bank of the consortium got one of
any book, so every bank could read every other bank's customers' payments. A peer now gets a
proof only of a record whose note has a payer or payee at that bank; asking for anything else,
even a record that does not exist, is the same 403."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hubi.bank.auth import bank_signer
from hubi.bank.client import BankClient, BankError
from hubi.bank.engine import verify_inclusion_proof
from hubi.kmc import load_trust
from tests.bank_nodes import nodes  # noqa: F401
from tests.consortium_support import BANKS4, make_home


def test_a_peer_bank_gets_proofs_of_its_customers_notes_only(tmp_path: Path, nodes) -> None:  # noqa: F811
    home = tmp_path / "home"
    made = {b: nodes(home, b, name=b) for b in BANKS4}
    acc = make_home(
        home, BANKS4, endpoints={b: [n.url] for b, n in made.items()}, orderer="embedded"
    )
    for n in made.values():
        n.start()
    bka = made["BKA"].url
    # an interbank note BKA -> BKB, and a note between two customers of BKA
    for raw in (
        acc["BKA-000001"].note("BKB-000001", 12),
        acc["BKA-000002"].note("BKA-000003", 34),
    ):
        r = httpx.post(bka + "/v1/notes", content=raw, timeout=60)
        assert r.status_code == 200 and r.json()["outcome"] == "booked", r.text
    own = BankClient(bka, bank_signer(home, "BKA"))

    def last(book: str) -> int:
        return max(r["number"] for r in own.book(book)["records"])

    debit, same_bank = last("BKA-000001"), last("BKA-000003")
    # the payee's bank, before the record is under a checkpoint: the proof's own answer (it
    # may ask again later), not a refusal it would take for final
    payee_bank = BankClient(bka, bank_signer(home, "BKB"))
    with pytest.raises(BankError) as caught:
        payee_bank.inclusion_proof("BKA-000001", debit)
    assert (caught.value.status, caught.value.code) == (404, "not-found"), caught.value
    assert "not under a checkpoint yet" in str(caught.value)
    own.checkpoint_now()
    with pytest.raises(BankError) as caught:  # a tree size with no checkpoint: said so too
        payee_bank.inclusion_proof("BKA-000001", debit, tree_size=999_999)
    assert caught.value.status == 404 and "no checkpoint of tree size" in str(caught.value)
    trust = load_trust(home / "trust")
    # the payee's bank gets the proof of the payer's debit, and it checks out
    proof = payee_bank.inclusion_proof("BKA-000001", debit)
    assert verify_inclusion_proof(proof, trust).delta == -12
    # a bank with no party to the note, and any bank for a same-bank note or a funding
    # record, or a record that is not there: one refusal, telling nothing
    for bank, book, n in (
        ("BKC", "BKA-000001", debit),
        ("BKB", "BKA-000003", same_bank),
        ("BKB", "BKA-000001", 1),
        ("BKB", "BKA-000001", 999),
        ("BKB", "BKA-000009", 1),
    ):
        with pytest.raises(BankError) as caught:
            BankClient(bka, bank_signer(home, bank)).inclusion_proof(book, n)
        assert caught.value.status == 403 and caught.value.code == "role-denied", (bank, book, n)
        assert "customer of its own is party to" in str(caught.value)
    # the bank itself and its regulators still get any record's proof
    assert verify_inclusion_proof(own.inclusion_proof("BKA-000003", same_bank), trust)
