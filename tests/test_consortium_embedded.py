"""The consortium in one process over the embedded SQLite orderer (same code path as the nodes):
settlement, settle-once, double issuance, bounces, forged endorsements and entries, forged debit
results, checkpoints through the log, resume after a restart. Plus the orderer interface on both
orderers (SQLite and a real etcd cluster)."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hubi.bank import audit as audit_mod
from hubi.bank import engine as eng_mod
from hubi.bank.auth import Signer
from hubi.bank.records import BookVerifier
from hubi.consortium import entries as ent
from hubi.consortium.endorse import EndorsementVerifier, evaluate, make_endorsement, note_digest
from hubi.consortium.errors import (
    ConsortiumError,
    MarkFell,
    NotEndorsed,
    OrdererError,
    PeerError,
)
from hubi.consortium.etcd_orderer import EtcdOrderer
from hubi.consortium.node import ConsortiumNode
from hubi.consortium.orderer import SqliteOrderer, read_revision, revision_value
from hubi.consortium.service import EmbeddedConsortium
from hubi.consortium.state import ConsortiumState
from hubi.consortium.transport import HttpPeerTransport, LocalPeerTransport
from hubi.infra.etcd_client import EtcdRequestError
from hubi_core import codec, lsum
from tests.bank_nodes import nodes  # noqa: F401
from tests.consortium_support import (
    BANKS4,
    FUNDS,
    close_embedded,
    copy_sqlite,
    load_trust,
    make_home,
)
from tests.servers import etcd, etcd_cluster, etcd_prefix, fast_etcd_cluster  # noqa: F401


@pytest.fixture
def world(tmp_path: Path):
    accounts = make_home(tmp_path / "home", BANKS4)
    ec = EmbeddedConsortium(
        tmp_path / "home",
        settle_timeout=10.0,
        checkpoint_interval=0.2,
        prune_interval=None,  # the tests that forget call mark_applied/prune_log themselves
        trust=load_trust(tmp_path / "home"),
        engine_kw={"checkpoint_every": 4},
    )
    ec.start()
    try:
        yield ec, accounts
    finally:
        close_embedded(ec)


def wait_all(ec: EmbeddedConsortium, timeout: float = 60.0) -> int:
    """Every node applied the whole log (checkpoints keep arriving: until all stand at the same
    revision, with no checkpoint of their books left to publish and nothing new in the log);
    returns it, after checking that the banks' log hashes agree there. (A credit booked as the
    last entry was applied makes a checkpoint that the node publishes up to
    ``checkpoint_interval`` later: returning before that, a test that then compares the log's
    revision or the banks' marks with the one returned raced that publication.)"""
    orderer = SqliteOrderer(ec.orderer_path)
    deadline = time.monotonic() + timeout
    try:
        while True:
            head = orderer.revision()
            for n in ec.nodes.values():
                assert n.wait_applied(head, max(0.1, deadline - time.monotonic())), (
                    f"{n.bank} stuck at {n.applied_revision()} < {head}"
                )
            with_hash = {
                n.bank: (n.applied_revision(), n.state.log_hash()) for n in ec.nodes.values()
            }
            unpublished = [
                n.bank
                for n in ec.nodes.values()
                if n.engine.checkpoints(after=n.published_checkpoint, limit=1)
            ]
            if (
                len({r for r, _ in with_hash.values()}) == 1
                and not unpublished
                and orderer.revision() == head
            ):
                assert len({h for _, h in with_hash.values()}) == 1, "banks disagree about the log"
                return head
            assert time.monotonic() < deadline, (with_hash, unpublished)
            time.sleep(0.05)
    finally:
        orderer.close()


def test_interbank_notes_settle_and_banks_agree(world, tmp_path: Path) -> None:
    ec, acc = world
    sent: dict[str, int] = {a: 0 for a in acc}
    got: dict[str, int] = {a: 0 for a in acc}
    pairs = [
        ("BKA-000001", "BKB-000001", 100),
        ("BKB-000002", "BKC-000001", 250),
        ("BKC-000002", "BKD-000001", 7),
        ("BKD-000002", "BKA-000002", 1234),
        ("BKA-000001", "BKD-000002", 55),
    ]
    for payer, payee, amount in pairs:
        out = ec.submit(payee.split("-")[0], acc[payer].note(payee, amount))
        assert out["outcome"] == "booked", out
        assert out["status"] == "settled"
        assert [n["kind"] for n in out["notices"]] == ["SettlementNotice"]
        sent[payer] += amount
        got[payee] += amount
    wait_all(ec)
    for a in acc:
        bank = a.split("-")[0]
        assert ec.engine(bank).balance(a) == FUNDS - sent[a] + got[a], a
    positions = {b: n.state.positions() for b, n in ec.nodes.items()}
    assert all(p == positions["BKA"] for p in positions.values())
    expected: dict[str, dict[str, int]] = {}
    for payer, payee, amount in pairs:
        pair = expected.setdefault(payer[:3], {})
        pair[payee[:3]] = pair.get(payee[:3], 0) + amount
    assert positions["BKA"] == expected
    for b in BANKS4:
        report = audit_mod.api_audit(ec.engine(b))
        assert report["ok"], (b, report["findings"][:5])
        assert not ec.nodes[b].state.reports()
    # a state file of schema version 1 kept no positions table: it is summed once on opening
    old = tmp_path / "v1-state.db"
    copy_sqlite(ec.nodes["BKC"].state.path, old)
    with contextlib.closing(sqlite3.connect(old)) as db:
        db.execute("DROP TABLE positions")
        db.execute("PRAGMA user_version = 1")
        db.commit()
    prefix = ec.trust.consortium.log_prefix()
    again = ConsortiumState(old, f"embedded:{prefix}")
    try:
        assert again.positions() == expected
    finally:
        again.close()


def test_same_note_at_two_banks_settles_once(world) -> None:
    ec, acc = world
    note = acc["BKA-000001"].note("BKB-000001", 300)
    results: dict[str, dict] = {}
    barrier = threading.Barrier(2)

    def go(bank: str) -> None:
        barrier.wait()
        results[bank] = ec.submit(bank, note)

    ts = [threading.Thread(target=go, args=(b,)) for b in ("BKA", "BKB")]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert {r["outcome"] for r in results.values()} == {"booked"}
    assert sorted(r["duplicate"] for r in results.values()) == [False, True]
    wait_all(ec)
    assert ec.engine("BKA").balance("BKA-000001") == FUNDS - 300
    assert ec.engine("BKB").balance("BKB-000001") == FUNDS + 300
    assert ec.nodes["BKC"].state.counts() == {"settled": 1}


def test_same_serial_in_two_notes_settles_at_most_once(world) -> None:
    ec, acc = world
    a = acc["BKA-000001"]
    n1 = a.note("BKB-000001", 10, serial=77)
    n2 = a.note("BKC-000001", 20, serial=77)
    results: dict[str, dict] = {}
    barrier = threading.Barrier(2)

    def go(bank: str, note: bytes) -> None:
        barrier.wait()
        try:
            results[bank] = ec.submit(bank, note)
        except NotEndorsed as exc:  # the payer's bank refused the second one first
            results[bank] = {"outcome": "not-endorsed", "reason": str(exc)}

    ts = [threading.Thread(target=go, args=x) for x in (("BKB", n1), ("BKC", n2))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    outcomes = sorted(r["outcome"] for r in results.values())
    assert outcomes == ["booked", "refused"], results
    loser = next(r for r in results.values() if r["outcome"] == "refused")
    assert loser["reason_code"] == codec.REASON_DOUBLE_ISSUE
    assert "serial 77" in loser["reason"] and "BKA-000001" in loser["reason"]
    assert loser["refusal"]
    wait_all(ec)
    won = next(b for b, r in results.items() if r["outcome"] == "booked")
    amount = 10 if won == "BKB" else 20
    assert ec.engine("BKA").balance("BKA-000001") == FUNDS - amount
    assert ec.engine("BKB").balance("BKB-000001") == FUNDS + (10 if won == "BKB" else 0)
    assert ec.engine("BKC").balance("BKC-000001") == FUNDS + (20 if won == "BKC" else 0)
    # the same loser again gets the same clear answer, now from the state
    again = ec.submit("BKB" if won == "BKC" else "BKC", n1 if won == "BKC" else n2)
    assert again["outcome"] == "refused" and again["reason_code"] == codec.REASON_DOUBLE_ISSUE


def test_a_serial_ordered_while_the_peers_were_asked_is_a_double_issue_not_a_retry(
    world, tmp_path: Path
) -> None:
    """The race a loaded machine showed: BKC asks for n2 while n1 (same serial) is being ordered
    and applied; the third banks that applied n1 refuse n2, the payer's bank has not answered
    yet, so the policy cannot be met. The answer is the double issue, not "retry later" (503).
    Here BKC's applier has not seen n1 (a node not started) and the payer's bank is out of
    reach; the third banks have applied n1."""
    ec, acc = world
    a = acc["BKA-000001"]
    n1, n2 = a.note("BKB-000001", 10, serial=91), a.note("BKC-000001", 20, serial=91)
    assert ec.submit("BKB", n1)["outcome"] == "booked"
    wait_all(ec)
    prefix = ec.trust.consortium.log_prefix().encode()
    tr = LocalPeerTransport("BKC", ec.nodes)
    tr.down.add("BKA")
    late = ConsortiumNode(
        ec.engine("BKC"),
        ec.trust,
        SqliteOrderer(ec.orderer_path, prefix=prefix),
        tr,
        ConsortiumState(tmp_path / "late-bkc.db", f"embedded:{prefix.decode()}"),
        settle_timeout=0.5,
        prune_interval=None,  # as the world's nodes: its own mark (put at start) would race theirs
    )
    try:
        out = late.submit(n2).as_json()
    finally:
        late.close()
    assert (out["outcome"], out["status"]) == ("refused", "double-issue"), out
    assert out["reason_code"] == codec.REASON_DOUBLE_ISSUE
    assert "serial 91 of BKA-000001" in out["reason"] and "submitted by BKB" in out["reason"]
    refusal = codec.decode(bytes.fromhex(out["refusal"]), codec.REFUSAL)
    assert refusal.signer == "BKC" and refusal["reason_code"] == codec.REASON_DOUBLE_ISSUE
    evaluation = out["consortium"]["evaluation"]  # what the peers said is kept
    assert evaluation["ok"] is False and "BKA: bank BKA: not reachable" in evaluation["reason"]
    # banks still open when the policy failed were not late: nobody waited for them
    assert "no answer in time" not in evaluation["reason"], evaluation
    wait_all(ec)
    assert ec.engine("BKA").balance("BKA-000001") == FUNDS - 10
    assert ec.engine("BKC").balance("BKC-000001") == FUNDS


def test_a_serial_applied_and_forgotten_while_the_peers_were_asked_is_a_double_issue(
    world, tmp_path: Path
) -> None:
    """As above, but while the peers are asked this bank applies n1 and the log forgets it
    (every bank has applied it): the log has nothing under the id any more, so the answer
    comes from what this bank applied, not "cannot be settled now"."""
    ec, acc = world
    a = acc["BKA-000001"]
    n1, n2 = a.note("BKB-000001", 10, serial=92), a.note("BKC-000001", 20, serial=92)
    assert ec.submit("BKB", n1)["outcome"] == "booked"
    head = wait_all(ec)
    nid = lsum.note_id("BKA-000001", 92)
    prefix = ec.trust.consortium.log_prefix().encode()
    orderer = SqliteOrderer(ec.orderer_path, prefix=prefix)
    late: ConsortiumNode | None = None

    def apply_and_forget() -> None:
        assert late is not None
        late.start()
        assert late.wait_applied(head, 60)
        for n in ec.nodes.values():
            n.mark_applied()
        assert ec.nodes["BKA"].prune_log() > 0
        assert orderer.get(ent.note_key(nid)) is None  # forgotten

    tr = LocalPeerTransport("BKC", ec.nodes)
    tr.down.add("BKA")
    late = ConsortiumNode(
        ec.engine("BKC"),
        ec.trust,
        orderer,
        tr,
        ConsortiumState(tmp_path / "late-bkc.db", f"embedded:{prefix.decode()}"),
        settle_timeout=0.5,
        prune_interval=None,  # as the world's nodes: its own mark (put at start) would race theirs
    )
    collect = late.collect

    def collect_meanwhile(raw: bytes, obj: codec.Obj):
        got = collect(raw, obj)  # BKB and BKD refuse n2, BKA is out of reach, BKC endorses
        apply_and_forget()
        return got

    late.collect = collect_meanwhile  # type: ignore[method-assign]
    try:
        out = late.submit(n2).as_json()
        again = late.submit(n1).as_json()  # and n1 itself is a duplicate of its settlement
    finally:
        late.close()
    assert (out["outcome"], out["status"]) == ("refused", "double-issue"), out
    assert "serial 92 of BKA-000001" in out["reason"] and "submitted by BKB" in out["reason"]
    refusal = codec.decode(bytes.fromhex(out["refusal"]), codec.REFUSAL)
    assert refusal.signer == "BKC" and refusal["reason_code"] == codec.REASON_DOUBLE_ISSUE
    assert (again["outcome"], again["duplicate"]) == ("booked", True), again
    wait_all(ec)
    assert ec.engine("BKA").balance("BKA-000001") == FUNDS - 10
    assert ec.engine("BKC").balance("BKC-000001") == FUNDS


def test_payer_bank_refusal_bounces_before_ordering(world) -> None:
    ec, acc = world
    out = ec.submit("BKB", acc["BKA-000001"].note("BKB-000001", FUNDS * 3))
    assert out["outcome"] == "bounced"
    assert out["reason_code"] == codec.REASON_INSUFFICIENT_FUNDS
    assert out["reason"].startswith("BKA refused")
    assert str(FUNDS) not in out["reason"]  # the payer's balance is not told to the payee
    refusal = codec.decode(bytes.fromhex(out["refusal"]), codec.REFUSAL)
    assert refusal.signer == "BKB" and refusal["reason_code"] == codec.REASON_INSUFFICIENT_FUNDS
    assert SqliteOrderer(ec.orderer_path).revision() == 0  # nothing was ordered


def test_debit_bounces_when_funds_went_meanwhile(world) -> None:
    """Endorsed with enough funds, the payer spends them locally before the note is applied:
    the payer's bank's debit refuses, every bank sees the Refusal in the log, nobody credits."""
    ec, acc = world
    b = ec.nodes["BKB"]
    note = acc["BKA-000001"].note("BKB-000001", FUNDS - 10)
    obj = codec.decode(note, codec.NOTE)
    evl, checks = b.collect(note, obj)
    assert evl.ok
    spend = acc["BKA-000001"].note("BKA-000002", 100)
    assert ec.engine("BKA").book(spend).ok
    entry = ent.NoteEntry(note, [c.raw for c in checks if c.endorses], "BKB", int(time.time()))
    nid = lsum.note_id(obj.signer, obj.serial)
    assert b.orderer.claim(ent.note_key(nid), entry.encode()).created
    row = b.wait_final(nid, 10)
    assert row is not None and row.state == "bounced", row
    assert row.reason_code == codec.REASON_INSUFFICIENT_FUNDS
    assert "cannot cover" in row.reason and str(FUNDS - 100) not in row.reason
    wait_all(ec)
    assert {n.state.entry(nid).state for n in ec.nodes.values()} == {"bounced"}
    assert ec.engine("BKB").balance("BKB-000001") == FUNDS
    assert ec.engine("BKA").balance("BKA-000001") == FUNDS - 100


def test_forged_and_thin_entries_are_rejected_by_every_bank(world) -> None:
    ec, acc = world
    b = ec.nodes["BKB"]
    orderer = b.orderer
    # 1. an entry whose endorsement of BKC is forged (seal bytes changed)
    note = acc["BKA-000001"].note("BKB-000001", 10)
    obj = codec.decode(note, codec.NOTE)
    evl, checks = b.collect(note, obj)
    good = [c.raw for c in checks if c.endorses]
    forged = []
    for raw in good:
        e = codec.decode(raw, codec.ENDORSEMENT)
        if e.signer == "BKC":
            sig = bytearray(e.sigs["seal"])
            sig[5] ^= 1
            e.sigs["seal"] = bytes(sig)
            raw = codec.encode(e)
        forged.append(raw)
    nid1 = lsum.note_id(obj.signer, obj.serial)
    orderer.claim(ent.note_key(nid1), ent.NoteEntry(note, forged, "BKD").encode())
    # 2. an entry with the payer's bank's endorsement only (too few)
    note2 = acc["BKA-000002"].note("BKC-000001", 20)
    obj2 = codec.decode(note2, codec.NOTE)
    nid2 = lsum.note_id(obj2.signer, obj2.serial)
    only_payer = ec.nodes["BKA"].validate(note2)
    orderer.claim(ent.note_key(nid2), ent.NoteEntry(note2, [only_payer], "BKD").encode())
    # 3. an endorsement by a bank outside the consortium is no endorsement either
    wait_all(ec)
    for bank, n in ec.nodes.items():
        r1, r2 = n.state.entry(nid1), n.state.entry(nid2)
        assert r1.state == "rejected" and "forged" in r1.reason, (bank, r1.reason)
        assert "BKC" in r1.reason
        assert r2.state == "rejected" and "too few endorsements" in r2.reason, (bank, r2.reason)
        kinds = {(r.kind, r.subject) for r in n.state.reports()}
        assert ("forged-endorsement", "BKD") in kinds, (bank, kinds)
        assert ("too-few-endorsements", "BKD") in kinds, (bank, kinds)
    # nothing was booked for either note, and the uploader gets a clear answer
    assert ec.engine("BKA").balance("BKA-000001") == FUNDS
    assert ec.engine("BKA").balance("BKA-000002") == FUNDS
    out = ec.submit("BKB", note)
    assert out["outcome"] == "refused" and out["status"] == "rejected"
    assert "forged" in out["reason"]
    # reports also land beside the log for everyone to read (each bank puts its own there just
    # after it applied the entry, so the last ones may still be on their way)
    deadline = time.monotonic() + 60
    while len(published := orderer.scan(ent.REPORTS)) < 2 * len(BANKS4):
        assert time.monotonic() < deadline, [k for k, _, _ in published]
        time.sleep(0.05)
    reporters = collections.Counter(json.loads(v)["reporter"] for _, v, _ in published)
    assert all(reporters[b] >= 2 for b in BANKS4), reporters


def test_forged_endorsement_from_a_peer_is_not_counted(world) -> None:
    """BKD answers validation requests with a forged endorsement: BKB does not count it,
    reports BKD, and still settles with the endorsements of BKA, BKB and BKC."""
    ec, acc = world

    class Liar(LocalPeerTransport):
        def validate(self, bank: str, note: bytes, timeout: float) -> bytes:
            raw = super().validate(bank, note, timeout)
            if bank != "BKD":
                return raw
            e = codec.decode(raw, codec.ENDORSEMENT)
            e.values["note_digest"] = bytes(32)  # claims to endorse other bytes, same seal
            return codec.encode(e)

    liar = Liar("BKB", ec.nodes)
    ec.nodes["BKB"].transport = liar
    ec.nodes["BKB"].require_payee = True
    # make BKD's endorsement necessary by taking BKC away
    liar.down.add("BKC")
    with pytest.raises(NotEndorsed) as exc:
        ec.submit("BKB", acc["BKA-000001"].note("BKB-000001", 5))
    assert "BKD" in str(exc.value) and "BKC" in str(exc.value)
    liar.down.clear()
    out = ec.submit("BKB", acc["BKA-000001"].note("BKB-000001", 6))
    assert out["outcome"] == "booked"
    reports = ec.nodes["BKB"].state.reports()
    assert any(r.kind == "forged-endorsement" and r.subject == "BKD" for r in reports)


class _Megabytes(BaseHTTPRequestHandler):
    """A peer bank's node gone wrong: every answer is 1 MB of JSON-looking bytes."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"endorsement": "' + b"00" * (1 << 19) + b'"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except ConnectionError:
            pass  # the asking bank stopped reading, as it should


def test_a_peer_that_answers_with_megabytes_is_not_read_and_is_reported(world) -> None:
    """BKD's node answers validation requests with 1 MB over real HTTP. BKB reads no more than
    64 KiB of it (a peer could otherwise fill its memory), does not count it, reports BKD,
    and says why the note cannot be settled without it."""
    ec, acc = world
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Megabytes)
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    http = HttpPeerTransport(Signer("BKB", 12345), {"BKD": f"http://127.0.0.1:{srv.server_port}"})

    class ViaHttpToBKD(LocalPeerTransport):
        def validate(self, bank: str, note: bytes, timeout: float) -> bytes:
            if bank == "BKD":
                return http.validate(bank, note, timeout)
            return super().validate(bank, note, timeout)

    tr = ViaHttpToBKD("BKB", ec.nodes)
    tr.down.add("BKC")  # BKD's answer is needed
    ec.nodes["BKB"].transport = tr
    try:
        with pytest.raises(NotEndorsed, match="BKD: bank BKD: reply too large"):
            ec.submit("BKB", acc["BKA-000001"].note("BKB-000001", 5))
    finally:
        http.close()
        srv.shutdown()
        srv.server_close()
    reports = [r for r in ec.nodes["BKB"].state.reports() if r.subject == "BKD"]
    assert [r.kind for r in reports] == ["forged-endorsement"], reports
    assert "a reply of more than 65536 bytes" in reports[0].detail


def test_forged_debit_result_is_ignored_and_reported(world) -> None:
    ec, acc = world
    a = ec.nodes["BKA"]
    a.stop()  # the payer's bank is down: the note stays ordered
    b = ec.nodes["BKB"]
    note = acc["BKA-000001"].note("BKB-000001", 40)
    obj = codec.decode(note, codec.NOTE)
    nid = lsum.note_id(obj.signer, obj.serial)
    evl, checks = b.collect(note, obj)
    b.orderer.claim(
        ent.note_key(nid),
        ent.NoteEntry(note, [c.raw for c in checks if c.endorses], "BKB").encode(),
    )
    # BKD puts a BalanceNotice it signed itself under its own name, and another under BKA's
    fake = codec.Obj(
        codec.BALANCE,
        "BKD",
        1,
        int(time.time()),
        {
            "amount": 40,
            "payee": "BKB-000001",
            "payer": "BKA-000001",
            "note_id": nid,
            "balance": b"x",
        },
    )
    raw = codec.encode(ec.engine("BKD").keys.sign_obj(fake))
    b.orderer.claim(ent.debit_key(nid, "BKD"), ent.DebitEntry("BKD", raw).encode())
    b.orderer.claim(ent.debit_key(nid, "BKA"), ent.DebitEntry("BKA", raw).encode())
    head = b.orderer.revision()
    for bank in ("BKB", "BKC", "BKD"):
        n = ec.nodes[bank]
        assert n.wait_applied(head, 60)
        assert n.state.entry(nid).state == "ordered"
        kinds = {r.kind for r in n.state.reports()}
        assert {"debit-not-by-payer-bank", "forged-debit-result"} <= kinds, (bank, kinds)
    assert ec.engine("BKB").balance("BKB-000001") == FUNDS


def test_checkpoints_of_every_bank_go_through_the_log(world) -> None:
    ec, acc = world
    for i in range(4):
        for payer, payee in (("BKA-000001", "BKB-000001"), ("BKC-000001", "BKD-000001")):
            assert ec.submit(payee[:3], acc[payer].note(payee, 1 + i))["outcome"] == "booked"
    for n in ec.nodes.values():
        n.engine.checkpoint(n.engine.register_size())
        n.publish_checkpoints()
    wait_all(ec)
    for n in ec.nodes.values():
        cps = n.state.checkpoints()
        assert {c["bank"] for c in cps} == set(BANKS4), n.bank
        assert not [r for r in n.state.reports() if r.kind == "bad-checkpoint"]
        for b in BANKS4:
            latest = ec.engine(b).latest_checkpoint()
            mine = [c for c in cps if c["bank"] == b and c["tree_size"] == latest.tree_size]
            assert mine and mine[0]["root"] == latest.root.hex()
            assert n.state.last_checkpoint(b) == max(c["tree_size"] for c in cps if c["bank"] == b)
        # paged in log order, two at a time, the pages are the whole list
        paged, after = [], 0
        while page := n.state.checkpoints(after=after, limit=2):
            paged += page
            after = page[-1]["revision"]
        assert paged == cps and [c["revision"] for c in cps] == sorted(c["revision"] for c in cps)


def test_node_resumes_from_its_last_applied_revision(world, tmp_path: Path) -> None:
    ec, acc = world
    d = ec.nodes["BKD"]
    assert ec.submit("BKD", acc["BKA-000001"].note("BKD-000001", 1))["outcome"] == "booked"
    wait_all(ec)
    d.close()
    prefix = ec.trust.consortium.log_prefix().encode()
    path = ec.home / "banks" / "BKD" / "consortium.db"
    stopped_at = ConsortiumState(path, f"embedded:{prefix.decode()}").applied_revision()
    for tr in ec.transports.values():
        tr.down.add("BKD")
    for i in range(5):
        out = ec.submit("BKB", acc["BKC-000001"].note("BKB-000001", 10 + i))
        assert out["outcome"] == "booked"
    assert SqliteOrderer(ec.orderer_path).revision() > stopped_at + 5
    # a new node on the same state file resumes where the old one stopped
    state = ConsortiumState(path, f"embedded:{prefix.decode()}")
    assert state.applied_revision() == stopped_at
    tr = LocalPeerTransport("BKD", ec.nodes)
    d2 = ConsortiumNode(
        d.engine,
        ec.trust,
        SqliteOrderer(ec.orderer_path, prefix=prefix),
        tr,
        state,
        prune_interval=None,
    )
    ec.nodes["BKD"] = d2
    d2.start()
    wait_all(ec)
    assert d2.state.counts() == {"settled": 6}
    assert ec.engine("BKD").balance("BKD-000001") == FUNDS + 1


def test_node_stopped_and_started_again_asks_its_peers_and_catches_up(world) -> None:
    """stop() shuts the node's peer-request threads down; start() on the same object brings
    them back, and the applier picks up what was ordered while it was stopped."""
    ec, acc = world
    b = ec.nodes["BKB"]
    assert ec.submit("BKB", acc["BKA-000001"].note("BKB-000001", 3))["outcome"] == "booked"
    b.stop()
    with pytest.raises(ConsortiumError, match="bank BKB: the consortium node is stopped"):
        b.submit(acc["BKA-000001"].note("BKB-000001", 4))
    # ordered elsewhere while BKB is stopped (BKB still answers validation requests)
    out = ec.submit("BKC", acc["BKA-000002"].note("BKC-000001", 5))
    assert out["outcome"] == "booked"
    b.start()
    for i in range(3):  # the payee's bank asks its peers again, on new threads
        out = ec.submit("BKB", acc["BKD-000001"].note("BKB-000002", 10 + i))
        assert out["outcome"] == "booked", out
    wait_all(ec)
    assert b.state.counts() == {"settled": 5}
    assert ec.engine("BKB").balance("BKB-000002") == FUNDS + 33
    assert b.last_error is None


def test_applier_gets_signatures_checked_ahead_by_the_log_reader(
    world, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read-ahead checks each entry's signatures on the log reader's thread before the
    applier gets there, and the applier uses that: at a bank that only applies (neither the
    payer's nor the payee's bank), every endorsement seal, every field of the payer's bank's
    BalanceNotice and every bank's checkpoint is verified by the reader, none on the applier's
    thread."""
    ec, acc = world
    threads: list[str] = []
    checkpoints: list[str] = []
    plain = BookVerifier.verify
    plain_checkpoint = eng_mod.verify_checkpoint

    def counted(self: BookVerifier, msg: bytes, sig: bytes) -> bool:
        name = threading.current_thread().name
        if name.startswith("hubi-BKC-"):
            threads.append(name)
        return plain(self, msg, sig)

    def counted_checkpoint(obj: bytes, trust, bank=None):
        name = threading.current_thread().name
        if name.startswith("hubi-BKC-"):
            checkpoints.append(name)
        return plain_checkpoint(obj, trust, bank)

    monkeypatch.setattr(BookVerifier, "verify", counted)
    monkeypatch.setattr(eng_mod, "verify_checkpoint", counted_checkpoint)
    before = ec.nodes["BKC"].status()["applier"]
    state = ec.nodes["BKC"].state
    had = {b: len(state.checkpoints(b)) for b in ("BKA", "BKB")}
    k = 6
    for i in range(k):
        note = acc["BKA-000001"].note("BKB-000001", 20 + i)
        assert ec.submit("BKB", note)["outcome"] == "booked"
    # the payer's and the payee's bank book k records each: with a checkpoint every 4
    # register entries, each publishes at least one more, which BKC applies
    deadline = time.monotonic() + 60
    while any(len(state.checkpoints(b)) <= had[b] for b in had):
        assert time.monotonic() < deadline, state.checkpoints()
        time.sleep(0.05)
    wait_all(ec)
    seen = collections.Counter(threads)
    assert seen["hubi-BKC-apply"] == 0, seen
    # 3 endorsements (the payee's, the payer's and one more bank's) and 5 signed fields
    assert seen["hubi-BKC-log"] >= 8 * k, seen
    assert checkpoints and set(checkpoints) == {"hubi-BKC-log"}, collections.Counter(checkpoints)
    assert not state.reports()
    after = ec.nodes["BKC"].status()["applier"]
    assert after["events"] >= before["events"] + 2 * k
    assert after["cpu_s"] > before["cpu_s"]
    assert after["read_ahead_cpu_s"] > before["read_ahead_cpu_s"]
    assert ec.engine("BKB").balance("BKB-000001") == FUNDS + sum(20 + i for i in range(k))


def test_applier_goes_on_after_the_log_fails_mid_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The log breaks off at BKC after two events, twice: the error reaches BKC's applier,
    which waits, starts reading again after its last applied revision, and ends with the same
    log as every other bank, each event applied once."""
    accounts = make_home(tmp_path / "home", BANKS4)
    ec = EmbeddedConsortium(
        tmp_path / "home", settle_timeout=10.0, trust=load_trust(tmp_path / "home")
    )
    c = ec.nodes["BKC"]
    plain = c.orderer.events
    breaks = []

    def breaking(after, stop, prefix=b"log/"):
        for i, ev in enumerate(plain(after, stop, prefix)):
            if i == 2 and len(breaks) < 2:
                breaks.append(after)
                raise OrdererError("watch broke off (test)")
            yield ev

    c.orderer.events = breaking
    with ec:
        for i in range(6):
            note = accounts["BKA-000001"].note("BKB-000001", 30 + i)
            assert ec.submit("BKB", note)["outcome"] == "booked"
        wait_all(ec)
        assert len(breaks) == 2
        # the two events before a break were applied before the error reached the applier
        assert breaks[1] >= breaks[0] + 2, breaks
        assert c.status()["entries"] == {"settled": 6}
        assert c.status()["log_hash"] == ec.nodes["BKA"].status()["log_hash"]
        assert c.last_error is None  # cleared by the events applied after the break
    paused = [r.getMessage() for r in caplog.records if "applying the log paused" in r.getMessage()]
    assert len(paused) == 2 and all("watch broke off (test)" in m for m in paused), paused


def test_endorsement_checks_name_the_problem(world) -> None:
    ec, acc = world
    note = acc["BKA-000001"].note("BKB-000001", 3)
    obj = codec.decode(note, codec.NOTE)
    nid = lsum.note_id(obj.signer, obj.serial)
    v = EndorsementVerifier(ec.trust)
    raw = ec.nodes["BKC"].validate(note)
    ok = v.check(raw, nid, note_digest(note))
    assert ok.valid and ok.endorses and ok.bank == "BKC"
    assert "asked BKD" in v.check(raw, nid, note_digest(note), "BKD").problem
    assert "other bytes" in v.check(raw, nid, bytes(32)).problem
    assert "another note" in v.check(raw, bytes(32), note_digest(note)).problem or "about note" in (
        v.check(raw, bytes(32), note_digest(note)).problem
    )
    assert "not an Endorsement" in v.check(note, nid, note_digest(note)).problem
    # a refusal is valid, but does not endorse; the policy then names what is missing
    refuse = make_endorsement(
        ec.engine("BKA").keys, 9, 0, nid, note_digest(note), False, codec.REASON_FORMAT, "no"
    )
    r = v.check(refuse, nid, note_digest(note))
    assert r.valid and not r.endorses
    evl = evaluate(ec.trust.consortium, "BKA", "BKB", [ok, r])
    assert not evl.ok and "payer's bank BKA" in evl.reason


# ------------------------------------------------------------------------------ forgetting


def test_the_log_forgets_what_every_bank_applied_and_a_second_claim_settles_nothing(
    world,
) -> None:
    """The log forgets only what every bank has marked as applied. A note whose key it forgot
    can be claimed again (a submission under way at that moment could); every bank then keeps the
    first ordering, books nothing and reports the second alike, for the same note and for
    another note with the same payer serial."""
    ec, acc = world
    pruner, orderer = ec.nodes["BKA"], ec.nodes["BKA"].orderer
    assert pruner.pruner == "BKA" and all(n.pruner == "BKA" for n in ec.nodes.values())
    n1 = acc["BKA-000001"].note("BKB-000001", 100, serial=500)
    n2 = acc["BKC-000001"].note("BKD-000001", 40)
    for bank, note in (("BKB", n1), ("BKD", n2)):
        assert ec.submit(bank, note)["outcome"] == "booked"
    wait_all(ec)
    nid = lsum.note_id("BKA-000001", 500)
    first = orderer.get(ent.note_key(nid))
    assert first is not None
    # nothing goes until every bank has a mark, and then only what the lowest mark passed
    assert pruner.prune_log() == 0 and pruner.pruning["waiting_for"] == BANKS4
    for b in ("BKA", "BKB", "BKC"):
        ec.nodes[b].mark_applied()
    assert pruner.prune_log() == 0 and pruner.pruning["waiting_for"] == ["BKD"]
    head = orderer.revision()
    through = ec.nodes["BKD"].mark_applied()
    assert pruner.applied_marks()["BKD"] == through
    gone = pruner.prune_log()
    left = orderer.scan(ent.LOG)
    assert gone >= 4 and pruner.pruning == {
        "marked": pruner.pruning["marked"], "through": through, "keys": gone, "waiting_for": [],
        "forgotten": 0,
    }  # fmt: skip
    assert orderer.get(ent.FORGOTTEN).value == revision_value(through)
    assert orderer.get(ent.applied_key("BKD")).value == b"%020d" % through
    assert all(rev > through for _, _, rev in left), left
    assert orderer.get(ent.note_key(nid)) is None
    assert orderer.revision() == head  # revisions never go back
    assert pruner.prune_log() == 0  # no bank moved since
    # an upload of a settled note is answered from the banks' state, as before
    again = ec.submit("BKA", n1)
    assert again["outcome"] == "booked" and again["duplicate"] is True
    # a second claim of the forgotten key: the same note, then another with its serial
    assert orderer.claim(ent.note_key(nid), first.value).created
    other = acc["BKC-000001"].note("BKA-000002", 7, serial=1)  # n2's serial
    other_nid = lsum.note_id("BKC-000001", 1)
    assert orderer.claim(ent.note_key(other_nid), ent.NoteEntry(other, [], "BKC").encode()).created
    wait_all(ec)  # every bank applied both, with the same verdicts (log hashes agree)
    for bank, n in ec.nodes.items():
        assert n.state.counts() == {"settled": 2}, bank
        again = [r for r in n.state.reports() if r.kind == "ordered-again"]
        assert [r.note_id for r in again] == [nid, other_nid], (bank, again)
        assert "the same note ordered again" in again[0].detail
        assert f"ordered at revision {first.revision} (settled), which stands" in again[0].detail
        assert "another note with the same payer serial (double issuance)" in again[1].detail
        assert n.last_error is None
    assert ec.engine("BKA").balance("BKA-000001") == FUNDS - 100
    assert ec.engine("BKB").balance("BKB-000001") == FUNDS + 100
    assert ec.engine("BKC").balance("BKC-000001") == FUNDS - 40
    assert ec.engine("BKD").balance("BKD-000001") == FUNDS + 40
    assert ec.engine("BKA").balance("BKA-000002") == FUNDS
    for b in BANKS4:
        report = audit_mod.api_audit(ec.engine(b))
        assert report["ok"], (b, report["findings"][:5])


def test_banks_mark_and_the_lowest_forgets_on_their_own(tmp_path: Path) -> None:
    """With ``prune_interval`` set, each bank marks its applied revision and BKA, the lowest
    bank id, has the log forget behind the lowest mark, while notes keep settling."""
    acc = make_home(tmp_path / "home", BANKS4)
    with EmbeddedConsortium(
        tmp_path / "home", prune_interval=0.1, trust=load_trust(tmp_path / "home")
    ) as ec:
        for i in range(6):
            payer, payee = BANKS4[i % 4], BANKS4[(i + 1) % 4]
            out = ec.submit(payee, acc[f"{payer}-000001"].note(f"{payee}-000001", 10 + i))
            assert out["outcome"] == "booked", out
        head = wait_all(ec)
        orderer = ec.nodes["BKA"].orderer
        deadline = time.monotonic() + 60
        while ec.nodes["BKA"].pruning["through"] < head:
            assert time.monotonic() < deadline, ec.nodes["BKA"].status()["pruning"]
            time.sleep(0.05)
        assert [k for k, _, r in orderer.scan(ent.LOG) if r <= head] == []
        assert ec.nodes["BKA"].status()["pruning"]["keys"] >= 12
        assert {b: n.state.counts() for b, n in ec.nodes.items()} == {
            b: {"settled": 6} for b in BANKS4
        }
        assert ec.submit("BKB", acc["BKA-000002"].note("BKB-000002", 5))["outcome"] == "booked"


def test_a_bank_whose_state_went_back_stops_the_forgetting_and_applies_nothing_it_lost(
    world, tmp_path: Path
) -> None:
    """BKD's consortium state goes back to a backup taken before a note that the log has since
    forgotten. Restarted on it, BKD marks its lower revision before it applies anything, so the
    log forgets nothing more past it, and then refuses to apply: it names how far its state
    stands, how far the log forgot and what to do, books nothing and shows halted. Restored from
    a backup taken after the forgetting, it applies on and agrees with every other bank."""
    ec, acc = world
    pruner, orderer = ec.nodes["BKA"], ec.nodes["BKA"].orderer
    prefix = ec.trust.consortium.log_prefix().encode()
    path = ec.home / "banks" / "BKD" / "consortium.db"
    old, new = tmp_path / "old.db", tmp_path / "new.db"

    def restart_bkd(state_file: Path) -> ConsortiumNode:
        ec.nodes["BKD"].close()
        copy_sqlite(state_file, path)
        node = ConsortiumNode(
            ec.engine("BKD"), ec.trust, SqliteOrderer(ec.orderer_path, prefix=prefix),
            LocalPeerTransport("BKD", ec.nodes),
            ConsortiumState(path, f"embedded:{prefix.decode()}"),
            prune_interval=3600,  # marks at start, as every node with forgetting on
        )  # fmt: skip
        ec.nodes["BKD"] = node
        for tr in ec.transports.values():
            tr.nodes["BKD"] = node
        node.start()
        return node

    assert ec.submit("BKB", acc["BKA-000001"].note("BKB-000001", 10))["outcome"] == "booked"
    wait_all(ec)
    copy_sqlite(path, old)
    stands_at = ec.nodes["BKD"].applied_revision()
    assert ec.submit("BKD", acc["BKC-000001"].note("BKD-000001", 20))["outcome"] == "booked"
    head = wait_all(ec)
    for n in ec.nodes.values():
        n.mark_applied()
    assert pruner.prune_log() >= 2 and pruner.pruning["through"] == head
    copy_sqlite(path, new)

    d = restart_bkd(old)
    deadline = time.monotonic() + 60
    while d.halted is None:
        assert time.monotonic() < deadline, d.status()
        time.sleep(0.02)
    assert d.halted == (
        f"this bank's consortium state stands at revision {stands_at}, but the log has forgotten "
        f"entries created as late as revision {head}: entries this bank has not applied are "
        "gone, so it applies nothing (it would disagree with every other bank). Restore its "
        f"consortium state from a backup taken at or after revision {head} and start it again"
    )
    st = d.status()
    assert st["applying"] is False and st["halted"] == d.halted
    assert st["last_error"] == "LogForgotten: " + d.halted
    assert st["pruning"]["forgotten"] == head and st["applied_revision"] == stands_at
    assert d.state.counts() == {"settled": 1}
    assert ec.engine("BKD").balance("BKD-000001") == FUNDS + 20  # its own books keep the note
    # its lower mark went out first: from now on the log forgets nothing past it
    assert pruner.applied_marks()["BKD"] == stands_at
    assert ec.submit("BKB", acc["BKA-000002"].note("BKB-000002", 30))["outcome"] == "booked"
    for b in ("BKA", "BKB", "BKC"):
        assert ec.nodes[b].wait_applied(orderer.revision(), 60)
        ec.nodes[b].mark_applied()
    kept = orderer.scan(ent.LOG)
    assert pruner.prune_log() == 0 and orderer.scan(ent.LOG) == kept != []
    # a round that read BKD's old mark before it fell stops at the first deletion
    marks = [ent.applied_key(b) for b in BANKS4]
    with pytest.raises(
        MarkFell, match=f"applied/BKD no longer stands at or past revision {head + 1}"
    ):
        orderer.forget(head + 1, marks=marks, record=ent.FORGOTTEN)
    assert orderer.scan(ent.LOG) == kept
    assert read_revision(orderer.get(ent.FORGOTTEN).value) == head

    d = restart_bkd(new)
    wait_all(ec)
    assert d.halted is None and d.last_error is None
    assert d.state.counts() == {"settled": 3}
    for n in ec.nodes.values():
        n.mark_applied()
    assert pruner.prune_log() >= 2 and orderer.scan(ent.LOG) == []
    for b in BANKS4:
        assert audit_mod.api_audit(ec.engine(b))["ok"], b


# ------------------------------------------------------------------------------ orderers


def _orderer_contract(orderer, prefix_label: str) -> None:
    key = b"log/n/" + b"ab" * 32
    results = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        results.append(orderer.claim(key, b"value-%d" % i))

    ts = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    winners = [r for r in results if r.created]
    assert len(winners) == 1, prefix_label
    assert {r.value for r in results} == {winners[0].value}
    assert {r.revision for r in results} == {winners[0].revision}
    revs = [winners[0].revision]
    for i in range(3):
        revs.append(orderer.claim(b"log/c/BKA/%016d" % i, b"cp%d" % i).revision)
    orderer.put(b"reports/BKA/1", b"not in the log")
    assert revs == sorted(revs)
    stop = threading.Event()
    seen = []
    for ev in orderer.events(revs[1] - 1, stop):
        seen.append(ev)
        if len(seen) == 3:
            stop.set()
    assert [e.revision for e in seen] == revs[1:]
    assert [e.key for e in seen] == [b"log/c/BKA/%016d" % i for i in range(3)]
    assert orderer.get(key).value == winners[0].value
    assert [k for k, _, _ in orderer.scan(b"reports/")] == [b"reports/BKA/1"]


def test_sqlite_orderer_contract(tmp_path: Path) -> None:
    o = SqliteOrderer(tmp_path / "log.db", prefix=b"hubi/x/")
    try:
        _orderer_contract(o, "sqlite")
    finally:
        o.close()


def test_etcd_orderer_contract(etcd_cluster, etcd_prefix) -> None:  # noqa: F811
    o = EtcdOrderer(etcd_cluster.client_urls, etcd_prefix)
    try:
        _orderer_contract(o, "etcd")
    finally:
        o.close()


def _forget_contract(orderer) -> None:
    """forget() deletes the log's keys created through a revision, and only those: what comes
    after, and keys beside the log, stay; the revision does not go back; a forgotten key can be
    claimed again; a bank that has applied that revision reads on what is left, in order."""
    revs = [orderer.claim(b"log/n/%d" % i, b"v%d" % i).revision for i in range(5)]
    # every deletion compares the banks' marks: one below `through`, or none, stops it all
    marks = [b"applied/BKA", b"applied/BKB"]
    orderer.put(b"applied/BKA", revision_value(revs[4]))
    orderer.put(b"applied/BKB", revision_value(revs[2] - 1))  # its state went back
    with pytest.raises(MarkFell, match=r"applied/BKB no longer stands at or past revision %d .*"
                       r"stopped forgetting there, after 0 keys" % revs[2]):  # fmt: skip
        orderer.forget(revs[2], marks=marks, record=b"forgotten")
    with pytest.raises(MarkFell, match="applied/BKC no longer stands"):
        orderer.forget(revs[0], marks=[*marks, b"applied/BKC"], record=b"forgotten")
    assert len(orderer.scan(b"log/")) == 5 and orderer.get(b"forgotten") is None
    orderer.put(b"applied/BKB", revision_value(revs[2]))
    assert orderer.forget(revs[2], marks=marks, record=b"forgotten") == 3
    assert orderer.get(b"forgotten").value == revision_value(revs[2])
    assert orderer.forget(revs[2]) == 0
    assert [(k, r) for k, _, r in orderer.scan(b"log/")] == [
        (b"log/n/3", revs[3]), (b"log/n/4", revs[4]),
    ]  # fmt: skip
    assert orderer.get(b"applied/BKA").value == revision_value(revs[4])
    assert orderer.revision() >= revs[4]
    again = orderer.claim(b"log/n/0", b"again")
    assert again.created and again.revision > revs[4]
    stop = threading.Event()
    seen = []
    for ev in orderer.events(revs[2], stop):
        seen.append((ev.key, ev.value))
        if len(seen) == 3:
            stop.set()
    assert seen == [(b"log/n/3", b"v3"), (b"log/n/4", b"v4"), (b"log/n/0", b"again")]
    # `forgotten` holds the newest creation forgotten, not `through`: here a key beside the log
    # comes after the last log key, and a bank standing between the two has lost nothing
    beside = orderer.claim(b"beside/0", b"not in the log").revision
    through = orderer.revision()
    assert through >= beside > again.revision
    for mark in marks:
        orderer.put(mark, revision_value(through))
    assert orderer.forget(through, marks=marks, record=b"forgotten") == 3
    assert orderer.get(b"forgotten").value == revision_value(again.revision)
    assert [k for k, _, _ in orderer.scan(b"beside/")] == [b"beside/0"]
    # and it is never lowered, not even by a round that deletes only older keys
    orderer.claim(b"log/n/old", b"x")
    orderer.put(b"forgotten", revision_value(10**9))
    through = orderer.revision()
    for mark in marks:
        orderer.put(mark, revision_value(through))
    assert orderer.forget(through, marks=marks, record=b"forgotten") == 1
    assert orderer.get(b"forgotten").value == revision_value(10**9)


def test_sqlite_orderer_forgets(tmp_path: Path) -> None:
    o = SqliteOrderer(tmp_path / "log.db", prefix=b"hubi/x/")
    other = SqliteOrderer(tmp_path / "log.db", prefix=b"hubi/y/")  # another log in the file
    try:
        kept = other.claim(b"log/n/0", b"other").revision
        _forget_contract(o)
        assert other.get(b"log/n/0").revision == kept
    finally:
        o.close()
        other.close()


def test_etcd_orderer_forgets_and_compacts(tmp_path: Path) -> None:
    """On etcd, forget() also compacts the history there (its own cluster: compaction is
    cluster-wide), and the delete events of the forgetting are no anomaly."""
    with fast_etcd_cluster(tmp_path / "etcd", members=1) as cluster:
        o = EtcdOrderer(cluster.client_urls, b"hubi/c/")
        try:
            _forget_contract(o)
            with pytest.raises(EtcdRequestError, match="compacted"):
                o.etcd.get(b"hubi/c/log/n/1", revision=2)
            assert o.last_events == []
            # more than one page (1,000) and more than one transaction (100) of keys
            last = 0
            for i in range(1200):
                last = o.claim(b"log/d/%04d" % i, b"x").revision
            o.put(b"applied/BKA", revision_value(last))
            o.put(b"applied/BKB", revision_value(last + 1))
            assert o.forget(last, marks=[b"applied/BKA", b"applied/BKB"]) == 1200
            assert o.scan(b"log/") == []
        finally:
            o.close()


def test_a_bank_restored_during_a_round_that_lost_nothing_is_not_halted(tmp_path: Path) -> None:
    """BKB, restored from a backup, puts its lower mark right after the lowest bank's first
    transaction of deletions on etcd (the restore is injected there, on the real cluster). The
    round deletes in key order, not creation order, and stops at its next transaction.
    `forgotten` names the newest creation that went; BKB's state is newer than all of them, so
    it lost nothing and must not halt. `forgotten` used to hold the revision the round aimed
    at, past BKB's state, and BKB halted for nothing."""
    with fast_etcd_cluster(tmp_path / "etcd", members=1) as cluster:
        o = EtcdOrderer(cluster.client_urls, b"hubi/c/")
        try:
            created = {}  # key -> create revision; hashed keys: key order is not creation order
            for i in range(1500):
                key = b"log/n/" + hashlib.sha256(b"%d" % i).hexdigest().encode()
                created[key] = o.claim(key, b"x").revision
            for i in range(500):  # the newest, last in key order too
                created[b"log/z/%04d" % i] = o.claim(b"log/z/%04d" % i, b"x").revision
            last = max(created.values())
            marks = [b"applied/BKA", b"applied/BKB"]
            for mark in marks:
                o.put(mark, revision_value(last))
            first_txn = sorted(created)[:100]  # what the round's first transaction deletes
            restored_at = max(created[k] for k in first_txn)  # BKB's backup: newer than those
            assert restored_at <= last - 500
            delete_created = o.etcd.delete_created

            def restore_after_the_first_transaction(*args, **kwargs):
                done = delete_created(*args, **kwargs)
                if done and o.get(b"applied/BKB").value == revision_value(last):
                    o.put(b"applied/BKB", revision_value(restored_at))
                return done

            o.etcd.delete_created = restore_after_the_first_transaction
            with pytest.raises(MarkFell, match="applied/BKB no longer stands") as info:
                o.forget(last, marks=marks, record=b"forgotten")
            left = {k for k, _, _ in o.scan(b"log/")}
            went = sorted(rev for key, rev in created.items() if key not in left)
            assert info.value.gone == len(went) == 100
            forgotten = read_revision(o.get(b"forgotten").value)
            assert forgotten == max(went) == restored_at < last
            assert not restored_at < forgotten  # BKB (applied = restored_at) goes on
        finally:
            o.close()


def test_deletions_whose_answer_was_lost_are_counted_and_forgotten_never_goes_back(
    tmp_path: Path,
) -> None:
    """etcd applies the round's first transaction of deletions but its answer is lost; the
    client's retry then fails its compares (the keys are gone). The keys it deleted count as
    gone, and `forgotten`, which that transaction raised to the newest key, is not lowered by
    the next ones, which delete older keys (key order here is the reverse of creation)."""
    with fast_etcd_cluster(tmp_path / "etcd", members=1) as cluster:
        o = EtcdOrderer(cluster.client_urls, b"hubi/c/")
        try:
            revs = [o.claim(b"log/n/%04d" % (999 - i), b"x").revision for i in range(300)]
            last = max(revs)
            o.put(b"applied/BKA", revision_value(last))
            delete_created = o.etcd.delete_created
            lost = []

            def answer_lost_once(*args, **kwargs):
                if lost:
                    return delete_created(*args, **kwargs)
                lost.append(delete_created(*args, **kwargs))  # applied ...
                return delete_created(*args, **kwargs)  # ... and the retry finds nothing

            o.etcd.delete_created = answer_lost_once
            assert o.forget(last, marks=[b"applied/BKA"], record=b"forgotten") == 300
            assert lost == [True] and o.scan(b"log/") == []
            assert read_revision(o.get(b"forgotten").value) == last
        finally:
            o.close()


def test_a_mark_that_falls_while_a_round_deletes_key_by_key_stops_it_uncompacted(
    tmp_path: Path,
) -> None:
    """The round's only transaction of deletions fails (a key of it was claimed again), so it
    deletes key by key; before those, a bank's mark falls (a restore). The round stops there
    with MarkFell and etcd's history is not compacted, as when a mark falls between two
    transactions. (It used to go on to the compaction when that transaction was the last.)"""
    with fast_etcd_cluster(tmp_path / "etcd", members=1) as cluster:
        o = EtcdOrderer(cluster.client_urls, b"hubi/c/")
        try:
            revs = [o.claim(b"log/n/a%03d" % i, b"x").revision for i in range(50)]
            first, last = revs[0], revs[-1]
            o.put(b"applied/BKA", revision_value(last))
            delete_created = o.etcd.delete_created
            calls = []

            def interfere(chunk, **kwargs):
                calls.append(len(chunk))
                if len(calls) == 1:  # the key is deleted and claimed again meanwhile
                    o.etcd.delete(b"hubi/c/log/n/a001")
                    o.claim(b"log/n/a001", b"again")
                elif len(calls) == 2:  # and before the first key alone, BKA is restored
                    o.put(b"applied/BKA", revision_value(first))
                return delete_created(chunk, **kwargs)

            o.etcd.delete_created = interfere
            with pytest.raises(MarkFell) as fell:
                o.forget(last, marks=[b"applied/BKA"], record=b"forgotten")
            assert fell.value.gone == 0 and calls == [50, 1]
            assert len(o.scan(b"log/")) == 50 and o.get(b"forgotten") is None
            # not compacted: the history from the first claim on can still be read
            assert o.etcd.get(b"hubi/c/log/n/a001", revision=revs[1]).value == b"x"
        finally:
            o.close()


def test_a_lagging_watch_loses_nothing_when_the_log_forgets_behind_it(tmp_path: Path) -> None:
    """A bank reading far behind the head (catching up) when the log forgets up to its position:
    its watch, still replaying history, is not cancelled (etcd is compacted only up to there)
    and gets every creation after its position, once, in order."""
    with fast_etcd_cluster(tmp_path / "etcd", members=1) as cluster:
        o = EtcdOrderer(cluster.client_urls, b"hubi/lag/")
        try:
            keys = [b"log/n/%05d" % i for i in range(3000)]
            for k in keys:
                o.claim(k, b"v")
            stop = threading.Event()
            seen: list[bytes] = []
            for ev in o.events(0, stop):
                seen.append(ev.key)
                if len(seen) == 10:  # this bank has applied 10: every key up to here goes
                    assert o.forget(ev.revision) == 10
                    assert o.etcd.range(b"hubi/lag/log/", limit=1).count == 2990
                    keys.append(b"log/n/new")
                    o.claim(b"log/n/new", b"after the forgetting")
                if len(seen) == len(keys):
                    stop.set()
            assert seen == keys
        finally:
            o.close()


def test_etcd_orderer_replays_the_log_past_a_compaction(tmp_path: Path) -> None:
    """An operator compacts etcd's history past where a bank's watch stands (as etcd's own
    procedure for a full database does). The watch used to fail for good ("cannot resume the
    log"), and every bank whose watch restarted paused. The log's keys are created once, so the
    creations since are read from the store, in order, past a page of 1,000, and the watch goes
    on from the compaction. A log key overwritten in the compacted stretch is an error."""
    with fast_etcd_cluster(tmp_path / "etcd", members=1) as cluster:
        o = EtcdOrderer(cluster.client_urls, b"hubi/c/")
        try:
            after = o.claim(b"log/n/0", b"v0").revision
            expected = []
            for i in range(1, 1101):  # the stretch the watch has not seen yet
                rev = o.claim(b"log/n/%d" % i, b"v%d" % i).revision
                expected.append((rev, b"log/n/%d" % i, b"v%d" % i))
                if i % 300 == 0:
                    o.put(b"junk/%d" % i, b"not in the log")  # revisions outside the log
            compacted = o.put(b"junk/last", b"x")
            o.etcd.compact(compacted)
            stop = threading.Event()
            seen = []
            for ev in o.events(after, stop):
                seen.append((ev.revision, ev.key, ev.value))
                if ev.key == b"log/n/1100":  # the replay is done: the watch comes next
                    expected.append((o.claim(b"log/n/new", b"new").revision, b"log/n/new", b"new"))
                elif ev.key == b"log/n/new":
                    stop.set()
            assert seen == expected
            # a log key overwritten, then compacted: its first value is gone, and that is said
            before = o.claim(b"log/n/x", b"first").revision - 1
            o.put(b"log/n/x", b"second")
            o.etcd.compact(o.put(b"junk/again", b"x"))
            with pytest.raises(OrdererError, match="overwritten"):
                for _ in o.events(before, threading.Event()):
                    pass
        finally:
            o.close()


def test_peer_errors_name_the_bank() -> None:
    err = PeerError("BKC", "unreachable")
    assert str(err) == "bank BKC: unreachable"


def test_bank_node_processes_over_the_embedded_orderer(tmp_path: Path, nodes) -> None:  # noqa: F811
    """No etcd: two `hubi bank serve` processes share the embedded SQLite orderer named in the
    consortium file (HOME/consortium/log.db) and settle an interbank note between them."""
    import httpx

    made = {b: nodes(tmp_path / "home", b, name=b) for b in ("BKA", "BKB", "BKC", "BKD")}
    acc = make_home(
        tmp_path / "home",
        BANKS4,
        endpoints={b: [n.url] for b, n in made.items()},
        orderer="embedded",
    )
    for n in made.values():
        n.start()
    note = acc["BKA-000001"].note("BKB-000001", 12)
    r = httpx.post(
        made["BKB"].url + "/v1/notes",
        content=note,
        headers={"content-type": "application/octet-stream"},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["outcome"] == "booked", r.text
    assert (tmp_path / "home" / "consortium" / "log.db").exists()
    same = httpx.post(made["BKA"].url + "/v1/notes", content=note, timeout=30).json()
    assert same["outcome"] == "booked" and same["duplicate"] is True
