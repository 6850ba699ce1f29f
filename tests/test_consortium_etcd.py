"""Four real bank node processes (`hubi bank serve`) ordering interbank notes on a real 3-member
etcd cluster, loopback only: settlement, settle-once under concurrent uploads, forged and thin
log entries, a peer that forges its endorsements, and (slow) kill -9 of a bank node and of an
etcd member during a stream of notes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from hubi.bank.records import Record
from hubi.consortium import entries as ent
from hubi.consortium.endorse import make_endorsement, note_digest
from hubi.consortium.supervisor import STATE_DIR
from hubi.infra.etcd_client import Etcd, EtcdRequestError
from hubi_core import codec, lsum
from tests.consortium_support import BANKS4, FUNDS, Consortium, copy_sqlite
from tests.servers import etcd_cluster, fast_etcd_cluster, member_health  # noqa: F401


@pytest.fixture(scope="module")
def cons(etcd_cluster, tmp_path_factory) -> Consortium:  # noqa: F811
    c = Consortium(tmp_path_factory.mktemp("cons4"), etcd_cluster.client_urls)
    c.start()
    try:
        yield c
    finally:
        c.close()


def book_notes(c: Consortium, account: str) -> list[tuple[int, bytes]]:
    """(delta, note digest) of every record in an account's book, read from its bank."""
    bank = account.split("-")[0]
    doc = c.get(bank, f"/v1/accounts/{account}/book", {"limit": 5000})
    out = []
    for r in doc["records"]:
        rec = Record.parse(bytes.fromhex(r["body"]))
        out.append((rec.delta, hashlib.sha256(rec.evidence).digest()))
    return out


def assert_agree_and_audit_clean(c: Consortium, banks: list[str] | None = None) -> dict:
    banks = banks or c.banks
    c.wait_caught_up(banks=banks)
    st = {b: c.status(b) for b in banks}
    positions = {json.dumps(s["positions"], sort_keys=True) for s in st.values()}
    assert len(positions) == 1, st
    for b in banks:
        audit = c.get(b, "/v1/audit")
        assert audit["ok"], (b, audit["findings"][:5])
    return st


def test_interbank_notes_settle_among_four_banks(cons: Consortium) -> None:
    acc = cons.accounts
    users = [f"{b}-000001" for b in BANKS4]
    before = {a: cons.balance(a) for a in users}
    rng = random.Random(5)
    plan = []
    for _ in range(24):
        payer, payee = rng.sample(users, 2)
        plan.append((payer, payee, rng.randint(1, 500)))
    notes = [(payee, acc[payer].note(payee, amount)) for payer, payee, amount in plan]

    def upload(item: tuple[str, bytes]) -> dict:
        payee, note = item
        r = cons.upload(payee.split("-")[0], note)
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(upload, notes))
    assert [r["outcome"] for r in results] == ["booked"] * len(plan), results
    for r in results:
        assert any(n["kind"] == "SettlementNotice" for n in r["notices"])
    st = assert_agree_and_audit_clean(cons)
    expect = dict(before)
    for payer, payee, amount in plan:
        expect[payer] -= amount
        expect[payee] += amount
    assert {a: cons.balance(a) for a in users} == expect
    # every note is one debit at the payer's bank and one credit at the payee's bank
    digests = {hashlib.sha256(n).digest() for _, n in notes}
    for a in users:
        mine = [d for _, d in book_notes(cons, a) if d in digests]
        assert len(mine) == len(set(mine)), a
    sent = {hashlib.sha256(n).digest(): (p, q) for (p, q, _), (_, n) in zip(plan, notes)}
    for d, (payer, payee) in sent.items():
        assert [x for x in book_notes(cons, payer) if x[1] == d][0][0] < 0
        assert [x for x in book_notes(cons, payee) if x[1] == d][0][0] > 0
    assert all(s["entries"].get("rejected", 0) == 0 for s in st.values())
    # checkpoints of every bank went through the log and every bank holds them
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cps = cons.get("BKC", "/v1/consortium/checkpoints")["checkpoints"]
        if {c["bank"] for c in cps} == set(BANKS4):
            break
        time.sleep(0.3)
    assert {c["bank"] for c in cps} == set(BANKS4)


def test_the_log_forgets_what_every_bank_applied(cons: Consortium) -> None:
    """The bank nodes mark their applied revisions every 0.5 s and BKA has etcd forget the log's
    keys behind the lowest mark, then compact its history. An upload of a forgotten note is answered from
    the banks' state; a second claim of its key (as a submission under way at that moment could
    make) settles nothing, at every bank alike."""
    acc = cons.accounts
    payer, payee = "BKC-000002", "BKD-000002"
    before = {a: cons.balance(a) for a in (payer, payee)}
    note = acc[payer].note(payee, 321)
    assert cons.upload("BKD", note).json()["outcome"] == "booked"
    head = cons.wait_caught_up()
    deadline = time.monotonic() + 30
    while (pruning := cons.status("BKA")["pruning"])["through"] < head:
        assert time.monotonic() < deadline, pruning
        time.sleep(0.2)
    assert pruning["pruner"] == "BKA" and pruning["waiting_for"] == [] and pruning["keys"] >= 2
    obj = codec.decode(note, codec.NOTE)
    nid = lsum.note_id(obj.signer, obj.serial)
    with Etcd(cons.etcd_urls) as etcd:
        left = etcd.range(cons.prefix + ent.LOG, keys_only=True).kvs
        assert all(kv.create_revision > pruning["through"] for kv in left), left
        marks = etcd.range(cons.prefix + ent.APPLIED).kvs
        assert sorted(kv.key[len(cons.prefix + ent.APPLIED) :] for kv in marks) == [
            b.encode() for b in BANKS4
        ]
        with pytest.raises(EtcdRequestError, match="compacted"):
            etcd.get(cons.prefix + ent.note_key(nid), revision=head - 1)
        # the payer's bank answers the same upload from its state
        again = cons.upload("BKC", note).json()
        assert again["outcome"] == "booked" and again["duplicate"] is True, again
        # a second claim of the forgotten key
        value = ent.NoteEntry(note, [], "BKB").encode()
        assert etcd.create_if_absent(cons.prefix + ent.note_key(nid), value).created
    cons.wait_caught_up()
    for b in BANKS4:
        again_reports = [r for r in cons.reports(b) if r["kind"] == "ordered-again"]
        assert [r["note_id"] for r in again_reports] == [nid.hex()], (b, again_reports)
        assert cons.status(b)["last_error"] is None
    assert {a: cons.balance(a) for a in (payer, payee)} == {
        payer: before[payer] - 321,
        payee: before[payee] + 321,
    }
    assert_agree_and_audit_clean(cons)


def test_a_bank_restored_from_a_backup_older_than_the_forgetting_halts_and_says_why(
    etcd_cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Two real bank nodes on etcd, forgetting every 0.3 s. BKB's consortium state is backed up,
    a second note settles and the log forgets it; BKB is restarted on the old backup. It marks
    its lower revision before applying anything (so BKA forgets nothing more past it), then
    refuses to apply: its status and /health say halted, how far each stands and what to do.
    Restarted on a backup taken after the forgetting, it applies on; the banks agree."""
    c = Consortium(tmp_path / "c", etcd_cluster.client_urls, banks=["BKA", "BKB"],
                   prune_interval=0.3)  # fmt: skip
    state = c.home / "banks" / "BKB" / "consortium.db"
    try:
        c.start()
        acc = c.accounts

        def forgotten_through(head: int) -> dict[str, Any]:
            deadline = time.monotonic() + 60
            while (pruning := c.status("BKA")["pruning"])["through"] < head:
                assert time.monotonic() < deadline, pruning
                time.sleep(0.1)
            return pruning

        assert (
            c.upload("BKB", acc["BKA-000001"].note("BKB-000001", 5)).json()["outcome"] == "booked"
        )
        old_at = c.wait_caught_up()
        copy_sqlite(state, tmp_path / "old.db")
        assert (
            c.upload("BKA", acc["BKB-000001"].note("BKA-000001", 7)).json()["outcome"] == "booked"
        )
        head = c.wait_caught_up()
        forgotten_through(head)
        copy_sqlite(state, tmp_path / "new.db")

        c.nodes["BKB"].stop()
        copy_sqlite(tmp_path / "old.db", state)
        c.nodes["BKB"].start()
        deadline = time.monotonic() + 60
        while not (st := c.status("BKB"))["halted"]:
            assert time.monotonic() < deadline, st
            time.sleep(0.1)
        at = st["applied_revision"]
        assert at <= old_at < head <= st["pruning"]["forgotten"], st
        assert st["halted"].startswith(
            f"this bank's consortium state stands at revision {at}, but the log has forgotten "
            f"entries created as late as revision {st['pruning']['forgotten']}"
        ), st["halted"]
        assert "Restore its consortium state from a backup taken at or after" in st["halted"]
        assert st["applying"] is False and st["entries"] == {"settled": 1}
        health = c.http.get(c.url("BKB") + "/health").json()
        assert health["status"] == "degraded", health
        assert health["detail"]["consortium"]["halted"] == st["halted"]
        assert health["detail"]["consortium"]["applying"] is False
        with Etcd(c.etcd_urls) as etcd:
            kv = etcd.get(c.prefix + ent.applied_key("BKB"))
            assert kv is not None and kv.value == b"%020d" % at
        # `hubi consortium status`, over an up.json naming these nodes as `up` would
        folder = tmp_path / "up"
        (folder / STATE_DIR).mkdir(parents=True)
        up = {
            "home": str(c.home),
            "consortium": c.name,
            "state": "running",
            "etcd": [],
            "banks": [{"id": b, "url": c.url(b), "pid": c.nodes[b].pid} for b in c.banks],
        }
        (folder / STATE_DIR / "up.json").write_text(json.dumps(up))
        cli = [sys.executable, "-m", "hubi.cli", "consortium", "status", "--dir", str(folder)]
        r = subprocess.run([*cli, "--json"], capture_output=True)
        assert r.returncode == 1, r.stderr  # a halted bank: not healthy
        doc = json.loads(r.stdout)
        bkb = doc["banks"][1]
        assert bkb["halted"] is True and bkb["healthy"] is False and bkb["error"] == st["halted"]
        assert doc["banks"][0]["healthy"] is True and doc["healthy"] is False
        r = subprocess.run(
            cli, capture_output=True, text=True, env={**os.environ, "COLUMNS": "1000"}
        )
        assert r.returncode == 1, r.stderr
        text = r.stdout
        assert f"bank BKB  {c.url('BKB')}  halted  applied revision {at}\n" in text, text
        assert f"    {st['halted']}\n" in text, text
        # BKA forgets nothing more while BKB's mark stands below, not even a note settled since
        # (BKB still endorses as the payee's bank; it will credit once restored)
        kept = c.status("BKA")["pruning"]
        note = acc["BKA-000002"].note("BKB-000002", 3)
        assert c.upload("BKA", note).json()["outcome"] == "booked"
        nid = lsum.note_id("BKA-000002", codec.decode(note, codec.NOTE).serial)
        time.sleep(1.5)  # five rounds
        assert c.status("BKA")["pruning"]["keys"] == kept["keys"]
        with Etcd(c.etcd_urls) as etcd:
            assert etcd.get(c.prefix + ent.note_key(nid)) is not None

        c.nodes["BKB"].stop()
        copy_sqlite(tmp_path / "new.db", state)
        c.nodes["BKB"].start()
        c.wait_caught_up()
        st = c.status("BKB")
        assert st["halted"] is None and st["last_error"] is None
        assert st["entries"] == {"settled": 3}
        assert c.balance("BKB-000002") == FUNDS + 3
        forgotten_through(c.wait_caught_up())
        assert_agree_and_audit_clean(c)
    finally:
        c.close()


def _race(cons: Consortium, jobs: list[tuple[str, bytes]]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(jobs))

    def go(job: tuple[str, bytes]) -> httpx.Response:
        barrier.wait()
        return cons.upload(*job)

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(go, jobs))


def test_same_note_at_two_banks_at_once_settles_once(cons: Consortium) -> None:
    payer, payee = cons.accounts["BKA-000002"], "BKB-000002"
    b0 = (cons.balance(payer.id), cons.balance(payee))
    note = payer.note(payee, 321)
    rs = _race(cons, [("BKB", note), ("BKA", note)])
    docs = [r.json() for r in rs]
    assert [r.status_code for r in rs] == [200, 200], docs
    assert {d["outcome"] for d in docs} == {"booked"}, docs
    assert sorted(d["duplicate"] for d in docs) == [False, True], docs
    again = cons.upload("BKC", note).json()  # a third bank, later: the first answer
    assert again["outcome"] == "booked" and again["duplicate"] is True
    cons.wait_caught_up()
    assert (cons.balance(payer.id), cons.balance(payee)) == (b0[0] - 321, b0[1] + 321)
    d = hashlib.sha256(note).digest()
    assert [x[0] for x in book_notes(cons, payer.id) if x[1] == d] == [-321]
    assert [x[0] for x in book_notes(cons, payee) if x[1] == d] == [321]


def test_same_serial_in_two_notes_at_once_settles_at_most_once(cons: Consortium) -> None:
    payer = cons.accounts["BKA-000003"]
    n1 = payer.note("BKB-000003", 11, serial=900)
    n2 = payer.note("BKC-000003", 22, serial=900)
    before = cons.balance(payer.id)
    rs = _race(cons, [("BKB", n1), ("BKC", n2)])
    docs = [r.json() for r in rs]
    assert [r.status_code for r in rs] == [200, 200], docs
    assert sorted(d["outcome"] for d in docs) == ["booked", "refused"], docs
    loser = next(d for d in docs if d["outcome"] == "refused")
    assert loser["reason_code"] == codec.REASON_DOUBLE_ISSUE, loser
    assert "900" in loser["reason"] and "BKA-000003" in loser["reason"], loser
    assert loser["refusal"]
    won = 11 if docs[0]["outcome"] == "booked" else 22
    cons.wait_caught_up()
    assert cons.balance(payer.id) == before - won
    payer_book = [x for x in book_notes(cons, payer.id) if x[0] in (-11, -22)]
    assert len(payer_book) == 1


def _endorsements(cons: Consortium, note: bytes, banks: list[str], asker: str) -> list[bytes]:
    out = []
    for b in banks:
        path = "/v1/consortium/validate"
        h = cons.signer(asker).headers(b, "POST", path, None, note)
        h["content-type"] = "application/octet-stream"
        r = cons.http.post(cons.url(b) + path, content=note, headers=h)
        assert r.status_code == 200, r.text
        out.append(bytes.fromhex(r.json()["endorsement"]))
    return out


def test_forged_or_thin_entries_are_rejected_by_every_bank(cons: Consortium) -> None:
    """BKD writes two entries straight into etcd: one with a forged endorsement of BKC, one
    with the payer's bank's endorsement only. Every bank rejects both and reports BKD."""
    acc = cons.accounts
    etcd = Etcd(cons.etcd_urls)
    try:
        note1 = acc["BKA-000004"].note("BKB-000004", 70)
        ends = _endorsements(cons, note1, ["BKA", "BKB", "BKC"], "BKD")
        e = codec.decode(ends[2], codec.ENDORSEMENT)
        sig = bytearray(e.sigs["seal"])
        sig[7] ^= 0x40
        e.sigs["seal"] = bytes(sig)
        ends[2] = codec.encode(e)
        o1 = codec.decode(note1, codec.NOTE)
        nid1 = lsum.note_id(o1.signer, o1.serial)
        key1 = cons.prefix + ent.note_key(nid1)
        assert etcd.create_if_absent(key1, ent.NoteEntry(note1, ends, "BKD").encode()).created

        note2 = acc["BKA-000004"].note("BKC-000004", 80)
        o2 = codec.decode(note2, codec.NOTE)
        nid2 = lsum.note_id(o2.signer, o2.serial)
        thin = _endorsements(cons, note2, ["BKA"], "BKD")
        key2 = cons.prefix + ent.note_key(nid2)
        claim = etcd.create_if_absent(key2, ent.NoteEntry(note2, thin, "BKD").encode())
        assert claim.created
    finally:
        etcd.close()
    before = cons.balance("BKA-000004")
    cons.wait_caught_up(at_least=claim.revision)
    for b in BANKS4:
        reports = cons.reports(b)
        kinds = {(r["kind"], r["subject"], r["note_id"]) for r in reports}
        assert ("forged-endorsement", "BKD", nid1.hex()) in kinds, (b, reports)
        assert ("too-few-endorsements", "BKD", nid2.hex()) in kinds, (b, reports)
        e1 = cons.get(b, f"/v1/consortium/entries/{nid1.hex()}")
        e2 = cons.get(b, f"/v1/consortium/entries/{nid2.hex()}")
        assert e1["state"] == "rejected" and "BKC" in e1["reason"], e1
        assert e2["state"] == "rejected" and "too few" in e2["reason"], e2
    assert cons.balance("BKA-000004") == before
    # the payee's upload of the burnt note gets a clear answer
    r = cons.upload("BKB", note1).json()
    assert r["outcome"] == "refused" and "forged" in r["reason"], r


class _Rogue(BaseHTTPRequestHandler):
    forged: bytes = b""

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("content-length", 0))
        note = self.rfile.read(n)
        obj = codec.decode(note, codec.NOTE)
        nid = lsum.note_id(obj.signer, obj.serial)
        # an endorsement named BKD, sealed with a key that is not BKD's
        from hubi.bank.records import BookKeys

        body = make_endorsement(BookKeys("BKD", 123456789), 1, 0, nid, note_digest(note), True)
        data = json.dumps({"endorsement": body.hex()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_peer_that_forges_its_endorsements_is_reported(cons: Consortium) -> None:
    """BKD's node is replaced by an impostor that answers with forged endorsements: the
    payee's bank does not count them (the note settles with BKA, BKB and BKC) and reports BKD."""
    d = cons.nodes["BKD"]
    d.kill9()
    server = ThreadingHTTPServer(("127.0.0.1", d.port), _Rogue)
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        for i in range(2):  # BKB asks BKA and one third bank, BKC and BKD in turn
            note = cons.accounts["BKA-000001"].note("BKB-000001", 9 + i)
            r = cons.upload("BKB", note).json()
            assert r["outcome"] == "booked", r
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reports = [x for x in cons.reports("BKB") if x["kind"] == "forged-endorsement"]
            if any(x["subject"] == "BKD" and x["note_id"] is not None for x in reports):
                break
            time.sleep(0.1)
        assert any(x["subject"] == "BKD" for x in reports), reports
        assert any("does not verify" in x["detail"] for x in reports), reports
    finally:
        server.shutdown()
        server.server_close()
    d.start()
    assert_agree_and_audit_clean(cons)  # BKD caught up with what it missed


def test_a_hung_bank_is_not_waited_for_and_drops_stale_asks_when_it_wakes(
    cons: Consortium,
) -> None:
    """BKD's node hangs (SIGSTOP: its kernel still accepts connections, so asks to it wait for
    the endorsement timeout instead of failing). The other banks mark it stalled once an ask is
    unanswered past stall_after (1 s), then send it one probe at a time and settle their notes
    with the third bank that answers. When BKD wakes it drops the asks whose senders hung up,
    catches up on the log, answers again and is no longer stalled."""
    others = ["BKA", "BKB", "BKC"]
    users = [f"{b}-00000{i}" for b in others for i in (2, 3)]
    rng = random.Random(11)

    def settle(n: int) -> None:
        plan = []
        while len(plan) < n:
            payer, payee = rng.sample(users, 2)
            if payer[:3] != payee[:3]:
                plan.append((payee[:3], cons.accounts[payer].note(payee, rng.randint(1, 9))))
        with ThreadPoolExecutor(4) as ex:
            docs = list(ex.map(lambda job: cons.upload(*job).json(), plan))
        assert all(doc["outcome"] == "booked" for doc in docs), docs

    def asks_to_d() -> dict[str, dict]:
        return {b: cons.status(b)["peers"].get("BKD", {"sent": 0}) for b in others}

    d = cons.nodes["BKD"]
    gone0 = cons.status("BKD")["validations"]["caller_gone"]
    base = asks_to_d()
    d.pause()
    try:
        settle(12)
        deadline = time.monotonic() + 60
        while True:  # every bank that asked BKD finds it stalled once its ask is 1 s old
            peers = asks_to_d()
            asked = [b for b, p in peers.items() if p["sent"] > base[b]["sent"]]
            if asked and all(peers[b]["stalled"] for b in asked):
                break
            assert time.monotonic() < deadline, peers
            time.sleep(0.2)
        # two notes only BKD can endorse (its customer pays) at once, at a bank that finds BKD
        # stalled: one at most goes out as the probe and waits; the other is told at once, and why
        payee = f"{asked[0]}-000002"
        notes = [cons.accounts[f"BKD-00000{i}"].note(payee, i) for i in (3, 4)]
        with ThreadPoolExecutor(2) as ex:
            replies = list(ex.map(lambda n: cons.upload(asked[0], n), notes))
        assert all(r.status_code == 503 for r in replies), [r.text for r in replies]
        assert {r.json()["error"] for r in replies} == {"consortium-unavailable"}
        assert any("BKD: not asked: stalled" in r.json()["message"] for r in replies), [
            r.text for r in replies
        ]
        t0 = time.monotonic()  # the window counts the status reads too (slow on a loaded machine)
        before = asks_to_d()
        settle(12)
        after = asks_to_d()
        spent = time.monotonic() - t0
        # one probe at a time, each open until the endorsement timeout (5 s)
        probes = 2 + int(spent // 5.0)
        assert all(after[b]["sent"] - before[b]["sent"] <= probes for b in others), (
            before,
            after,
            spent,
        )
        time.sleep(5.5)  # every ask to BKD has timed out: the banks that sent them hung up
    finally:
        d.resume()
    assert_agree_and_audit_clean(cons)
    deadline = time.monotonic() + 30  # BKD drops the stale asks as it works through them
    while (gone := cons.status("BKD")["validations"]["caller_gone"]) <= gone0:
        assert time.monotonic() < deadline, (gone, gone0)
        time.sleep(0.2)
    # a note that needs BKD (its customer pays) settles: BKD answered the probe
    note = cons.accounts["BKD-000002"].note("BKA-000002", 5)
    assert cons.upload("BKA", note).json()["outcome"] == "booked"
    assert not cons.status("BKA")["peers"]["BKD"]["stalled"]


# ---------------------------------------------------------------------------------- faults


@pytest.mark.slow
def test_kill9_bank_node_and_etcd_member_during_a_stream(tmp_path: Path) -> None:
    """A stream of interbank notes among 4 banks; kill -9 bank BKD's node, then the etcd leader;
    bring both back. No acknowledged note is lost or booked twice; unanswered uploads retried
    settle once; BKD catches up; all banks agree and their audits are clean."""
    cluster = fast_etcd_cluster(tmp_path / "etcd")
    c = Consortium(tmp_path / "c", cluster.client_urls, settle_timeout=8.0)
    try:
        c.start()
        users = [a for a in c.accounts if a.endswith(("000001", "000002", "000003"))]
        notes: list[tuple[str, str, int, bytes]] = []
        acked: dict[bytes, dict] = {}
        failed: dict[bytes, str] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            http = httpx.Client(timeout=20)
            while not stop.is_set():
                payer, payee = rng.sample(users, 2)
                if payer[:3] == payee[:3]:
                    continue
                with lock:
                    note = c.accounts[payer].note(payee, rng.randint(1, 50))
                    notes.append((payer, payee, 0, note))
                bank = payee[:3]
                try:
                    r = http.post(
                        c.url(bank) + "/v1/notes",
                        content=note,
                        headers={"content-type": "application/octet-stream"},
                    )
                    doc = r.json()
                    if r.status_code == 200 and doc["outcome"] in ("booked", "pending"):
                        acked[note] = doc
                    else:
                        failed[note] = f"{r.status_code} {doc.get('error') or doc.get('outcome')}"
                except (httpx.HTTPError, ValueError) as exc:  # ValueError: a reply not JSON
                    failed[note] = type(exc).__name__
            http.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120  # the stream is under way: some notes answered
        while len(acked) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        c.nodes["BKD"].kill9()
        time.sleep(1.0)
        deadline = time.monotonic() + 60  # a loaded machine can make the members elect anew
        with Etcd(cluster.client_urls) as probe:
            st = list(probe.status(timeout=10).values())
            while not any(s.is_leader for s in st):
                assert time.monotonic() < deadline, st
                time.sleep(0.2)
                st = list(probe.status(timeout=10).values())
        leader = next(i for i, s in enumerate(st) if s.is_leader)
        cluster.kill(leader)
        time.sleep(2.0)
        cluster.restart(leader)
        c.nodes["BKD"].start()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(60)
        assert len(acked) >= 10, (len(acked), list(failed.values())[:10])
        # the merchants retry what was not answered: each is now settled (once) or refused
        for note in list(failed):
            obj = codec.decode(note, codec.NOTE)
            r = c.upload(obj["payee"][:3], note)
            assert r.status_code == 200, r.text
            assert r.json()["outcome"] in ("booked", "pending"), r.json()
        st = assert_agree_and_audit_clean(c)
        counts = {b: s["entries"] for b, s in st.items()}
        assert all(x == counts["BKA"] for x in counts.values()), counts
        assert counts["BKA"].get("settled", 0) == len(acked) + len(failed), counts
        # each note: exactly one debit and one credit, balances add up
        expect = {a: FUNDS for a in users}
        for payer, payee, _, note in notes:
            amount = codec.decode(note, codec.NOTE)["amount"]
            expect[payer] -= amount
            expect[payee] += amount
        for a in users:
            ds = [d for _, d in book_notes(c, a)]
            assert len(ds) == len(set(ds)), f"{a}: a note booked twice"
            assert c.balance(a) == expect[a], a
        assert c.nodes["BKD"].starts == 2
    finally:
        c.close()
        cluster.stop()


@pytest.mark.slow
def test_a_full_etcd_refuses_interbank_notes_clearly_and_loses_nothing(tmp_path: Path) -> None:
    """etcd at its space quota refuses every write. An interbank upload then gets a 503 that
    names the full database (not a 15 s wait and "no member answered"); same-bank notes go on;
    once an operator has freed space (delete, compact, then etcdctl's defrag and alarm disarm)
    the same note settles once, and the banks agree with clean audits."""
    from hubi.infra.etcd_client import EtcdNoSpace

    cluster = fast_etcd_cluster(tmp_path / "etcd", quota_bytes=2 << 20)
    etcdctl = Path(cluster.binary).with_name("etcdctl")
    assert etcdctl.is_file(), f"no etcdctl beside {cluster.binary}"
    c = Consortium(tmp_path / "c", cluster.client_urls)
    try:
        c.start()
        acc = c.accounts
        before = {a: c.balance(a) for a in ("BKA-000002", "BKB-000002")}
        first = c.upload("BKB", acc["BKA-000001"].note("BKB-000001", 3))
        assert first.status_code == 200 and first.json()["outcome"] == "booked", first.text
        with cluster.client(retry_deadline=30.0) as e:
            with pytest.raises(EtcdNoSpace):
                for i in range(5000):  # 20 MB, far past the 2 MiB quota
                    e.put(b"junk/%06d" % i, b"j" * 4000)
            assert not any(member_health(e, False).values())  # ALARM NOSPACE, everywhere
            note = acc["BKA-000002"].note("BKB-000002", 7)
            t0 = time.monotonic()
            r = c.upload("BKB", note)
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "orderer-unavailable"
            assert "database is full" in r.json()["message"]
            assert time.monotonic() - t0 < 10.0, "the claim waited for the client's deadline"
            same = c.upload("BKA", acc["BKA-000003"].note("BKA-000004", 5))
            assert same.status_code == 200 and same.json()["outcome"] == "booked", same.text
            # the operator frees space: etcd's procedure, the last two steps with its own tool
            assert e.delete(b"junk/", prefix=True) > 0
            e.compact(e.status()[cluster.client_urls[0]].revision, physical=True)
            urls = "--endpoints=" + ",".join(cluster.client_urls)
            for args in (["defrag"], ["alarm", "disarm"]):
                done = subprocess.run(
                    [str(etcdctl), urls, *args], capture_output=True, text=True, timeout=60
                )
                assert done.returncode == 0, (args, done.stdout, done.stderr)
            assert all(member_health(e, True).values())
        again = c.upload("BKB", note)
        assert again.status_code == 200 and again.json()["outcome"] == "booked", again.text
        assert_agree_and_audit_clean(c)
        assert c.balance("BKA-000002") == before["BKA-000002"] - 7
        assert c.balance("BKB-000002") == before["BKB-000002"] + 7
        digest = hashlib.sha256(note).digest()
        assert [d for d, x in book_notes(c, "BKA-000002") if x == digest] == [-7]
        assert [d for d, x in book_notes(c, "BKB-000002") if x == digest] == [7]
    finally:
        c.close()
        cluster.stop()
