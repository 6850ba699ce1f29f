"""Log entries whose fields have the right types but absurd values: a note whose amount or
serial is past 64 bits signed (a varint carries up to 2^64 - 1), a payer's bank's Refusal with
such a reason code. Each is one bad entry, alike at every bank; none may stop an applier. The
embedded world: real engines, real SQLite orderer and states, in-process validation."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hubi.consortium import entries as ent
from hubi.consortium.service import EmbeddedConsortium
from hubi_core import codec, lsum
from tests.consortium_support import BANKS4, FUNDS, quiet_consortium

I64 = 1 << 63


@pytest.fixture
def world(tmp_path: Path):
    yield from quiet_consortium(tmp_path / "home")


def _nid(note: bytes) -> bytes:
    obj = codec.decode(note, codec.NOTE)
    return lsum.note_id(obj.signer, obj.serial)


def _applied(ec: EmbeddedConsortium, banks: list[str], revision: int) -> None:
    for b in banks:
        node = ec.nodes[b]
        assert node.wait_applied(revision, 60.0), (b, node.applied_revision(), node.last_error)


@pytest.mark.parametrize("field", ["amount", "serial"])
def test_a_note_past_64_bits_is_a_bad_entry_not_a_stopped_applier(world, field: str) -> None:
    """A writer with etcd access takes a note key with a note whose amount (or serial) is
    2^63: storing its row raised OverflowError at every bank, for ever, and every later note
    stayed pending. Now every bank rejects it and burns the id, and the next note settles."""
    ec, acc = world
    payer = acc["BKA-000003"]
    if field == "amount":
        bad = payer.note("BKB-000003", I64)
    else:
        bad = payer.note("BKB-000003", 5, serial=I64)
    nid = _nid(bad)
    claim = ec.nodes["BKB"].orderer.claim(
        ent.note_key(nid), ent.NoteEntry(bad, [], "BKB", int(time.time())).encode()
    )
    assert claim.created
    _applied(ec, BANKS4, claim.revision)
    for b in BANKS4:
        row = ec.nodes[b].state.entry(nid)
        assert row is not None and row.state == "rejected" and "past" in (row.reason or ""), row
    out = ec.submit("BKB", acc["BKA-000001"].note("BKB-000001", 5))
    assert out["outcome"] == "booked", out
    _applied(ec, BANKS4, ec.nodes["BKB"].orderer.revision())  # the payer's debit result too
    assert len({(n.applied_revision(), n.state.log_hash()) for n in ec.nodes.values()}) == 1
    assert ec.submit("BKB", bad)["outcome"] == "refused"


def test_a_refusal_with_a_reason_code_past_64_bits_stops_no_applier(world) -> None:
    """The payer's bank (hostile) orders a note with real endorsements, then signs a Refusal
    with reason code 2^63 under its debit key: every bank raised OverflowError updating the
    entry, for ever. Now the result is ignored and reported, and the log goes on."""
    ec, acc = world
    note = acc["BKA-000002"].note("BKB-000002", 11)
    nid = _nid(note)
    endorsements = [ec.nodes[b].validate(note, "BKB") for b in ("BKA", "BKB", "BKC")]
    hostile = ec.nodes["BKA"]
    hostile.stop()  # its applier would put its honest result first
    entry = ent.NoteEntry(note, endorsements, "BKB", int(time.time()))
    assert hostile.orderer.claim(ent.note_key(nid), entry.encode()).created
    refusal = hostile._refusal("BKA-000002", "BKB-000002", nid, I64, "no")
    debit = ent.DebitEntry("BKA", refusal, int(time.time()))
    claim = hostile.orderer.claim(ent.debit_key(nid, "BKA"), debit.encode())
    assert claim.created
    others = ["BKB", "BKC", "BKD"]
    _applied(ec, others, claim.revision)
    for b in others:
        assert ec.nodes[b].state.entry(nid).state == "ordered"
        kinds = {r.kind for r in ec.nodes[b].state.reports()}
        assert "forged-debit-result" in kinds, (b, kinds)
    out = ec.submit("BKC", acc["BKB-000001"].note("BKC-000001", 3))
    assert out["outcome"] == "booked", out
    assert ec.engine("BKC").balance("BKC-000001") == FUNDS + 3


def test_a_customers_note_with_a_serial_past_64_bits_is_refused_before_the_log(world) -> None:
    """A customer signs a note with serial 2^63 (the wire allows up to 2^64 - 1) and uploads
    it: the banks endorsed it, it was ordered, and storing its row stopped every bank's applier
    for ever. Now the banks refuse it as malformed and nothing reaches the log."""
    ec, acc = world
    head = ec.nodes["BKB"].orderer.revision()
    out = ec.submit("BKB", acc["BKA-000004"].note("BKB-000004", 5, serial=I64))
    assert out["outcome"] == "refused" and "serial" in out["reason"], out
    assert ec.nodes["BKB"].orderer.revision() == head
    out = ec.submit("BKB", acc["BKA-000004"].note("BKB-000004", 5))
    assert out["outcome"] == "booked", out
