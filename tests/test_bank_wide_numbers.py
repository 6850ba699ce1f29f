"""Amounts and serials past what a book holds. The wire format carries numbers up to 2^64 - 1;
a book's rows and balances are signed 64-bit. A note with an amount or serial past 2^63 - 1 hit
an OverflowError deep in the booking transaction (a 500, on SQLite and PostgreSQL alike), for
the note and every other note of its batch; it is now refused as malformed, named."""

from __future__ import annotations

import pytest

from hubi.bank.engine import MAX_STORED
from hubi_core import codec
from tests import test_bank_support as support
from tests.test_bank_support import make_bank, postgres_server  # noqa: F401
from tests.world import T0, World

world = support.world
store_url = support.store_url
A, B = "BKA-alice", "BKA-bob"


def _note(w: World, serial: int, amount: int) -> bytes:
    acct = w.accounts[A]  # the world's note() derives the time from the serial
    return codec.encode(
        codec.sign(codec.make_note(acct.template, serial, T0 + 100, amount, B, None), acct.private)
    )


@pytest.mark.parametrize(
    "serial, amount, named",
    [
        (MAX_STORED + 1, 5, f"note serial {MAX_STORED + 1} is past {MAX_STORED}"),
        ((1 << 64) - 1, 5, f"note serial {(1 << 64) - 1} is past {MAX_STORED}"),
        (3, MAX_STORED + 1, f"note amount {MAX_STORED + 1} is past {MAX_STORED}"),
    ],
    ids=["serial-2^63", "serial-2^64-1", "amount-2^63"],
)
def test_a_number_past_what_a_book_holds_is_refused_by_name(
    store_url: str, world: World, serial: int, amount: int, named: str
) -> None:
    eng = make_bank(store_url, world, accounts=(A, B), fund=1_000)
    try:
        wide, fine = _note(world, serial, amount), _note(world, 1, 7)
        verdict = eng.validate(wide)
        assert not verdict.ok and verdict.reason_code == codec.REASON_FORMAT, verdict
        assert verdict.reason == named
        # in one batch with a sound note: that one is booked, the wide one refused
        outs = eng.book_many([wide, fine])
        assert [o.status for o in outs] == ["rejected", "booked"], outs
        assert outs[0].reason == named
        assert (eng.balance(A), eng.balance(B)) == (993, 1_007)
    finally:
        eng.close()
