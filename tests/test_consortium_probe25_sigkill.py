"""`hubi consortium up` and `hubi demo` killed with SIGKILL leave nothing running (round 25).

A report said they could leave `hubi bank serve` children behind. Reproduced with real runs:
the bank nodes and etcd members, started and restarted from the command's main thread with a
parent-death signal (bank serve has no children of its own), die with it, also after the
supervisor restarted a node and a member. What a SIGKILLed `hubi demo` did leave running for
ever is its token simulator (started with subprocess.Popen, no parent-death signal):
_process.die_with_parent() is the preexec_fn for such a child; the last test shows it works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hubi.infra import _process
from tests.procs import alive
from tests.procs import procs_with as _procs_with
from tests.procs import wait_for as _wait_for

HUBI = [sys.executable, "-m", "hubi.cli"]


def _kill_all(folder: Path) -> None:
    for pid in _procs_with(str(folder)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _up_json(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "hubi-consortium" / "up.json").read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_a_sigkilled_up_leaves_no_node_nor_member_even_after_restarts(tmp_path: Path) -> None:
    proc = _process.spawn(
        [*HUBI, "consortium", "up", "--banks", "2", "--accounts", "0", "--no-fsync"],
        log_path=tmp_path / "up.log",
        cwd=tmp_path,
    )
    try:
        up = _wait_for(
            lambda: (d := _up_json(tmp_path)) and d["state"] == "running" and d,
            "up to run",
            timeout=120,
        )
        # the supervisor restarts a bank node and an etcd member (in its main thread)
        old_bank, old_member = up["banks"][0]["pid"], up["etcd"][1]["pid"]
        os.kill(old_bank, signal.SIGKILL)
        os.kill(old_member, signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            d = _up_json(tmp_path)
            if d is None:
                return None
            bank, member = d["banks"][0]["pid"], d["etcd"][1]["pid"]
            fresh = bank not in (None, old_bank) and member not in (None, old_member)
            return d if fresh and alive(bank) and alive(member) else None

        up = _wait_for(restarted, "BKA's node and etcd m1 to be restarted")
        children = _procs_with(str(tmp_path))
        pids = [b["pid"] for b in up["banks"]] + [m["pid"] for m in up["etcd"]]
        assert set(pids) <= set(children), (pids, children)

        proc.send_signal(signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL
        _wait_for(lambda: not _procs_with(str(tmp_path)), "every node and member to die")
    finally:
        _kill_all(tmp_path)
        if proc.poll() is None:
            _process.kill9(proc)


def _ready_pid(work: Path, bank: str) -> int | None:
    """The pid in a demo bank node's ready file (written once it listens), None before."""
    try:
        doc = json.loads((work / "run" / f"{bank}.ready").read_text())
    except (OSError, ValueError):
        return None
    return doc.get("pid") if isinstance(doc, dict) else None


@pytest.mark.slow
def test_a_sigkilled_demo_leaves_no_bank_node_nor_token_simulator(tmp_path: Path) -> None:
    work, log = tmp_path / "demo", tmp_path / "demo.log"
    proc = _process.spawn([*HUBI, "demo", "--workdir", str(work)], log_path=log, cwd=tmp_path)
    try:
        _wait_for(
            lambda: all(_ready_pid(work, b) for b in ("BKA", "BKB")) or proc.poll() is not None,
            "the demo's bank nodes to listen",
            timeout=120,
        )
        assert proc.poll() is None, _process.log_tail(log)
        ready = {p for b in ("BKA", "BKB") if (p := _ready_pid(work, b))}

        # exactly the two nodes run `bank serve` (a node's own helper, between its fork and its
        # exec, carries the node's command line for a moment: `ldconfig -p` as it starts)
        def serving() -> dict[int, str]:
            return {p: c for p, c in _procs_with(str(work)).items() if "bank serve" in c}

        nodes = _wait_for(
            lambda: (n := serving()) and set(n) == ready and n,
            f"the bank serve processes to be the two ready nodes {sorted(ready)}",
        )
        # the token simulator (started in step 3) runs the firmware with its sim.json
        sims = _wait_for(
            lambda: (
                {p: c for p, c in _procs_with(str(work)).items() if "sim.json" in c}
                or proc.poll() is not None
            ),
            "the demo's token simulator to start",
            timeout=120,
        )
        assert proc.poll() is None, _process.log_tail(log)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL
        _wait_for(lambda: not any(alive(p) for p in nodes), "the bank nodes to die")
        _wait_for(lambda: not any(alive(p) for p in sims), "the token simulator to die")
    finally:
        _kill_all(tmp_path)
        if proc.poll() is None:
            _process.kill9(proc)


SCRIPT = """
import subprocess, sys, time
from hubi.infra import _process
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]],
    preexec_fn=_process.die_with_parent(),
)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_die_with_parent_kills_a_popen_child_with_its_sigkilled_parent(tmp_path: Path) -> None:
    """The preexec_fn `hubi demo`'s token simulator needs (see the module doc)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()
        parent.wait(60)
        _wait_for(lambda: not alive(child), "the child to die with its parent")
    finally:
        _kill_all(tmp_path)
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_sigkilled_token_sim_leaves_no_firmware_running(tmp_path: Path) -> None:
    """`hubi token sim` runs the firmware as its child on a pseudo-terminal; killed with
    SIGKILL, it left that child running for ever, holding the pty."""
    state = tmp_path / "state"
    port_file = tmp_path / "port"
    proc = _process.spawn(
        [*HUBI, "token", "sim", "--state", str(state), "--port-file", str(port_file)],
        log_path=tmp_path / "sim.log",
        cwd=tmp_path,
    )
    try:
        _wait_for(
            lambda: port_file.exists() or proc.poll() is not None, "the simulator's port file"
        )
        assert proc.poll() is None, _process.log_tail(tmp_path / "sim.log")
        firmware = {p: c for p, c in _procs_with(str(state)).items() if "sim.json" in c}
        assert len(firmware) == 1, _procs_with(str(tmp_path))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL
        _wait_for(lambda: not any(alive(p) for p in firmware), "the firmware to die")
    finally:
        _kill_all(tmp_path)
        if proc.poll() is None:
            _process.kill9(proc)
