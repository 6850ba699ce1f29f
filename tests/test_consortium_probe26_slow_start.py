"""A bank node that `hubi consortium up` restarts and that is slow to listen (round 26).

The supervisor used to wait up to 60 s for a restarted node to listen, holding its lock: no other
bank node or etcd member was restarted meanwhile. A node that listened only after the 60 s was
never marked up, so its death, however much later, counted as a quick one (enough of those and
it is given up as `failed`). Now the restart is not waited for: each pass sees whether the node
listens, however late; one slow past `ready_timeout` is logged once and watched on.

Real supervisor, real etcd, real bank nodes. The slow start is real too: the restarted node's
interpreter waits, before it runs hubi at all, while its gate file exists (a sitecustomize on its
PYTHONPATH), so the test opens the gate when it is ready, not after a guessed time."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hubi.consortium.supervisor import Supervisor
from hubi.infra import _process

GATE_SITE = """\
import os, time
_dir = os.environ.get("HUBI_PROBE26_GATES")
with open("/proc/self/cmdline", "rb") as _f:
    _argv = _f.read().decode().split("\\0")
if _dir and "--bank" in _argv:  # a bank node: wait while its gate file exists
    _gate = os.path.join(_dir, _argv[_argv.index("--bank") + 1])
    while os.path.exists(_gate):
        time.sleep(0.05)
"""


def _wait(cond: Callable[[], object], what: str, sup: Supervisor, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        logs = [bp.log_path for bp in sup.banks.values()]
        assert time.monotonic() < deadline, f"timed out waiting for {what}: " + "\n".join(
            _process.log_tail(p, 10) for p in logs
        )
        time.sleep(0.02)


@pytest.mark.slow
def test_a_slow_restart_holds_nothing_up_and_counts_as_up_once_it_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GATE_SITE)
    gates = tmp_path / "gates"
    gates.mkdir()
    gate = gates / "BKA"
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(site) + (os.pathsep + path if path else ""))
    monkeypatch.setenv("HUBI_PROBE26_GATES", str(gates))
    caplog.set_level(logging.WARNING, logger="hubi.consortium.up")
    sup = Supervisor(
        tmp_path / "up",
        banks=2,
        accounts=0,
        etcd_members=1,
        durable=False,
        restart_delay=0.2,
        quick_failures=2,
        stable_after=3.0,
        ready_timeout=1.0,
    )
    runner = threading.Thread(target=sup.run, kwargs={"poll": 0.05}, daemon=True)
    try:
        assert sup.start(timeout=120)
        bka, bkb = sup.banks["BKA"], sup.banks["BKB"]
        runner.start()

        # BKA dies; its restart does not listen until the gate opens
        gate.touch()
        assert bka.proc is not None
        _process.kill9(bka.proc)
        _wait(lambda: bka.restarts == 1 and bka.running(), "BKA restarted", sup)
        _wait(
            lambda: any("BKA does not listen 1 s after" in r.getMessage() for r in caplog.records),
            "BKA's slow start logged",
            sup,
        )
        assert bka.up_since is None

        # meanwhile BKB dies: restarted at once, not a minute later once BKA's wait ends
        assert bkb.proc is not None
        _process.kill9(bkb.proc)
        killed = time.monotonic()
        _wait(lambda: bkb.restarts == 1 and bkb.up_since is not None, "BKB back", sup)
        assert time.monotonic() - killed < 30, "BKB waited for BKA's restart"
        assert bka.up_since is None and gate.exists()  # BKA still held at its gate

        # BKA listens at last, long after its restart: it is up
        gate.unlink()
        _wait(lambda: bka.up_since is not None, "BKA marked up", sup)
        assert bka.running() and bka.failed is None
        # it runs past stable_after, then dies: not a quick death (restarted after
        # restart_delay, its quick-death count back to 0), however long its start took
        _wait(lambda: time.monotonic() - bka.up_since > 3.5, "BKA to run past stable_after", sup)
        assert bka.proc is not None
        _process.kill9(bka.proc)
        _wait(lambda: bka.restarts == 2 and bka.up_since is not None, "BKA back again", sup)
        assert bka.failures == 0 and bka.delay == 0.2 and bka.failed is None
    finally:
        gate.unlink(missing_ok=True)
        sup.stop()
        runner.join(60)
    assert not runner.is_alive()


@pytest.mark.slow
def test_etcd_members_restarted_without_quorum_are_marked_up_once_healthy(
    tmp_path: Path,
) -> None:
    """The same for etcd members: with every member killed, the first one restarted cannot be
    healthy until a second one is back (no quorum), and the supervisor waited 30 s for it, lock
    held, before restarting the next; it then counted it as never up (a later death a quick
    one). Now the others are restarted meanwhile, and each member is marked up once healthy."""
    sup = Supervisor(
        tmp_path,
        banks=1,
        accounts=0,
        etcd_members=3,
        durable=False,
        restart_delay=0.2,
        quick_failures=3,
        stable_after=600.0,
    )
    runner = threading.Thread(target=sup.run, kwargs={"poll": 0.05}, daemon=True)
    try:
        assert sup.start(timeout=120)
        assert sup.cluster is not None
        runner.start()
        _wait(lambda: len(sup.members) == 3, "the members watched", sup)
        for m in sup.cluster.members:
            assert m.proc is not None
            _process.kill9(m.proc)
        watch = sup.members

        def all_up() -> bool:
            return all(
                m.running and watch[m.name].up_since is not None for m in sup.cluster.members
            )

        _wait(all_up, "every member back and marked up", sup)
        assert all(w.failed is None for w in watch.values())
        pids = [m.pid for m in sup.cluster.members]
        _wait(
            lambda: [m["pid"] for m in json.loads(sup.state_path.read_text())["etcd"]] == pids,
            "up.json to name the new pids",
            sup,
        )
    finally:
        sup.stop()
        runner.join(60)
    assert not runner.is_alive()
