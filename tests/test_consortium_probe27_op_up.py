"""`hubi consortium up` as a hostile operator runs it (round 27): a first `up` cut off after it
made its home but before etcd first started (SIGKILL while it opens demo accounts) left a
consortium file naming etcd members on ports the next `up` no longer used (the cluster, never
started, was laid out anew), and `up --dir` given a path inside another consortium's state
folder made a second consortium, new keys and all, among that one's files; and `status` took
a live process of up.json's pid (reused since an `up` was killed) for the supervisor."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("test_consortium_probe27_op_up")

HUBI = [sys.executable, "-m", "hubi.cli", "consortium"]


def _wait_for(cond: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _up(folder: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*HUBI, "up", "--dir", str(folder), "--no-fsync", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _first_run_killed_before_etcd(folder: Path) -> None:
    """A first `up` SIGKILLed once layout.json is written, while it opens demo accounts (many:
    etcd is started only after them)."""
    proc = _up(folder, "--banks", "2", "--accounts", "400")
    try:
        _wait_for((folder / "hubi-consortium" / "layout.json").exists, "layout.json")
    finally:
        proc.kill()
        proc.wait()
    assert not (folder / "hubi-consortium" / "etcd" / "m0" / "member").exists()


def test_a_first_up_killed_before_etcd_started_keeps_the_etcd_urls_it_signed(
    tmp_path: Path,
) -> None:
    _first_run_killed_before_etcd(tmp_path)
    home = tmp_path / "hubi-consortium" / "home"
    proc = _up(tmp_path, "--banks", "2", "--accounts", "1", "--json")
    try:
        up_json = tmp_path / "hubi-consortium" / "up.json"
        _wait_for(
            lambda: up_json.exists() and json.loads(up_json.read_text())["state"] == "running",
            "the second up to run",
        )
        running = [m["url"] for m in json.loads(up_json.read_text())["etcd"]]
        cons = json.loads((home / "trust" / "consortium.json").read_text())
        named = {b["id"]: b["etcd"] for b in cons["banks"]}
        # each bank's etcd member in the signed file is one that runs (BKA m0, BKB m1)
        assert named == {"BKA": [running[0]], "BKB": [running[1]]}, (named, running)
        show = subprocess.run(
            [*HUBI, "show", "--home", str(home), "--json"], capture_output=True, timeout=60
        )
        assert show.returncode == 0, show.stderr
        assert all(u in running for b in json.loads(show.stdout)["banks"] for u in b["etcd"])
        st = subprocess.run([*HUBI, "status", "--dir", str(tmp_path)], capture_output=True)
        assert st.returncode == 0, st.stdout + st.stderr
    finally:
        _stop(proc)
    assert proc.returncode == 0, proc.stderr


def test_up_with_a_dir_inside_another_consortiums_state_is_refused(tmp_path: Path) -> None:
    _first_run_killed_before_etcd(tmp_path)
    state = tmp_path / "hubi-consortium"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for inside in (state, state / "home", state / "home" / "banks" / "BKA"):
        r = subprocess.run(
            [*HUBI, "up", "--dir", str(inside), "--banks", "1", "--accounts", "0", "--json"],
            capture_output=True,
            timeout=30,  # the old code started a new consortium there (and ran on)
        )
        assert r.returncode == 2, (inside, r.stdout, r.stderr)
        doc = json.loads(r.stdout)
        assert doc["error"] == "RuntimeError"
        assert f"--dir {tmp_path}" in doc["message"], doc["message"]
        # `status --dir` given the state folder: the folder to give instead, not "no consortium"
        r = subprocess.run(
            [*HUBI, "status", "--dir", str(inside), "--json"], capture_output=True, timeout=60
        )
        assert r.returncode == 2, (inside, r.stdout, r.stderr)
        assert f"pass --dir {tmp_path}" in json.loads(r.stdout)["message"], r.stdout
    # nothing made among the other consortium's files (no nested hubi-consortium, no keys)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_status_does_not_take_a_reused_pid_for_the_supervisor(tmp_path: Path) -> None:
    """up.json of an `up` killed without stopping (a power cut), its pid since reused by
    another program (here a sleep): nobody holds up.lock, so no supervisor runs. Status said
    the supervisor was running and left out the hint to run `up` again."""
    root = tmp_path / "hubi-consortium"
    root.mkdir()
    other = subprocess.Popen(["sleep", "60"])
    try:
        doc = {"state": "running", "supervisor_pid": other.pid, "home": str(root / "home")}
        (root / "up.json").write_text(json.dumps({**doc, "banks": [], "etcd": []}))
        (root / "up.lock").write_text(f"{other.pid}\n")  # the killed run's, held by nobody
        r = subprocess.run(
            [*HUBI, "status", "--dir", str(tmp_path), "--json"], capture_output=True, timeout=60
        )
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert json.loads(r.stdout)["supervisor"] == {"pid": other.pid, "running": False}
        r = subprocess.run(
            [*HUBI, "status", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60
        )
        text = " ".join(r.stdout.split())
        assert r.returncode == 1 and f"pid {other.pid} gone" in text, text
        assert "was killed without stopping" in text, text
    finally:
        other.kill()
        other.wait()
