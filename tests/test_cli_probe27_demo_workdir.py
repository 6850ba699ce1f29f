"""Probe 27 of `hubi demo --workdir`: a second demo started on the folder of one under way
emptied it under the first one's bank nodes and token (the second then failed with a
FileNotFoundError naming a temporary file, and the first could too); and a run SIGKILLed while
emptying the previous run's files could remove the folder's marker first, so the rerun refused
the folder as "not made by hubi demo". Real `hubi demo` processes: bank nodes, the token's
firmware in MicroPython."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("test_cli_probe27_demo_workdir")

HUBI = Path(sys.executable).parent / "hubi"
ENV = {**os.environ, "NO_COLOR": "1"}
MARKER = ".hubi-demo"


def _demo(work: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(HUBI), "demo", "--json", "--workdir", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.002)


def test_a_second_demo_on_a_busy_folder_says_so_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    work = tmp_path / "demo"
    first = _demo(work)
    # the first run's bank nodes are up: it is well into its story
    _wait_for(lambda: (work / "run" / "BKB.log").exists(), first)
    first.send_signal(signal.SIGSTOP)  # held mid-story while the second starts: no race
    try:
        second = _demo(work)
        out2, err2 = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    out1, err1 = first.communicate(timeout=120)
    told = json.loads(out2)
    assert second.returncode == 1, out2 + err2
    assert told["ok"] is False
    assert f"another hubi demo is running in {work}" in told["error"], told
    assert first.returncode == 0, out1 + err1
    assert json.loads(out1)["ok"] is True


def test_a_demo_killed_while_emptying_the_last_run_leaves_a_folder_the_rerun_takes(
    tmp_path: Path,
) -> None:
    work = tmp_path / "demo"
    work.mkdir()
    (work / MARKER).write_text("made by hubi demo; the next run empties this folder\n")
    # a previous run's files, heavy enough that emptying them takes a while; enough folders
    # listed after the marker that removing in listing order reaches it with some left
    n = 0
    while n < 40:
        d = work / f"old{n:03d}"
        d.mkdir()
        for i in range(600):
            (d / f"f{i}").touch()
        n += 1
        order = [e.name for e in os.scandir(work)]
        if n >= 8 and len(order) - order.index(MARKER) > 5:
            break
    assert n < 40, "this file system lists the marker last whatever else the folder holds"
    olds = [work / f"old{i:03d}" for i in range(n)]
    at = order.index(MARKER)
    before = [work / name for name in order[:at]]
    after = [work / name for name in order[at + 1 :]]

    killed = _demo(work)
    # killed once the marker is gone, or once emptying went past where the marker is listed
    _wait_for(
        lambda: (
            not (work / MARKER).exists()
            or (not any(d.exists() for d in before) and not all(d.exists() for d in after))
        ),
        killed,
    )
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert any(d.exists() for d in olds), "killed too late: the folder was emptied"

    rerun = subprocess.run(
        [str(HUBI), "demo", "--json", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=ENV,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert json.loads(rerun.stdout)["ok"] is True
    assert not any(d.exists() for d in olds)
