"""Probe round 24, the top-level CLI and the demo: a bad environment loses nothing already made,
demo errors go to stderr whole, and a node URL with a control character is refused at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from hubi.commands.params import check_url
from hubi.demo import MARKER

HUBI = Path(sys.executable).parent / "hubi"


def _hubi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HUBI), *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def _previous_demo(tmp_path: Path) -> Path:
    """A folder a previous demo made (its marker), with a file that must outlive a refused run."""
    work = tmp_path / "demo-out"
    work.mkdir()
    (work / MARKER).write_text("made by hubi demo; the next run empties this folder\n")
    (work / "note.png").write_bytes(b"the last run's note")
    return work


@pytest.mark.parametrize("as_json", [True, False])
def test_demo_with_a_garbage_port_range_fails_cleanly_and_keeps_the_last_run(
    tmp_path: Path, as_json: bool
) -> None:
    """HUBI_PORT_RANGE=garbage was a ValueError traceback, after the last run's files were gone."""
    work = _previous_demo(tmp_path)
    args = ["demo", "--workdir", str(work)] + (["--json"] if as_json else [])
    proc = _hubi(*args, env={"HUBI_PORT_RANGE": "garbage", "COLUMNS": "40"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    if as_json:
        error = json.loads(proc.stdout)["error"]
    else:
        error = proc.stderr
        assert "demo failed" not in proc.stdout, proc.stdout
    assert "HUBI_PORT_RANGE='garbage'" in error and "no ports for the bank nodes" in error, error
    assert (work / "note.png").read_bytes() == b"the last run's note"


def test_demo_failure_goes_to_stderr_with_its_path_whole(tmp_path: Path) -> None:
    """The story's failure went to stdout, wrapped to the terminal: a long path came out in
    pieces that could not be copied back into the next command."""
    blocker = tmp_path / "a-file-not-a-folder"
    blocker.write_text("mine")
    work = blocker / ("long-demo-folder-name-" * 4) / "demo-out"
    proc = _hubi("demo", "--workdir", str(work), env={"COLUMNS": "40", "NO_COLOR": "1"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "demo failed" not in proc.stdout, proc.stdout
    assert f"cannot make the demo's folder {work}: Not a directory" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/\x1b]0;owned\x07",  # an ESC (retitles the terminal) in the path
        "http://127.0.0.1:8080/x\ny",
        "http://127.0.0.1:8080/\u202egnp.exe",  # a bidirectional override
        "http://127.0.0.1:8080/?q=\x00",
    ],
)
def test_node_url_with_a_control_character_is_a_usage_error(url: str) -> None:
    """Only the host part was checked: a control character in the path was taken, and went on
    into requests, consortium files and every message naming the URL."""
    with pytest.raises(click.BadParameter) as err:
        check_url(url, "'--endpoint'")
    assert "is not an http:// or https:// URL" in err.value.format_message()
    assert err.value.param_hint == "'--endpoint'"


def test_node_url_with_a_control_character_is_refused_on_the_command_line(tmp_path: Path) -> None:
    proc = _hubi(
        "merchant",
        "upload",
        "--bank",
        "http://127.0.0.1:8080/\x1b[2J",
        env={"HUBI_MERCHANT_HOME": str(tmp_path / "nowhere")},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Invalid value for '--bank'" in proc.stderr and "\x1b" not in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "https://bank.example/api/v1?x=1", "http://[::1]:1/", " http://h "],
)
def test_ordinary_node_urls_still_pass(url: str) -> None:
    assert check_url(url, "'--bank'") == url.strip()


@pytest.mark.parametrize("size", ["0", "²", "٣"])
def test_a_garbage_terminal_size_neither_hides_errors_nor_crashes(
    tmp_path: Path, size: str
) -> None:
    """COLUMNS=0 made rich draw nothing: a failed command exited 1 in silence. COLUMNS or LINES of
    '²' (a digit to str.isdigit, not to int) was a ValueError traceback from every command."""
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    proc = _hubi(
        "demo", "--workdir", str(blocker / "demo-out"), env={"COLUMNS": size, "LINES": size}
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"demo failed: cannot make the demo's folder {blocker / 'demo-out'}" in proc.stderr
    # and what a command tells people on stdout still shows
    shown = subprocess.run(
        [sys.executable, "-c", "from hubi.output import console; console.print('the story')"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": size, "LINES": size},
    )
    assert shown.returncode == 0 and shown.stdout == "the story\n", shown.stdout + shown.stderr
