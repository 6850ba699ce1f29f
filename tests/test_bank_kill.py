"""kill -9 of a real bank node under a stream of uploads (issue 4).

Three clients upload notes continuously (each between its own pair of accounts) while the node
is killed with SIGKILL at seeded moments — before, during and after bookings. After each restart
the notes whose upload got no reply are uploaded again (as a merchant's outbox does). At the end:
every note that ever got a success reply is booked exactly once (one debit in the payer's book,
one credit in the payee's, one entry each in the register), nothing else is booked twice, and
the audit (``hubi.bank.audit``) finds nothing.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from hubi import kmc as kmc_mod
from hubi.bank import audit as audit_mod
from hubi.bank import records as rec_mod
from hubi.bank.client import BankClient, BankError, BankUnavailable
from hubi.bank.engine import BankEngine
from hubi_core import codec, lsum
from tests import bank_nodes, servers
from tests.bank_nodes import Account, prepare_bank

# fixtures used here (pytest finds them by name in this module)
bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes
postgres_server = servers.postgres_server
postgres_db = servers.postgres_db

STREAMS = 3


class Stream:
    """One client: notes back and forth between two accounts, serials never reused."""

    def __init__(self, a: Account, b: Account, rng: random.Random):
        self.pair = (a, b)
        self.serial = {a.id: 0, b.id: 0}
        self.rng = rng
        self.k = 0

    def next_note(self) -> bytes:
        payer, payee = self.pair if self.k % 2 == 0 else self.pair[::-1]
        self.k += 1
        self.serial[payer.id] += 1
        return payer.note(payee.id, self.rng.randint(1, 500), self.serial[payer.id], "kill")


def _nid(note: bytes) -> str:
    obj = codec.decode(note, codec.NOTE)
    return lsum.note_id(obj.signer, obj.serial).hex()


def run_kill_points(world, node, accts: dict[str, Account], seed: int, points: int) -> dict:
    rng = random.Random(seed)
    acc = list(accts.values())
    streams = [Stream(acc[2 * i], acc[2 * i + 1], random.Random(seed + i)) for i in range(STREAMS)]
    booked: dict[str, bytes] = {}  # note id -> note, for every success reply
    pending: dict[str, bytes] = {}  # sent, no reply: to be uploaded again after the restart
    lock = threading.Lock()
    stats = Counter()

    def run(stream: Stream, stop: threading.Event) -> None:
        with BankClient(node.url, timeout=10) as c:
            while not stop.is_set():
                note = stream.next_note()
                nid = _nid(note)
                with lock:
                    pending[nid] = note
                try:
                    r = c.upload(note)
                except BankUnavailable:
                    return  # the node died under us: the note stays pending
                except BankError as exc:  # a 4xx would be a bug in the node
                    raise AssertionError(f"upload refused: {exc}") from exc
                assert r.outcome == "booked", r.raw
                with lock:
                    booked[nid] = note
                    pending.pop(nid, None)
                    stats["answered"] += 1

    for _ in range(points):
        stop = threading.Event()
        threads = [threading.Thread(target=run, args=(s, stop)) for s in streams]
        # the kill point: after a seeded number of answers in this round, plus a seeded delay
        # (so it lands before, inside or after some booking whatever the machine's speed)
        answers, extra = rng.randint(0, 6), rng.uniform(0.0, 0.03)
        target = stats["answered"] + answers
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while stats["answered"] < target and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(extra)
        node.kill9()
        stop.set()
        for t in threads:
            t.join(30)
            assert not t.is_alive()
        stats["kills"] += 1
        node.start()
        with BankClient(node.url, timeout=10) as c:
            for nid, note in sorted(pending.items()):
                r = c.upload(note)
                assert r.outcome == "booked" and r.note_id == nid, r.raw
                stats["retried"] += 1
                stats["already_booked"] += int(r.duplicate)
                booked[nid] = note
            pending.clear()
    stats["booked"] = len(booked)
    return {"booked": booked, "stats": stats}


def check_exactly_once(world, db: str, booked: dict[str, bytes]) -> None:
    trust = kmc_mod.load_trust(world.home / "trust")
    with BankEngine.open(db, home=world.home, bank="BKA") as eng:
        debits: Counter[str] = Counter()
        credits: Counter[str] = Counter()
        total = 0
        for info in eng.accounts():
            recs = eng.records(info.account)
            assert [r.n for r in recs] == list(range(1, eng.head(info.account).n + 1))
            total += len(recs)
            for r in recs:
                rec = r.record
                nid = _nid(rec.evidence)
                (debits if rec.kind == rec_mod.DEBIT else credits)[nid] += 1
        assert total == eng.register_size()
        for nid in booked:
            assert debits[nid] == 1 and credits[nid] == 1, nid
            assert eng.outcome(bytes.fromhex(nid)).ok
        assert max(debits.values()) == 1 and max(credits.values()) == 1
        report = audit_mod.audit(eng.store, trust=trust, keys=eng.keys)
        assert report.ok, report.as_dict()["findings"][:5]


@pytest.mark.slow
def test_kill9_sqlite_20_points(bank_world, nodes, tmp_path):
    db = f"sqlite:///{tmp_path / 'bka.db'}"
    accts = prepare_bank(bank_world.home, "BKA", db, accounts=2 * STREAMS, funds=10**7)
    node = nodes(bank_world.home, "BKA", db).start()
    out = run_kill_points(bank_world, node, accts, seed=20261122, points=20)
    stats = out["stats"]
    assert node.stop() == 0
    assert stats["kills"] == 20 and stats["answered"] > 20, stats
    print("kill -9 (SQLite):", dict(stats))
    check_exactly_once(bank_world, db, out["booked"])


@pytest.mark.slow
def test_kill9_postgresql(bank_world, nodes, postgres_db):
    accts = prepare_bank(bank_world.home, "BKA", postgres_db, accounts=2 * STREAMS, funds=10**7)
    node = nodes(bank_world.home, "BKA", postgres_db).start()
    out = run_kill_points(bank_world, node, accts, seed=7, points=6)
    assert node.stop() == 0
    print("kill -9 (PostgreSQL):", dict(out["stats"]))
    check_exactly_once(bank_world, postgres_db, out["booked"])
