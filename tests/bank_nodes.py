"""Real bank node processes for the API, role, kill and hot-backup suites.

``bank_world`` (session): a hubi home with banks BKA and BKB, a regulator PBOC (key from BKA's KMC)
— built once per worker, copied per test. ``prepare_bank`` opens accounts and funds them with the
engine directly (the same database the node then serves). ``NodeProcess`` runs
``hubi bank serve`` as a child process on a reserved loopback port, waits until it listens, and
can kill -9 it, stop it with SIGTERM and restart it on the same port.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from hubi import kmc as kmc_mod
from hubi.bank import auth
from hubi.bank.engine import BankEngine
from hubi.consortium.supervisor import open_treasury, serve_argv
from hubi.infra import _process
from hubi.infra.ports import free_port, release_port
from hubi_core import codec
from tests.procs import hang

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Account:
    id: str
    private: int = field(repr=False)
    template: codec.Obj

    @property
    def signer(self) -> auth.Signer:
        return auth.Signer(self.id, self.private)

    def note(
        self, payee: str, amount: int, serial: int, purpose: str | None = "test", t: int = 0
    ) -> bytes:
        obj = codec.make_note(self.template, serial, t or int(time.time()), amount, payee, purpose)
        return codec.encode(codec.sign(obj, self.private))


@dataclass
class World:
    home: Path
    regulator: auth.Signer

    def bank_signer(self, bank: str) -> auth.Signer:
        return auth.bank_signer(self.home, bank)


def _build_world(dest: Path) -> None:
    kmc_mod.create_home(dest, ["BKA", "BKB"], name="test", seed=b"bank-api-tests")
    auth.add_regulator(dest, "PBOC", "BKA")


_TEMPLATE_HOME: list[Path] = []


def copy_world(dest: Path) -> World:
    """A private copy, at `dest`, of a home with BKA, BKB and regulator PBOC (built once per
    worker process)."""
    if not _TEMPLATE_HOME:
        base = Path(tempfile.mkdtemp(prefix="hubi-bankworld-"))
        atexit.register(shutil.rmtree, base, True)
        _build_world(base / "home")
        _TEMPLATE_HOME.append(base / "home")
    shutil.copytree(_TEMPLATE_HOME[0], dest)
    return World(dest, auth.load_regulator(dest, "PBOC"))


@pytest.fixture
def bank_world(tmp_path: Path) -> World:
    """A private copy of a home with BKA, BKB and regulator PBOC."""
    return copy_world(tmp_path / "home")


def prepare_bank(
    home: Path,
    bank: str,
    db: str,
    accounts: int,
    funds: int = 1_000_000,
    checkpoint_every: int | None = None,
) -> dict[str, Account]:
    """Open a treasury and `accounts` funded accounts at `bank` in database `db`."""
    kmc = kmc_mod.load_kmc(home, bank)
    out: dict[str, Account] = {}
    with BankEngine.open(db, home=home, bank=bank, checkpoint_every=checkpoint_every) as eng:
        open_treasury(eng, home, bank, kmc)
        for i in range(1, accounts + 1):
            acct = f"{bank}-{i:06d}"
            priv, tpl = eng.issue_account(kmc, acct)
            if funds:
                assert eng.fund(acct, funds).ok
            out[acct] = Account(acct, priv, tpl)
    return out


class NodeProcess:
    """``hubi bank serve`` in a child process on a reserved port (kept across restarts)."""

    def __init__(
        self,
        home: Path,
        bank: str,
        db: str | None = None,
        extra: list[str] | None = None,
        name: str = "node",
    ):
        self.home = Path(home)
        self.bank = bank
        self.db = db
        self.extra = list(extra or [])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = self.home / "run" / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "node.log"
        self.ready = self.dir / "ready.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        return serve_argv(self.home, self.bank, self.port, self.ready, "info", self.extra)

    def start(self, timeout: float = 60.0) -> NodeProcess:
        return self.spawn().wait_ready(timeout)

    def spawn(self) -> NodeProcess:
        """Start the process, not waiting for it (call from the thread that will outlive it:
        the child's parent-death signal fires when its spawning thread ends)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.ready.unlink(missing_ok=True)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if self.db:
            env["HUBI_DB"] = self.db  # not on the command line: it may hold a password
        self.proc = _process.spawn(self.argv(), log_path=self.log, cwd=REPO, env=env)
        self.starts += 1
        return self

    def wait_ready(self, timeout: float = 60.0) -> NodeProcess:
        """Wait until the spawned process wrote its ready file."""
        assert self.proc is not None, "not spawned"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"bank node exited with {self.proc.returncode}:\n{_process.log_tail(self.log)}"
                )
            if self.ready.exists():
                try:
                    info = json.loads(self.ready.read_text())
                except ValueError:
                    info = None
                if info and info.get("pid") == self.proc.pid:
                    return self
            time.sleep(0.02)
        self.kill9()
        raise TimeoutError(f"bank node did not start in {timeout}s:\n{_process.log_tail(self.log)}")

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the process hangs while its kernel still accepts connections (a stall)."""
        assert self.proc is not None and self.proc.poll() is None, "not running"
        hang(self.proc.pid)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self, grace: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise
        return self.proc.returncode

    def close(self) -> None:
        try:
            self.kill9()
        finally:
            release_port(self.port)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()


@pytest.fixture
def nodes():
    """Factory of NodeProcess objects, all killed at the end of the test."""
    made: list[NodeProcess] = []

    def make(*args, **kw) -> NodeProcess:
        n = NodeProcess(*args, **kw)
        made.append(n)
        return n

    yield make
    for n in made:
        n.close()
