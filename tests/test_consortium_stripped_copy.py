"""At the consortium, a note with its optional ``allowance`` field stripped is the same issuance.

Each signed field of a Note carries its own signature, so anyone holding an interbank note can
drop its ``allowance`` and the rest still verifies: a second encoding under the same note id.
Uploaded at either bank, before or after the genuine note, it must be answered as a duplicate of
the settlement, not as a double issuance: the payer is not flagged and balances move once.
"""

from __future__ import annotations

import time

import pytest

from hubi.bank.engine import FLAG_DOUBLE_ISSUE
from hubi.consortium.service import EmbeddedConsortium
from hubi_core import codec, lsum
from tests.consortium_support import BANKS4, FUNDS
from tests.test_consortium_embedded import wait_all, world  # noqa: F401  (fixture)
from tests.test_stripped_copy import stripped_pair

PAYER, PAYEE = "BKA-000001", "BKB-000001"


def _pair(ec: EmbeddedConsortium, acc, allowance: int, serial: int, amount: int):  # type: ignore[no-untyped-def]
    """(genuine interbank note naming an allowance voucher, the same note stripped of it)."""
    a = acc[PAYER]
    return stripped_pair(
        a.template, a.key, PAYEE, ec.trust, allowance, serial, amount, int(time.time())
    )


def _not_flagged(ec: EmbeddedConsortium) -> None:
    for bank in BANKS4:
        assert ec.engine(bank).double_issues() == [], bank
        assert not [r for r in ec.nodes[bank].state.reports() if "double" in r.detail], bank
    info = ec.engine("BKA").account(PAYER)
    assert info is not None and not info.flags & FLAG_DOUBLE_ISSUE


def _duplicate_of(first: dict, again: dict) -> None:
    assert (again["outcome"], again["duplicate"]) == ("booked", True), again
    assert again["note_id"] == first["note_id"]
    assert again["status"] == first["status"] == "settled"


@pytest.mark.parametrize("order", ["genuine-first", "stripped-first"])
def test_stripped_copy_of_interbank_note_is_a_duplicate(world, order: str) -> None:  # noqa: F811
    ec, acc = world
    voucher = codec.decode(
        ec.engine("BKA").issue_allowance(PAYER, cap=5000, expiry=2_000_000_000, first_serial=10)
    )
    genuine, stripped = _pair(ec, acc, voucher.serial, 10, 300)
    first, second = (genuine, stripped) if order == "genuine-first" else (stripped, genuine)
    out = ec.submit("BKB", first)
    assert (out["outcome"], out["status"], out["duplicate"]) == ("booked", "settled", False), out
    assert out["note_id"] == lsum.note_id(PAYER, 10).hex()
    wait_all(ec)
    for bank in ("BKB", "BKA"):  # the other encoding at the payee's bank, then the payer's
        _duplicate_of(out, ec.submit(bank, second))
    _duplicate_of(out, ec.submit("BKA", first))
    wait_all(ec)
    _not_flagged(ec)
    assert ec.engine("BKA").balance(PAYER) == FUNDS - 300
    assert ec.engine("BKB").balance(PAYEE) == FUNDS + 300
    for bank, n in ec.nodes.items():
        assert n.state.counts() == {"settled": 1}, bank
