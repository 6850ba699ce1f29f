"""Probe round 25, `hubi demo`: an unexpected failure inside the story (a bank node that cannot
start, a full disk) was a Python traceback; now it is one line naming the step and the logs,
exit 1, the traceback shown with HUBI_DEBUG=1. COLUMNS=1 drew the story a letter per line. A
HUBI_DB left in the shell had the demo's bank nodes serve that database instead of their own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.small_disk import small_disk

HUBI = Path(sys.executable).parent / "hubi"
MIN_WIDTH = 40  # hubi.output.MIN_WIDTH (a literal: this test also runs against older code)


def _hubi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HUBI), *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def _running_under(folder: Path) -> list[str]:
    """Command lines of live processes that name `folder` (a bank node or token left behind)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not a process
            continue
        if proc.name.isdigit() and str(folder) in cmd:
            found.append(cmd)
    return found


def _broken_uvicorn(tmp_path: Path) -> dict[str, str]:
    """An environment whose `uvicorn` is broken: a bank node (which imports it to listen) dies
    at start, while the demo itself (which never imports it) runs."""
    shadow = tmp_path / "site"
    (shadow / "uvicorn").mkdir(parents=True)
    (shadow / "uvicorn" / "__init__.py").write_text(
        'raise ImportError("this uvicorn is broken on purpose")\n'
    )
    path = os.pathsep.join(p for p in (str(shadow), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def _one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


def test_a_bank_node_that_cannot_start_is_one_line_naming_the_step_and_its_log(
    tmp_path: Path,
) -> None:
    work = tmp_path / "demo-out"
    proc = _hubi("demo", "--workdir", str(work), env=_broken_uvicorn(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = _one_line(proc.stderr)
    assert line.startswith("demo failed in step 2 (starting the bank nodes): "), line
    assert "exited with 1" in line and "this uvicorn is broken on purpose" in line, line
    assert f"logs: {work / 'run' / 'BKA.log'}" in line, line
    assert line.endswith("(HUBI_DEBUG=1 shows the traceback)"), line
    assert "this uvicorn is broken on purpose" in (work / "run" / "BKA.log").read_text()
    assert _running_under(work) == []


def test_a_bank_node_that_cannot_start_in_json_and_with_hubi_debug(tmp_path: Path) -> None:
    work = tmp_path / "demo-out"
    env = {**_broken_uvicorn(tmp_path), "HUBI_DEBUG": "1"}
    proc = _hubi("demo", "--json", "--workdir", str(work), env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["step"] == "2 (starting the bank nodes)", doc
    assert "this uvicorn is broken on purpose" in doc["error"], doc
    assert str(work / "run" / "BKA.log") in doc["error"], doc
    # the developer's traceback, on stderr only
    assert "Traceback (most recent call last)" in proc.stderr, proc.stderr
    assert "RuntimeError: bank node BKA exited with 1" in proc.stderr, proc.stderr


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A folder of this test's own outside pytest's tree (whose root another session may make
    0700 again while a disk is mounted under it)."""
    d = Path(tempfile.mkdtemp(prefix="hubi-demo-disk-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("size", [400 * 1024, 1000 * 1024])  # full while opening accounts; later
def test_a_full_disk_is_one_line_naming_the_step(outside_tmp: Path, size: int) -> None:
    with small_disk(outside_tmp / "disk", size) as disk:
        work = disk / "demo-out"
        proc = _hubi("demo", "--workdir", str(work))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        line = _one_line(proc.stderr)
        assert line.startswith("demo failed in step "), line
        assert str(work) in line and line.endswith("(HUBI_DEBUG=1 shows the traceback)"), line
        assert _running_under(work) == []


def test_a_tiny_terminal_width_still_reads_and_a_shell_hubi_db_is_not_served(
    tmp_path: Path,
) -> None:
    """COLUMNS=1 came out a letter per line; HUBI_DB in the environment reached the demo's bank
    nodes (`--db` from the environment), which served that database, or died for its lack."""
    elsewhere = tmp_path / "my-own-bank.db"
    work = tmp_path / "demo-out"
    proc = _hubi(
        "demo", "--workdir", str(work), env={"COLUMNS": "1", "HUBI_DB": f"sqlite:///{elsewhere}"}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("1. Two banks set up their KMCs and sign"), proc.stdout
    assert max(len(line) for line in lines[:-1]) <= MIN_WIDTH, proc.stdout
    assert len(lines) < 80, proc.stdout  # the story is a few dozen lines, not 1700
    assert lines[-1] == f"Files are in {work}", lines[-1]  # the path whole, not wrapped
    assert not elsewhere.exists()


def test_a_workdir_with_brackets_is_shown_whole_and_the_story_runs(tmp_path: Path) -> None:
    """The story printed the frames' folder as rich markup: a --workdir holding '[/x]' failed
    the demo at step 5 (MarkupError, after the token had paid), and one holding '[bold]' was
    shown without it."""
    work = tmp_path / "[/x] [bold]demo"
    proc = _hubi("demo", "--workdir", str(work), env={"COLUMNS": "400"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"screenshots in {work / 'frames'}\n" in proc.stdout, proc.stdout
