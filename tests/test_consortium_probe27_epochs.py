"""`hubi consortium status` names a bank node that runs an older epoch of the consortium file
than another (round 27). A node loads a new epoch (a bank joined) only when restarted; until
then it judges entries that involve the new bank otherwise than a restarted node, and their log
hashes part. Status said every bank was healthy. Now the bank behind is marked not healthy,
saying which epoch it runs and which the others run (exit status 1), until it is restarted.

Real `consortium up` (2 banks, 3 etcd members), a real `consortium join`, real SIGKILLs; the
supervisor restarts each killed node, which loads the new epoch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_consortium_up import HUBI, _sigint_and_wait, _up, _wait_running

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("consortium-probe27-epochs")]


def _status(folder: Path) -> tuple[int, dict]:
    r = subprocess.run(
        [*HUBI, "consortium", "status", "--json"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return r.returncode, json.loads(r.stdout)


def _restarted_at(folder: Path, pid: int, bank: str, epoch: int) -> tuple[int, dict]:
    """Kill `bank`'s node (pid) and wait until status shows it back, at `epoch`."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        code, st = _status(folder)
        b = {x["id"]: x for x in st["banks"]}[bank]
        if (b.get("pid") != pid and b.get("epoch") == epoch) or time.monotonic() > deadline:
            assert b.get("epoch") == epoch, st["banks"]
            return code, st
        time.sleep(0.3)


def test_a_node_on_an_older_epoch_is_named_until_restarted(tmp_path: Path) -> None:
    proc = _up(tmp_path)
    try:
        up = _wait_running(tmp_path, proc)
        code, st = _status(tmp_path)
        assert code == 0 and [b["epoch"] for b in st["banks"]] == [1, 1], st
        home = tmp_path / "hubi-consortium" / "home"
        r = subprocess.run(
            [*HUBI, "consortium", "join", "--home", str(home), "--bank", "BKC", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0 and json.loads(r.stdout)["installed"] is True, r.stdout + r.stderr
        pids = {b["id"]: b["pid"] for b in up["banks"]}

        code, st = _restarted_at(tmp_path, pids["BKA"], "BKA", 2)
        banks = {b["id"]: b for b in st["banks"]}
        assert code == 1 and st["healthy"] is False, st
        assert banks["BKA"]["healthy"] is True and "behind_epoch" not in banks["BKA"]
        assert banks["BKB"]["healthy"] is False and banks["BKB"]["behind_epoch"] == 2
        assert "runs epoch 1" in banks["BKB"]["error"] and "BKA epoch 2" in banks["BKB"]["error"]
        text = subprocess.run(
            [*HUBI, "consortium", "status"], cwd=tmp_path, capture_output=True, text=True
        )
        assert text.returncode == 1 and "epoch 1 < 2" in text.stdout, text.stdout

        code, st = _restarted_at(tmp_path, pids["BKB"], "BKB", 2)
        deadline = time.monotonic() + 30
        while code != 0 and time.monotonic() < deadline:  # BKB listens again: healthy
            time.sleep(0.3)
            code, st = _status(tmp_path)
        assert code == 0 and st["healthy"] is True, st
    finally:
        _sigint_and_wait(proc, tmp_path)
