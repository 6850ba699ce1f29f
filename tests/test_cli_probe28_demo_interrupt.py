"""Probe 28 of `hubi demo`: Ctrl-C (SIGINT) during a run printed click's "Aborted!" on stderr
and, with --json, no JSON at all (exit 1). Now a run stopped by SIGINT prints one JSON document
naming the interruption and the step (--json), or one line (the story), and exits 130 as shells
expect, its bank nodes and token stopped. Real `hubi demo` processes (real bank nodes, the
token's firmware in MicroPython), real signals: to the whole process group, as a terminal's
Ctrl-C sends it, and to the demo alone, as `kill -INT` does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("test_cli_probe28_demo_interrupt")

HUBI = Path(sys.executable).parent / "hubi"
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}


def _session(sid: int) -> list[str]:
    """Command lines of live processes of session `sid` (the demo's children left behind)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(cmd)
    return found


def _interrupt(work: Path, as_json: bool, group: bool) -> tuple[int, str, str]:
    """Start `hubi demo`, send SIGINT once its token runs (step 3 or later), wait for it."""
    args = [str(HUBI), "demo", "--workdir", str(work), *(["--json"] if as_json else [])]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=ENV,
        start_new_session=True,  # its own group: the test's Ctrl-C reaches it and its children
    )
    try:
        end = time.monotonic() + 120
        while not list(work.glob("token/*.log")):  # the bank nodes are up, the token starting
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "the demo did not get to its token"
            time.sleep(0.01)
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 10  # children reaped by init may linger a moment
    while _session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _session(proc.pid) == [], "processes left running after the interrupted demo"
    return proc.returncode, out, err


def test_ctrl_c_during_a_json_run_prints_one_json_document(tmp_path: Path) -> None:
    code, out, err = _interrupt(tmp_path / "demo", as_json=True, group=True)
    assert code == 130, (code, out, err)
    doc = json.loads(out)  # one document, nothing else on stdout
    assert doc["ok"] is False and doc["interrupted"] is True and doc["signal"] == "SIGINT", doc
    assert doc["step"] and doc["step"][0] in "345678", doc  # where it stood: the token was up
    assert doc["workdir"] == str((tmp_path / "demo").resolve()), doc
    assert "Aborted" not in err and "Traceback" not in err, err


def test_sigint_during_the_story_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    code, out, err = _interrupt(tmp_path / "demo", as_json=False, group=False)
    assert code == 130, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo interrupted (Ctrl-C) in step "), err
    assert str((tmp_path / "demo").resolve()) in lines[0], err
    assert "Traceback" not in out + err and "Aborted" not in err, err
    assert "1. Two banks set up their KMCs" in out  # the story told up to there
