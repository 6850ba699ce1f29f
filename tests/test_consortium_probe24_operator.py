"""`hubi consortium up` as an unlucky operator meets it (round 24): a bank node whose port
another program took while it was down (restarted every second for ever; now ever more slowly,
then given up and shown `failed` with the port, the others kept running), a Ctrl-C while `up`
prepares many demo accounts or while etcd starts (acted on only when that step ended; now at
once), and `up` killed while it opens a demo account (an account without its key, or never
funded; now the key is kept first, and the next `up` finishes the account). Also: the same for
an etcd member, hand-edited layout.json / etcd cluster.json and HUBI_PORT_RANGE (tracebacks),
a later `up` naming the home's consortium wrongly, and `status` trusting a killed run's
up.lock."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hubi import kmc as kmc_mod
from hubi.bank.engine import BankEngine
from hubi.consortium.supervisor import Supervisor, setup_bank, status
from hubi.infra import _process
from hubi_core import codec, ec, suite, verify
from tests.http_fakes import ok_server as _other_program
from tests.procs import alive, hang

HUBI = [sys.executable, "-m", "hubi.cli"]


def _wait_for(cond: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _status_when(
    folder: Path, ok: Callable[[dict], bool], *, details: bool = True
) -> dict[str, Any]:
    """status(folder) once `ok` holds of it (or the last one after 60 s, for the asserts to
    name): a part's health check has 2 s, and an etcd member killed while it led leaves the
    others unhealthy until they elect a leader (a second or more, longer when loaded)."""
    deadline = time.monotonic() + 60
    while True:
        st = status(folder, details=details)
        if ok(st) or time.monotonic() > deadline:
            return st
        time.sleep(0.2)


def _procs_with(text: str) -> list[int]:
    """Pids of live processes whose command line holds `text` (the test's folder)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and alive(int(d.name)):
                out.append(int(d.name))
    return out


def _kill_all(folder: Path) -> None:
    for pid in _procs_with(str(folder)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ------------------------------------------------------------------ a port taken while down


@pytest.mark.slow
def test_a_bank_whose_port_is_taken_is_given_up_and_named_the_others_run(
    tmp_path: Path,
) -> None:
    sup = Supervisor(
        tmp_path,
        banks=2,
        accounts=0,
        etcd_members=1,
        durable=False,
        restart_delay=0.2,
        quick_failures=3,
        stable_after=600.0,  # every death below is a quick one, however loaded the machine
    )
    other: ThreadingHTTPServer | None = None
    asked: list[str] = []
    try:
        assert sup.start(timeout=120)
        bka, bkb = sup.banks["BKA"], sup.banks["BKB"]
        # BKA's node dies and another program (an HTTP server saying it is fine) binds its
        # port before the restart
        assert bka.proc is not None
        _process.kill9(bka.proc)
        other = _other_program(bka.port, asked)
        spawned: list[float] = []
        deadline = time.monotonic() + 60
        while bka.failed is None:
            assert time.monotonic() < deadline, f"still restarted: {bka.restarts} restarts"
            before = bka.restarts
            sup.supervise_once()
            if bka.restarts != before:
                spawned.append(time.monotonic())
            time.sleep(0.02)
        # each quick failure waits twice as long as the one before (0.4 s, then 0.8 s), and
        # the third in a row gives it up: two restarts, not one a second for ever
        assert len(spawned) == 2 and bka.restarts == 2, spawned
        assert spawned[1] - spawned[0] >= 0.8, spawned
        assert f"port {bka.port} is taken by another program" in bka.failed, bka.failed
        assert f"sport = :{bka.port}" in bka.failed
        # given up: no more restarts, and the other bank runs on
        stop_at = time.monotonic() + 1.0
        while time.monotonic() < stop_at:
            sup.supervise_once()
            time.sleep(0.05)
        assert bka.restarts == 2 and not bka.running()
        st = _status_when(tmp_path, lambda s: s["banks"][1]["healthy"] is True)
        a, b = st["banks"]
        assert a["healthy"] is False and "is taken by another program" in a["failed"], a
        assert asked == []  # the other program is not asked for BKA's health, nor signed for
        assert a["error"] == a["failed"]
        assert b["healthy"] is True and "failed" not in b, b
        assert st["healthy"] is False
        r = subprocess.run(
            [*HUBI, "consortium", "status"], cwd=tmp_path, capture_output=True, text=True
        )
        said = " ".join(r.stdout.split())
        assert r.returncode == 1, r.stdout + r.stderr  # a failed bank is not healthy
        assert "bank BKA" in said and "failed" in said, said
        assert f"port {bka.port} is taken by another program" in said, said
        assert asked == []

        # a bank that ran fine for a while, then died, is restarted after restart_delay
        sup.stable_after = 1.0
        _wait_for(
            lambda: bkb.up_since is not None and time.monotonic() - bkb.up_since > 1.5,
            "BKB to run past stable_after",
        )
        old = bkb.proc.pid if bkb.proc else None
        assert bkb.proc is not None
        _process.kill9(bkb.proc)
        _wait_for(lambda: sup.supervise_once() == ["BKB"], "BKB to be restarted")
        assert bkb.running() and bkb.proc is not None and bkb.proc.pid != old
        assert bkb.failures == 0 and bkb.delay == 0.2 and bkb.failed is None
    finally:
        if other is not None:
            other.shutdown()
            other.server_close()
        sup.stop()
    assert json.loads(sup.state_path.read_text())["state"] == "stopped"


# ------------------------------------------------------------------ a signal while preparing


def _up(folder: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return _process.spawn(
        [*HUBI, "consortium", "up", "--banks", "1", "--no-fsync", *extra],
        log_path=log,
        cwd=folder,
    )


def _check_stopped_at_once(proc: subprocess.Popen[bytes], log: Path, sig: int) -> str:
    """Send `sig`; `up` must be gone within 20 s (the step it is in would last far longer)."""
    proc.send_signal(sig)
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            "up did not stop within 20 s of the signal:\n" + _process.log_tail(log)
        ) from None
    out = _process.log_tail(log)
    assert code == 0, out
    assert "stopped during start-up: nothing is left running" in out, out
    assert "Traceback" not in out, out
    return out


@pytest.mark.slow
def test_ctrl_c_while_up_makes_many_accounts_stops_at_once(tmp_path: Path) -> None:
    """`--accounts 100000` takes many minutes; the Ctrl-C was acted on only at its end."""
    folder = tmp_path / "f"
    folder.mkdir()
    log = tmp_path / "up.log"
    accounts = folder / "hubi-consortium" / "home" / "accounts"
    proc = _up(folder, log, "--accounts", "100000")
    try:
        _wait_for(
            lambda: proc.poll() is not None or len(list(accounts.glob("*.json"))) >= 3,
            "demo accounts to be made",
            120,
        )
        assert proc.poll() is None, _process.log_tail(log)
        _check_stopped_at_once(proc, log, signal.SIGINT)
        _wait_for(lambda: not _procs_with(str(folder)), "no process left")
    finally:
        _process.kill9(proc)
        _kill_all(folder)
    # what it made is consistent: every opened account has its key and its funds, and the
    # next run takes up where it stopped
    made = sorted(p.stem for p in accounts.glob("*.json"))
    sup = Supervisor(folder, banks=1, accounts=len(made) + 1, etcd_members=3, durable=False)
    try:
        sup.prepare()  # the folder is free again, the layout kept
    finally:
        sup.stop()
    _check_demo_accounts(folder / "hubi-consortium" / "home", "BKA", len(made) + 1, 1_000_000)


@pytest.mark.slow
def test_ctrl_c_while_etcd_starts_stops_at_once(tmp_path: Path) -> None:
    """A member that does not come up (hung here) kept `up` in etcd's start for 30 s after
    the Ctrl-C; now it stops the members at once and says so."""
    folder = tmp_path / "f"
    folder.mkdir()
    log = tmp_path / "up.log"
    member = str(folder / "hubi-consortium" / "etcd" / "m0")
    proc = _up(folder, log, "--accounts", "0")
    try:
        _wait_for(lambda: proc.poll() is not None or _procs_with(member), "etcd m0 to start", 120)
        assert proc.poll() is None, _process.log_tail(log)
        hang(_procs_with(member)[0])
        _check_stopped_at_once(proc, log, signal.SIGTERM)
        _wait_for(lambda: not _procs_with(str(folder)), "no process left")
        doc = json.loads((folder / "hubi-consortium" / "up.json").read_text())
        assert doc["state"] == "stopped", doc
    finally:
        _process.kill9(proc)
        _kill_all(folder)
    # the folder is free and whole: the next `up` starts
    proc = _up(folder, log, "--accounts", "1")
    try:
        path = folder / "hubi-consortium" / "up.json"
        _wait_for(
            lambda: proc.poll() is not None or json.loads(path.read_text())["state"] == "running",
            "the next up to run",
            120,
        )
        assert proc.poll() is None, _process.log_tail(log)
        assert _status_when(folder, lambda s: s["healthy"], details=False)["healthy"] is True
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, _process.log_tail(log)
    finally:
        _process.kill9(proc)
        _kill_all(folder)


# ------------------------------------------------------------------ killed while opening


_KILL_AT = """
import os, signal, sys
from pathlib import Path
from hubi.bank.engine import BankEngine
from hubi.consortium.supervisor import init_home, setup_bank

home, point = Path(sys.argv[1]), sys.argv[2]
init_home(home, ["BKA"], seed=b"probe24 keys")
setup_bank(home, "BKA", 1, 500)  # one account made whole before

def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)

real_open = BankEngine.open_account
if point == "opened":  # the second account is open in the database, nothing more
    def open_account(self, tpl, *a, **k):
        info = real_open(self, tpl, *a, **k)
        if tpl["account"] == "BKA-000002":
            die()
        return info
    BankEngine.open_account = open_account
elif point == "before-open":  # about to open it
    def open_account(self, tpl, *a, **k):
        if tpl["account"] == "BKA-000002":
            die()
        return real_open(self, tpl, *a, **k)
    BankEngine.open_account = open_account
setup_bank(home, "BKA", 3, 500)
"""


def _check_demo_accounts(home: Path, bank: str, count: int, funds: int) -> None:
    """Each of the bank's `count` demo accounts is open, funded once, and its key file holds
    the key its Template seals."""
    trust = kmc_mod.load_trust(home / "trust")
    db = str(kmc_mod.bank_dir(home, bank) / "bank.db")
    with BankEngine.open(db, home=home, bank=bank, trust=trust) as eng:
        for i in range(1, count + 1):
            acct = f"{bank}-{i:06d}"
            info = eng.account(acct)
            assert info is not None, f"{acct} not opened"
            path = home / "accounts" / f"{acct}.json"
            assert path.exists(), f"{acct} has no key file"
            assert path.stat().st_mode & 0o077 == 0
            doc = json.loads(path.read_text())
            assert doc["template"] == bytes(info.template).hex(), acct
            tpl = codec.decode(bytes(info.template), codec.TEMPLATE)
            sealed = ec.encode_point(ec.decode_point(verify.template_key(tpl, trust)), True)
            assert sealed == suite.public_key(int(doc["key"], 16), compressed=True), acct
            assert eng.balance(acct) == funds, acct
            assert eng.head(acct).n == 1, acct  # funded once, not again on the rerun


@pytest.mark.parametrize("point", ["opened", "before-open"])
def test_setup_killed_while_it_opens_an_account_is_finished_next_time(
    tmp_path: Path, point: str
) -> None:
    """Killed after the account was opened, it had no key file (the key was written after)
    and was never funded: every later run skipped it."""
    home = tmp_path / "home"
    r = subprocess.run(
        [sys.executable, "-c", _KILL_AT, str(home), point],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    trust = kmc_mod.load_trust(home / "trust")
    assert setup_bank(home, "BKA", 3, 500, trust=trust) == [f"BKA-00000{i}" for i in (1, 2, 3)]
    _check_demo_accounts(home, "BKA", 3, 500)


def test_a_damaged_kept_key_file_is_named(tmp_path: Path) -> None:
    """A kept key file the next run cannot read is named, with what to do."""
    from hubi.consortium.supervisor import init_home

    home = tmp_path / "home"
    trust = init_home(home, ["BKA"], seed=b"probe24 damaged")
    setup_bank(home, "BKA", 0, 0, trust=trust)
    path = home / "accounts" / "BKA-000001.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"account": "BKA-000001", "key": "zz"}')
    with pytest.raises(RuntimeError) as info:
        setup_bank(home, "BKA", 1, 0, trust=trust)
    assert f"{path} is damaged" in str(info.value), info.value
    assert "move it away (keep it)" in str(info.value)


@pytest.mark.slow
def test_an_etcd_member_whose_port_is_taken_is_given_up_and_named(tmp_path: Path) -> None:
    """The same for an etcd member: it was restarted on every poll (twice a second) for ever."""
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
    other = socket.socket()
    try:
        assert sup.start(timeout=120)
        assert sup.cluster is not None
        m1 = sup.cluster.members[1]
        sup.cluster.kill(1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", m1.client_port))
        other.listen()
        starts = m1.log_path.read_text().count(" starting: ")
        _wait_for(
            lambda: sup.supervise_once() is not None and sup.members["m1"].failed, "m1 given up"
        )
        failed = sup.members["m1"].failed
        assert failed is not None and f"port {m1.client_port} is taken by another" in failed
        assert m1.log_path.read_text().count(" starting: ") - starts == 2  # not for ever
        # m1 may have led: m0 and m2 are healthy again once they elected a new leader
        st = _status_when(
            tmp_path,
            lambda s: (
                [m["healthy"] for m in s["etcd"]] == [True, False, True]
                and s["banks"][0]["healthy"] is True
            ),
            details=False,
        )
        assert [m["healthy"] for m in st["etcd"]] == [True, False, True], st["etcd"]
        assert st["etcd"][1]["failed"] == failed and st["banks"][0]["healthy"] is True, st
        r = subprocess.run(
            [*HUBI, "consortium", "status"], cwd=tmp_path, capture_output=True, text=True
        )
        said = " ".join(r.stdout.split())
        assert r.returncode == 1 and f"etcd m1 {m1.client_url} failed" in said, said
        assert f"port {m1.client_port} is taken by another program" in said, said
    finally:
        other.close()
        sup.stop()


@pytest.mark.parametrize(
    ("banks", "words"),
    [
        ([["BKA", 70000]], "bank BKA's port 70000 is not 1-65535"),
        ([["BKA", -1]], "bank BKA's port -1 is not 1-65535"),
        ([["BKA", True]], "bank BKA's port True is not 1-65535"),
        ([["../../x", 20001]], "bank id '../../x' may only use A-Z and 0-9"),
        ([["BKA", 20001], ["BKB", 20001]], "port 20001 listed twice"),
        ([["BKA", 20001], ["BKA", 20002]], "bank BKA listed twice"),
        ([], "it lists no bank"),
    ],
    ids=["port-too-big", "port-negative", "port-true", "id-path", "port-twice", "id-twice", "none"],
)
def test_a_hand_edited_layout_is_named_not_a_traceback(
    tmp_path: Path, banks: list, words: str
) -> None:
    """A port past 65535 was an OverflowError traceback from bind(); an id like ../../x was
    a folder outside the home."""
    root = tmp_path / "hubi-consortium"
    root.mkdir()
    (root / "layout.json").write_text(json.dumps({"name": "hubi", "banks": banks}))
    with pytest.raises(RuntimeError) as info:
        Supervisor(tmp_path, banks=1).prepare()
    assert f"{root / 'layout.json'} is damaged: {words}" in str(info.value), info.value
    r = subprocess.run(
        [*HUBI, "consortium", "up", "--no-fsync"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert words in said, said
    assert not _procs_with(str(tmp_path))


def test_a_layout_naming_a_bank_not_in_the_consortium_is_named(tmp_path: Path) -> None:
    from hubi.consortium.supervisor import init_home
    from hubi.infra.ports import free_port, release_port

    root = tmp_path / "hubi-consortium"
    init_home(root / "home", ["BKA"], seed=b"probe24 stranger")
    # ports of this test's own: a fixed one (20001) may be another test's server's just then,
    # and an old port held by another is named before the layout's banks are checked
    ports = [free_port(), free_port()]
    banks = [["BKA", ports[0]], ["BKZ", ports[1]]]
    (root / "layout.json").write_text(json.dumps({"banks": banks}))
    sup = Supervisor(tmp_path, banks=2, etcd_members=1)
    try:
        with pytest.raises(RuntimeError) as info:
            sup.prepare()
    finally:
        sup.stop()
        for port in ports:
            release_port(port)
    assert "names BKZ, not in the consortium file" in str(info.value), info.value
    assert not (kmc_mod.bank_dir(root / "home", "BKZ")).exists()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{}", "is damaged (KeyError"),
        ("[1]", "is damaged (TypeError"),
        ('{"token": "t", "members": [["m0", 1, "x"]]}', "is damaged (ValueError"),
        ('{"token": "t", "members": [["m0", 70000, 2]]}', "member m0's port 70000 is not"),
        ('{"token": "t", "members": [["../m0", 20001, 20002]]}', "'../m0' is not letters"),
        ('{"token": "t", "members": []}', "it lists no member"),
    ],
    ids=["no-keys", "list", "port-text", "port-too-big", "name-path", "none"],
)
def test_a_damaged_etcd_cluster_json_is_named(tmp_path: Path, text: str, words: str) -> None:
    """etcd/cluster.json of a cluster that ran, damaged: a KeyError/TypeError traceback."""
    from hubi.infra.etcd_server import EtcdCluster, EtcdStartError

    datadir = tmp_path / "etcd"
    (datadir / "m0" / "member").mkdir(parents=True)
    (datadir / "cluster.json").write_text(text)
    with pytest.raises(EtcdStartError) as info:
        EtcdCluster(datadir, members=1, start=False)
    assert f"{datadir / 'cluster.json'} is damaged" in str(info.value), info.value
    assert words in str(info.value), info.value


@pytest.mark.slow
def test_a_later_up_keeps_the_consortium_name_of_its_home(tmp_path: Path) -> None:
    """A later `up` without --name (or with another) said and recorded consortium `hubi` for
    a home whose consortium file is `alpha`'s."""
    first = Supervisor(tmp_path, banks=1, name="alpha", accounts=0, etcd_members=1)
    try:
        first.prepare()
    finally:
        first.stop()
    sup = Supervisor(tmp_path, banks=1, accounts=0, etcd_members=1, durable=False)
    try:
        assert sup.start(timeout=120)
        assert sup.name == "alpha"
        assert status(tmp_path, details=False)["consortium"] == "alpha"
    finally:
        sup.stop()


@pytest.mark.parametrize("text", ["21000:23000", "abc-def", "0-100", "23000-21000", "1-70000"])
def test_a_bad_hubi_port_range_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    """A typo was `ValueError: not enough values to unpack`; a range from 0 handed out port 0
    (whatever port the kernel picks when the server binds)."""
    from hubi.infra.ports import free_port

    monkeypatch.setenv("HUBI_PORT_RANGE", text)
    with pytest.raises(ValueError) as info:
        free_port()
    assert f"HUBI_PORT_RANGE={text!r}: expected LOW-HIGH" in str(info.value), info.value
    r = subprocess.run(
        [*HUBI, "consortium", "up", "--no-fsync", "--banks", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"HUBI_PORT_RANGE={text!r}: expected LOW-HIGH" in said, said
    assert not (tmp_path / "hubi-consortium" / "layout.json").exists()


def test_status_is_not_fooled_by_a_killed_runs_lock_file(tmp_path: Path) -> None:
    """up.lock keeps a killed run's pid; once that pid is another program's (after a reboot),
    status said a new `up` was starting (or still setting up), with that program's pid."""
    root = tmp_path / "hubi-consortium"
    root.mkdir()
    other = subprocess.Popen(["sleep", "600"])  # the program that has the pid now
    try:
        (root / "up.lock").write_text(f"{other.pid}\n")
        with pytest.raises(FileNotFoundError) as info:
            status(tmp_path)
        assert "no consortium in" in str(info.value), info.value
        dead = subprocess.Popen(["true"])
        dead.wait()
        doc = {"state": "running", "supervisor_pid": dead.pid, "home": str(root / "home")}
        (root / "up.json").write_text(json.dumps({**doc, "banks": [], "etcd": []}))
        st = status(tmp_path)
        assert st["state"] == "running", st
        assert st["supervisor"] == {"pid": dead.pid, "running": False}, st
        r = subprocess.run(
            [*HUBI, "consortium", "status"], cwd=tmp_path, capture_output=True, text=True
        )
        said = " ".join(r.stdout.split())
        assert r.returncode == 1 and "was killed without stopping: run it again" in said, said
        # a real `up` holding the folder is still named
        sup = Supervisor(tmp_path, banks=1)
        sup._lock_folder()
        try:
            assert status(tmp_path)["supervisor"] == {"pid": os.getpid(), "running": True}
        finally:
            sup._unlock_folder()
    finally:
        other.kill()
        other.wait()
