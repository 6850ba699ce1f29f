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

import httpx

from hubi.bank.client import BankClient, BankError
from hubi.infra.postgres_server import PostgresServer
from tests import bank_nodes
from tests.bank_nodes import prepare_bank

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes


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
        answers: dict[int, str] = {}
        client = BankClient(node.url)

        def send(i: int) -> None:
            try:
                answers[i] = client.upload(notes[i]).outcome
            except BankError as exc:
                answers[i] = f"{exc.status} {exc.code}"
            except httpx.HTTPError as exc:
                answers[i] = type(exc).__name__

        def sender() -> None:
            for i in range(len(notes)):
                send(i)
                time.sleep(0.02)

        t = threading.Thread(target=sender)
        t.start()
        deadline = time.monotonic() + 60
        while len(answers) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        pg.stop()
        gone = len(answers)
        deadline = time.monotonic() + 60
        while len(answers) < gone + 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        pg.start()
        t.join(120)
        assert not t.is_alive()
        down = {i: v for i, v in answers.items() if v != "booked"}
        assert down, answers  # some uploads met the database gone
        assert all(v.startswith("503") for v in down.values()), down
        assert node.health()["status"] in ("ok", "degraded")
        # back: every note the node did not book goes through now (the node recovers alone)
        deadline = time.monotonic() + 60
        for i in sorted(down):
            while True:
                send(i)
                if answers[i] == "booked" or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert answers[i] == "booked", (i, answers[i], node.log_text()[-3000:])
        again = [client.upload(n) for n in notes]  # all of them once more: all duplicates
        assert all(r.duplicate for r in again), [r for r in again if not r.duplicate]
        found = BankClient(node.url, world.bank_signer("BKA")).audit()
        assert found["ok"], found
    finally:
        pg.close()
