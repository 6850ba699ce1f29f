"""Two counters scan at once on one merchant home, each a customer's note for one of two equal
open requests (12.50, coffee). Both matched their note to the latest open request; the scan
that stored second found it paid and refused its note as "request #2 is no longer open",
although request #1 was open for it (2 processes of 60 notes each: 11 of 120 refused). The
note is now matched again among the requests still open.

The interleaving is forced: the second counter's scan stores its note between the first's
check and the first's store, two Merchant objects on one home (two SQLite connections, as two
`hubi merchant scan` processes have)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hubi.merchant import Merchant

from .test_merchant_support import hubi_json, make_shop

pytestmark = pytest.mark.xdist_group("test_merchant_probe27_two_counters")


def _b_stores_between(shop: Any, note_a: bytes, note_b: bytes) -> tuple[Any, Any]:
    """Two counters on one home: counter B's scan of note_b commits between counter A's
    checks of note_a and A's store (the real code, only the moment forced). (A's, B's)."""
    counter_a = Merchant.open(shop.home)
    counter_b = Merchant.open(shop.home)
    other: list[Any] = []
    store = counter_a.outbox.accept

    def b_stores_first(*args: Any, **kw: Any) -> Any:
        if not other:
            other.append(counter_b.accept(note_b))
        return store(*args, **kw)

    counter_a.outbox.accept = b_stores_first  # type: ignore[method-assign]
    try:
        res_a = counter_a.accept(note_a)
    finally:
        counter_a.close()
        counter_b.close()
    return res_a, other[0]


def test_note_matched_again_when_another_counter_paid_its_request(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    payer = shop.payer()
    now = int(time.time())
    with shop.merchant() as m:
        first = m.request(1250, purpose="coffee", expires=600, now=now - 5).serial
        second = m.request(1250, purpose="coffee", expires=600, now=now - 5).serial
    note_a = payer.note(1250, time=now)
    note_b = payer.note(1250, time=now)
    res_a, res_b = _b_stores_between(shop, note_a, note_b)
    assert res_b.ok and res_b.request_serial == second
    assert res_a.ok, res_a.verdict.reason
    assert res_a.request_serial == first
    code, out = hubi_json("merchant", "--home", str(shop.home), "outbox")
    assert code == 0, out
    assert out["notes"]["pending"] == 2 and out["rejects"] == 0, out
    assert out["open_request"] is None, out
    paid = {it["request_serial"] for it in out["items"]}
    assert paid == {first, second}, out


def test_double_issuance_at_two_counters_at_once_is_kept_as_evidence(tmp_path: Path) -> None:
    """A payer's token pays two counters at once with two notes of one serial (one note id):
    the scan that stored second got Duplicate from the outbox and called the note a
    "duplicate" of the note already there, kept no reject and no bytes: the double issuance
    went unseen and its evidence was lost. It is judged again now: double issuance, kept."""
    shop = make_shop(tmp_path)
    payer = shop.payer()
    now = int(time.time())
    with shop.merchant() as m:
        for _ in range(2):
            m.request(1250, purpose="coffee", expires=600, now=now - 5)
    note_a = payer.note(1250, time=now, serial=9)
    note_b = payer.note(1250, time=now + 1, serial=9)  # another note, the same serial
    res_a, res_b = _b_stores_between(shop, note_a, note_b)
    assert res_b.ok
    assert not res_a.ok
    assert (res_a.verdict.category, res_a.verdict.field) == ("double-issuance", "serial")
    code, out = hubi_json("merchant", "--home", str(shop.home), "outbox")
    assert code == 0, out
    assert out["notes"]["pending"] == 1, out
    log = out["reject_log"]
    assert [(r["field"], r["bytes"]) for r in log] == [("serial", len(note_a))], log
    assert "double issuance" in log[0]["reason"], log
