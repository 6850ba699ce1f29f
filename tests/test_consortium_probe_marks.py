"""Hostile values beside the log, as a writer with etcd access (or a clumsy operator) leaves
them: applied marks past anything applied, and a consortium state file replaced under a running
node. The embedded world: real engines, real SQLite orderer and state files, no mocks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from hubi.consortium import entries as ent
from hubi.consortium.errors import ConsortiumError
from hubi.consortium.orderer import read_revision, revision_value
from hubi.consortium.service import EmbeddedConsortium
from tests.consortium_support import (
    BANKS4,
    FUNDS,
    copy_sqlite,
    quiet_consortium,
)


@pytest.fixture
def world(tmp_path: Path):
    yield from quiet_consortium(tmp_path / "home")


def _caught_up(ec: EmbeddedConsortium, banks: list[str], timeout: float = 60.0) -> int:
    """Every bank of `banks` applied the whole log, with the same log hash; returns the head."""
    any_node = ec.nodes[banks[0]]
    deadline = time.monotonic() + timeout
    while True:
        head = any_node.orderer.revision()
        for b in banks:
            assert ec.nodes[b].wait_applied(head, max(0.1, deadline - time.monotonic())), (
                b,
                ec.nodes[b].applied_revision(),
                head,
                ec.nodes[b].last_error,
            )
        if any_node.orderer.revision() == head:
            hashes = {ec.nodes[b].state.log_hash() for b in banks}
            assert len(hashes) == 1, "banks disagree about the log"
            return head
        assert time.monotonic() < deadline


@pytest.mark.parametrize("forged", [2**63 - 1, 10**19], ids=["int64-max", "past-64-bits"])
def test_forged_marks_never_make_the_lowest_bank_forget_what_it_has_not_applied(
    world, forged: int
) -> None:
    """Every bank's applied mark overwritten with a revision no bank reached, while the lowest
    bank (which has the log forget) lags: it forgot every key past its own state (then halted
    for good on its next start), or, for a mark past 64 bits, failed every round with an
    OverflowError. It now forgets only what it has applied itself, and catches up."""
    ec, acc = world
    assert ec.submit("BKB", acc["BKA-000001"].note("BKB-000001", 5))["outcome"] == "booked"
    _caught_up(ec, BANKS4)
    pruner = ec.nodes["BKA"]
    assert pruner.pruner == "BKA"
    pruner.stop()  # it lags: the others go on
    out = ec.submit("BKC", acc["BKB-000001"].note("BKC-000001", 9))
    assert out["outcome"] == "booked", out
    head = _caught_up(ec, ["BKB", "BKC", "BKD"])
    lagging = pruner.applied_revision()
    assert lagging < head
    for b in BANKS4:  # what a hostile writer with etcd access can put there
        pruner.orderer.put(ent.applied_key(b), revision_value(forged))
    pruner.prune_log()
    got = pruner.orderer.get(ent.FORGOTTEN)
    assert got is None or (read_revision(got.value) or 0) <= lagging, got
    pruner.start()
    assert _caught_up(ec, BANKS4) == head
    assert pruner.halted is None and pruner.last_error is None
    assert ec.engine("BKC").balance("BKC-000001") == FUNDS + 9


def test_a_state_file_replaced_under_a_running_node_is_named_not_used(
    world, tmp_path: Path
) -> None:
    """An operator puts an older copy of a bank's consortium state in place while its node runs
    (a restore without stopping it). New threads (each request's) opened that file and answered
    from it, at applied revision 0, while the applier went on writing to the file it had open,
    whose progress then vanished with it. Now every thread that opens the state, and the
    applier, name the replaced file, and /health turns degraded."""
    ec, acc = world
    node = ec.nodes["BKC"]
    copy_sqlite(node.state.path, tmp_path / "backup.db")
    assert ec.submit("BKB", acc["BKA-000001"].note("BKB-000001", 5))["outcome"] == "booked"
    _caught_up(ec, BANKS4)
    os.replace(tmp_path / "backup.db", node.state.path)
    seen: dict[str, object] = {}

    def fresh_thread() -> None:  # a request's thread: its own connection
        try:
            seen["applied"] = node.state.applied_revision()
        except ConsortiumError as exc:
            seen["error"] = str(exc)

    t = threading.Thread(target=fresh_thread)
    t.start()
    t.join()
    assert "replaced" in str(seen.get("error")), seen
    out = ec.submit("BKB", acc["BKA-000002"].note("BKB-000002", 7))
    assert out["outcome"] == "booked", out  # the other banks go on
    deadline = time.monotonic() + 60.0
    while node.stuck() is None:
        assert time.monotonic() < deadline, (node.last_error, node.applied_revision())
        time.sleep(0.2)
    assert "replaced" in (node.stuck() or ""), node.stuck()
