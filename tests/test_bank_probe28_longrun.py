"""A bank node after many requests: what it holds must not grow with their number.

A real primary (``hubi bank serve``) and its hot backup pulling all along are driven with
every kind of request (uploads good, duplicate, forged, truncated and oversize, notices, book
reads, audits, bad signatures, made-up methods and paths, clients that hang up mid-request);
their descriptors, threads, memory and /metrics are read after N and after 2N rounds.

- With ``--http-impl plain`` (h11 passes any token as a method) every made-up method added a
  label set to the request counter: the registry, and /metrics, grew by ~170 bytes a request.
- ``Replica.pull_once`` on a replica not started (``catch_up``, operator tools) made a client
  per call and never closed it: each held its connection's descriptor until a cyclic
  collection happened to run.
"""

from __future__ import annotations

import gc
import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from hubi import kmc as kmc_mod
from hubi.bank.client import BankClient, BankError
from hubi.bank.replica import Replica, ReplicaStore
from tests import bank_nodes
from tests.bank_nodes import NodeProcess, prepare_bank

pytestmark = pytest.mark.xdist_group("test_bank_probe28_longrun")

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes


def _figures(pid: int) -> dict[str, int]:
    """Open descriptors, threads and resident memory (KiB) of process `pid`."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "rss_kb": rss,
    }


def _hang_up(port: int, head: bytes) -> None:
    """Send part of a request and close the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)


class _Traffic:
    """One round of every kind of request, on a few long-lived clients."""

    def __init__(
        self, world: bank_nodes.World, accts: list, primary: NodeProcess, replica: NodeProcess
    ):
        self.accts = accts
        self.primary = primary
        self.replica = replica
        self.anyone = BankClient(primary.url, bank="BKA")
        self.regulator = BankClient(primary.url, world.regulator, bank="BKA")
        self.bank = BankClient(replica.url, world.bank_signer("BKA"), bank="BKA")
        self.raw = httpx.Client(base_url=primary.url, timeout=30)
        self.raw_backup = httpx.Client(base_url=replica.url, timeout=30)
        self.customers = [BankClient(primary.url, a.signer, bank="BKA") for a in accts]
        self.serial = 0
        self.first = accts[0].note(accts[1].id, 1, serial=1)
        assert self.anyone.upload(self.first).booked
        deadline = time.monotonic() + 30  # the backup has the accounts' first records
        while len(self.bank.records([(a.id, 1) for a in accts])) < len(accts):
            assert time.monotonic() < deadline, replica.health()
            time.sleep(0.05)

    def round(self, i: int) -> None:
        a, b = self.accts[i % len(self.accts)], self.accts[(i + 1) % len(self.accts)]
        if i % 5 == 0:  # a few booked (the books grow with these, by design)
            self.serial += 1
            assert self.anyone.upload(a.note(b.id, 1, serial=1000 + self.serial)).booked
        assert self.anyone.upload(self.first).duplicate
        forged = bytearray(self.first)
        forged[-3] ^= 0xFF
        assert not self.anyone.upload(bytes(forged)).booked  # its signature fails
        with pytest.raises(BankError):
            self.anyone.upload(self.first[:40])  # truncated
        octets = {"content-type": "application/octet-stream"}
        assert self.raw.post("/v1/notes", content=b"x" * 70_000, headers=octets).status_code == 413

        def chunks():  # no Content-Length: cut off as it passes the cap
            for _ in range(8):
                yield b"y" * 10_000

        try:
            self.raw.post("/v1/notes", content=chunks(), headers=octets)
        except httpx.HTTPError:
            pass  # the node may close before the client has sent it all
        self.customers[i % len(self.accts)].notices(a.id, 0, 5)
        self.regulator.book(a.id, 1, 5)
        if i % 10 == 0:
            self.regulator.audit([a.id])
        forged_sig = {
            "X-Hubi-Caller": a.id,
            "X-Hubi-Time": str(int(time.time())),
            "X-Hubi-Nonce": os.urandom(16).hex(),
            "X-Hubi-Signature": "00" * 64,
        }
        r = self.raw.get(f"/v1/accounts/{a.id}/notices", headers=forged_sig)
        assert r.status_code == 401, r.text
        assert self.raw.request(f"X{i}", "/health").status_code == 405  # a made-up method
        assert self.raw.get(f"/nothing/{i}").status_code == 404
        head = b"POST /v1/notes HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"
        _hang_up(self.primary.port, head + self.first[:50])
        _hang_up(
            self.primary.port, f"GET /v1/accounts/{a.id}/book HTTP/1.1\r\nHost: x\r\n".encode()
        )
        assert self.bank.records([(a.id, 1)])  # the hot backup's own route
        assert self.raw_backup.request(f"Y{i}", "/health").status_code == 405

    def metrics_size(self) -> tuple[int, int]:
        return (
            len(self.raw.get("/metrics").content),
            len(self.raw_backup.get("/metrics").content),
        )

    def close(self) -> None:
        for c in (self.anyone, self.regulator, self.bank, *self.customers):
            c.close()
        self.raw.close()
        self.raw_backup.close()


def _settle(nodes_: list[NodeProcess]) -> list[dict[str, int]]:
    time.sleep(0.3)  # hung-up connections closed by the node
    return [_figures(n.pid) for n in nodes_]  # type: ignore[arg-type]


def test_a_node_under_every_kind_of_request_holds_steady(bank_world, nodes, tmp_path) -> None:
    db = str(tmp_path / "bka.db")
    accts = list(prepare_bank(bank_world.home, "BKA", db, accounts=4, funds=10**9).values())
    plain = ["--http-impl", "plain"]  # h11: takes any method token (httptools refuses them)
    primary = nodes(bank_world.home, "BKA", db, extra=plain, name="primary").start()
    replica = nodes(
        bank_world.home,
        "BKA",
        str(tmp_path / "replica.db"),
        extra=[*plain, "--replica-of", primary.url],
        name="replica",
    ).start()
    traffic = _Traffic(bank_world, accts, primary, replica)
    try:
        n, i = 80, 0
        for _ in range(30):  # warm-up: caches, worker threads, connections
            traffic.round(i)
            i += 1
        seen = []
        for _ in range(2):
            for _ in range(n):
                traffic.round(i)
                i += 1
            seen.append((_settle([primary, replica]), traffic.metrics_size()))
    finally:
        traffic.close()
    (p1, r1), m1 = seen[0]
    (p2, r2), m2 = seen[1]
    print(f"after N={n} rounds: primary {p1} replica {r1} metrics {m1}")
    print(f"after 2N={2 * n} rounds: primary {p2} replica {r2} metrics {m2}")
    # N rounds made N made-up methods at each node: ~170 bytes of /metrics each, before
    assert m2[0] - m1[0] < 1000, (m1, m2)
    assert m2[1] - m1[1] < 1000, (m1, m2)
    for before, after in ((p1, p2), (r1, r2)):
        assert after["fds"] <= before["fds"] + 4, (before, after)
        assert after["threads"] <= before["threads"] + 8, (before, after)
        # the nonces of the signed requests (kept for the time window) and the books' growth
        # are well under this; a leak of a few hundred bytes a request is not
        assert after["rss_kb"] <= before["rss_kb"] + 4096, (before, after)
    health = replica.health()["detail"]
    assert health["error"] is None and health["stopped"] is None, health


def test_pulls_of_a_replica_not_started_leave_no_connection_open(bank_world, nodes, tmp_path):
    db = str(tmp_path / "bka.db")
    accts = list(prepare_bank(bank_world.home, "BKA", db, accounts=2, funds=1000).values())
    primary = nodes(bank_world.home, "BKA", db).start()
    with BankClient(primary.url) as c:
        assert c.upload(accts[0].note(accts[1].id, 5, serial=1)).booked
    trust = kmc_mod.load_trust(bank_world.home / "trust")
    store = ReplicaStore(str(tmp_path / "replica.db"))
    replica = Replica(
        "BKA", primary.url, store, bank_world.bank_signer("BKA"), trust.bank_key("BKA")
    )
    n = 20
    counts = []
    gc.collect()
    gc.disable()  # what is left open is not closed behind the test's back
    try:
        assert replica.catch_up() >= 2
        for _ in range(2):
            for _ in range(n):
                assert replica.pull_once() == 0
            counts.append((_figures(os.getpid())["fds"], _figures(primary.pid)["fds"]))  # type: ignore[arg-type]
    finally:
        gc.enable()
        replica.close()
    print(f"fds (here, at the primary) after {n} pulls: {counts[0]}, after {2 * n}: {counts[1]}")
    assert counts[1][0] <= counts[0][0] + 2, counts  # one descriptor a pull, before
    assert counts[1][1] <= counts[0][1] + 2, counts
