"""Probe round 27: a usage error of a command run with --json (a missing option, a value of
the wrong type, a file where a folder belongs) printed click's plain usage text, so a script
reading the JSON on stdout got text it could not parse. It is now the same document the
command's other failures print ({"error", "message"}), exit status 2 as before; without
--json the usage text is unchanged. Run as real processes: the JSON must be on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("cli-probe27-json-usage")


def _hubi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubi.cli", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


CASES = [
    (["demo", "--workdir", "{file}"], "'--workdir'"),
    (["audit", "verify"], "Missing option '--db'"),
    (["merchant", "scan", "--count", "x"], "'--count'"),
    (["note", "show"], "Missing argument 'FILE'"),
    (["bank", "book", "--db", "sqlite:///x.db"], "Missing argument"),
]


@pytest.mark.parametrize("args, words", CASES)
def test_a_usage_error_under_json_is_a_json_document(
    tmp_path: Path, args: list[str], words: str
) -> None:
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    args = [a.format(file=f) for a in args]
    r = _hubi(*args, "--json")
    assert r.returncode == 2, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["error"] == "UsageError" and words in doc["message"], doc
    plain = _hubi(*args)
    assert plain.returncode == 2
    assert plain.stdout == "" and "Usage: " in plain.stderr and words in plain.stderr
