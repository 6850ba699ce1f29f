"""Process states the tests need: is a pid alive, which processes name a folder, hang a process
for sure (SIGSTOP), wait for a condition."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _state(stat_path: Path) -> str:
    # the state letter follows the command name, which is in parentheses and may hold spaces
    return stat_path.read_text().rsplit(") ", 1)[1][0]


def alive(pid: int | None) -> bool:
    """True while the process exists and is not a zombie (a zombie still answers kill(0))."""
    if not pid:
        return False
    try:
        return _state(Path(f"/proc/{pid}/stat")) != "Z"
    except (OSError, IndexError):
        return False


def hang(pid: int, timeout: float = 30.0) -> None:
    """SIGSTOP the process and return once every one of its threads has stopped.

    kill() returns before the signal has reached threads running on another core; a request sent
    at once could still be served (etcd forwarding a claim to its leader, then never answering),
    which is not the hang a test means."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    tasks = Path(f"/proc/{pid}/task")
    while True:
        states = []
        for stat in tasks.glob("*/stat"):
            try:
                states.append(_state(stat))
            except (OSError, IndexError):
                pass  # a thread that ended meanwhile
        if states and all(s in "TtZX" for s in states):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not stop within {timeout} s: {states}")
        time.sleep(0.005)


def wake(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


def procs_with(text: str) -> dict[int, str]:
    """Live processes whose command line holds `text` (the test's folder): pid -> command.
    (`hubi consortium up` runs in its folder without naming it; its children name it, as
    --home or etcd's --data-dir, once they have exec'd.)"""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and alive(int(d.name)):
                out[int(d.name)] = cmd
    return out


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """`cond()` asked every 20 ms until it is true; that value (AssertionError naming `what`
    after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
