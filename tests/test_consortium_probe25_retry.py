"""A part `hubi consortium up` gave up is tried again on its own (round 25): a bank node given up
as `failed` (its port taken by another program while it was down) stayed down until `up` was
restarted, even once the program had let the port go. Now the supervisor looks at the port
every `retry_failed` s (a bind test: the program holding it is sent nothing) and starts the node
again once it is free; a node that fails for another reason is tried again after
`retry_failed` s, twice as long after each try that fails. The same for an etcd member."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hubi.consortium.supervisor import Supervisor, status
from hubi.infra import _process
from tests.http_fakes import ok_server as _other_program

HUBI = [sys.executable, "-m", "hubi.cli"]


def _supervise_until(sup: Supervisor, cond: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 60
    while not cond():
        logs = [bp.log_path for bp in sup.banks.values()]
        assert time.monotonic() < deadline, f"timed out waiting for {what}: " + "\n".join(
            _process.log_tail(p, 10) for p in logs
        )
        sup.supervise_once()
        time.sleep(0.02)


def _status_when(folder: Path, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        st = status(folder, details=False)
        if ok(st) or time.monotonic() > deadline:
            return st
        time.sleep(0.2)


def _starts(log: Path) -> int:
    return log.read_text().count(" starting: ")


@pytest.mark.slow
def test_a_bank_given_up_for_a_taken_port_runs_again_once_the_port_is_free(
    tmp_path: Path,
) -> None:
    sup = Supervisor(
        tmp_path,
        banks=1,
        accounts=0,
        etcd_members=1,
        durable=False,
        restart_delay=0.2,
        quick_failures=2,
        stable_after=600.0,  # every death below is a quick one, however loaded the machine
        retry_failed=1.0,
    )
    other: ThreadingHTTPServer | None = None
    asked: list[str] = []
    try:
        assert sup.start(timeout=120)
        bka = sup.banks["BKA"]
        assert bka.proc is not None
        _process.kill9(bka.proc)
        other = _other_program(bka.port, asked)
        _supervise_until(sup, lambda: bka.failed is not None, "BKA to be given up")
        assert f"port {bka.port} is taken by another program" in bka.failed, bka.failed
        assert "tried again in 1 s, or once its port is free" in bka.failed, bka.failed
        restarts, starts = bka.restarts, _starts(bka.log_path)

        # while the program holds the port: looked at (three times or so), never started, and
        # the program is sent nothing, neither by the supervisor nor by `status`
        until = time.monotonic() + 3.5
        while time.monotonic() < until:
            sup.supervise_once()
            time.sleep(0.05)
        assert bka.failed is not None and not bka.running()
        assert bka.restarts == restarts and _starts(bka.log_path) == starts
        r = subprocess.run(
            [*HUBI, "consortium", "status"], cwd=tmp_path, capture_output=True, text=True
        )
        said = " ".join(r.stdout.split())
        assert r.returncode == 1 and "bank BKA" in said and "failed" in said, said + r.stderr
        assert "tried again in 1 s, or once its port is free" in said, said
        assert asked == []

        # the program lets the port go: the node runs again, without `up` restarted
        other.shutdown()
        other.server_close()
        other = None
        _supervise_until(sup, lambda: bka.running() and bka.up_since is not None, "BKA back")
        assert bka.failed is None and bka.restarts > restarts, _process.log_tail(bka.log_path)
        up = json.loads(sup.state_path.read_text())
        assert up["banks"][0]["pid"] == bka.proc.pid and "failed" not in up["banks"][0], up
        st = _status_when(tmp_path, lambda s: s["healthy"] is True)
        assert st["healthy"] is True and st["banks"][0]["healthy"] is True, st
        assert asked == []
    finally:
        if other is not None:
            other.shutdown()
            other.server_close()
        sup.stop()


@pytest.mark.slow
def test_a_bank_that_cannot_start_is_tried_again_ever_more_slowly(tmp_path: Path) -> None:
    """Its port free, but `hubi bank serve` refuses its command line (exit 2): tried again
    after retry_failed s, given up again at once, then twice as long; fixed, it runs."""
    sup = Supervisor(
        tmp_path,
        banks=1,
        accounts=0,
        etcd_members=1,
        durable=False,
        restart_delay=0.2,
        quick_failures=2,
        stable_after=600.0,
        retry_failed=1.0,
    )
    try:
        assert sup.start(timeout=120)
        bka = sup.banks["BKA"]
        bka.extra = ["--no-such-option"]
        assert bka.proc is not None
        _process.kill9(bka.proc)
        _supervise_until(sup, lambda: bka.failed is not None, "BKA to be given up")
        given_up = time.monotonic()
        assert "it exited with 2" in bka.failed and "tried again in 1 s" in bka.failed
        restarts = bka.restarts
        _supervise_until(sup, lambda: bka.restarts > restarts, "BKA to be tried again")
        assert time.monotonic() - given_up >= 1.0
        # that try failed too: given up again at once, the next try twice as late
        _supervise_until(sup, lambda: bka.failed is not None, "BKA to be given up again")
        assert bka.restarts == restarts + 1, bka.restarts
        assert "tried again in 2 s" in bka.failed, bka.failed
        again = time.monotonic()
        bka.extra = []  # the operator fixed it
        _supervise_until(sup, lambda: bka.running() and bka.up_since is not None, "BKA back")
        assert time.monotonic() - again >= 2.0 and bka.failed is None
        st = _status_when(tmp_path, lambda s: s["healthy"] is True)
        assert st["banks"][0]["healthy"] is True, st
    finally:
        sup.stop()


@pytest.mark.slow
def test_an_etcd_member_given_up_for_a_taken_port_runs_again_once_it_is_free(
    tmp_path: Path,
) -> None:
    sup = Supervisor(
        tmp_path,
        banks=1,
        accounts=0,
        etcd_members=3,
        durable=False,
        restart_delay=0.2,
        quick_failures=2,
        stable_after=600.0,
        retry_failed=1.0,
    )
    other = socket.socket()
    try:
        assert sup.start(timeout=120)
        assert sup.cluster is not None
        m1 = sup.cluster.members[1]
        sup.cluster.kill(1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", m1.client_port))
        other.listen()
        _supervise_until(
            sup, lambda: sup.members.get("m1") and sup.members["m1"].failed, "m1 given up"
        )
        w = sup.members["m1"]
        assert f"port {m1.client_port} is taken by another program" in (w.failed or "")
        starts = _starts(m1.log_path)
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            sup.supervise_once()
            time.sleep(0.05)
        assert w.failed is not None and _starts(m1.log_path) == starts and not m1.running
        other.close()
        _supervise_until(sup, lambda: m1.running and w.failed is None, "m1 back")
        st = _status_when(tmp_path, lambda s: s["healthy"] is True)
        assert [m["healthy"] for m in st["etcd"]] == [True, True, True], st["etcd"]
        assert "failed" not in json.loads(sup.state_path.read_text())["etcd"][1]
    finally:
        other.close()
        sup.stop()


@pytest.mark.slow
def test_a_shell_hubi_db_does_not_reach_the_bank_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hubi bank serve` takes --db from HUBI_DB: one left set in the operator's shell had
    every node of `up` serve that database (or die for its lack) instead of its own."""
    elsewhere = tmp_path / "my-own-bank.db"
    monkeypatch.setenv("HUBI_DB", f"sqlite:///{elsewhere}")
    sup = Supervisor(tmp_path / "c", banks=1, accounts=0, etcd_members=1, durable=False)
    try:
        assert sup.start(timeout=120)
        st = _status_when(tmp_path / "c", lambda s: s["healthy"] is True)
        assert st["banks"][0]["healthy"] is True, st
        assert not elsewhere.exists()
    finally:
        sup.stop()
