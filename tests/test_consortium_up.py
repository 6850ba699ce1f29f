"""`hubi consortium up --banks N` and `hubi consortium status --json` as a user runs them: real
processes in a folder, a note settled between the banks, a bank node that hangs and an etcd
member killed (status says so), Ctrl-C (SIGINT) stops everything cleanly; a second `up` in the
same folder brings the same consortium back and restarts a bank node that dies; an `up` beside a
running one is refused and changes nothing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from hubi.infra import _process
from tests.consortium_support import load_accounts
from tests.mpy import ROOT
from tests.procs import alive, hang, wake

HUBI = [sys.executable, "-m", "hubi.cli"]


def _up(folder: Path, *extra: str) -> subprocess.Popen[bytes]:
    return _process.spawn(
        [*HUBI, "consortium", "up", "--banks", "2", "--accounts", "1", "--no-fsync", *extra],
        log_path=folder / "up.log",
        cwd=folder,
    )


def _wait_running(folder: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> dict:
    path = folder / "hubi-consortium" / "up.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("up exited:\n" + _process.log_tail(folder / "up.log"))
        if path.exists():
            doc = json.loads(path.read_text())
            if doc["state"] == "running" and doc["supervisor_pid"] == proc.pid:
                return doc
        time.sleep(0.2)
    raise AssertionError("up did not start:\n" + _process.log_tail(folder / "up.log"))


def _status(folder: Path) -> dict:
    r = subprocess.run(
        [*HUBI, "consortium", "status", "--json"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    st = json.loads(r.stdout)
    assert r.returncode == (0 if st["healthy"] else 1), r.stdout + r.stderr  # 1: look at it
    return st


def _idle(folder: Path, timeout: float = 30) -> dict:
    """Status once every bank has applied the same revision (nothing is being submitted)."""
    deadline = time.monotonic() + timeout
    while True:
        st = _status(folder)
        revs = {b.get("applied_revision") for b in st["banks"]}
        if len(revs) == 1 or time.monotonic() > deadline:
            assert len(revs) == 1, st["banks"]
            return st
        time.sleep(0.2)


def _sigint_and_wait(proc: subprocess.Popen[bytes], folder: Path) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        _process.kill9(proc)
        raise AssertionError(
            "up did not stop on SIGINT:\n" + _process.log_tail(folder / "up.log")
        ) from None
    assert code == 0, _process.log_tail(folder / "up.log")


@pytest.mark.slow
def test_up_status_and_ctrl_c(tmp_path: Path) -> None:
    proc = _up(tmp_path, "--no-restart")
    try:
        up = _wait_running(tmp_path, proc)
        st = _status(tmp_path)
        assert [b["id"] for b in st["banks"]] == ["BKA", "BKB"]
        assert len(st["etcd"]) == 3
        assert all(x["healthy"] is True for x in st["banks"] + st["etcd"]), st
        assert st["healthy"] is True and st["supervisor"]["running"] is True

        # an interbank note settles through the cluster
        acc = load_accounts(tmp_path / "hubi-consortium" / "home")
        note = acc["BKA-000001"].note("BKB-000001", 42)
        url = {b["id"]: b["url"] for b in up["banks"]}["BKB"]
        r = httpx.post(
            url + "/v1/notes",
            content=note,
            headers={"content-type": "application/octet-stream"},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["outcome"] == "booked", r.text
        # every bank put its applied mark at start; BKA, the lowest id, has the log forget
        pruning = {b["id"]: b["pruning"] for b in _status(tmp_path)["banks"]}
        assert {p["pruner"] for p in pruning.values()} == {"BKA"}
        assert all(isinstance(p["marked"], int) for p in pruning.values()), pruning

        # two banks at the same applied revision with different log hashes disagree about the
        # log: status marks both, naming the other (here BKB's hash is changed in its state
        # file while it runs, as a bank that judged an event otherwise would have it)
        st = _idle(tmp_path)
        assert not any(b.get("disagrees_with") for b in st["banks"]), st["banks"]
        state_db = tmp_path / "hubi-consortium" / "home" / "banks" / "BKB" / "consortium.db"
        with sqlite3.connect(state_db) as db:
            (kept,) = db.execute("SELECT value FROM meta WHERE key = 'log_hash'").fetchone()
            db.execute("UPDATE meta SET value = ? WHERE key = 'log_hash'", ("ab" * 32,))
        try:
            r = subprocess.run(
                [*HUBI, "consortium", "status", "--json"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert r.returncode == 1, r.stdout + r.stderr
            banks = {b["id"]: b for b in json.loads(r.stdout)["banks"]}
            assert banks["BKA"]["disagrees_with"] == ["BKB"], banks
            assert banks["BKB"]["disagrees_with"] == ["BKA"], banks
            assert not banks["BKA"]["healthy"] and "disagree" in banks["BKA"]["error"]
            text = subprocess.run(
                [*HUBI, "consortium", "status"], cwd=tmp_path, capture_output=True, text=True
            )
            assert text.returncode == 1 and text.stdout.count("disagrees") == 2, text.stdout
        finally:
            with sqlite3.connect(state_db) as db:
                db.execute("UPDATE meta SET value = ? WHERE key = 'log_hash'", (kept,))
        assert _idle(tmp_path)["healthy"] is True

        # BKA's node hangs (SIGSTOP) while BKB asks it to endorse a note BKA's customer pays:
        # status shows BKA not healthy, and BKB finding BKA stalled
        bka = up["banks"][0]["pid"]
        hang(bka)
        try:
            with ThreadPoolExecutor(1) as ex:
                waiting = ex.submit(
                    httpx.post,
                    url + "/v1/notes",
                    content=acc["BKA-000001"].note("BKB-000001", 7),
                    headers={"content-type": "application/octet-stream"},
                    timeout=30,
                )
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    st = _status(tmp_path)
                    if st["banks"][1].get("stalled_peers") == ["BKA"]:
                        break
                    time.sleep(0.3)
                assert st["banks"][1]["stalled_peers"] == ["BKA"], st["banks"]
                assert st["banks"][0]["healthy"] is False and st["healthy"] is False
                assert waiting.result().status_code == 503  # BKA never answered
        finally:
            wake(bka)

        # one etcd member killed: status names it unhealthy, the rest stay (or, if it led,
        # become healthy again after the election of a new leader)
        victim = st["etcd"][1]
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = _status(tmp_path)
            if [m["healthy"] for m in st["etcd"]] == [True, False, True]:
                break
            time.sleep(0.3)
        assert [m["healthy"] for m in st["etcd"]] == [True, False, True], st["etcd"]
        assert all(b["healthy"] for b in st["banks"])
        assert st["healthy"] is False

        pids = [b["pid"] for b in up["banks"]] + [m["pid"] for m in up["etcd"]]
        _sigint_and_wait(proc, tmp_path)
        assert not [p for p in pids if alive(p)], "processes left behind after Ctrl-C"
        doc = json.loads((tmp_path / "hubi-consortium" / "up.json").read_text())
        assert doc["state"] == "stopped"
        st = _status(tmp_path)
        assert not any(x["healthy"] for x in st["banks"] + st["etcd"])
        assert st["supervisor"]["running"] is False

        # the same folder again: same ports, the settled note is still there; a bank node that
        # dies is restarted by the supervisor
        proc = _up(tmp_path)
        up2 = _wait_running(tmp_path, proc)
        assert [b["url"] for b in up2["banks"]] == [b["url"] for b in up["banks"]]
        st = _status(tmp_path)
        assert st["healthy"] is True, st
        assert all(b["entries"] == {"settled": 1} for b in st["banks"]), st["banks"]
        # a second `up` while this one runs: refused before it touches anything (it used to
        # fail on a port, then mark the running consortium 'stopped' in up.json)
        again = subprocess.run(
            [*HUBI, "consortium", "up", "--banks", "2", "--no-fsync"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        said = " ".join((again.stdout + again.stderr).split())
        assert again.returncode == 2, said
        assert f"already running in {tmp_path} (supervisor pid {proc.pid})" in said, said
        doc = json.loads((tmp_path / "hubi-consortium" / "up.json").read_text())
        assert doc["state"] == "running" and doc["supervisor_pid"] == proc.pid
        assert _status(tmp_path)["healthy"] is True
        old = up2["banks"][0]["pid"]
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = _status(tmp_path)
            b0 = st["banks"][0]
            if b0["healthy"] and b0["pid"] != old:
                break
            time.sleep(0.5)
        assert st["banks"][0]["healthy"] and st["banks"][0]["pid"] != old, st["banks"]
        pids = [b["pid"] for b in st["banks"]] + [m["pid"] for m in st["etcd"]]
        _sigint_and_wait(proc, tmp_path)
        assert not [p for p in pids if alive(p)]
    finally:
        if proc.poll() is None:
            _process.stop(proc, first=signal.SIGINT, grace=30)


_ = ROOT


def test_damaged_state_files_are_named_not_a_traceback(tmp_path: Path) -> None:
    """up.json and layout.json are written by `up`; edited by hand or cut short they were a
    KeyError/TypeError traceback. Now the error names the file and what it lacks."""
    from hubi.consortium.supervisor import Supervisor, status

    root = tmp_path / "hubi-consortium"
    root.mkdir()
    for text, words in (
        ("{bad", "is damaged: not JSON"),
        ("[]", "is damaged: it needs home, banks, etcd"),
        ('{"home": "/x", "banks": 3, "etcd": []}', "is damaged: it needs home, banks, etcd"),
    ):
        (root / "up.json").write_text(text)
        with pytest.raises(RuntimeError, match=f"{root / 'up.json'} {words}"):
            status(tmp_path)
        r = subprocess.run(
            [*HUBI, "consortium", "status"], cwd=tmp_path, capture_output=True, text=True
        )
        assert r.returncode == 2 and words in " ".join(r.stderr.split()), r.stderr
    for text, words in (
        ('{"banks": 5}', "it needs banks"),
        ('{"banks": [["BKA", "8700"]]}', "banks must be pairs of a bank id and a port"),
    ):
        (root / "layout.json").write_text(text)
        with pytest.raises(RuntimeError, match=f"{root / 'layout.json'} is damaged: {words}"):
            Supervisor(tmp_path, banks=1).prepare()
    made = {p.name for p in root.iterdir()}
    assert not made & {"etcd", "home"}, made  # refused before any key or member was made
