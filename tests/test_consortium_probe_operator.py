"""`hubi consortium ...` as a clumsy or unlucky operator runs it: a first `up` killed (SIGKILL)
while it makes its home, a signal while `up` starts, `status` and a second `up` while one sets
up, a bank's port taken by another program, HUBI_CONSORTIUM_CONFIG naming no file, and a
founder signing in its own home without the joining bank's matrix. Each failure names what is
wrong and what to do; nothing is left running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubi import kmc as kmc_mod
from hubi.consortium import service
from hubi.consortium.errors import ConsortiumError
from hubi.consortium.supervisor import Supervisor, init_home, status
from hubi.infra import _process

HUBI = [sys.executable, "-m", "hubi.cli"]

_KILL_AT = """
import os, signal, sys
from pathlib import Path
from hubi import kmc
from hubi.consortium.supervisor import Supervisor

def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)

point = sys.argv[2]
if point == "keys":  # between the first bank's keys and the second's
    calls = []
    real = kmc.write_secret
    def write_secret(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            die()
        return real(*a, **k)
    kmc.write_secret = write_secret
elif point == "trust":  # the consortium file is written, the layout not yet
    kmc.load_trust = die
elif point == "rename":  # the layout is written, the home not yet in place
    real_replace = Path.replace
    def replace(self, target):
        if self.name == "home.partial":
            die()
        return real_replace(self, target)
    Path.replace = replace
Supervisor(Path(sys.argv[1]), banks=2, accounts=0, etcd_members=1).prepare()
"""


@pytest.mark.parametrize("point", ["keys", "trust", "rename"])
def test_a_first_up_killed_while_it_makes_its_home_is_made_again(
    tmp_path: Path, point: str
) -> None:
    """It used to leave keys (or a consortium file without layout.json) that every later `up`
    refused for good; what a first run half made never ran, so it is made again."""
    r = subprocess.run(
        [sys.executable, "-c", _KILL_AT, str(tmp_path), point],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    sup = Supervisor(tmp_path, banks=2, accounts=0, etcd_members=1)
    try:
        sup.prepare()
    finally:
        sup.stop()
    root = tmp_path / "hubi-consortium"
    layout = json.loads((root / "layout.json").read_text())
    trust = kmc_mod.load_trust(root / "home" / "trust")
    assert [b for b, _ in layout["banks"]] == trust.consortium.bank_ids() == ["BKA", "BKB"]
    assert not (root / "home.partial").exists()


def _procs_with(text: str) -> list[int]:
    """Pids of the processes whose command line holds `text` (the test's folder)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and int(d.name) != os.getpid():
                out.append(int(d.name))
    return out


def _wait_for(cond: object, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_while_up_starts_stops_everything_at_once(tmp_path: Path, sig: int) -> None:
    """It used to go on starting, print that the consortium was up, then stop (SIGTERM); a
    closed terminal (SIGHUP) killed it and its banks with it, leaving up.json `running`."""
    folder = tmp_path / "f"
    folder.mkdir()
    proc = _process.spawn(
        [*HUBI, "consortium", "up", "--banks", "1", "--accounts", "0", "--no-fsync"],
        log_path=tmp_path / "up.log",
        cwd=folder,
    )
    try:
        member_log = folder / "hubi-consortium" / "etcd" / "m0.log"
        _wait_for(lambda: member_log.exists() or proc.poll() is not None, "etcd to start")
        assert proc.poll() is None, _process.log_tail(tmp_path / "up.log")
        proc.send_signal(sig)
        code = proc.wait(120)
        out = _process.log_tail(tmp_path / "up.log")
        assert code == 0, out
        assert "stopped during start-up" in out and "Ctrl-C stops everything" not in out, out
        doc = json.loads((folder / "hubi-consortium" / "up.json").read_text())
        assert doc["state"] == "stopped", doc
        _wait_for(lambda: not _procs_with(str(folder)), "no process left", 60)
    finally:
        _process.kill9(proc)
        for pid in _procs_with(str(folder)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_status_and_a_second_up_name_the_up_that_sets_up(tmp_path: Path) -> None:
    """An `up` holds the folder (here: this test) while up.json is a killed run's, or not
    written yet. Status said the old run's state (or to run `up` first), and a second `up`
    named the dead pid in up.json."""
    root = tmp_path / "hubi-consortium"
    root.mkdir()
    old = {"state": "running", "supervisor_pid": _dead_pid(), "home": str(root / "home")}
    (root / "up.json").write_text(json.dumps({**old, "banks": [], "etcd": []}))
    first = Supervisor(tmp_path, banks=1)
    first._lock_folder()
    try:
        st = status(tmp_path)
        assert st["state"] == "starting", st
        assert st["supervisor"] == {"pid": os.getpid(), "running": True}, st
        with pytest.raises(RuntimeError) as info:
            Supervisor(tmp_path, banks=1).prepare()
        assert f"(supervisor pid {os.getpid()})" in str(info.value), info.value
        (root / "up.json").unlink()
        with pytest.raises(FileNotFoundError) as missing:
            status(tmp_path)
        assert f"(pid {os.getpid()}) is still setting up" in str(missing.value), missing.value
        r = subprocess.run(
            [*HUBI, "consortium", "status"], cwd=tmp_path, capture_output=True, text=True
        )
        assert r.returncode == 2 and "is still setting up" in " ".join(r.stderr.split())
    finally:
        first._unlock_folder()


def test_a_port_taken_by_another_program_is_named_with_what_to_do(tmp_path: Path) -> None:
    """The message asked whether another `up` ran in this folder, which the folder lock had
    already ruled out; the layout is kept and the folder is free again."""
    root = tmp_path / "hubi-consortium"
    root.mkdir()
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        layout = json.dumps({"name": "hubi", "banks": [["BKA", port]]})
        (root / "layout.json").write_text(layout)
        with pytest.raises(RuntimeError) as info:
            Supervisor(tmp_path, banks=1).prepare()
    msg = str(info.value)
    assert f"old port {port} back, which another program holds" in msg, msg
    assert f"sport = :{port}" in msg and "running in this folder" not in msg, msg
    assert (root / "layout.json").read_text() == layout
    again = Supervisor(tmp_path, banks=1)
    again._lock_folder()  # not refused: the failed `up` let the folder go
    again._unlock_folder()


def test_hubi_consortium_config_naming_no_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo in HUBI_CONSORTIUM_CONFIG silently fell back to the consortium file's orderer."""
    trust = init_home(tmp_path / "home", ["BKA", "BKB"], seed=b"probe operator", orderer="etcd")
    missing = tmp_path / "no-such-config.json"
    monkeypatch.setenv(service.ENV_CONFIG, str(missing))
    with pytest.raises(ConsortiumError) as info:
        service.load_config(tmp_path / "home", "BKA", trust)
    assert f"{service.ENV_CONFIG} names {missing}, which does not exist" in str(info.value)


def test_a_founder_signing_in_its_own_home_is_told_to_copy_the_matrix(tmp_path: Path) -> None:
    """BKE joins in home A (where BKA's key is); BKB signs the pending epoch in its own home,
    which lacks BKE's matrix. It said only `[Errno 2] No such file or directory`."""
    a, b = tmp_path / "A", tmp_path / "B"
    init_home(a, ["BKA", "BKB"], seed=b"probe operator sign")
    shutil.copytree(a, b)
    shutil.rmtree(a / "banks" / "BKB")
    shutil.rmtree(b / "banks" / "BKA")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HUBI, "consortium", *args], capture_output=True, text=True, timeout=120
        )

    r = cli("join", "--home", str(a), "--bank", "BKE", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["missing"] == ["BKB"], r.stdout + r.stderr
    shutil.copy(a / "trust" / "pending-2.json", b / "trust" / "pending-2.json")
    r = cli("sign", "--home", str(b), "--bank", "BKB")
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "BKE.pub is missing: copy BKE.pub from trust/matrices/" in said, said
    assert kmc_mod.load_trust(b / "trust").consortium.epoch == 1  # nothing installed
    shutil.copy(a / "trust" / "matrices" / "BKE.pub", b / "trust" / "matrices" / "BKE.pub")
    r = cli("sign", "--home", str(b), "--bank", "BKB", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["installed"] is True, r.stdout + r.stderr


def test_status_after_up_was_killed_says_so(tmp_path: Path) -> None:
    """up.json still says `running` after a SIGKILL; the text said only `(running)`."""
    root = tmp_path / "hubi-consortium"
    root.mkdir()
    doc = {"state": "running", "supervisor_pid": _dead_pid(), "home": str(root / "home")}
    (root / "up.json").write_text(json.dumps({**doc, "banks": [], "etcd": []}))
    r = subprocess.run(
        [*HUBI, "consortium", "status"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    said = " ".join(r.stdout.split())
    assert r.returncode == 1 and "was killed without stopping: run it again" in said, r.stdout
