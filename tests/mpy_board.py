"""A MicroPython "board" on a pseudo-terminal, for mpremote: the unix port emulated only in its
soft reset.

mpremote opens the pty's slave path with pyserial; a relay thread pair carries the bytes
between the pty master and a `micropython -i` child. The child first mounts a VfsPosix of the
board folder at "/" and changes to it, as a board's _boot.py mounts its flash: "/main.py" and
"main.py" are then the folder's, and os.stat("") is the current folder (the unix port's own
mount refuses "", and mpremote's `cp x :` asks for it). The raw REPL, raw paste mode and every
file operation are the real MicroPython's.
What differs is the soft reset: a board answers Ctrl-D in the raw REPL with "OK\\r\\n", reboots,
prints "MPY: soft reboot\\r\\n" and is back in the raw REPL; the unix port prints "OK\\r\\n" and
exits. So when the child exits, the relay starts a new one in the same folder, puts it in the
raw REPL and hands mpremote exactly what a board would print (the new child's banner is not
passed on: a board in the raw REPL does not print one). A board's hard reset (mpremote
`reset`, machine.reset()) has no counterpart here.
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
import tty
from pathlib import Path

RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
SOFT_REBOOT = b"MPY: soft reboot\r\n"


class PtyBoard:
    def __init__(self, micropython: str, root: Path) -> None:
        self.micropython = os.path.abspath(micropython)  # the child runs in root
        self.root = root.resolve()
        self.master, self._slave = os.openpty()
        # raw before anyone opens it: no echo of the relay's own writes back to the master
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)  # kept open: the master stays readable between runs
        self.soft_resets = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._child = self._spawn()
        self._threads = [
            threading.Thread(target=self._to_child, daemon=True),
            threading.Thread(target=self._from_child, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        mount = f"vfs.mount(vfs.VfsPosix({str(self.root)!r}),'/')"
        boot = f"import vfs,os;vfs.umount('/');{mount};os.chdir('/')"
        return subprocess.Popen(
            [self.micropython, "-i", "-c", boot],
            cwd=self.root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
        )

    def _to_child(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            with self._lock:
                stdin = self._child.stdin
                assert stdin is not None
                try:
                    stdin.write(data)
                except (BrokenPipeError, ValueError):
                    pass  # a child on its way out: mpremote sends nothing until the next prompt

    def _from_child(self) -> None:
        while not self._stop.is_set():
            out = self._child.stdout
            assert out is not None
            data = os.read(out.fileno(), 4096)
            if data:
                os.write(self.master, data)
                continue
            # the child exited: a soft reset (or close())
            self._child.wait()
            if self._stop.is_set():
                return
            with self._lock:
                self._close_pipes(self._child)
                self._child = self._spawn()
                self._raw_repl(self._child)
            self.soft_resets += 1
            os.write(self.master, SOFT_REBOOT + RAW_PROMPT)

    def _raw_repl(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(b"\x01")
        seen = b""
        while not seen.endswith(RAW_PROMPT):
            data = os.read(child.stdout.fileno(), 4096)
            if not data:
                raise RuntimeError(f"micropython exited before its raw REPL: {seen!r}")
            seen += data

    @staticmethod
    def _close_pipes(child: subprocess.Popen[bytes]) -> None:
        for f in (child.stdin, child.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            child = self._child
        child.kill()
        child.wait()
        for t in self._threads:
            t.join(5)
        self._close_pipes(child)
        os.close(self.master)
        os.close(self._slave)

    def __enter__(self) -> PtyBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
