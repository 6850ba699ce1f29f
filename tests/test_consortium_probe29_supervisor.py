"""Bank nodes and etcd members started by a Supervisor whose start() or run() ran on a worker
thread outlive that thread. Their parent-death signal (PR_SET_PDEATHSIG, set so that a
SIGKILLed `up` leaves nothing behind) is per *thread*: once the thread that forked them
returned, the kernel SIGKILLed them, and stop() found them dead instead of stopping them.

Real parts: a Supervisor with one bank node process and one etcd member, started, killed
(SIGKILL) and restarted for real.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hubi.consortium.supervisor import BankProcess, Supervisor
from hubi.infra import _process

pytestmark = pytest.mark.xdist_group("test_consortium_probe29_supervisor")


def _wait(cond: Callable[[], object], what: str, sup: Supervisor, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        logs = [bp.log_path for bp in sup.banks.values()]
        assert time.monotonic() < deadline, f"timed out waiting for {what}: " + "\n".join(
            _process.log_tail(p, 10) for p in logs
        )
        time.sleep(0.02)


def _listens(bp: BankProcess) -> bool:
    """The node `bp` runs now listens (its ready file names its pid)."""
    proc = bp.proc
    try:
        info = json.loads(bp.ready_path.read_text())
    except (OSError, ValueError):
        return False
    return proc is not None and isinstance(info, dict) and info.get("pid") == proc.pid


def _on_a_thread(fn: Callable[[], object]) -> object:
    """fn() on a thread of its own that then exits; its result (or its exception, raised)."""
    out: list[object] = []
    failed: list[BaseException] = []

    def body() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - raised again below
            failed.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join(180)
    assert not t.is_alive()
    if failed:
        raise failed[0]
    return out[0]


def test_nodes_started_on_worker_threads_outlive_them(tmp_path: Path) -> None:
    sup = Supervisor(
        tmp_path / "up",
        banks=1,
        accounts=0,
        etcd_members=1,
        durable=False,
        restart_delay=0.1,
        stable_after=1.0,
        log_level="info",
    )
    try:
        # start() on a thread that returns once the node listens
        assert _on_a_thread(lambda: sup.start(timeout=120)) is True
        bka = sup.banks["BKA"]
        member = sup.cluster.members[0]
        time.sleep(0.5)  # a child killed with its thread is dead by now
        assert bka.running(), f"BKA's node died with the thread that started it: {bka.proc}"
        assert member.running, "the etcd member died with the thread that started it"

        # run() on a worker thread restarts what dies, then returns (stop asked for)
        runner = threading.Thread(target=sup.run, kwargs={"poll": 0.05}, daemon=True)
        runner.start()
        old_node, old_member = bka.proc, member.proc
        assert old_node is not None and old_member is not None
        _process.kill9(old_node)
        _process.kill9(old_member)
        _wait(lambda: bka.proc is not old_node and _listens(bka), "BKA restarted", sup)
        _wait(lambda: member.running and member.proc is not old_member, "etcd restarted", sup)
        sup._stop.set()
        runner.join(30)
        assert not runner.is_alive()
        time.sleep(0.5)
        assert bka.running(), f"BKA's restarted node died with run()'s thread: {bka.proc}"
        assert member.running, "the restarted etcd member died with run()'s thread"
        node = bka.proc
        assert node is not None
    finally:
        sup.stop()
    # stopped by stop() (SIGTERM, a clean exit), not SIGKILLed by the kernel earlier
    assert node.returncode == 0, _process.exit_text(node.returncode) + _process.log_tail(
        bka.log_path
    )
    assert node.returncode != -signal.SIGKILL
