"""hubi.locks: the lock a second run meets. A lock file held by another process is refused at
once, naming its holder; it goes with its process, even one killed by SIGKILL; a folder lock
makes a second process wait its turn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubi.locks import Held, folder_lock, hold_lock_file

HOLD = """
import sys, time
from hubi.locks import hold_lock_file
hold_lock_file(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def test_a_held_lock_file_is_refused_naming_its_holder_until_its_process_dies(
    tmp_path: Path,
) -> None:
    lock = tmp_path / "x.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
        with pytest.raises(Held) as held:
            hold_lock_file(lock)
        assert held.value.holder.startswith(f"pid {proc.pid} on ")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        fd = hold_lock_file(lock)  # the kernel let go with the process
        assert lock.read_text().startswith(f"pid {os.getpid()} on ")
        os.close(fd)
    finally:
        proc.kill()
        proc.wait()


def test_a_folder_lock_makes_a_second_process_wait_its_turn(tmp_path: Path) -> None:
    wait = (
        "import sys, time\nfrom hubi.locks import folder_lock\n"
        "t = time.monotonic()\nwith folder_lock(sys.argv[1]):\n"
        "    print(round(time.monotonic() - t, 2))\n"
    )
    with folder_lock(tmp_path):
        proc = subprocess.Popen(
            [sys.executable, "-c", wait, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        time.sleep(1.0)
        assert proc.poll() is None  # waiting for this process's lock
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and float(out) >= 0.5, out
