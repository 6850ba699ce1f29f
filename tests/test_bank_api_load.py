"""Load on a real bank node over HTTP: many clients at once, every note booked exactly once;
latency and throughput figures (printed, and recorded as a test property) for docs/bank-api.md."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time

import pytest

from hubi.bank.client import BankClient
from hubi.bank.engine import BankEngine
from hubi_core import codec
from tests import bank_nodes
from tests.bank_nodes import prepare_bank

# fixtures used here (pytest finds them by name in this module)
bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes


@pytest.mark.slow
def test_parallel_uploads_latency_and_throughput(bank_world, nodes, tmp_path, record_property):
    """Many clients at once; every note booked exactly once; figures for docs/bank-api.md."""
    db = str(tmp_path / "bka.db")
    accts = list(prepare_bank(bank_world.home, "BKA", db, accounts=16, funds=10**6).values())
    node = nodes(bank_world.home, "BKA", db).start()
    notes = [
        accts[i % 16].note(accts[(i + 1 + i // 16) % 16].id, 1 + i % 7, serial=1 + i // 16)
        for i in range(320)
    ]
    notes = [n for n in notes if codec.decode(n)["payee"] != codec.decode(n).signer]
    lat: list[float] = []
    lock = threading.Lock()

    def worker(chunk: list[bytes]) -> None:
        with BankClient(node.url) as c:
            for n in chunk:
                t0 = time.perf_counter()
                r = c.upload(n)
                dt = time.perf_counter() - t0
                assert r.booked, r.raw
                with lock:
                    lat.append(dt)

    threads = [threading.Thread(target=worker, args=(notes[i::8],)) for i in range(8)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    assert len(lat) == len(notes)
    lat.sort()
    figures = {
        "notes": len(notes),
        "clients": 8,
        "notes_per_s": round(len(notes) / wall, 1),
        "p50_ms": round(1000 * statistics.median(lat), 2),
        "p95_ms": round(1000 * lat[int(0.95 * len(lat))], 2),
    }
    # one client, one note at a time: the latency a merchant sees
    single = []
    with BankClient(node.url) as c:
        for i in range(40):
            n = accts[0].note(accts[1].id, 1, serial=10_000 + i)
            t1 = time.perf_counter()
            assert c.upload(n).booked
            single.append(time.perf_counter() - t1)
    figures["single_p50_ms"] = round(1000 * statistics.median(single), 2)
    figures["load_average"] = round(os.getloadavg()[0], 1)  # the machine is shared: say so
    figures["batches"] = node.health()["detail"]["booking"]
    record_property("bank_api_figures", json.dumps(figures))
    print("bank API figures:", json.dumps(figures))
    with BankEngine.open(db, home=bank_world.home, bank="BKA") as eng:
        total = sum(eng.head(a.id).n for a in accts)
        assert total == 16 + 2 * len(notes) + 2 * 40
