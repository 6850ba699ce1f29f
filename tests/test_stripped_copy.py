"""A note with an optional signed field removed is the same issuance, not a double issuance.

Each field of a Note is signed on its own, so anyone holding a note can drop its ``allowance``
field and the rest still verifies: a second encoding under the same note id. The payer signed
one note; booking both encodings, in either order, alone or in one batch, must not flag the payer
or keep double-issue evidence: the later one gets the first one's answer as a duplicate.
"""

from __future__ import annotations

import pytest

from hubi.bank.engine import FLAG_DOUBLE_ISSUE, BankEngine
from hubi.bank.issuance import same_issuance, same_issuance_bytes
from hubi_core import codec, verify
from tests import test_bank_support as support
from tests.test_bank_support import make_bank, postgres_server  # noqa: F401
from tests.world import World

pytestmark = pytest.mark.xdist_group("bank-engine")
store_url = support.store_url
world = support.world

PAYER, PAYEE = "BKA-fay", "BKA-gus"
FUND = 1000


def _bank(url: str, w: World) -> tuple[BankEngine, int]:
    eng = make_bank(url, w, accounts=(PAYER, PAYEE), fund=FUND)
    voucher = codec.decode(
        eng.issue_allowance(PAYER, cap=500, expiry=2_000_000_000, first_serial=10)
    )
    return eng, voucher.serial


def stripped_pair(
    template: codec.Obj,
    private: int,
    payee: str,
    trust: verify.Trust,
    allowance: int,
    serial: int,
    amount: int,
    t: int = 1_760_000_500,
) -> tuple[bytes, bytes]:
    """(genuine note with an allowance voucher, the same note with the allowance stripped)."""
    n = codec.make_note(template, serial, t, amount, payee, "snack", allowance=allowance)
    genuine = codec.encode(codec.sign(n, private))
    obj = codec.decode(genuine, codec.NOTE)
    del obj.values["allowance"]
    del obj.sigs["allowance"]
    stripped = codec.encode(obj)
    assert stripped != genuine
    for raw in (genuine, stripped):
        assert verify.verify_note(codec.decode(raw, codec.NOTE), trust, None).ok
    return genuine, stripped


def _pair(w: World, allowance: int, serial: int, amount: int) -> tuple[bytes, bytes]:
    acct = w.accounts[PAYER]
    return stripped_pair(acct.template, acct.private, PAYEE, w.trust, allowance, serial, amount)


def _not_flagged(eng: BankEngine) -> None:
    info = eng.account(PAYER)
    assert info is not None and not info.flags & FLAG_DOUBLE_ISSUE
    assert eng.double_issues() == []


def _same_answer(first, second) -> None:  # type: ignore[no-untyped-def]
    assert first.status == "booked" and not first.replay, first
    assert second.replay, second  # a duplicate: the first upload's answer
    assert second.status == first.status and second.note_id == first.note_id
    assert (second.debit_n, second.credit_n) == (first.debit_n, first.credit_n)
    assert second.settlement == first.settlement


def test_same_issuance_helper(world: World) -> None:
    world.open_account(PAYER)
    genuine, stripped = _pair(world, 1, 10, 5)
    a, b = codec.decode(genuine, codec.NOTE), codec.decode(stripped, codec.NOTE)
    assert same_issuance(a, b) and same_issuance(b, a) and same_issuance(a, a)
    assert same_issuance_bytes(genuine, stripped)
    other, _ = _pair(world, 1, 10, 6)  # same serial, another amount: double issuance
    assert not same_issuance(a, codec.decode(other, codec.NOTE))
    c = codec.decode(stripped, codec.NOTE)
    c.sigs["payee"] = bytes(64)  # a field with another signature
    assert not same_issuance(a, c)


@pytest.mark.parametrize("order", ["stripped-first", "genuine-first"])
def test_stripped_copy_one_by_one(store_url: str, world: World, order: str) -> None:
    eng, allowance = _bank(store_url, world)
    genuine, stripped = _pair(world, allowance, 10, 30)
    first, second = (stripped, genuine) if order == "stripped-first" else (genuine, stripped)
    a = eng.book(first)
    b = eng.book(second)
    _same_answer(a, b)
    _not_flagged(eng)
    assert eng.balance(PAYER) == FUND - 30 and eng.balance(PAYEE) == FUND + 30
    # both again: still duplicates of the first answer
    _same_answer(a, eng.book(first))
    _same_answer(a, eng.book(second))
    _not_flagged(eng)
    eng.close()


@pytest.mark.parametrize("order", ["stripped-first", "genuine-first"])
def test_stripped_copy_in_one_batch(store_url: str, world: World, order: str) -> None:
    eng, allowance = _bank(store_url, world)
    genuine, stripped = _pair(world, allowance, 11, 40)
    notes = [stripped, genuine] if order == "stripped-first" else [genuine, stripped]
    a, b = eng.book_many(notes)
    _same_answer(a, b)
    _not_flagged(eng)
    assert eng.balance(PAYER) == FUND - 40 and eng.balance(PAYEE) == FUND + 40
    c, d = eng.book_many(list(reversed(notes)))
    _same_answer(a, c)
    _same_answer(a, d)
    _not_flagged(eng)
    eng.close()


def test_real_double_issuance_still_flags(store_url: str, world: World) -> None:
    eng, allowance = _bank(store_url, world)
    genuine, stripped = _pair(world, allowance, 12, 20)
    other, _ = _pair(world, allowance, 12, 21)  # the payer signed another note, same serial
    assert eng.book(stripped).status == "booked"
    assert eng.book(genuine).replay
    _not_flagged(eng)
    out = eng.book(other)
    assert out.status == "refused" and out.reason_code == codec.REASON_DOUBLE_ISSUE
    info = eng.account(PAYER)
    assert info is not None and info.flags & FLAG_DOUBLE_ISSUE
    assert len(eng.double_issues(PAYER)) == 1
    assert eng.balance(PAYER) == FUND - 20
    eng.close()
