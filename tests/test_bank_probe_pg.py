"""PostgreSQL-backed bank node probed as a clumsy operator would: the database server stops in
the middle of bookings and comes back. The node must answer 503 while it is gone (never book a
note twice, never lose one it said was booked) and book again once it is back, without a
restart; the audit of the books is clean afterwards.

The node never recovered: psycopg does not reconnect, and each thread kept its dead connection,
so every booking after the server came back failed with 503 "the connection is closed" until
the node was restarted. A dropped connection is now replaced on the thread's next use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from hubi.bank.client import BankClient, BankError
from hubi.infra.postgres_server import PostgresServer
from tests import bank_nodes
from tests.bank_nodes import prepare_bank

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes


class Uploads:
    """A stream of uploads to a node, one note every 20 ms on a thread of its own, with every
    answer ("booked", "503 store-unavailable", an HTTP error's name) and every note ever
    answered "booked"."""

    def __init__(self, client: BankClient, notes: list[bytes]) -> None:
        self.client, self.notes = client, notes
        self.answers: dict[int, str] = {}
        self.booked_once: set[int] = set()

    def send(self, i: int) -> None:
        try:
            self.answers[i] = self.client.upload(self.notes[i]).outcome
        except BankError as exc:
            self.answers[i] = f"{exc.status} {exc.code}"
        except httpx.HTTPError as exc:
            self.answers[i] = type(exc).__name__
        if self.answers[i] == "booked":
            self.booked_once.add(i)

    def through(self, outage: Callable[[], None], back: Callable[[], None]) -> None:
        """Upload them all, the database going (`outage`) after 10 answers and coming `back`
        10 answers later."""

        def sender() -> None:
            for i in range(len(self.notes)):
                self.send(i)
                time.sleep(0.02)

        t = threading.Thread(target=sender)
        t.start()
        self._answered(10)
        outage()
        self._answered(len(self.answers) + 10)
        back()
        t.join(120)
        assert not t.is_alive()

    def _answered(self, n: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.answers) < n and time.monotonic() < deadline:
            time.sleep(0.01)


def books_what_it_missed(node, uploads: Uploads, auditor: BankClient) -> None:  # noqa: ANN001
    """The node answered 503 to the notes it could not book, books each of them now (it
    recovers alone), answers every note once more as a duplicate, and its books audit clean."""
    down = {i: v for i, v in uploads.answers.items() if v != "booked"}
    assert down, uploads.answers  # some uploads met the database gone
    assert all(v.startswith("503") for v in down.values()), down
    assert node.health()["status"] in ("ok", "degraded")
    deadline = time.monotonic() + 60
    for i in sorted(down):
        while True:
            uploads.send(i)
            if uploads.answers[i] == "booked" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert uploads.answers[i] == "booked", (i, uploads.answers[i], node.log_text()[-3000:])
    again = [uploads.client.upload(n) for n in uploads.notes]  # all once more: all duplicates
    assert all(r.duplicate for r in again), [r for r in again if not r.duplicate]
    found = auditor.audit()
    assert found["ok"], found


def test_postgresql_gone_mid_booking_and_back(bank_world, nodes, tmp_path):
    world = bank_world
    # commits kept (synchronous_commit on): a stop that crashes the server (tests: its data
    # folder made unreachable by another pytest session) lost notes answered "booked" with it
    # off, PostgreSQL's choice, not the node's (tests/test_bank_probe29_pg.py crashes it)
    pg = PostgresServer(tmp_path / "pg", durable=False, settings={"synchronous_commit": "on"})
    try:
        url = pg.create_database("bka")
        accts = prepare_bank(world.home, "BKA", url, accounts=4, funds=100_000)
        node = nodes(world.home, "BKA", url, name="bka").start()
        a = list(accts.values())
        notes = [a[i % 4].note(a[(i + 1) % 4].id, 1 + i, serial=1 + i) for i in range(60)]
        uploads = Uploads(BankClient(node.url), notes)
        uploads.through(pg.stop, pg.start)
        books_what_it_missed(node, uploads, BankClient(node.url, world.bank_signer("BKA")))
    finally:
        pg.close()
