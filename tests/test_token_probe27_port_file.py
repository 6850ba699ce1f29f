"""`hubi token sim --port-file F` wrote F in place (a script polling it could read an empty or
half-written path) and left it when the simulator stopped, naming a pty that a later simulator,
or a terminal, may get. F is now written whole (one rename) and removed when the simulator
stops, unless another simulator has written its own port there since."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("test_token_probe27_port_file")

HUBI = [sys.executable, "-m", "hubi.cli"]


def _sim(state: Path, port_file: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*HUBI, "token", "sim", "--state", str(state), "--port-file", str(port_file)],
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_file(port_file: Path, proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 60
    while not port_file.exists():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    text = port_file.read_text()
    assert text.endswith("\n") and text.startswith("/dev/pts/"), repr(text)  # never half
    return text.strip()


def test_the_port_file_is_whole_and_goes_with_the_simulator(tmp_path: Path) -> None:
    port_file, log = tmp_path / "port", tmp_path / "sim.log"
    proc = _sim(tmp_path / "state", port_file, log)
    try:
        port = _wait_file(port_file, proc, log)
        assert Path(port).exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
        assert not port_file.exists(), "a stopped simulator's port file is left"

        # another simulator's port written there since: not ours to remove
        proc = _sim(tmp_path / "state2", port_file, log)
        _wait_file(port_file, proc, log)
        port_file.write_text("/dev/pts/other\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
        assert port_file.read_text() == "/dev/pts/other\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
