"""`hubi consortium up` and its children under signals (round 28), with real runs: the
supervisor, etcd members and bank nodes are real processes, the notes real uploads.

Round 25 SIGKILLed the supervisor once it ran. Here: a child killed while `up` starts (it
ended the whole `up`, exit 2, though `up` restarts a child that dies later; now it is started
again); SIGTERM/SIGHUP/SIGINT to the supervisor while notes settle, after the payer's bank's
node was SIGKILLed and restarted, and while an etcd member is restarted; SIGTERM to a bank node
whose etcd cluster has lost its quorum (it took 22 s to stop, and `up` killed it at 15 s).
Afterwards: every process the runs started is gone, every port is free, the next `up` in the
folder runs without any clean-up, every note answered `booked` is settled exactly once at both
banks, and the last words name the signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hubi.bank.auth import bank_signer
from hubi.consortium.supervisor import lock_holder
from hubi.infra import _process
from hubi.infra.ports import port_taken
from hubi_core import codec
from tests.consortium_support import load_accounts
from tests.procs import alive
from tests.procs import procs_with as _procs_with
from tests.procs import wait_for as _wait_for

pytestmark = pytest.mark.xdist_group("test_consortium_probe28_signals")

HUBI = [sys.executable, "-m", "hubi.cli"]
FUNDS = 1_000_000  # `up`'s default for each demo account


def _up_json(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "hubi-consortium" / "up.json").read_text())
    except (OSError, ValueError):
        return None


def _up(folder: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`up` in `folder`, its output in FOLDER/up-<n>.log (a file per run)."""
    log = folder / f"up-{len(list(folder.glob('up-*.log')))}.log"
    proc = _process.spawn(
        [*HUBI, "consortium", "up", "--banks", "2", "--no-fsync", *extra], log_path=log, cwd=folder
    )
    LOGS[proc.pid] = log
    return proc


LOGS: dict[int, Path] = {}  # each `up`'s log, by its pid


def _log(proc: subprocess.Popen[bytes]) -> str:
    return _process.log_tail(LOGS[proc.pid], 60)


def _running(folder: Path, proc: subprocess.Popen[bytes]) -> dict[str, Any] | None:
    """up.json once this `up` runs and has said so (signalled before, it says it stopped
    during start-up); AssertionError with its log if it ended instead."""
    assert proc.poll() is None, f"up exited {proc.returncode}:\n" + _log(proc)
    d = _up_json(folder)
    if d and d["state"] == "running" and d["supervisor_pid"] == proc.pid:
        return d if "Ctrl-C stops everything" in _log(proc) else None
    return None


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send `sig` to `up`: exit 0, naming the signal in its last words."""
    proc.send_signal(sig)
    assert proc.wait(60) == 0, _log(proc)
    said = _log(proc)
    assert f"consortium stopped by {sig.name}" in said and "Traceback" not in said, said


def _nothing_left(folder: Path, pids: set[int], ports: set[int]) -> None:
    """No process of the runs alive, no port of the layout bound, up.lock free, up.json
    `stopped`, no ready file: what would stop the next `up`, or need a hand."""
    left = {p: c for p, c in _procs_with(str(folder)).items()}
    assert not left, left
    assert not [p for p in pids if alive(p)], pids
    assert not [p for p in ports if port_taken(p)], ports
    root = folder / "hubi-consortium"
    assert lock_holder(root) is None
    assert _up_json(folder)["state"] == "stopped"  # type: ignore[index]
    assert not list((root / "run").glob("*.ready"))


def _ports(up: dict[str, Any]) -> set[int]:
    return {int(x["url"].rsplit(":", 1)[1]) for x in up["banks"] + up["etcd"]}


def _pids(up: dict[str, Any]) -> set[int]:
    return {x["pid"] for x in up["banks"] + up["etcd"] if x["pid"]}


@pytest.mark.slow
def test_children_killed_while_up_starts_are_started_again(tmp_path: Path) -> None:
    """An etcd member SIGKILLed as the cluster forms and a bank node SIGTERMed before it
    listens: `up` ended with exit 2 and a RuntimeError; now each is started again, `up` runs,
    and a SIGHUP (its terminal closed) stops it all."""
    proc = _up(tmp_path, "--accounts", "0")
    killed: dict[str, int] = {}
    seen: set[int] = set()
    try:

        def kill_children() -> dict[str, Any] | None:
            found = _procs_with(str(tmp_path))
            seen.update(found)
            for what, sig in (("etcd --name m1 ", signal.SIGKILL), ("bank serve", signal.SIGTERM)):
                pid = next((p for p, c in found.items() if what in c), None)
                if what not in killed and pid is not None:
                    os.kill(pid, sig)
                    killed[what] = pid
            return _running(tmp_path, proc)

        up = _wait_for(kill_children, "up to run", timeout=90)
        assert len(killed) == 2, killed
        said = " ".join(_log(proc).split())
        assert "etcd member m1 was killed by SIGKILL while the cluster started; starting it" in said
        assert "was killed by SIGTERM before it listened; starting it again" in said, said
        assert not set(killed.values()) & _pids(up)  # each runs anew
        assert all(alive(p) for p in _pids(up)), up
        seen |= _pids(up)
        _stop(proc, signal.SIGHUP)
        _nothing_left(tmp_path, seen, _ports(up))

        # the next `up` in the folder runs as it is
        proc = _up(tmp_path, "--accounts", "0")
        up = _wait_for(lambda: _running(tmp_path, proc), "the next up to run", timeout=90)
        _stop(proc, signal.SIGTERM)
        _nothing_left(tmp_path, seen | _pids(up), _ports(up))
    finally:
        if proc.poll() is None:
            _process.kill9(proc)
        for p in _procs_with(str(tmp_path)):
            os.kill(p, signal.SIGKILL)


class _Payer(threading.Thread):
    """Pays BKA-000001 -> BKB-000001 one unit at a time at BKB (the payee's bank, as a
    merchant uploads), keeping each note's serial and the answer."""

    def __init__(self, home: Path, url: str):
        super().__init__(daemon=True)
        self.account = load_accounts(home)["BKA-000001"]
        self.url = url
        self.replies: list[tuple[int, int | None, str]] = []  # serial, HTTP status, outcome
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.halt.is_set():
                note = self.account.note("BKB-000001", 1)
                serial = self.account.serial
                try:
                    r = http.post(
                        self.url + "/v1/notes",
                        content=note,
                        headers={"content-type": "application/octet-stream"},
                    )
                    outcome = r.json().get("outcome", "") if r.status_code == 200 else ""
                    self.replies.append((serial, r.status_code, outcome))
                except (httpx.HTTPError, ValueError) as exc:
                    self.replies.append((serial, None, type(exc).__name__))
                    time.sleep(0.05)

    def booked(self) -> list[int]:
        return [s for s, code, outcome in list(self.replies) if code == 200 and outcome == "booked"]


@pytest.mark.slow
def test_sigterm_while_notes_settle_and_members_restart_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    proc = _up(tmp_path, "--accounts", "1")
    payer: _Payer | None = None
    try:
        up = _wait_for(lambda: _running(tmp_path, proc), "up to run", timeout=90)
        seen, ports = _pids(up), _ports(up)
        home = tmp_path / "hubi-consortium" / "home"
        urls = {b["id"]: b["url"] for b in up["banks"]}
        payer = _Payer(home, urls["BKB"])
        payer.start()
        _wait_for(lambda: len(payer.booked()) >= 5, "notes to settle")

        # the payer's bank's node is SIGKILLed mid-stream and restarted by `up`
        old = up["banks"][0]["pid"]
        os.kill(old, signal.SIGKILL)

        def bka_back() -> dict[str, Any] | None:
            d = _up_json(tmp_path)
            pid = d["banks"][0]["pid"] if d else None
            return d if pid not in (None, old) and alive(pid) else None

        up = _wait_for(bka_back, "BKA's node to be restarted")
        seen |= _pids(up)
        before = len(payer.booked())
        _wait_for(lambda: len(payer.booked()) >= before + 3, "notes to settle again")

        # an etcd member SIGKILLed, then SIGTERM to `up` while it restarts it and notes are in
        # flight (a cluster without quorum is the last test's)
        os.kill(up["etcd"][2]["pid"], signal.SIGKILL)
        time.sleep(1.2)  # `up` restarts a member 1 s or 2 s after its death
        seen |= _pids(_up_json(tmp_path) or up)
        seen |= set(_procs_with(str(tmp_path)))
        _stop(proc, signal.SIGTERM)
        payer.halt.set()
        payer.join(60)
        _nothing_left(tmp_path, seen, ports)

        # the next `up` runs as it is; every note answered `booked` is settled at both banks
        proc = _up(tmp_path, "--accounts", "1")
        up = _wait_for(lambda: _running(tmp_path, proc), "the next up to run", timeout=90)

        def get(bank: str, path: str) -> httpx.Response:
            headers = bank_signer(home, bank).headers(bank, "GET", path)
            return httpx.get(urls[bank] + path, headers=headers, timeout=10)

        def caught_up() -> dict[str, Any] | None:
            st = {b: get(b, "/v1/consortium/status").json() for b in urls}
            revs = {s["applied_revision"] for s in st.values()}
            idle = not any(s["entries"].get("ordered") for s in st.values())
            return st if len(revs) == 1 and idle else None

        st = _wait_for(caught_up, "both banks to apply the whole log")
        assert st["BKA"]["log_hash"] == st["BKB"]["log_hash"], st
        booked = payer.booked()
        assert len(booked) >= 8, payer.replies
        for serial in booked:
            nid = codec.note_id("BKA-000001", serial).hex()
            for bank in urls:
                r = get(bank, f"/v1/consortium/entries/{nid}")
                assert r.status_code == 200 and r.json()["state"] == "settled", (bank, r.text)
        # exactly once: each bank's books moved by the notes it settled, no more
        settled = st["BKA"]["entries"]["settled"]
        assert settled == st["BKB"]["entries"]["settled"] >= len(booked), st
        for account, sign in (("BKA-000001", -1), ("BKB-000001", 1)):
            r = get(account[:3], f"/v1/accounts/{account}")
            assert int(r.json()["balance"]) == FUNDS + sign * settled, r.text
        _stop(proc, signal.SIGINT)
        _nothing_left(tmp_path, seen | _pids(up), ports)
    finally:
        if payer is not None:
            payer.halt.set()
        if proc.poll() is None:
            _process.kill9(proc)
        for p in _procs_with(str(tmp_path)):
            os.kill(p, signal.SIGKILL)


@pytest.mark.slow
def test_a_bank_node_whose_etcd_lost_quorum_stops_within_the_supervisors_grace(
    tmp_path: Path,
) -> None:
    """SIGTERM to a bank node while two of the three etcd members are dead and uploads wait
    on their claims: its threads' etcd calls (its applied mark, checkpoints) retried for 15 s
    and its close waited for them, 22 s in all, past the 15 s `up` gives a node before it
    kills it. Now they give up once the node stops: the uploads' own grace (10 s) and one
    etcd request at most."""
    proc = _up(tmp_path, "--accounts", "1", "--no-restart")
    payers: list[_Payer] = []
    try:
        up = _wait_for(lambda: _running(tmp_path, proc), "up to run", timeout=90)
        home = tmp_path / "hubi-consortium" / "home"
        payers = [_Payer(home, up["banks"][1]["url"]) for _ in range(2)]
        for p in payers:
            p.start()
        _wait_for(lambda: sum(len(p.booked()) for p in payers) >= 3, "notes to settle")
        for m in (up["etcd"][0], up["etcd"][2]):  # not restarted (--no-restart)
            os.kill(m["pid"], signal.SIGKILL)
        time.sleep(1.5)  # uploads now wait on claims that no quorum answers
        bkb = up["banks"][1]["pid"]
        t0 = time.monotonic()
        os.kill(bkb, signal.SIGTERM)
        _wait_for(lambda: not alive(bkb), "BKB's node to exit", timeout=60)
        took = time.monotonic() - t0
        assert took < 18.0, f"BKB's node took {took:.1f} s to stop"
        for p in payers:
            p.halt.set()
        _stop(proc, signal.SIGINT)
        _nothing_left(tmp_path, _pids(up), _ports(up))
    finally:
        for p in payers:
            p.halt.set()
        if proc.poll() is None:
            _process.kill9(proc)
        for p in _procs_with(str(tmp_path)):
            os.kill(p, signal.SIGKILL)
