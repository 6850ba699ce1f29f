"""A hot backup at the default log level: httpx logged each pull of the replication log at
INFO (five lines a second while idle, about 430,000 a day), burying what a node does log."""

from __future__ import annotations

import time

import pytest

from tests import bank_nodes
from tests.test_bank_api_replica import _start_pair, _upload_some, wait_replicated

pytestmark = pytest.mark.xdist_group("test_bank_probe28_replica_log")

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes


def test_a_hot_backup_does_not_log_each_pull(bank_world, nodes, tmp_path):
    accts, primary, replica = _start_pair(
        bank_world, nodes, f"sqlite:///{tmp_path / 'bka.db'}", f"sqlite:///{tmp_path / 'rep.db'}"
    )
    _upload_some(primary.url, accts, 3)
    wait_replicated(replica, primary.health()["detail"]["register_size"])
    time.sleep(2.0)  # about ten idle pulls
    text = replica.log_text()
    assert "/v1/replication/log" not in text, text[-2000:]
    assert "HTTP Request" not in text, text[-2000:]
    assert "INFO" in text  # the node's own lines are still there
