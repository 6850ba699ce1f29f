"""`hubi token sim` under SIGTERM at every moment of its start-up.

Its handler was set only after the port file was written and the two lines printed: a SIGTERM
in that moment killed it (-15) and left the port file naming a pty a later simulator may get.
A handler raising KeyboardInterrupt from the first line was no better: it could land inside
Popen after the fork or in a clean-up. The simulator now only notes a SIGTERM from the first
line of Simulator.start() and acts on it where the launcher waits (hubi.token.sim._Sigterm).

Real launchers (`python -m hubi.cli token sim`), the real firmware under MicroPython, real
signals: each run must end within seconds, exit 0 (stopped) or 2 naming the SIGTERM (stopped
before the firmware was ready), leave no port file and no process of its own behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("test_token_probe29_sigterm")

HUBI = [sys.executable, "-m", "hubi.cli"]
BEFORE_READY = "token simulator stopped by SIGTERM before the firmware was ready"


def _launch(state: Path, port_file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*HUBI, "token", "sim", "--profile", "headless", "--state", str(state)]
        + ["--port-file", str(port_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.001)


def _processes_naming(state: Path) -> list[str]:
    """Processes whose command line names `state` (the firmware's names STATE/sim.json)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if str(state) in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def _term_and_check(
    proc: subprocess.Popen[bytes], state: Path, port_file: Path, what: str
) -> tuple[int, str, bytes]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"{what}: the launcher did not end after SIGTERM") from None
    text = err.decode(errors="replace")
    assert proc.returncode in (0, 2), (what, proc.returncode, text)
    if proc.returncode == 2:
        assert BEFORE_READY in text, (what, text)
    else:
        assert b"token simulator (headless) on /dev/pts/" in out, (what, out, text)
    assert not port_file.exists(), f"{what}: port file left"
    deadline = time.monotonic() + 5  # reaped by the launcher before it exits: none expected
    while _processes_naming(state) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_naming(state), (what, _processes_naming(state))
    return proc.returncode, text, out


def test_sigterm_at_each_moment_of_start_up_stops_cleanly(tmp_path: Path) -> None:
    codes = []
    # from the state folder's making (the first step of Simulator.start()) through the
    # firmware's start and the wait for it to be ready
    for i, delay in enumerate((0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12)):
        state, port_file = tmp_path / f"s{i}", tmp_path / f"port{i}"
        proc = _launch(state, port_file)
        _wait_for(state, proc)
        time.sleep(delay)
        codes.append(_term_and_check(proc, state, port_file, f"{delay} s into start")[0])
    assert 2 in codes, codes  # some SIGTERMs came before the firmware was ready

    # from the port file's writing: the two lines printed, then the wait (the -15 window)
    for i, delay in enumerate((0, 0, 0.001, 0.002, 0.004, 0.008)):
        state, port_file = tmp_path / f"r{i}", tmp_path / f"rport{i}"
        proc = _launch(state, port_file)
        _wait_for(port_file, proc)
        time.sleep(delay)
        code, text, _ = _term_and_check(proc, state, port_file, f"{delay} s after the port file")
        assert code == 0, text


def test_the_handler_is_let_go_when_the_simulator_stops_or_fails_to_start(
    tmp_path: Path,
) -> None:
    """In a process of its own (pytest here) the simulator holds SIGTERM only while it runs:
    after stop(), and after a start refused at any step, SIGTERM is at its default again (a
    handler left behind would note every later SIGTERM and act on none)."""
    from hubi.locks import hold_lock_file
    from hubi.token.sim import SimError, Simulator

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    sim = Simulator(tmp_path / "s", "headless")
    sim.start()
    try:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        sim.wait_ready()
    finally:
        sim.stop()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    held = hold_lock_file(tmp_path / "s" / "sim.lock")  # another simulator's, as it were
    try:
        with pytest.raises(SimError, match="in use by another token simulator"):
            Simulator(tmp_path / "s", "headless").start()
    finally:
        os.close(held)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_ends_the_keyboard_loop(tmp_path: Path) -> None:
    """On a terminal the launcher reads keys: a SIGTERM, only noted, must still end that read
    (a read is resumed after a signal whose handler returns), within a fraction of a second."""
    import pty

    master, slave = pty.openpty()
    state, port_file = tmp_path / "k", tmp_path / "kport"
    try:
        proc = subprocess.Popen(
            [*HUBI, "token", "sim", "--profile", "headless", "--state", str(state)]
            + ["--port-file", str(port_file)],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _wait_for(port_file, proc)
        time.sleep(0.3)  # into the loop that reads keys
        started = time.monotonic()
        code, _, out = _term_and_check(proc, state, port_file, "keyboard loop")
        assert code == 0 and b"keys: arrows" in out, out  # it was reading keys
        assert time.monotonic() - started < 5
    finally:
        os.close(master)
        os.close(slave)
