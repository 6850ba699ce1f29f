"""A usage error is JSON on stdout when the command was run with --json (6d855f9). The
detection was `"--json" in argv`: "--json" given as an option's *value* (a purpose, a path)
turned a plain run's usage error into a JSON document on stdout, click's usage text and
"Error:" line gone from stderr. Real `hubi` processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("test_review27_json_usage_value")

HUBI = [sys.executable, "-m", "hubi.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUBI, *args], capture_output=True, text=True, timeout=60)


def test_json_as_an_options_value_leaves_the_usage_error_as_text(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-home")
    plain = _run("bank", "fund", "ACC1", "5", "--purpose", "--json", "--home", missing)
    assert plain.returncode == 2, plain
    assert plain.stdout == "", plain.stdout  # not asked for JSON: nothing on stdout
    assert "bank fund [OPTIONS]" in plain.stderr and "Error:" in plain.stderr, plain.stderr
    assert "no-such-home" in plain.stderr


def test_json_flag_itself_still_gives_the_json_document(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-home")
    asked = _run("bank", "fund", "ACC1", "5", "--purpose", "x", "--json", "--home", missing)
    assert asked.returncode == 2, asked
    doc = json.loads(asked.stdout)
    assert doc["error"] == "UsageError" and "no-such-home" in doc["message"], doc
