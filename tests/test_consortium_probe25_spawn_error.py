"""`hubi consortium up` survives a full disk's kind of failure (round 25). A bank node it could
not start again (its log cannot be opened: a full disk, a folder in its place; or no fork) ended
the supervisor's loop with the OSError, so `up` stopped every bank and etcd member and exited
with a traceback; now it is a failed start like any other (logged, retried ever more slowly,
run again once it can) and the other parts run on. Likewise up.json that cannot be rewritten:
it ended `up`, and its clean stop too (the banks were killed rather than stopped); now it is
logged and `up` supervises, and stops, as before."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hubi.infra import _process

HUBI = [sys.executable, "-m", "hubi.cli"]


def _wait_for(proc: subprocess.Popen[bytes], log: Path, cond: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + 60
    while True:
        got = cond()
        if got:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"up exited waiting for {what}:\n" + _process.log_tail(log))
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n" + _process.log_tail(log))
        time.sleep(0.1)


def _up_json(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "hubi-consortium" / "up.json").read_text())
    except (OSError, ValueError):
        return None


def _status(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HUBI, "consortium", "status", "--json"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_a_node_whose_log_cannot_be_opened_does_not_stop_up(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    proc = _process.spawn(
        [*HUBI, "consortium", "up", "--banks", "2", "--accounts", "0", "--no-fsync"],
        log_path=log,
        cwd=tmp_path,
    )
    try:
        up = _wait_for(
            proc,
            log,
            lambda: (d := _up_json(tmp_path)) and d["state"] == "running" and d,
            "up to run",
        )
        bka_log = tmp_path / "hubi-consortium" / "run" / "BKA.log"
        bka_log.unlink()
        bka_log.mkdir()  # BKA's log cannot be opened any more
        os.kill(up["banks"][0]["pid"], signal.SIGKILL)
        said = "restarting bank node BKA failed: [Errno 21] Is a directory"
        _wait_for(proc, log, lambda: log.read_text().count(said) >= 2, "two failed restarts")
        # `up` runs on, and so do the other parts (asked until BKB answers its /health within
        # status's 2 s: a loaded machine can make one ask slower than that)
        st = _wait_for(
            proc,
            log,
            lambda: (d := json.loads(_status(tmp_path).stdout))["banks"][1]["healthy"] and d,
            "BKB healthy in status",
        )
        assert st["state"] == "running" and st["supervisor"]["running"] is True, st
        assert st["banks"][1]["healthy"] is True and st["banks"][0]["healthy"] is False, st
        bka_log.rmdir()  # room again: BKA runs again at its next restart
        _wait_for(proc, log, lambda: _status(tmp_path).returncode == 0, "all healthy again")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, _process.log_tail(log)
    finally:
        if proc.poll() is None:
            _process.stop(proc, first=signal.SIGINT, grace=30)


def _ready_pid(folder: Path, bank: str) -> int | None:
    try:
        doc = json.loads((folder / "hubi-consortium" / "run" / f"{bank}.ready").read_text())
    except (OSError, ValueError):
        return None
    return doc.get("pid") if isinstance(doc, dict) else None


@pytest.mark.slow
def test_up_json_that_cannot_be_written_neither_stops_up_nor_its_clean_stop(
    tmp_path: Path,
) -> None:
    """up.json could not be rewritten (a full disk; here a folder where its temporary file
    goes) after a restart: the OSError ended `up`, and its clean stop too, so the banks were
    killed (SIGKILL by the parent-death signal) instead of finishing requests in flight."""
    log = tmp_path / "up.log"
    proc = _process.spawn(
        [*HUBI, "consortium", "up", "--banks", "2", "--accounts", "0", "--no-fsync"],
        log_path=log,
        cwd=tmp_path,
    )
    try:
        up = _wait_for(
            proc,
            log,
            lambda: (d := _up_json(tmp_path)) and d["state"] == "running" and d,
            "up to run",
        )
        (tmp_path / "hubi-consortium" / "up.tmp").mkdir()
        old = up["banks"][0]["pid"]
        os.kill(old, signal.SIGKILL)
        _wait_for(
            proc,
            log,
            lambda: (
                _ready_pid(tmp_path, "BKA") not in (None, old) and "cannot write" in log.read_text()
            ),
            "BKA restarted, up.json not written",
        )
        # up.json lags (BKA's old pid), all healthy (once every part answers within status's
        # 2 s: BKA has just started, and a loaded machine can make one ask slower than that)
        _wait_for(proc, log, lambda: _status(tmp_path).returncode == 0, "status 0")
        run = tmp_path / "hubi-consortium" / "run"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, _process.log_tail(log)
        said = _process.log_tail(log)
        assert "consortium stopped" in said and "Traceback" not in said, said
        # the clean stop ran to its end: each node stopped (SIGTERM) and its ready file gone
        assert not (run / "BKA.ready").exists() and not (run / "BKB.ready").exists()
    finally:
        if proc.poll() is None:
            _process.stop(proc, first=signal.SIGINT, grace=30)
