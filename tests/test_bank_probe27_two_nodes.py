"""`hubi bank serve` started twice for one bank on one database (two terminals, a service
manager plus a manual start, a second host pointed at the primary's PostgreSQL).

Both nodes used to start and book side by side. The books held (the store locks heads and the
register per transaction: no forked chain, no serial booked twice, the audit clean), but each
ran its own consortium applier on the bank's one state file, racing the other for every event
("the same note ordered again", "applying the log paused") and nothing told the operator.
The second node is now refused at start, naming the node that holds the database; the lock
goes with the first node, even when it is killed -9.
"""

from __future__ import annotations

import subprocess
from urllib.parse import urlsplit

import pytest

from hubi import kmc as kmc_mod
from hubi.bank.client import BankClient
from tests import bank_nodes, servers
from tests.bank_nodes import REPO, prepare_bank

pytestmark = pytest.mark.xdist_group("test_bank_probe27_two_nodes")

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes
postgres_db = servers.postgres_db


def _refused(node: bank_nodes.NodeProcess) -> str:
    with pytest.raises(RuntimeError, match="bank node exited") as err:
        node.start()
    return str(err.value)


def _audit_clean(home, db: str) -> None:
    r = subprocess.run(
        [str(REPO / ".venv/bin/hubi"), "audit", "verify", "--db", db, "--home", str(home)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_second_node_on_one_sqlite_file_is_refused(bank_world, nodes):
    home = bank_world.home
    db = kmc_mod.bank_dir(home, "BKA") / "bank.db"
    accts = list(prepare_bank(home, "BKA", str(db), accounts=2, funds=1000).values())
    first = nodes(home, "BKA", name="first").start()
    twin = nodes(home, "BKA", name="twin")  # the default database: the same file
    why = _refused(twin)
    assert f"pid {first.pid}" in why and "already serves" in why, why
    # another spelling of the same file (a symlink) is the same database
    link = home / "other-name.db"
    link.symlink_to(db)
    assert "already serves" in _refused(nodes(home, "BKA", db=str(link), name="link"))
    # the first node books on, alone
    note = accts[0].note(accts[1].id, 5, serial=1)
    assert BankClient(first.url).upload(note).outcome == "booked"
    # killed -9, it leaves no lock behind: the next node starts
    first.kill9()
    twin.start()
    assert BankClient(twin.url).upload(note).duplicate
    twin.stop()
    _audit_clean(home, str(db))


def test_second_node_on_one_postgresql_database_is_refused(bank_world, nodes, postgres_db):
    home = bank_world.home
    accts = list(prepare_bank(home, "BKA", postgres_db, accounts=2, funds=1000).values())
    first = nodes(home, "BKA", postgres_db, name="first").start()
    why = _refused(nodes(home, "BKA", postgres_db, name="twin"))
    assert f"hubi bank serve BKA pid {first.pid}" in why and "advisory lock" in why, why
    password = urlsplit(postgres_db).password
    assert not password or (password not in why and ":***@" in why), why
    note = accts[0].note(accts[1].id, 5, serial=1)
    assert BankClient(first.url).upload(note).outcome == "booked"
    # stopped (SIGTERM), it lets go: a node started after it serves the books
    assert first.stop() == 0
    after = nodes(home, "BKA", postgres_db, name="after").start()
    assert BankClient(after.url).upload(note).duplicate
    after.stop()
    _audit_clean(home, postgres_db)
